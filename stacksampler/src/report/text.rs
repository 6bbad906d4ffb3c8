//! The terminal report: run header, goroutine states, warnings, diagnosis, then ranked stacks.
//!
//! Each stack lists its frames innermost first as `function (file:line)`, inlined frames marked
//! `[inlined]`; repeated cycles print as one `[a -> b] x 2500` line; a stack longer than
//! [`TextRenderer::max_stack_lines`] lines shows its innermost and outermost lines with
//! `... N frames elided ...` between.

use std::io::Write;

use crate::{
    aggregate::Row,
    diagnose::{Severity, cycles::Segment},
    goruntime::state::GoroutineState,
    sample::SampleKind,
};

/// Nanoseconds per second.
const NS_PER_S: f64 = 1e9;

use super::{
    RenderError, Renderer, Report, findings,
    stack::{self, SourceFrame},
};

/// Default for [`TextRenderer::max_stack_lines`]: a screen.
pub const DEFAULT_MAX_STACK_LINES: usize = 40;

/// How many goids a stack's summary line names.
const GOIDS_SHOWN: usize = 5;

/// Writes the text report.
#[derive(Clone, Debug)]
pub struct TextRenderer {
    /// Lines of one stack above which the middle is elided (at least 3 are always shown).
    pub max_stack_lines: usize,
    /// At most this many stacks; `None` for all.
    pub max_stacks: Option<usize>,
}

impl Default for TextRenderer {
    fn default() -> Self {
        Self {
            max_stack_lines: DEFAULT_MAX_STACK_LINES,
            max_stacks: None,
        }
    }
}

impl Renderer for TextRenderer {
    fn render(&self, report: &Report, out: &mut dyn Write) -> Result<(), RenderError> {
        if let Some(fatal) = &report.fatal {
            writeln!(out, "{}", super::events::render_fatal_text(fatal))?;
        }
        write_header(report, out)?;
        write_states(report, out)?;
        write_wall_states(report, out)?;
        write_warnings(report, out)?;
        write_diagnosis(report, out)?;
        if let Some(events) = &report.runtime_events {
            writeln!(out, "runtime events:")?;
            writeln!(out, "{}", super::events::render_events_text(events, false))?;
        }
        self.write_stacks(report, SampleKind::Cpu, out)?;
        if report.profile.has_wall() {
            self.write_stacks(report, SampleKind::Wall, out)?;
        }
        Ok(())
    }
}

/// `s` with its control characters escaped (`\n`, `\u{1b}`...): names, paths and labels come
/// from the target, and one of them must never break a line of the report or drive the
/// terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `Go go1.27.3`, or what the binary is when it is not Go.
fn go_words(version: Option<&str>) -> String {
    version.map_or_else(|| "not a known Go binary".to_owned(), |v| format!("Go {v}"))
}

fn write_header(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let run = &report.run;
    let go = go_words(run.go_version.as_deref());
    writeln!(
        out,
        "stacksampler: pid {} {} ({go})",
        run.pid,
        printable(&run.binary.to_string_lossy())
    )?;
    for exec in &run.execs {
        let go = go_words(exec.go_version.as_deref());
        writeln!(
            out,
            "exec: after {:.2} s the process ran {} ({go}); its samples are named from it",
            exec.after_secs,
            printable(&exec.binary.to_string_lossy())
        )?;
    }
    writeln!(
        out,
        "sampled {:.2} s at {} Hz per CPU, up to {} frames per stack; ended: {}",
        run.duration_secs,
        run.frequency_hz,
        run.max_frames,
        run.ended_by.describe()
    )?;
    let c = report.profile.counts;
    writeln!(
        out,
        "samples: {} total, {} kept, {} lost",
        c.total, c.kept, c.lost
    )?;
    if let Some(hz) = run.wall_frequency_hz {
        writeln!(
            out,
            "wall-clock: {} snapshots of every goroutine at {hz} Hz, {} goroutine samples, {} kept \
             ({:.1} goroutine-seconds)",
            c.wall_snapshots,
            c.wall_total,
            c.wall_kept,
            c.wall_kept_ns as f64 / NS_PER_S
        )?;
    }
    Ok(())
}

fn write_states(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let kept = report.profile.counts.kept;
    let states = report.profile.by_state();
    if states.is_empty() {
        return Ok(());
    }
    writeln!(out, "\ngoroutine states:")?;
    for (state, count) in states {
        writeln!(
            out,
            "  {:<10} {count:>8} {:>6.1}%",
            state.name(),
            stack::percent(count, kept)
        )?;
    }
    Ok(())
}

