//! Pile-ups in a dump: many goroutines blocked at one line, created at one site.
//!
//! Goroutines are grouped by (status, blocking call, creation site): the blocking call is the
//! innermost frame Go's traceback would show (the first outside the runtime), so goroutines
//! parked at the same line through different callers (a recursion of varying depth, several
//! handlers) count together. A group of at least
//! [`DiagnoseOptions::pileup_min_goroutines`](crate::diagnose::DiagnoseOptions) goroutines is a
//! finding of kind [`GOROUTINE_PILEUP`] (critical at ten times as many), largest first.

use std::collections::HashMap;

use serde_json::json;

use crate::diagnose::{DiagnoseOptions, Finding, GOROUTINE_PILEUP, Severity};

use super::{Dump, DumpFrame, Goroutine, text};

/// A pile-up this many times the threshold is critical.
const CRITICAL_FACTOR: usize = 10;
/// Nanoseconds per second.
const NS_PER_S: f64 = 1e9;

/// Goroutines sharing a blocking call and a creation site.
struct Group<'a> {
    first: &'a Goroutine,
    blocking: Option<&'a DumpFrame>,
    count: usize,
    longest_wait_ns: Option<u64>,
}

/// The innermost frame Go would show.
fn blocking_frame(g: &Goroutine) -> Option<&DumpFrame> {
    text::shown(g.stack.frames.iter()).into_iter().next()
}

fn place(f: Option<&DumpFrame>) -> String {
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

/// Pile-ups among the dump's goroutines (runtime goroutines left out), largest first.
pub fn find(dump: &Dump, options: &DiagnoseOptions) -> Vec<Finding> {
    type Key<'a> = (&'a str, Option<u64>, Option<(&'a str, Option<u32>)>);
    let mut index: HashMap<Key<'_>, usize> = HashMap::new();
    let mut groups: Vec<Group<'_>> = Vec::new();
    for g in dump.goroutines.iter().filter(|g| !g.system) {
        let blocking = blocking_frame(g);
        let key = (
            g.status_text.as_str(),
            blocking.map(|f| f.pc),
            g.created_by.as_ref().map(|c| (&*c.function, c.line)),
        );
        let i = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                first: g,
                blocking,
                count: 0,
                longest_wait_ns: None,
            });
            groups.len() - 1
        });
        let group = &mut groups[i];
        group.count += 1;
        group.longest_wait_ns = group.longest_wait_ns.max(g.waiting_ns);
    }
    groups.retain(|g| g.count >= options.pileup_min_goroutines);
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
        .into_iter()
        .map(|group| {
            let g = group.first;
            let created = g.created_by.as_ref().map(|c| {
                format!(
                    "{} ({}:{})",
                    c.function,
                    c.file.as_deref().unwrap_or("?"),
                    c.line.unwrap_or(0)
                )
            });
            let waited = group
                .longest_wait_ns
                .map(|ns| format!(", waiting up to {:.0} s", ns as f64 / NS_PER_S))
                .unwrap_or_default();
            let summary = format!(
                "{} goroutines in {} at {}{}{}",
                group.count,
                g.status_text,
                place(group.blocking),
                created
                    .as_ref()
                    .map(|c| format!(", created by {c}"))
                    .unwrap_or_default(),
                waited
            );
            let severity = if group.count >= options.pileup_min_goroutines * CRITICAL_FACTOR {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let frame = |f: &DumpFrame| {
                json!({"function": &*f.function, "file": f.file.as_deref(), "line": f.line})
            };
            Finding {
                severity,
                kind: GOROUTINE_PILEUP,
                summary,
                details: text::shown(g.stack.frames.iter())
                    .iter()
                    .map(|f| place(Some(f)))
                    .collect(),
                data: json!({
                    "goroutines": group.count,
                    "state": g.state,
                    "status": &g.status_text,
                    "wait_reason": &g.wait_reason,
                    "blocking": group.blocking.map(frame),
                    "created_by": &g.created_by,
                    "longest_wait_ns": group.longest_wait_ns,
                    "example_goid": g.goid,
                }),
            }
        })
        .collect()
}
