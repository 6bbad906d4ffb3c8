//! Folded stacks, the input format of inferno and FlameGraph: one line per distinct stack,
//! `frame;frame;...;frame count`, outermost first, inlined frames expanded. In a `--wall` run
//! the root frame is `[cpu]` or `[wall]` and the counts are milliseconds ([`row_weight`]).
//!
//! `;` inside a function name becomes `:` (and line breaks become spaces) so the line stays
//! parseable. Lines are merged when they render the same (for instance once the state is not a
//! frame) and sorted, as inferno's collapsers write them.

use std::{borrow::Cow, collections::BTreeMap, io::Write};

use crate::{aggregate::Row, diagnose::cycles::Segment, sample::SampleKind};

use super::{
    RenderError, Renderer, Report,
    stack::{self, SourceFrame},
};

/// Writes folded stacks.
#[derive(Clone, Debug, Default)]
pub struct FoldedRenderer {
    /// The goroutine state as the root frame: `[running];main.main;...`.
    pub state_frames: bool,
    /// Keep one body of each repeated cycle.
    pub collapse_recursion: bool,
}

/// What to do with a repeated cycle when folding a stack into names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CyclePolicy {
    /// Every repetition, frame by frame (the exact stack).
    Expand,
    /// One body of the cycle.
    OneBody,
    /// One frame named `[a -> b] x N`.
    Label,
}

/// `name` made safe for a folded line: no `;`, no line break, not empty.
pub fn sanitize(name: &str) -> Cow<'_, str> {
    if name.is_empty() {
        return Cow::Borrowed("[unknown]");
    }
    if name.contains([';', '\n', '\r']) {
        Cow::Owned(name.replace(';', ":").replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(name)
    }
}

/// The root frame standing for a goroutine state: `[running]`.
pub fn state_frame(row: &Row<'_>) -> String {
    format!("[{}]", row.key.state.name())
}

/// The root frame standing for a sample kind in a `--wall` run: `[cpu]`, `[wall]`.
pub fn kind_frame(row: &Row<'_>) -> String {
    format!("[{}]", row.key.kind.name())
}

/// Nanoseconds per millisecond.
const NS_PER_MS: u64 = 1_000_000;

/// The value of `row` in folded lines and flame graphs: its samples, or in a `--wall` run (two
/// kinds side by side) milliseconds, of CPU time for CPU rows (samples x period) and of
/// goroutine wall-clock time for wall rows; at least 1 for a row that has samples.
pub fn row_weight(report: &Report, row: &Row<'_>) -> u64 {
    if !report.profile.has_wall() {
        return row.stats.count;
    }
    let ns = match row.key.kind {
        SampleKind::Cpu => row.stats.count * (1_000_000_000 / report.run.frequency_hz.max(1)),
        SampleKind::Wall => row.stats.wall_ns,
    };
    ((ns + NS_PER_MS / 2) / NS_PER_MS).max(u64::from(row.stats.count > 0))
}

/// The frames of `row` as folded names, outermost first, with `policy` for cycles; in a
/// `--wall` run the kind (`[cpu]`, `[wall]`) is the root frame.
pub fn row_names(
    report: &Report,
    row: &Row<'_>,
    state_frame_root: bool,
    policy: CyclePolicy,
) -> Vec<String> {
    let frames = stack::expand(report, row.key.stack);
    let mut names = if policy == CyclePolicy::Expand {
        frames
            .iter()
            .map(|f| sanitize(&f.frame.function).into_owned())
            .collect()
    } else {
        folded_names(&frames, policy)
    };
    if state_frame_root {
        names.push(state_frame(row));
    }
    if report.profile.has_wall() {
        names.push(kind_frame(row));
    }
    names.reverse();
    names
}

/// Names of `frames` (innermost first) with cycles folded per `policy`, still innermost first.
fn folded_names(frames: &[SourceFrame], policy: CyclePolicy) -> Vec<String> {
    let name = |i: usize| {
        frames.get(i).map_or_else(
            || "[unknown]".to_owned(),
            |f| sanitize(&f.frame.function).into_owned(),
        )
    };
    let mut names = Vec::new();
    for seg in stack::fold(frames) {
        match seg {
            Segment::Frame(i) => names.push(name(i)),
            Segment::Cycle { start, len, repeat } => match policy {
                CyclePolicy::Label => names
                    .push(sanitize(&stack::cycle_label(frames, start, len, repeat)).into_owned()),
                _ => names.extend((start..start + len).map(name)),
            },
        }
    }
    names
}

/// Folded lines of the whole report: merged, sorted, each with its count.
pub fn lines(report: &Report, state_frames: bool, policy: CyclePolicy) -> BTreeMap<String, u64> {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for row in report.profile.ranked() {
        let names = row_names(report, &row, state_frames, policy);
        let key = if names.is_empty() {
            "[no frames]".to_owned()
        } else {
            names.join(";")
        };
        *lines.entry(key).or_default() += row_weight(report, &row);
    }
    lines
}

impl Renderer for FoldedRenderer {
    fn render(&self, report: &Report, out: &mut dyn Write) -> Result<(), RenderError> {
        let policy = if self.collapse_recursion {
            CyclePolicy::OneBody
        } else {
            CyclePolicy::Expand
        };
        for (line, count) in lines(report, self.state_frames, policy) {
            writeln!(out, "{line} {count}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("main.f"), "main.f");
        assert_eq!(sanitize("a;b\nc"), "a:b c");
        assert_eq!(sanitize(""), "[unknown]");
        assert_eq!(sanitize("net/http.(*Client).Do"), "net/http.(*Client).Do");
    }
}