fn write_wall_states(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let states = report.profile.wall_by_state();
    if states.is_empty() {
        return Ok(());
    }
    let total = report.profile.counts.wall_kept_ns;
    writeln!(out, "\nwall-clock goroutine states (goroutine-seconds):")?;
    for (state, ns) in states {
        writeln!(
            out,
            "  {:<10} {:>8.1} {:>6.1}%",
            state.name(),
            ns as f64 / NS_PER_S,
            stack::percent(ns, total)
        )?;
    }
    Ok(())
}

fn write_warnings(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    if report.warnings.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nwarnings:")?;
    for w in &report.warnings {
        writeln!(out, "  ! {}", printable(&w.to_string()))?;
    }
    Ok(())
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::Warning => "WARNING",
        Severity::Info => "INFO",
    }
}

fn write_diagnosis(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    if report.diagnosis.is_empty() {
        return Ok(());
    }
    writeln!(out, "\ndiagnosis:")?;
    let mut findings: Vec<_> = report.diagnosis.iter().collect();
    // Most severe first, keeping the diagnosis' own order within a severity.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    for f in findings {
        writeln!(
            out,
            "  {:<8} {}",
            severity_word(f.severity),
            printable(&findings::summary(f))
        )?;
        for d in &findings::details(f) {
            writeln!(out, "           {}", printable(d))?;
        }
    }
    Ok(())
}

/// One printed line of a stack and how many frames it stands for.
struct StackLine {
    text: String,
    frames: usize,
}

