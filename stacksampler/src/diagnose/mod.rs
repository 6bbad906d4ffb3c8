//! Diagnosis: the signs an on-call engineer hunts for by hand, found in a profile.
//!
//! - [`recursion`]: folding repeated cycles in a stack (`[a -> b] x 2500`).
//! - findings ([`diagnose`]): runaway recursion ("chimney", kind `runaway_recursion`), goroutine
//!   pile-up ("wide base", kind `goroutine_pileup`).
//!
//! Cycles are detected on function identity: each address is expanded into its inline frames and
//! each frame compared by function name only, so `recA -> recB` cycles whose calls sit on
//! different lines still fold (see [`recursion`]). Every row's addresses are read from the stack
//! table once; deep rows of one recursion share one full analysis (see the `runaway_recursion` module), so a
//! million-frame stack is expanded once, not once per sample.

pub mod cycles;
mod pileup;
mod runaway_recursion;
mod snapshots;
mod stack;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::{aggregate::Profile, goruntime::state::GoroutineState, symbolize::Symbols};

pub use pileup::{KIND as GOROUTINE_PILEUP, is_runtime};
pub use runaway_recursion::KIND as RUNAWAY_RECURSION;
pub use snapshots::{ALL_BLOCKED, GROWTH as GOROUTINE_GROWTH};
pub use stack::FrameInfo;

/// How urgent a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One finding: how urgent it is and what was found. The library returns the facts; the
/// report layer words them (`report::findings`: the one-line summary and detail lines of the
/// text report, and the json object `{severity, kind, summary, details, data}` with the facts as
/// `data`).
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub facts: Facts,
}

/// The facts of a finding, one typed struct per kind; each serializes as the json `data`
/// object of its kind (docs/json-format.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Facts {
    /// [`RUNAWAY_RECURSION`].
    RunawayRecursion(RunawayRecursion),
    /// [`GOROUTINE_PILEUP`].
    GoroutinePileup(GoroutinePileup),
    /// [`GOROUTINE_GROWTH`] (`--wall`).
    GoroutineGrowth(GoroutineGrowth),
    /// [`ALL_BLOCKED`] (`--wall`).
    AllGoroutinesBlocked(AllGoroutinesBlocked),
}

impl Finding {
    /// Machine-readable kind: [`RUNAWAY_RECURSION`], [`GOROUTINE_PILEUP`],
    /// [`GOROUTINE_GROWTH`], [`ALL_BLOCKED`].
    pub fn kind(&self) -> &'static str {
        match self.facts {
            Facts::RunawayRecursion(_) => RUNAWAY_RECURSION,
            Facts::GoroutinePileup(_) => GOROUTINE_PILEUP,
            Facts::GoroutineGrowth(_) => GOROUTINE_GROWTH,
            Facts::AllGoroutinesBlocked(_) => ALL_BLOCKED,
        }
    }
}

/// A recursion repeating one cycle of functions many times, measured against the stack limit.
/// Unknown values are `None` (json null).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunawayRecursion {
    /// The cycle's frames, from the root side.
    pub cycle: Vec<FrameInfo>,
    pub repeat: usize,
    /// Frames in the repeated cycles (`repeat` x the cycle's length).
    pub cycle_frames: usize,
    /// The frame that entered the recursion, when the stack's root side was captured.
    pub entry: Option<FrameInfo>,
    /// Stack depth in frames (at least this many when not `depth_exact`).
    pub depth: usize,
    pub depth_exact: bool,
    pub stack_bytes: Option<u64>,
    pub growth_bytes_per_sec: Option<f64>,
    pub limit_bytes: u64,
    /// The limit was read from the target (`runtime.maxstacksize`), not Go's default.
    pub limit_from_target: bool,
    pub seconds_to_limit: Option<f64>,
    pub goids: BTreeSet<u64>,
    pub states: BTreeSet<GoroutineState>,
    pub samples: u64,
    /// Distinct stacks (profile rows) the recursion was seen in.
    #[serde(skip)]
    pub rows: usize,
}

