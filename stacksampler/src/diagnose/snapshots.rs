//! Findings over the wall-clock snapshots of a `record --wall` run ([`SnapshotHistory`]):
//!
//! - goroutine growth (kind [`GROWTH`]): one group of goroutines (same state, blocking stack and
//!   creation site) that grew between the first and the last snapshot by at least
//!   [`DiagnoseOptions::growth_min_goroutines`], rising far more often than falling: a leak,
//!   with its rate, where it blocks and where its goroutines are created;
//! - every goroutine blocked (kind [`ALL_BLOCKED`]): at least
//!   [`DiagnoseOptions::all_blocked_min_snapshots`] consecutive snapshots in which every user
//!   goroutine was waiting, none running, runnable or in a system call (a deadlock the runtime
//!   cannot see because a timer or the network poller keeps it alive, or an idle program).
//!
//! Pile-ups (many goroutines at one place at once) come from the profile's wall rows, through
//! the same finding as CPU rows ([`super::pileup`]).

use super::{
    AllGoroutinesBlocked, DiagnoseOptions, Facts, Finding, GoroutineGrowth, Severity,
    WaitReasonCount,
    pileup::{expanded_frames, is_runtime},
    stack::FrameInfo,
};
use crate::{
    goruntime::state::GoroutineState,
    snapshots::{GroupKey, SnapshotHistory},
    symbolize::Symbols,
};

/// Machine-readable kind of the growth finding.
pub const GROWTH: &str = "goroutine_growth";
/// Machine-readable kind of the all-blocked finding.
pub const ALL_BLOCKED: &str = "all_goroutines_blocked";

/// A group whose count fell in more than one in this many of its changes is not steadily
/// growing (a pool that breathes, not a leak).
const MAX_FALLS_PER_RISE: usize = 4;
/// Nanoseconds per second.
const NS_PER_S: f64 = 1e9;

/// The findings of `history`, growth (fastest first) then all-blocked.
pub fn findings(
    history: &SnapshotHistory,
    symbols: &Symbols,
    options: &DiagnoseOptions,
) -> Vec<Finding> {
    let mut out = growth(history, symbols, options);
    out.extend(all_blocked(history, options));
    out
}

/// One growing group, measured.
struct Growth<'a> {
    key: &'a GroupKey,
    first: u32,
    last: u32,
    peak: u32,
    span_s: f64,
    rate_per_s: f64,
}

fn growth(history: &SnapshotHistory, symbols: &Symbols, options: &DiagnoseOptions) -> Vec<Finding> {
    let snaps = &history.snapshots;
    let (Some(first_snap), Some(last_snap)) = (snaps.first(), snaps.last()) else {
        return Vec::new();
    };
    let span_s = last_snap.time_ns.saturating_sub(first_snap.time_ns) as f64 / NS_PER_S;
    if snaps.len() < 2 || span_s <= 0.0 {
        return Vec::new();
    }
    let n = snaps.len();
    let mut growing: Vec<Growth<'_>> = history
        .groups
        .iter()
        .filter_map(|(key, series)| {
            let count = |i| SnapshotHistory::count(series, i);
            let (first, last) = (count(0), count(n - 1));
            let grew = last.saturating_sub(first) as usize;
            if grew < options.growth_min_goroutines.max(1) {
                return None;
            }
            let (mut rises, mut falls) = (0usize, 0usize);
            for i in 1..n {
                match count(i).cmp(&count(i - 1)) {
                    std::cmp::Ordering::Greater => rises += 1,
                    std::cmp::Ordering::Less => falls += 1,
                    std::cmp::Ordering::Equal => {}
                }
            }
            if falls * MAX_FALLS_PER_RISE > rises {
                return None;
            }
            Some(Growth {
                key,
                first,
                last,
                peak: (0..n).map(count).max().unwrap_or(last),
                span_s,
                rate_per_s: grew as f64 / span_s,
            })
        })
        .collect();
    growing.sort_by(|a, b| {
        b.rate_per_s
            .total_cmp(&a.rate_per_s)
            .then_with(|| a.key.cmp(b.key))
    });
    growing
        .into_iter()
        .map(|g| growth_finding(&g, history, symbols))
        .collect()
}

fn growth_finding(g: &Growth<'_>, history: &SnapshotHistory, symbols: &Symbols) -> Finding {
    let stack = expanded_frames(&g.key.frames, symbols);
    let blocking = stack
        .iter()
        .find(|f| !is_runtime(&f.function))
        .or(stack.first())
        .cloned();
    let created_by = g
        .key
        .creator
        .and_then(|a| symbols.frames(a).first().map(FrameInfo::from));
    let status = if g.key.state == GoroutineState::Waiting && g.key.waitreason != 0 {
        history.reason_name(g.key.waitreason)
    } else {
        g.key.state.name().to_owned()
    };
    Finding {
        severity: Severity::Warning,
        facts: Facts::GoroutineGrowth(GoroutineGrowth {
            state: g.key.state.name(),
            status,
            first: g.first,
            last: g.last,
            peak: g.peak,
            span_s: g.span_s,
            rate_per_s: g.rate_per_s,
            snapshots: history.snapshots.len(),
            blocking,
            created_by,
            stack,
        }),
    }
}

