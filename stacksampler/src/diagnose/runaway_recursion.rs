//! Runaway recursion ("chimney"): a cycle repeated at least `min_recursion_repeat` times.
//!
//! Rows are fed deepest first. The first deep row of a recursion is analyzed in full (expanded into
//! function ids and folded, [`cycles::cycles`]) and kept as a [`Family`]; a later row that shares
//! all of its root side with a family but a short tip (fewer expanded frames than the repetition
//! threshold, so the tip cannot hold a new chimney of its own) reuses the family's cycles: the
//! shared part is compared as raw addresses, only the tip is expanded, and each cycle's repetitions
//! are recounted from its root end through the tip. A recursion sampled a thousand times at
//! slightly different depths therefore costs one fold, not a thousand.

use std::collections::{BTreeSet, HashMap};

use super::{
    DiagnoseOptions, Facts, Finding, RunawayRecursion, Severity,
    cycles::{self, Cycle, FoldOptions},
    stack::{ExpandedStack, Expander, FrameInfo, FuncId},
};
use crate::{aggregate::StackStats, goruntime::state::GoroutineState, markers::GAP_MARKER};

/// Machine-readable kind of the finding.
pub const KIND: &str = "runaway_recursion";

/// Families keep their expanded stacks: stop keeping new ones past this many addresses in all.
const MAX_FAMILY_ADDRS: usize = 4 << 20;

/// A fully analyzed stack and the chimneys found in it.
struct Family {
    stack: ExpandedStack,
    /// (index in `Analyzer::chimneys`, where in `stack.funcs`).
    found: Vec<(usize, Cycle)>,
}

/// What makes two observations the same chimney: the cycle body and the entry function.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ChimneyKey {
    /// Function ids of the body in its canonical rotation (see [`canonical_rotation`]): the
    /// same recursion sampled at different points of its cycle is one chimney.
    body: Vec<FuncId>,
    entry: Option<FuncId>,
}

/// The rotation of a cycle body that is smallest lexicographically: `[b, c, a]`, `[c, a, b]` and
/// `[a, b, c]` all become `[a, b, c]`.
fn canonical_rotation(body: &[FuncId]) -> Vec<FuncId> {
    (0..body.len())
        .map(|r| {
            let mut v = body[r..].to_vec();
            v.extend_from_slice(&body[..r]);
            v
        })
        .min()
        .unwrap_or_default()
}

/// One chimney, accumulated over every row it was seen in.
#[derive(Debug)]
struct Chimney {
    /// Cycle frames from the root side (the first is what the entry frame called), with the
    /// file:line of the repetition next to the entry.
    cycle: Vec<FrameInfo>,
    entry: Option<FrameInfo>,
    /// Most repetitions seen in one stack.
    repeat: usize,
    /// Deepest stack seen with it, in frames (addresses).
    depth: usize,
    /// Some stack with it was cut at the capture's frame limit: the depth is a lower bound.
    truncated: bool,
    goids: BTreeSet<u64>,
    states: BTreeSet<GoroutineState>,
    samples: u64,
    rows: usize,
    /// Largest stack bytes in use seen.
    stack_bytes: Option<u64>,
    /// (time ns, stack bytes) observations.
    points: Vec<(u64, u64)>,
}

/// A row as the analyzer needs it.
pub(crate) struct RowFacts<'a> {
    pub(crate) state: GoroutineState,
    pub(crate) stats: &'a StackStats,
}

/// Finds chimneys in rows fed deepest first.
pub(crate) struct Analyzer {
    fold: FoldOptions,
    min_repeat: usize,
    /// Largest number of frames one address expands to (to skip shallow rows unexpanded).
    max_expansion: usize,
    families: Vec<Family>,
    family_addrs: usize,
    index: HashMap<ChimneyKey, usize>,
    chimneys: Vec<Chimney>,
}

impl Analyzer {
    pub(crate) fn new(options: &DiagnoseOptions, expander: &Expander<'_>) -> Self {
        let max_expansion = expander
            .symbols()
            .by_addr
            .values()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
            .max(1);
        let fold = FoldOptions::new(options.max_cycle_len, options.min_recursion_repeat);
        Self {
            min_repeat: fold.min_repeat,
            fold,
            max_expansion,
            families: Vec::new(),
            family_addrs: 0,
            index: HashMap::new(),
            chimneys: Vec::new(),
        }
    }

    /// Whether a stack of `depth` addresses could hold a chimney at all.
    pub(crate) fn could_hold(&self, depth: usize) -> bool {
        depth.saturating_mul(self.max_expansion) >= self.min_repeat
    }

