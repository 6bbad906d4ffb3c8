//! The dump's findings in words: the one-line summary (stderr, text) and the detail lines, and
//! the json object `{severity, kind, summary, details, data}` (the facts as `data`).

use serde::Serialize;

use crate::{diagnose::FrameInfo, report::findings::JsonFinding};

use super::pileup::DumpFinding;

/// Nanoseconds per second.
const NS_PER_S: f64 = 1e9;

/// `function (file:line)`, `?` and 0 for what is unknown, as the dump prints frames.
fn place(f: Option<&FrameInfo>) -> String {
    f.map_or_else(
        || "an unknown place".to_owned(),
        |f| {
            format!(
                "{} ({}:{})",
                f.function,
                f.file.as_deref().unwrap_or("?"),
                f.line.unwrap_or(0)
            )
        },
    )
}

/// The finding in one line.
pub fn summary(finding: &DumpFinding) -> String {
    let p = &finding.pileup;
    let created = p
        .created_by
        .as_ref()
        .map(|c| {
            format!(
                ", created by {} ({}:{})",
                c.function,
                c.file.as_deref().unwrap_or("?"),
                c.line.unwrap_or(0)
            )
        })
        .unwrap_or_default();
    let waited = p
        .longest_wait_ns
        .map(|ns| format!(", waiting up to {:.0} s", ns as f64 / NS_PER_S))
        .unwrap_or_default();
    format!(
        "{} goroutines in {} at {}{created}{waited}",
        p.goroutines,
        p.status,
        place(p.blocking.as_ref())
    )
}

/// The frames Go's traceback shows of the group's first goroutine, one line each.
pub fn details(finding: &DumpFinding) -> Vec<String> {
    finding
        .pileup
        .shown
        .iter()
        .map(|f| place(Some(f)))
        .collect()
}

impl Serialize for DumpFinding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JsonFinding {
            severity: self.severity,
            kind: self.kind(),
            summary: summary(self),
            details: details(self),
            data: &self.pileup,
        }
        .serialize(serializer)
    }
}
