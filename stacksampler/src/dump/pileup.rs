//! Pile-ups in a dump: many goroutines blocked at one line, created at one site.
//!
//! Goroutines are grouped by (status, blocking call, creation site): the blocking call is the
//! innermost frame Go's traceback would show (the first outside the runtime), so goroutines
//! parked at the same line through different callers (a recursion of varying depth, several
//! handlers) count together. A group of at least
//! [`DiagnoseOptions::pileup_min_goroutines`](crate::diagnose::DiagnoseOptions) goroutines is a
//! finding of kind [`GOROUTINE_PILEUP`] (critical at ten times as many), largest first.

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    diagnose::{DiagnoseOptions, FrameInfo, GOROUTINE_PILEUP, Severity},
    goruntime::state::GoroutineState,
};

use super::{CreatedBy, Dump, DumpFrame, Goroutine, text};

/// A pile-up found in a dump (kind [`GOROUTINE_PILEUP`](crate::diagnose::GOROUTINE_PILEUP));
/// worded by the dump's renderers (`dump::text`), its facts the json `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpFinding {
    pub severity: Severity,
    pub pileup: BlockedPileup,
}

impl DumpFinding {
    /// Machine-readable kind: a pile-up.
    pub fn kind(&self) -> &'static str {
        GOROUTINE_PILEUP
    }
}

/// Goroutines blocked at one call, created at one site.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockedPileup {
    pub goroutines: usize,
    pub state: GoroutineState,
    /// What Go's traceback shows in brackets for the first of them.
    pub status: String,
    pub wait_reason: Option<String>,
    /// The innermost frame Go's traceback shows.
    pub blocking: Option<FrameInfo>,
    pub created_by: Option<CreatedBy>,
    pub longest_wait_ns: Option<u64>,
    /// The first goroutine of the group.
    pub example_goid: u64,
    /// The frames Go's traceback shows of the first goroutine's stack.
    #[serde(skip)]
    pub shown: Vec<FrameInfo>,
}

/// A pile-up this many times the threshold is critical.
const CRITICAL_FACTOR: usize = 10;

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

/// Pile-ups among the dump's goroutines (runtime goroutines left out), largest first.
pub fn find(dump: &Dump, options: &DiagnoseOptions) -> Vec<DumpFinding> {
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
            let severity = if group.count >= options.pileup_min_goroutines * CRITICAL_FACTOR {
                Severity::Critical
            } else {
                Severity::Warning
            };
            DumpFinding {
                severity,
                pileup: BlockedPileup {
                    goroutines: group.count,
                    state: g.state,
                    status: g.status_text.clone(),
                    wait_reason: g.wait_reason.clone(),
                    blocking: group.blocking.map(frame_info),
                    created_by: g.created_by.clone(),
                    longest_wait_ns: group.longest_wait_ns,
                    example_goid: g.goid,
                    shown: text::shown(g.stack.frames.iter())
                        .into_iter()
                        .map(frame_info)
                        .collect(),
                },
            }
        })
        .collect()
}

fn frame_info(f: &DumpFrame) -> FrameInfo {
    FrameInfo {
        function: f.function.to_string(),
        file: f.file.as_deref().map(str::to_owned),
        line: f.line,
    }
}
