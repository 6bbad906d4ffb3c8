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

use serde::Serialize;

use crate::{aggregate::Profile, symbolize::Symbols};

pub use pileup::KIND as GOROUTINE_PILEUP;
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

/// One finding, with a one-line summary for the on-call engineer.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Machine-readable kind: [`RUNAWAY_RECURSION`], [`GOROUTINE_PILEUP`].
    pub kind: &'static str,
    /// One plain-language line.
    pub summary: String,
    /// Further lines for the text report (cycle frames, entry frame, ...).
    pub details: Vec<String>,
    /// Structured facts for json.
    ///
    /// `runaway_recursion`: `cycle` (frames `{function, file, line}` from the root side), `repeat`,
    /// `cycle_frames`, `entry` (frame or null), `depth` (frames), `depth_exact`, `stack_bytes`,
    /// `growth_bytes_per_sec`, `limit_bytes`, `limit_from_target`, `seconds_to_limit`, `goids`,
    /// `states`, `samples` (unknown values are null).
    ///
    /// `goroutine_pileup`: `stack` (frames, innermost first), `stack_complete`, `goroutines`,
    /// `states` (state -> goroutines), `waitreasons`, `samples`, `goids` (at most 1000),
    /// `goids_truncated`.
    ///
    /// `goroutine_growth` (`--wall`): `state`, `status`, `first`, `last`, `peak`, `span_s`,
    /// `rate_per_s`, `snapshots`, `blocking` and `created_by` (frames or null), `stack`.
    ///
    /// `all_goroutines_blocked` (`--wall`): `goroutines`, `snapshots`, `from_s`, `to_s`,
    /// `wait_reasons` (`{wait_reason, goroutines}`).
    pub data: serde_json::Value,
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
            .then_with(|| kind_rank(a.kind).cmp(&kind_rank(b.kind)))
    });
    findings
}

fn kind_rank(kind: &str) -> u8 {
    match kind {
        RUNAWAY_RECURSION => 0,
        GOROUTINE_PILEUP => 1,
        snapshots::GROWTH => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests;
