//! Goroutine pile-up ("wide base"): many distinct goroutines seen with the same stack.
//!
//! Stacks are grouped by their innermost [`DiagnoseOptions::pileup_frames`] addresses (the whole
//! stack when `None`), so goroutines parked at the same place through slightly different callers
//! count together. Goroutines are counted by id: a row without goroutine information adds none.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{DiagnoseOptions, Facts, Finding, GoroutinePileup, Severity, stack::FrameInfo};
use crate::{aggregate::StackStats, goruntime::state::GoroutineState, symbolize::Symbols};

/// Machine-readable kind of the finding.
pub const KIND: &str = "goroutine_pileup";

/// At most this many goroutine ids are listed in a finding's data.
pub const MAX_GOIDS_LISTED: usize = 1000;

#[derive(Debug, Default)]
struct Group {
    goids: BTreeSet<u64>,
    /// Goroutine ids seen per state.
    states: BTreeMap<GoroutineState, BTreeSet<u64>>,
    waitreasons: BTreeSet<u8>,
    samples: u64,
    /// Deepest full stack of the group, in frames.
    depth: usize,
}

/// Groups rows by stack.
pub(crate) struct PileUps {
    key_frames: Option<usize>,
    groups: HashMap<Vec<u64>, Group>,
}

impl PileUps {
    pub(crate) fn new(options: &DiagnoseOptions) -> Self {
        Self {
            key_frames: options.pileup_frames,
            groups: HashMap::new(),
        }
    }

    /// Adds one row (`addrs` innermost first).
    pub(crate) fn add_row(&mut self, addrs: &[u64], state: GoroutineState, stats: &StackStats) {
        if stats.goids.is_empty() {
            return;
        }
        let k = self.key_frames.map_or(addrs.len(), |k| k.min(addrs.len()));
        let g = self.groups.entry(addrs[..k].to_vec()).or_default();
        g.goids.extend(stats.goids.iter().copied());
        g.states
            .entry(state)
            .or_default()
            .extend(stats.goids.iter().copied());
        g.waitreasons.extend(stats.waitreasons.iter().copied());
        g.samples += stats.count;
        g.depth = g.depth.max(addrs.len());
    }

    /// One finding per group with at least `pileup_min_goroutines` goroutines.
    pub(crate) fn findings(self, symbols: &Symbols, options: &DiagnoseOptions) -> Vec<Finding> {
        let min = options.pileup_min_goroutines.max(1);
        let mut out: Vec<(usize, Finding)> = self
            .groups
            .into_iter()
            .filter(|(_, g)| g.goids.len() >= min)
            .map(|(key, g)| (g.goids.len(), finding(&key, &g, symbols, options)))
            .collect();
        // Largest first; equal ones in the order of their stacks, from the innermost frame.
        out.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| pileup_stack(&a.1).cmp(pileup_stack(&b.1)))
        });
        out.into_iter().map(|(_, f)| f).collect()
    }
}

fn pileup_stack(f: &Finding) -> &[FrameInfo] {
    match &f.facts {
        Facts::GoroutinePileup(p) => &p.stack,
        _ => &[],
    }
}

/// The frames of `addrs` (innermost first), inline frames expanded.
pub(super) fn expanded_frames(addrs: &[u64], symbols: &Symbols) -> Vec<FrameInfo> {
    addrs
        .iter()
        .flat_map(|a| {
            symbols
                .frames(*a)
                .iter()
                .map(FrameInfo::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn finding(key: &[u64], g: &Group, symbols: &Symbols, options: &DiagnoseOptions) -> Finding {
    let n = g.goids.len();
    let severity = if n >= options.pileup_min_goroutines.saturating_mul(10) {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Finding {
        severity,
        facts: Facts::GoroutinePileup(GoroutinePileup {
            stack: expanded_frames(key, symbols),
            stack_complete: key.len() >= g.depth,
            goroutines: n,
            states: g.states.iter().map(|(s, ids)| (*s, ids.len())).collect(),
            waitreasons: g.waitreasons.clone(),
            samples: g.samples,
            goids: g.goids.iter().take(MAX_GOIDS_LISTED).copied().collect(),
            goids_truncated: n > MAX_GOIDS_LISTED,
            compared_frames: key.len(),
        }),
    }
}

/// Whether `function` is of the Go runtime or the standard library's blocking layers (never the
/// telling frame of a stack).
pub fn is_runtime(function: &str) -> bool {
    function.starts_with("runtime.")
        || function.starts_with("internal/")
        || function.starts_with("sync.")
        || function.starts_with("syscall.")
}