/// Many distinct goroutines seen with the same stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutinePileup {
    /// The shared stack, innermost first.
    pub stack: Vec<FrameInfo>,
    /// The whole stacks are the same, not only their innermost `compared_frames`.
    pub stack_complete: bool,
    pub goroutines: usize,
    /// Goroutines per state (json: an object keyed by state name).
    #[serde(serialize_with = "states_by_name")]
    pub states: Vec<(GoroutineState, usize)>,
    /// Raw wait reasons seen.
    pub waitreasons: BTreeSet<u8>,
    pub samples: u64,
    /// At most [`pileup::MAX_GOIDS_LISTED`] goroutine ids.
    pub goids: Vec<u64>,
    pub goids_truncated: bool,
    /// Addresses compared (the innermost ones) when not `stack_complete`.
    #[serde(skip)]
    pub compared_frames: usize,
}

/// A group of goroutines (one state, blocking stack and creation site) growing from snapshot to
/// snapshot: a leak.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GoroutineGrowth {
    /// State name.
    pub state: &'static str,
    /// The wait reason's name when waiting, else the state's.
    pub status: String,
    pub first: u32,
    pub last: u32,
    pub peak: u32,
    pub span_s: f64,
    pub rate_per_s: f64,
    pub snapshots: usize,
    /// Where it blocks: the innermost frame outside the Go runtime, else the innermost.
    pub blocking: Option<FrameInfo>,
    /// The `go` statement that creates its goroutines.
    pub created_by: Option<FrameInfo>,
    /// Innermost first.
    pub stack: Vec<FrameInfo>,
}

/// Consecutive snapshots in which every user goroutine was waiting.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AllGoroutinesBlocked {
    pub goroutines: u32,
    /// Consecutive all-blocked snapshots.
    pub snapshots: usize,
    /// Seconds into the run of the first and the last of them.
    pub from_s: f64,
    pub to_s: f64,
    /// Goroutines per wait reason in the last of them, most first.
    pub wait_reasons: Vec<WaitReasonCount>,
    /// Snapshots all blocked over the whole run, and snapshots taken.
    #[serde(skip)]
    pub blocked_snapshots_in_run: usize,
    #[serde(skip)]
    pub snapshots_in_run: usize,
}

/// Goroutines waiting for one reason.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaitReasonCount {
    pub wait_reason: String,
    pub goroutines: u32,
}

/// Goroutine counts per state as a json object keyed by state name (sorted by name).
fn states_by_name<S: serde::Serializer>(
    states: &[(GoroutineState, usize)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let by_name: std::collections::BTreeMap<&str, usize> =
        states.iter().map(|(s, n)| (s.name(), *n)).collect();
    by_name.serialize(serializer)
}

/// Go's default maximum goroutine stack size on 64-bit targets (`runtime.maxstacksize`, 1e9 bytes: 953.7 MiB).
pub const DEFAULT_MAX_STACK_BYTES: u64 = 1_000_000_000;

/// Thresholds of the diagnosis. Every field has a documented default ([`Default`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DiagnoseOptions {
    /// Repetitions of a cycle that make a runaway recursion. Default 50.
    pub min_recursion_repeat: usize,
    /// Longest cycle body looked for, in frames. Default [`cycles::MAX_PERIOD`] (64).
    pub max_cycle_len: usize,
    /// The target's real `runtime.maxstacksize` in bytes, when the caller could read it; `None`
    /// means Go's default ([`DEFAULT_MAX_STACK_BYTES`]).
    pub max_stack_bytes: Option<u64>,
    /// A recursion using at least this fraction of the stack limit is critical. Default 0.5.
    pub critical_stack_fraction: f64,
    /// A recursion growing fast enough to reach the limit within this many seconds is critical.
    /// Default 600.
    pub critical_horizon_secs: f64,
    /// Distinct goroutines with the same stack that make a pile-up. Default 100 (ten times as
    /// many make it critical).
    pub pileup_min_goroutines: usize,
    /// Stacks are "the same" for a pile-up when their innermost this-many frames (addresses)
    /// are; `None` compares whole stacks. Default `Some(16)`.
    pub pileup_frames: Option<usize>,
    /// Goroutines a group must gain between the first and the last wall-clock snapshot to be a
    /// growth (leak) finding. Default 10.
    pub growth_min_goroutines: usize,
    /// Consecutive wall-clock snapshots with every goroutine blocked that make a finding.
    /// Default 3.
    pub all_blocked_min_snapshots: usize,
}

