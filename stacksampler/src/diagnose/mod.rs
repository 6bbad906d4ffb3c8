//! Diagnosis: the signs an on-call engineer hunts for by hand, found in a profile.
//!
//! - [`recursion`]: folding repeated cycles in a stack (`[a -> b] x 2500`).
//! - findings: runaway recursion ("chimney"), goroutine pile-up ("wide base").

pub mod recursion;

use serde::Serialize;

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
    /// Machine-readable kind: `runaway_recursion`, `goroutine_pileup`, ...
    pub kind: &'static str,
    /// One plain-language line.
    pub summary: String,
    /// Further lines for the text report (cycle frames, entry frame, ...).
    pub details: Vec<String>,
    /// Structured facts for json.
    pub data: serde_json::Value,
}
