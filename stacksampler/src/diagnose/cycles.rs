//! Folding repeated cycles of frames in one stack.
//!
//! A recursion shows in a stack as a run of one cycle body repeated back to back: direct
//! (`f -> f`), mutual (`a -> b -> a`) or longer (`String -> Sprintf -> doPrintf -> printArg ->
//! handleMethods -> String`). [`fold`] finds such runs and returns the stack as a list of
//! [`Segment`]s, so a report can print `[a -> b] x 2500` instead of 5000 lines.
//!
//! # What the caller compares
//!
//! `fold` is generic over the frame type and only compares frames for equality, so the caller picks
//! what a "same frame" is:
//! - function names (what [`crate::diagnose`] uses): a cycle whose frames call each other from
//!   different lines on different levels (`recA` calling `recB` from line 10 on one level and from
//!   line 12 on the next) still folds. The body of a folded cycle then shows the lines of its first
//!   repetition in the input (the innermost one kept in [`Segment::Cycle`]'s `start`); other
//!   repetitions may have other lines.
//! - `(function, line)` pairs: only exactly repeated call sites fold.
//! - raw addresses: the same as `(function, line)` without inline expansion.
//!
//! # Rules
//!
//! - Periods (cycle body lengths) are bounded by [`FoldOptions::max_period`] (default
//!   [`MAX_PERIOD`] = 64 frames): longer cycles are not looked for. This bound is what keeps the
//!   cost linear: finding runs costs about `n * H(max_period)` comparisons (`H` the harmonic number,
//!   4.7 for 64) plus the length of each run found, and choosing among runs `O(r log r)` for `r`
//!   runs.
//! - Repetition is maximal: a run is extended as far as the periodicity holds.
//! - When runs overlap, the one that hides the most frames wins (`(repeat - 1) * len`); ties go to
//!   the smaller period, then to the run nearer the root.
//! - A run of one period with a length that is not a multiple of it is anchored at the root side
//!   (the end of the slice, frames being innermost first): the cycle body starts with the frame
//!   the entry frame called, and the partial repetition left over sits on the leaf side, as plain
//!   frames (or part of another, smaller cycle). Read root first this gives
//!   `main -> [recA -> recB] x N -> recA`.
//! - Cycles do not nest: a body is printed flat even when it is itself periodic.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
};

/// Default bound on the length of a cycle body, in frames.
pub const MAX_PERIOD: usize = 64;

/// A piece of a folded stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// The frame at this index of the input.
    Frame(usize),
    /// `len` frames starting at `start` form a cycle body, repeated `repeat` times in a row
    /// (covering `start .. start + len * repeat` of the input).
    Cycle {
        start: usize,
        len: usize,
        repeat: usize,
    },
}

/// One run of a repeated cycle body in a stack (the [`Segment::Cycle`] of [`fold`], on its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cycle {
    /// Index of the innermost frame of the run.
    pub start: usize,
    /// Frames in the body (the period).
    pub len: usize,
    /// Times the body repeats in a row (at least [`FoldOptions::min_repeat`]).
    pub repeat: usize,
}

impl Cycle {
    /// One past the outermost frame of the run: the index of the entry frame, if any.
    pub fn end(&self) -> usize {
        self.start + self.frames()
    }

    /// Frames the run covers (`len * repeat`).
    pub fn frames(&self) -> usize {
        self.len * self.repeat
    }