impl Default for DiagnoseOptions {
    fn default() -> Self {
        Self {
            min_recursion_repeat: 50,
            max_cycle_len: cycles::MAX_PERIOD,
            max_stack_bytes: None,
            critical_stack_fraction: 0.5,
            critical_horizon_secs: 600.0,
            pileup_min_goroutines: 100,
            pileup_frames: Some(16),
            growth_min_goroutines: 10,
            all_blocked_min_snapshots: 3,
        }
    }
}

/// The stack limit a diagnosis measures against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackLimit {
    pub bytes: u64,
    /// Read from the target (`runtime.maxstacksize`), not Go's default.
    pub from_target: bool,
}

impl DiagnoseOptions {
    /// The stack limit in effect.
    pub fn stack_limit(&self) -> StackLimit {
        match self.max_stack_bytes {
            Some(bytes) if bytes > 0 => StackLimit {
                bytes,
                from_target: true,
            },
            _ => StackLimit {
                bytes: DEFAULT_MAX_STACK_BYTES,
                from_target: false,
            },
        }
    }
}

/// Diagnoses a profile: findings most severe first (then runaway recursions before pile-ups,
/// then the larger first).
pub fn diagnose(profile: &Profile, symbols: &Symbols, options: &DiagnoseOptions) -> Vec<Finding> {
    diagnose_run(profile, None, symbols, options)
}

/// [`diagnose`], plus the findings over a `--wall` run's snapshots (growth, every goroutine
/// blocked) when it has them.
pub fn diagnose_run(
    profile: &Profile,
    snapshots: Option<&crate::snapshots::SnapshotHistory>,
    symbols: &Symbols,
    options: &DiagnoseOptions,
) -> Vec<Finding> {
    let mut expander = stack::Expander::new(symbols);
    let mut chimneys = runaway_recursion::Analyzer::new(options, &expander);
    let mut piles = pileup::PileUps::new(options);
    // Deepest first, so that shallower samples of a recursion reuse the deepest one's analysis.
    let mut rows: Vec<_> = profile.stacks.iter().collect();
    rows.sort_by(|a, b| {
        let (da, db) = (
            profile.table.depth(a.0.stack),
            profile.table.depth(b.0.stack),
        );
        db.cmp(&da).then_with(|| a.0.cmp(b.0))
    });
    for (key, stats) in rows {
        let addrs = profile.table.frames(key.stack);
        piles.add_row(&addrs, key.state, stats);
        chimneys.add_row(
            &mut expander,
            &addrs,
            runaway_recursion::RowFacts {
                state: key.state,
                stats,
            },
        );
    }
    let mut findings = chimneys.findings(options);
    findings.extend(piles.findings(symbols, options));
    if let Some(history) = snapshots {
        findings.extend(snapshots::findings(history, symbols, options));
    }
    // Stable: within a kind, each module's own order (largest first) is kept.
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| kind_rank(a.kind()).cmp(&kind_rank(b.kind())))
    });
    findings
}

fn kind_rank(kind: &str) -> u8 {
    match kind {
        RUNAWAY_RECURSION => 0,
        GOROUTINE_PILEUP => 1,
        GOROUTINE_GROWTH => 2,
        _ => 3,
    }
}

/// A finding's facts as its json `data` object, for assertions.
#[cfg(test)]
pub(crate) fn data(finding: &Finding) -> serde_json::Value {
    serde_json::to_value(&finding.facts).expect("facts serialize")
}

#[cfg(test)]
mod tests;