fn all_blocked(history: &SnapshotHistory, options: &DiagnoseOptions) -> Vec<Finding> {
    // The longest run of consecutive all-blocked snapshots (the latest of equal ones).
    let (mut best, mut run_start) = (None::<(usize, usize)>, None::<usize>);
    for (i, s) in history.snapshots.iter().enumerate() {
        if s.all_blocked() {
            let start = *run_start.get_or_insert(i);
            if best.is_none_or(|(a, b)| b - a <= i - start) {
                best = Some((start, i));
            }
        } else {
            run_start = None;
        }
    }
    let Some((from, to)) = best else {
        return Vec::new();
    };
    let snapshots = to - from + 1;
    if snapshots < options.all_blocked_min_snapshots.max(1) {
        return Vec::new();
    }
    let (start, end) = (&history.snapshots[from], &history.snapshots[to]);
    let t0 = history.snapshots[0].time_ns;
    let at = |ns: u64| ns.saturating_sub(t0) as f64 / NS_PER_S;
    vec![Finding {
        severity: Severity::Warning,
        facts: Facts::AllGoroutinesBlocked(AllGoroutinesBlocked {
            goroutines: end.goroutines,
            snapshots,
            from_s: at(start.time_ns),
            to_s: at(end.time_ns),
            wait_reasons: end
                .reasons
                .iter()
                .map(|(raw, n)| WaitReasonCount {
                    wait_reason: history.reason_name(*raw),
                    goroutines: *n,
                })
                .collect(),
            blocked_snapshots_in_run: history.snapshots.iter().filter(|s| s.all_blocked()).count(),
            snapshots_in_run: history.snapshots.len(),
        }),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{diagnose::data, report::findings::summary, snapshots::SnapshotStates};

    fn snap(i: u64, goroutines: u32, blocked: u32) -> SnapshotStates {
        SnapshotStates {
            time_ns: i * 100_000_000,
            goroutines,
            blocked,
            reasons: vec![(7, blocked)],
        }
    }

    fn key(creator: u64) -> GroupKey {
        GroupKey {
            state: GoroutineState::Waiting,
            waitreason: 7,
            frames: vec![10, 20],
            creator: Some(creator),
        }
    }

    #[test]
    fn a_steadily_growing_group_is_a_leak_a_breathing_one_is_not() {
        let mut h = SnapshotHistory::default();
        for i in 0..11 {
            h.begin(snap(i, 100, 50));
        }
        h.reason_names.insert(7, "chan send".into());
        // +10 per snapshot for 1 s; one plateau.
        let leak: Vec<u32> = (0..11).map(|i| if i == 5 { 40 } else { i * 10 }).collect();
        h.groups.insert(key(1), leak);
        // Up and down.
        h.groups
            .insert(key(2), vec![10, 30, 10, 30, 10, 30, 10, 30, 10, 30, 40]);
        // Grows by less than the threshold.
        h.groups
            .insert(key(3), vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]);
        let f = growth(&h, &Symbols::default(), &DiagnoseOptions::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind(), GROWTH);
        assert_eq!(data(&f[0])["first"], 0);
        assert_eq!(data(&f[0])["last"], 100);
        assert!((data(&f[0])["rate_per_s"].as_f64().unwrap() - 100.0).abs() < 1e-6);
        assert!(summary(&f[0]).contains("chan send"), "{}", summary(&f[0]));
    }

    #[test]
    fn the_longest_all_blocked_run_is_reported() {
        let mut h = SnapshotHistory::default();
        let blocked = [false, true, true, false, true, true, true, true, false];
        for (i, b) in blocked.iter().enumerate() {
            h.begin(snap(i as u64, 4, if *b { 4 } else { 3 }));
        }
        let f = all_blocked(&h, &DiagnoseOptions::default());
        assert_eq!(f.len(), 1);
        assert_eq!(data(&f[0])["snapshots"], 4);
        assert!((data(&f[0])["from_s"].as_f64().unwrap() - 0.4).abs() < 1e-9);
        let short = SnapshotHistory {
            snapshots: h.snapshots[..4].to_vec(),
            ..Default::default()
        };
        assert!(all_blocked(&short, &DiagnoseOptions::default()).is_empty());
    }
}