    /// Index range of the body kept when folded (its innermost repetition).
    pub fn body(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

impl From<Cycle> for Segment {
    fn from(c: Cycle) -> Self {
        Segment::Cycle {
            start: c.start,
            len: c.len,
            repeat: c.repeat,
        }
    }
}

/// Tuning of [`fold_with`] and [`cycles`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FoldOptions {
    /// Longest cycle body looked for, in frames (at least 1). Cost grows with its logarithm plus
    /// the runs found.
    pub max_period: usize,
    /// Fewest repetitions that make a cycle (at least 2).
    pub min_repeat: usize,
}

impl Default for FoldOptions {
    fn default() -> Self {
        Self {
            max_period: MAX_PERIOD,
            min_repeat: 2,
        }
    }
}

impl FoldOptions {
    /// Options with the given bounds, clamped to their minimums (`max_period >= 1`,
    /// `min_repeat >= 2`).
    pub fn new(max_period: usize, min_repeat: usize) -> Self {
        Self {
            max_period: max_period.max(1),
            min_repeat: min_repeat.max(2),
        }
    }
}

/// Folds `frames` (innermost first) into frames and repeated cycles, with the default options
/// (bodies up to [`MAX_PERIOD`] frames, at least 2 repetitions). See the module documentation for
/// the rules.
pub fn fold<T: Eq>(frames: &[T]) -> Vec<Segment> {
    fold_with(frames, &FoldOptions::default())
}

/// [`fold`] with explicit options.
pub fn fold_with<T: Eq>(frames: &[T], options: &FoldOptions) -> Vec<Segment> {
    let cycles = cycles(frames, options);
    let mut out = Vec::new();
    let mut next = 0;
    for c in cycles {
        out.extend((next..c.start).map(Segment::Frame));
        out.push(c.into());
        next = c.end();
    }
    out.extend((next..frames.len()).map(Segment::Frame));
    out
}

/// The cycles [`fold_with`] would fold, ordered by `start`, without a segment per plain frame
/// (cheaper on deep stacks when only the recursion matters).
pub fn cycles<T: Eq>(frames: &[T], options: &FoldOptions) -> Vec<Cycle> {
    let options = FoldOptions::new(options.max_period, options.min_repeat);
    let runs = maximal_runs(frames, options.max_period);
    choose(runs, options.min_repeat)
}

/// Expands folded segments back into input indices (each cycle repeats its kept body): the
/// inverse of [`fold`] when the cycle bodies are equal, as `fold` guarantees.
pub fn unfold(segments: &[Segment]) -> Vec<usize> {
    let mut out = Vec::new();
    for s in segments {
        match *s {
            Segment::Frame(i) => out.push(i),
            Segment::Cycle { start, len, repeat } => {
                for _ in 0..repeat {
                    out.extend(start..start + len);
                }
            }
        }
    }
    out
}

/// A maximal periodic interval: `frames[i] == frames[i + period]` for `start <= i < end - period`,
/// with `end - start >= 2 * period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    start: usize,
    end: usize,
    period: usize,
}

/// Finds maximal runs for every period up to `max_period`.
///
/// For period `p`, any run of length `>= 2p` contains a position `i`, multiple of `p`, with
/// `frames[i] == frames[i + p]`: only those positions are probed (`n / p` probes), and a hit is
/// extended both ways. A run of period `p` inside a known run of a period `q` dividing `p` that
/// covers `p` of its frames has period `q` throughout (its frames all repeat that window), so it is
/// contained in the `q` run and skipped: a stack that is one long direct recursion costs `n * H(p)`
/// probes, not `n * p`.
fn maximal_runs<T: Eq>(frames: &[T], max_period: usize) -> Vec<Run> {
    let n = frames.len();
    let max_period = max_period.min(n / 2);
    let mut runs: Vec<Run> = Vec::new();
    // Index + 1 of the first run (hence the smallest period) covering each position; 0 = none.
    let mut cover: Vec<u32> = Vec::new();
    for p in 1..=max_period {
        let mut i = 0;
        while i + p < n {
            if frames[i] != frames[i + p] {
                i += p;
                continue;
            }
            if let Some(r) = cover_of(&cover, &runs, i)
                && p % r.period == 0
                && r.end >= i + p
            {
                // Redundant: skip to the first probe whose window leaves `r`.
                i = next_multiple(r.end + 1 - p, p);
                continue;
            }
            let mut start = i;
            while start > 0 && frames[start - 1] == frames[start - 1 + p] {
                start -= 1;
            }
            let mut end = i + p;
            while end < n && frames[end] == frames[end - p] {
                end += 1;
            }
            if end - start >= 2 * p {
                let run = Run {
                    start,
                    end,
                    period: p,
                };
                runs.push(run);
                mark(&mut cover, n, start..end, runs.len());
            }
            i = next_multiple(end + 1 - p, p);
        }
    }
    runs
}