impl TextRenderer {
    /// The ranked stacks of one kind: CPU rows by samples, wall rows by time.
    fn write_stacks(
        &self,
        report: &Report,
        kind: SampleKind,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let rows = report.profile.ranked_of(kind);
        let c = report.profile.counts;
        // A row's share of its kind: CPU samples, or goroutine wall-clock time.
        let (total, amount): (u64, fn(&Row<'_>) -> u64) = match kind {
            SampleKind::Cpu => (c.kept, |r| r.stats.count),
            SampleKind::Wall => (c.wall_kept_ns, |r| r.stats.wall_ns),
        };
        let (title, prefix) = match kind {
            SampleKind::Cpu => ("stacks", "#"),
            SampleKind::Wall => ("wall-clock stacks", "W"),
        };
        if rows.is_empty() {
            writeln!(out, "\nno {title} kept")?;
            return Ok(());
        }
        match kind {
            SampleKind::Cpu => {
                writeln!(out, "\nstacks: {} distinct, ranked by samples", rows.len())?
            }
            SampleKind::Wall => writeln!(
                out,
                "\nwall-clock stacks: {} distinct, ranked by goroutine time",
                rows.len()
            )?,
        }
        let shown = self.max_stacks.unwrap_or(rows.len()).min(rows.len());
        for (i, row) in rows.iter().take(shown).enumerate() {
            writeln!(out)?;
            let head = match kind {
                SampleKind::Cpu => count_words(row.stats.count),
                SampleKind::Wall => format!("{:.2} s", row.stats.wall_ns as f64 / NS_PER_S),
            };
            writeln!(
                out,
                "{prefix}{:<3} {}",
                i + 1,
                summary_line(report, row, &head, stack::percent(amount(row), total))
            )?;
            let frames = stack::expand(report, row.key.stack);
            let lines = stack_lines(&frames, &stack::fold(&frames));
            for line in self.elide(lines) {
                if line.starts_with(crate::symbolize::Frame::GAP_FUNCTION) {
                    // The pseudo-frame of a deep stack's uncaptured middle: say how many.
                    writeln!(
                        out,
                        "     [... {} frames counted, not kept ...]",
                        row.stats.gap_frames
                    )?;
                    continue;
                }
                writeln!(out, "     {line}")?;
            }
        }
        if shown < rows.len() {
            let rest: u64 = rows[shown..].iter().map(amount).sum();
            let rest_words = match kind {
                SampleKind::Cpu => format!("{rest} samples"),
                SampleKind::Wall => format!("{:.2} goroutine-seconds", rest as f64 / NS_PER_S),
            };
            writeln!(
                out,
                "\n... {} more stacks with {rest_words} ({:.1}%) not shown",
                rows.len() - shown,
                stack::percent(rest, total)
            )?;
        }
        Ok(())
    }

    /// Keeps the innermost and outermost lines, replacing the middle by one elision line.
    fn elide(&self, lines: Vec<StackLine>) -> Vec<String> {
        let max = self.max_stack_lines.max(3);
        if lines.len() <= max {
            return lines.into_iter().map(|l| l.text).collect();
        }
        let head = max / 2;
        let tail = max - head - 1;
        let elided: usize = lines[head..lines.len() - tail]
            .iter()
            .map(|l| l.frames)
            .sum();
        let mut out: Vec<String> = lines[..head].iter().map(|l| l.text.clone()).collect();
        out.push(format!("... {elided} frames elided ..."));
        out.extend(lines[lines.len() - tail..].iter().map(|l| l.text.clone()));
        out
    }
}

/// `800 samples` (the noun padded to one width).
fn count_words(count: u64) -> String {
    let noun = if count == 1 { "sample " } else { "samples" };
    format!("{count} {noun}")
}

/// `800 samples  80.0%  running  3 goroutines (1 7 9)  depth 5` (`head` is the amount:
/// samples, or time for a wall row, and `share` its percentage).
fn summary_line(report: &Report, row: &Row<'_>, head: &str, share: f64) -> String {
    let stats = row.stats;
    let mut s = format!("{head} {share:5.1}%  {}", row.key.state.name());
    if row.key.state == GoroutineState::Waiting && !stats.waitreasons.is_empty() {
        let reasons: Vec<String> = stats
            .waitreasons
            .iter()
            .map(|w| stack::waitreason_text(report, *w))
            .collect();
        s.push_str(&format!(" ({})", reasons.join(", ")));
    }
    let labels = report.profile.label_set(row.key.labels);
    if !labels.is_empty() {
        s.push_str(&format!(
            "  labels {{{}}}",
            printable(&crate::sample::format_labels(labels))
        ));
    }
    let (n, goids) = stack::goid_sample(row, GOIDS_SHOWN);
    if n > 0 {
        let list: Vec<String> = goids.iter().map(u64::to_string).collect();
        let more = if n > goids.len() { " ..." } else { "" };
        let noun = if n == 1 { "goroutine" } else { "goroutines" };
        s.push_str(&format!("  {n} {noun} ({}{more})", list.join(" ")));
    }
    s.push_str(&format!("  depth {}", row.stats.depth.1));
    if stats.truncated {
        s.push_str(" truncated");
    }
    s
}

/// `function (file:line)`, `[inlined]` when inlined into the next frame.
fn frame_text(f: &SourceFrame) -> String {
    let mut s = printable(&f.frame.function).into_owned();
    match (&f.frame.file, f.frame.line) {
        (Some(file), Some(line)) => s.push_str(&format!(" ({}:{line})", printable(file))),
        (Some(file), None) => s.push_str(&format!(" ({})", printable(file))),
        _ => {}
    }
    if f.frame.inlined {
        s.push_str(" [inlined]");
    }
    s
}

/// The lines of a stack: one per frame, one per folded cycle.
fn stack_lines(frames: &[SourceFrame], segments: &[Segment]) -> Vec<StackLine> {
    segments
        .iter()
        .map(|seg| match *seg {
            Segment::Frame(i) => StackLine {
                text: frames.get(i).map(frame_text).unwrap_or_default(),
                frames: 1,
            },
            Segment::Cycle { start, len, repeat } => StackLine {
                text: format!(
                    "{}  ({} frames)",
                    stack::cycle_label(frames, start, len, repeat),
                    len * repeat
                ),
                frames: len * repeat,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<StackLine> {
        (0..n)
            .map(|i| StackLine {
                text: format!("f{i}"),
                frames: 2,
            })
            .collect()
    }

    #[test]
    fn control_characters_from_the_target_are_escaped() {
        assert_eq!(printable("main.f"), "main.f");
        assert_eq!(printable("/tmp/a\nb"), "/tmp/a\\nb");
        assert_eq!(printable("x\u{1b}[2Jy"), "x\\u{1b}[2Jy");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn cycles_print_as_one_line() {
        use crate::symbolize::{Frame, FrameKind};
        let f = |addr, name: &str| SourceFrame {
            addr,
            frame: Frame {
                function: name.into(),
                file: Some("r.go".into()),
                line: Some(addr as u32),
                inlined: false,
                module: None,
                kind: FrameKind::Go,
            },
        };
        let frames = [
            f(1, "leaf"),
            f(2, "main.b"),
            f(3, "main.a"),
            f(2, "main.b"),
            f(3, "main.a"),
            f(4, "main.main"),
        ];
        let segments = [
            Segment::Frame(0),
            Segment::Cycle {
                start: 1,
                len: 2,
                repeat: 2,
            },
            Segment::Frame(5),
        ];
        let lines = stack_lines(&frames, &segments);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "leaf (r.go:1)",
                "[main.a -> main.b] x 2  (4 frames)",
                "main.main (r.go:4)"
            ]
        );
        assert_eq!(lines[1].frames, 4);
    }

    #[test]
    fn elides_the_middle() {
        let r = TextRenderer {
            max_stack_lines: 5,
            max_stacks: None,
        };
        assert_eq!(r.elide(lines(5)).len(), 5);
        let out = r.elide(lines(10));
        assert_eq!(out, ["f0", "f1", "... 12 frames elided ...", "f8", "f9"]);
    }
}