    /// Analyzes one row (`addrs` innermost first). Feed rows deepest first.
    pub(crate) fn add_row(
        &mut self,
        expander: &mut Expander<'_>,
        addrs: &[u64],
        row: RowFacts<'_>,
    ) {
        if !self.could_hold(addrs.len()) {
            return;
        }
        if self.derive(expander, addrs, &row) {
            return;
        }
        let stack = expander.expand(addrs.to_vec());
        let symbols = expander.symbols();
        let mut found = Vec::new();
        // A deep stack completed in user space has a gap (frames counted, not kept) between
        // its head and its tail. The cycle run that ends at the gap is the same recursion as
        // the run that starts after it: count it, and the gap's frames, with the latter.
        let gap_at = addrs
            .iter()
            .position(|a| *a == GAP_MARKER)
            .map(|i| stack.start_of_addr(i));
        let exact_depth = (row.stats.depth.1 as usize).max(addrs.len());
        let cycles = cycles::cycles(&stack.funcs, &self.fold);
        // Runs adjacent to the gap, allowing up to one period of phase shift.
        let head_run = gap_at.and_then(|g| {
            cycles
                .iter()
                .position(|c| c.end() <= g && c.end() + c.len >= g)
        });
        let tail_run = gap_at.and_then(|g| {
            cycles
                .iter()
                .position(|c| c.start > g && c.start <= g + c.len)
        });
        let head_frames = head_run.map_or(0, |h| cycles[h].frames());
        for (i, cycle) in cycles.into_iter().enumerate() {
            let mut repeat = cycle.repeat;
            let gap_frames = row.stats.gap_frames as usize;
            let mut entry_at = cycle.end();
            match (head_run, tail_run) {
                // Counted with the run on the root side of the gap.
                (Some(h), Some(_)) if h == i => continue,
                (Some(_), Some(t)) if t == i => {
                    repeat += (gap_frames + head_frames) / cycle.len;
                }
                // Only the head side repeats enough to be seen: the gap continues it, and the
                // tail's frames from the cycle's body lead to the real entry.
                (Some(h), None) if h == i => {
                    let g = gap_at.unwrap_or(entry_at);
                    let body = &stack.funcs[cycle.start..cycle.start + cycle.len];
                    let mut j = g + 1;
                    while j < stack.funcs.len() && body.contains(&stack.funcs[j]) {
                        j += 1;
                    }
                    repeat += (gap_frames + (j - g - 1)) / cycle.len;
                    entry_at = j;
                }
                (None, Some(t)) if t == i => repeat += gap_frames / cycle.len,
                _ => {}
            }
            let end = cycle.end();
            let outer = end - cycle.len..end;
            let key = ChimneyKey {
                body: canonical_rotation(&stack.funcs[outer.clone()]),
                entry: stack.funcs.get(entry_at).copied(),
            };
            let id = match self.index.get(&key) {
                Some(id) => *id,
                None => {
                    let cycle_frames = outer
                        .rev()
                        .filter_map(|i| stack.frame(symbols, i))
                        .collect();
                    self.chimneys
                        .push(Chimney::new(cycle_frames, stack.frame(symbols, entry_at)));
                    self.index.insert(key, self.chimneys.len() - 1);
                    self.chimneys.len() - 1
                }
            };
            self.chimneys[id].record(repeat, exact_depth, &row);
            found.push((id, cycle));
        }
        if self.family_addrs + addrs.len() <= MAX_FAMILY_ADDRS {
            self.family_addrs += addrs.len();
            self.families.push(Family { stack, found });
        }
    }

    /// Reuses a family's analysis for a row that differs from it only in a short tip; returns
    /// whether it could.
    fn derive(&mut self, expander: &mut Expander<'_>, addrs: &[u64], row: &RowFacts<'_>) -> bool {
        let Some((family, shared)) = self
            .families
            .iter()
            .enumerate()
            .map(|(i, f)| (i, common_suffix(addrs, &f.stack.addrs)))
            .max_by_key(|&(i, c)| (c, std::cmp::Reverse(i)))
        else {
            return false;
        };
        if shared == 0 {
            return false;
        }
        let tip = expander.expand_ids(&addrs[..addrs.len() - shared]);
        if tip.len() >= self.min_repeat {
            return false;
        }
        let fam = &self.families[family];
        let funcs = &fam.stack.funcs;
        let x = fam.stack.start_of_addr(fam.stack.addrs.len() - shared);
        let t = tip.len();
        // Index into the row's expanded frames: the tip, then the family's from `x` on.
        let get = |j: usize| if j < t { tip[j] } else { funcs[x + j - t] };
        let mut seen = Vec::new();
        for &(id, c) in &fam.found {
            let end = c.end();
            if end <= x {
                continue;
            }
            let p = c.len;
            let row_end = t + end - x;
            let mut row_start = t + c.start.max(x) - x;
            // Extend through the tip while the periodicity holds inside the run.
            while row_start > 0
                && row_start - 1 + p < row_end
                && get(row_start - 1) == get(row_start - 1 + p)
            {
                row_start -= 1;
            }
            let repeat = (row_end - row_start) / p;
            if repeat >= self.min_repeat {
                seen.push((id, repeat));
            }
        }
        for (id, repeat) in seen {
            self.chimneys[id].record(repeat, addrs.len(), row);
        }
        true
    }