fn cover_of<'a>(cover: &[u32], runs: &'a [Run], i: usize) -> Option<&'a Run> {
    let id = *cover.get(i)? as usize;
    id.checked_sub(1).and_then(|k| runs.get(k))
}

fn mark(cover: &mut Vec<u32>, n: usize, range: std::ops::Range<usize>, id: usize) {
    if cover.is_empty() {
        cover.resize(n, 0);
    }
    let id = u32::try_from(id).unwrap_or(0);
    for c in &mut cover[range] {
        if *c == 0 {
            *c = id;
        }
    }
}

/// The smallest multiple of `p` that is `>= x`.
fn next_multiple(x: usize, p: usize) -> usize {
    x.div_ceil(p) * p
}

/// Heap entry: a candidate interval of one period; ordered by frames hidden, then smaller period,
/// then nearer the root, then its start (for determinism).
type Candidate = (usize, Reverse<usize>, usize, Reverse<usize>);

fn candidate(start: usize, end: usize, period: usize) -> Candidate {
    let repeat = (end - start) / period;
    (
        repeat.saturating_sub(1) * period,
        Reverse(period),
        end,
        Reverse(start),
    )
}

/// Chooses non-overlapping cycles among `runs`, greedily by frames hidden; a run that overlaps
/// chosen ones is cut to its free pieces, which compete again.
fn choose(runs: Vec<Run>, min_repeat: usize) -> Vec<Cycle> {
    let mut heap: BinaryHeap<Candidate> = runs
        .iter()
        .filter(|r| (r.end - r.start) / r.period >= min_repeat)
        .map(|r| candidate(r.start, r.end, r.period))
        .collect();
    // Chosen intervals, disjoint: start -> end.
    let mut chosen: BTreeMap<usize, Cycle> = BTreeMap::new();
    while let Some((_, Reverse(period), end, Reverse(start))) = heap.pop() {
        let overlapping: Vec<(usize, usize)> = chosen
            .range(..end)
            .rev()
            .map(|(s, c)| (*s, c.end()))
            .take_while(|&(_, e)| e > start)
            .collect();
        if overlapping.is_empty() {
            let repeat = (end - start) / period;
            let start = end - repeat * period;
            chosen.insert(
                start,
                Cycle {
                    start,
                    len: period,
                    repeat,
                },
            );
            continue;
        }
        // Free pieces of [start, end), right to left.
        let mut hi = end;
        for (s, e) in overlapping
            .into_iter()
            .chain(std::iter::once((start, start)))
        {
            let lo = e.max(start);
            if hi > lo && (hi - lo) / period >= min_repeat {
                heap.push(candidate(lo, hi, period));
            }
            hi = hi.min(s);
        }
    }
    chosen.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift64* generator (no test dependency needed).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn cyc(start: usize, len: usize, repeat: usize) -> Segment {
        Segment::Cycle { start, len, repeat }
    }

    /// Checks the invariants of a fold of `frames`: segments tile the input in order, every cycle
    /// body really repeats, and unfolding gives back the input.
    fn check<T: Eq + std::fmt::Debug>(frames: &[T], segments: &[Segment], options: &FoldOptions) {
        let mut next = 0;
        for s in segments {
            match *s {
                Segment::Frame(i) => {
                    assert_eq!(i, next);
                    next += 1;
                }
                Segment::Cycle { start, len, repeat } => {
                    assert_eq!(start, next);
                    assert!(len >= 1 && len <= options.max_period, "{s:?}");
                    assert!(repeat >= options.min_repeat, "{s:?}");
                    for k in 0..repeat {
                        for j in 0..len {
                            assert_eq!(frames[start + k * len + j], frames[start + j], "{s:?}");
                        }
                    }
                    next += len * repeat;
                }
            }
        }
        assert_eq!(next, frames.len());
        let unfolded: Vec<&T> = unfold(segments).into_iter().map(|i| &frames[i]).collect();
        let original: Vec<&T> = frames.iter().collect();
        assert_eq!(unfolded, original);
    }

    /// No stretch of plain frames still holds `min_repeat` back-to-back copies of a body up to
    /// `max_period` long (brute force).
    fn check_nothing_left<T: Eq>(frames: &[T], segments: &[Segment], options: &FoldOptions) {
        let mut plain = vec![false; frames.len()];
        for s in segments {
            if let Segment::Frame(i) = s {
                plain[*i] = true;
            }
        }
        for p in 1..=options.max_period {
            let span = p * options.min_repeat;
            for s in 0..frames.len().saturating_sub(span - 1) {
                if plain[s..s + span].iter().all(|x| *x)
                    && (s..s + span - p).all(|i| frames[i] == frames[i + p])
                {
                    panic!("period {p} repeated at {s} left unfolded: {segments:?}");
                }
            }
        }
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(fold::<u32>(&[]), []);
        assert_eq!(fold(&[7]), [Segment::Frame(0)]);
        assert_eq!(fold(&[1, 2]), [Segment::Frame(0), Segment::Frame(1)]);
    }

    #[test]
    fn direct_recursion() {
        // leaf, f x 5, main
        let s = ["leaf", "f", "f", "f", "f", "f", "main"];
        assert_eq!(
            fold(&s),
            [Segment::Frame(0), cyc(1, 1, 5), Segment::Frame(6)]
        );
    }

    #[test]
    fn mutual_recursion_anchored_at_root() {
        // Innermost first: an odd count leaves one `a` on the leaf side; the body is [b, a]
        // innermost first, i.e. `a -> b` read from the root.
        let s = ["a", "b", "a", "b", "a", "b", "a", "main"];
        assert_eq!(
            fold(&s),
            [Segment::Frame(0), cyc(1, 2, 3), Segment::Frame(7)]
        );
        let even = ["b", "a", "b", "a", "main"];
        assert_eq!(fold(&even), [cyc(0, 2, 2), Segment::Frame(4)]);
    }

    #[test]
    fn six_frame_sprintf_cycle() {
        let body = [
            "main.T.String",
            "fmt.Sprintf",
            "fmt.(*pp).doPrintf",
            "fmt.(*pp).printArg",
            "fmt.(*pp).handleMethods",
        ];
        // Innermost first: handleMethods calls String, which calls Sprintf... Reversed body.
        let mut s = vec!["runtime.morestack"];
        for _ in 0..100 {
            s.extend(body.iter().rev());
        }
        s.extend(["main.main", "runtime.main"]);
        let f = fold(&s);
        assert_eq!(
            f,
            [
                Segment::Frame(0),
                cyc(1, 5, 100),
                Segment::Frame(501),
                Segment::Frame(502),
            ]
        );
        // Read from the root, the kept body starts with what main.main called.
        let c = cycles(&s, &FoldOptions::default());
        assert_eq!(s[c[0].end() - 1], "main.T.String");
        // Six frames when counting `String` at both ends: `String -> Sprintf -> doPrintf ->
        // printArg -> handleMethods -> String`.
        check(&s, &f, &FoldOptions::default());
    }

    #[test]
    fn prefers_the_smallest_period() {
        let s = [1, 1, 1, 1, 1, 1, 1, 1];
        assert_eq!(fold(&s), [cyc(0, 1, 8)]);
        let s = [1, 2, 1, 2, 1, 2, 1, 2];
        assert_eq!(fold(&s), [cyc(0, 2, 4)]);
    }

    #[test]
    fn longer_cycle_beats_inner_short_one() {
        // (a a b) x 4: the period-3 cycle hides 9 frames, the `a a` pairs only 1 each.
        let s = [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1];
        assert_eq!(fold(&s), [cyc(0, 3, 4)]);
    }

    #[test]
    fn short_pair_does_not_steal_from_a_long_run() {
        // Root side: x x y x y x y (innermost first reversed). The run of [x y] hides more.
        let s = [7, 8, 7, 8, 7, 8, 7, 7];
        let f = fold(&s);
        check(&s, &f, &FoldOptions::default());
        assert!(
            f.contains(&cyc(0, 2, 3)) || f.contains(&cyc(1, 2, 3)),
            "{f:?}"
        );
    }

    #[test]
    fn several_cycles_in_one_stack() {
        let mut s = vec![9];
        s.extend([1; 10]);
        s.extend([2, 3].repeat(10));
        s.push(9);
        let f = fold(&s);
        assert_eq!(
            f,
            [
                Segment::Frame(0),
                cyc(1, 1, 10),
                cyc(11, 2, 10),
                Segment::Frame(31)
            ]
        );
    }

    #[test]
    fn max_period_and_min_repeat_bound_the_search() {
        let body: Vec<u32> = (0..70).collect();
        let s = body.repeat(3);
        assert!(fold(&s).iter().all(|x| matches!(x, Segment::Frame(_))));
        let f = fold_with(&s, &FoldOptions::new(70, 2));
        assert_eq!(f, [cyc(0, 70, 3)]);
        let s = [5, 5, 5, 6];
        let f = fold_with(&s, &FoldOptions::new(64, 4));
        assert_eq!(f.len(), 4);
        assert_eq!(fold_with(&s, &FoldOptions::new(64, 3))[0], cyc(0, 1, 3));
    }

    #[test]
    fn random_inputs_round_trip_and_leave_no_repeat() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            let n = rng.below(80) as usize;
            let alphabet = 1 + rng.below(4);
            let frames: Vec<u64> = if round % 3 == 0 {
                // Built from repeated random blocks, as recursions are.
                let mut v = Vec::new();
                while v.len() < n {
                    let len = 1 + rng.below(6) as usize;
                    let block: Vec<u64> = (0..len).map(|_| rng.below(alphabet + 2)).collect();
                    for _ in 0..1 + rng.below(5) {
                        v.extend_from_slice(&block);
                    }
                }
                v
            } else {
                (0..n).map(|_| rng.below(alphabet)).collect()
            };
            let options = FoldOptions::new(1 + rng.below(12) as usize, 2 + rng.below(3) as usize);
            let f = fold_with(&frames, &options);
            check(&frames, &f, &options);
            check_nothing_left(&frames, &f, &options);
            // Deterministic.
            assert_eq!(f, fold_with(&frames, &options));
        }
    }

    #[test]
    fn cycles_match_fold() {
        let s: Vec<u8> = [vec![1, 2], [3, 4, 5].repeat(7), vec![3, 3, 3]].concat();
        let c = cycles(&s, &FoldOptions::default());
        let from_fold: Vec<Segment> = fold(&s)
            .into_iter()
            .filter(|x| matches!(x, Segment::Cycle { .. }))
            .collect();
        let as_segments: Vec<Segment> = c.iter().copied().map(Segment::from).collect();
        assert_eq!(as_segments, from_fold);
        assert_eq!(c[0].end(), c[0].start + 21);
    }

    #[test]
    fn deep_stack_is_fast_enough_to_fold() {
        // Not a timing test: a million-frame mutual recursion folds into one cycle.
        let mut s: Vec<u32> = vec![0];
        s.extend([1u32, 2].repeat(500_000));
        s.push(3);
        let c = cycles(&s, &FoldOptions::default());
        assert_eq!(
            c,
            [Cycle {
                start: 1,
                len: 2,
                repeat: 500_000
            }]
        );
    }
}