    /// The findings, one per chimney.
    pub(crate) fn findings(self, options: &DiagnoseOptions) -> Vec<Finding> {
        let mut chimneys = self.chimneys;
        chimneys.sort_by(|a, b| {
            (b.repeat * b.cycle.len())
                .cmp(&(a.repeat * a.cycle.len()))
                .then_with(|| b.depth.cmp(&a.depth))
        });
        chimneys.iter().map(|c| c.finding(options)).collect()
    }
}

/// Number of equal trailing elements (the shared root side of two stacks given innermost first).
fn common_suffix(a: &[u64], b: &[u64]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

impl Chimney {
    fn new(cycle: Vec<FrameInfo>, entry: Option<FrameInfo>) -> Self {
        Self {
            cycle,
            entry,
            repeat: 0,
            depth: 0,
            truncated: false,
            goids: BTreeSet::new(),
            states: BTreeSet::new(),
            samples: 0,
            rows: 0,
            stack_bytes: None,
            points: Vec::new(),
        }
    }

    fn record(&mut self, repeat: usize, depth: usize, row: &RowFacts<'_>) {
        let s = row.stats;
        self.repeat = self.repeat.max(repeat);
        self.depth = self.depth.max(depth);
        self.truncated |= s.truncated;
        self.goids.extend(s.goids.iter().copied());
        self.states.insert(row.state);
        self.samples += s.count;
        self.rows += 1;
        if let Some((lo, hi)) = s.stack_bytes {
            self.stack_bytes = Some(self.stack_bytes.map_or(hi, |b| b.max(hi)));
            self.points.push((s.first_ns, lo));
            if s.last_ns != s.first_ns || lo != hi {
                self.points.push((s.last_ns, hi));
            }
        }
    }

    /// Least-squares growth of stack bytes over time, bytes per second; `None` without two
    /// distinct sample times.
    fn growth_bytes_per_sec(&self) -> Option<f64> {
        let t0 = self.points.iter().map(|p| p.0).min()?;
        let n = self.points.len() as f64;
        let xs: Vec<f64> = self
            .points
            .iter()
            .map(|p| (p.0 - t0) as f64 / 1e9)
            .collect();
        let mean_x = xs.iter().sum::<f64>() / n;
        let mean_y = self.points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
        let mut sxx = 0.0;
        let mut sxy = 0.0;
        for (x, p) in xs.iter().zip(&self.points) {
            sxx += (x - mean_x) * (x - mean_x);
            sxy += (x - mean_x) * (p.1 as f64 - mean_y);
        }
        (sxx > 0.0).then(|| sxy / sxx)
    }

    fn finding(&self, options: &DiagnoseOptions) -> Finding {
        let limit = options.stack_limit();
        let growth = self.growth_bytes_per_sec();
        let fraction = self.stack_bytes.map(|b| b as f64 / limit.bytes as f64);
        let seconds_to_limit = match (self.stack_bytes, growth) {
            (Some(b), Some(g)) if g > 0.0 => Some(limit.bytes.saturating_sub(b) as f64 / g),
            _ => None,
        };
        let near = fraction.is_some_and(|f| f >= options.critical_stack_fraction);
        let soon = seconds_to_limit.is_some_and(|s| s <= options.critical_horizon_secs);
        let severity = if near || soon {
            Severity::Critical
        } else {
            Severity::Warning
        };

        Finding {
            severity,
            facts: Facts::RunawayRecursion(RunawayRecursion {
                cycle: self.cycle.clone(),
                repeat: self.repeat,
                cycle_frames: self.repeat * self.cycle.len(),
                entry: self.entry.clone(),
                depth: self.depth,
                depth_exact: !self.truncated,
                stack_bytes: self.stack_bytes,
                growth_bytes_per_sec: growth,
                limit_bytes: limit.bytes,
                limit_from_target: limit.from_target,
                seconds_to_limit,
                goids: self.goids.clone(),
                states: self.states.clone(),
                samples: self.samples,
                rows: self.rows,
            }),
        }
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::canonical_rotation;

    #[test]
    fn rotations_of_one_cycle_share_a_key() {
        assert_eq!(canonical_rotation(&[5, 2, 9]), [2, 9, 5]);
        assert_eq!(canonical_rotation(&[9, 5, 2]), [2, 9, 5]);
        assert_eq!(canonical_rotation(&[2, 9, 5]), [2, 9, 5]);
        assert!(canonical_rotation(&[]).is_empty());
    }
}
