//! The json report; its schema is documented in `docs/json-format.md` (keep the two in step).

use std::io::Write;

use serde::Serialize;

use super::events::{FatalReport, WatchReport};
use crate::{
    aggregate::Row,
    diagnose::{Finding, cycles::Segment},
    goruntime::state::GoroutineState,
    sample::SampleKind,
    symbolize::FrameKind,
};

use super::{
    EndReason, RenderError, Renderer, Report,
    stack::{self, SourceFrame},
};

/// Version of the schema written in `"format_version"`; bump on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// Default for [`JsonRenderer::max_frames`].
pub const DEFAULT_MAX_FRAMES: usize = 10_000;

/// Default for [`JsonRenderer::max_goids`].
pub const DEFAULT_MAX_GOIDS: usize = 1_000;

/// Writes the json report.
#[derive(Clone, Debug)]
pub struct JsonRenderer {
    /// A stack with more source frames lists only the innermost and outermost halves of this
    /// many, and says how many were left out in `"elided"`.
    pub max_frames: usize,
    /// At most this many goids per stack (`"goroutines"` always has the full count).
    pub max_goids: usize,
    /// Indent the output.
    pub pretty: bool,
}

impl Default for JsonRenderer {
    fn default() -> Self {
        Self {
            max_frames: DEFAULT_MAX_FRAMES,
            max_goids: DEFAULT_MAX_GOIDS,
            pretty: false,
        }
    }
}

/// The whole document.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    pub format_version: u32,
    pub pid: u32,
    pub binary: String,
    pub go_version: Option<&'a str>,
    pub duration_secs: f64,
    pub frequency_hz: u64,
    pub max_frames: u32,
    pub ended_by: EndReason,
    /// Programs the target exec'd during the run (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub execs: Vec<JsonExec<'a>>,
    /// The fatal error the target died of, when it did (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fatal: Option<&'a FatalReport>,
    /// Runtime events of the run (`record --events`; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_events: Option<&'a WatchReport>,
    pub samples: JsonSamples,
    pub states: Vec<JsonStateCount>,
    /// The wall-clock side of a `record --wall` run (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall: Option<JsonWall>,
    pub warnings: &'a [crate::warning::Warning],
    /// Most severe first.
    pub diagnosis: Vec<&'a Finding>,
    pub stacks: JsonStacks<'a>,
}

/// One `exec` of the target during the run.
#[derive(Debug, Serialize)]
pub struct JsonExec<'a> {
    pub after_secs: f64,
    pub binary: String,
    pub go_version: Option<&'a str>,
    pub build_id: Option<&'a str>,
}

/// The `"stacks"` array, built one row at a time while it is written: a row's symbolized frames
/// live only while that row is serialized, so memory does not grow with rows x depth.
#[derive(Debug)]
pub struct JsonStacks<'a> {
    renderer: &'a JsonRenderer,
    report: &'a Report,
    rows: Vec<Row<'a>>,
}

impl<'a> JsonStacks<'a> {
    /// The rows, built on demand, in report order.
    fn iter(&self) -> impl Iterator<Item = JsonStack> + '_ {
        self.rows
            .iter()
            .map(|row| self.renderer.stack(self.report, row))
    }
}

impl Serialize for JsonStacks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Sample accounting.
#[derive(Debug, Serialize)]
pub struct JsonSamples {
    pub total: u64,
    pub kept: u64,
    pub lost: u64,
}

/// The wall-clock snapshots of a `--wall` run.
#[derive(Debug, Serialize)]
pub struct JsonWall {
    pub frequency_hz: u64,
    /// Snapshots of every goroutine taken.
    pub snapshots: u64,
    /// Goroutine samples in them, and those kept by the filters.
    pub samples: u64,
    pub kept: u64,
    /// Wall-clock time the kept samples stand for (goroutine-seconds).
    pub goroutine_secs: f64,
    /// Of it, per goroutine state.
    pub states: Vec<JsonStateSecs>,
}

/// Goroutine-seconds of one state.
#[derive(Debug, Serialize)]
pub struct JsonStateSecs {
    pub state: GoroutineState,
    pub secs: f64,
}

/// Kept samples of one goroutine state.
#[derive(Debug, Serialize)]
pub struct JsonStateCount {
    pub state: GoroutineState,
    pub count: u64,
}

/// One aggregated row: a sample kind, a goroutine state and a stack.
#[derive(Debug, Serialize)]
pub struct JsonStack {
    /// `cpu` (CPU samples) or `wall` (goroutines in wall-clock snapshots, `--wall`).
    pub kind: SampleKind,
    /// Samples: CPU ticks, or goroutine snapshots for a wall row.
    pub count: u64,
    /// Wall rows: the wall-clock time their samples stand for, seconds (absent for CPU rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_secs: Option<f64>,
    pub state: GoroutineState,
    /// Raw `g.waitreason` values seen (waiting rows only).
    pub waitreasons: Vec<u8>,
    /// Their names in the target's Go version (`chan receive`), `None` where unknown.
    pub waitreason_names: Vec<Option<&'static str>>,
    /// The goroutines' pprof labels (`pprof.Do`), key -> value; empty without labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Distinct goroutines seen with this row.
    pub goroutines: usize,
    /// The first of them, ascending, at most `max_goids`.
    pub goids: Vec<u64>,
    /// User frames on the stack (return addresses, before inline expansion), exact even when
    /// the middle of a deep stack was not kept (see `gap_frames`); the largest seen in the row.
    pub depth: u64,
    /// Frames of a deep stack counted but not kept: they stand where `frames` holds the
    /// pseudo-frame `[... frames counted, not kept ...]`. 0 for a stack kept whole.
    pub gap_frames: u64,
    /// Some sample of the row hit the frame limit.
    pub truncated: bool,
    /// Goroutine stack bytes in use, smallest and largest seen.
    pub stack_bytes: Option<JsonRange>,
    /// Source frames, innermost first, inlined frames expanded.
    pub frames: Vec<JsonFrame>,
    /// Present when `frames` was capped: `frames[..at]` are the innermost frames, the next
    /// `count` frames were left out, the rest of `frames` are the outermost.
    pub elided: Option<JsonElided>,
    /// Repeated cycles, indices into the complete (uncapped) frame list.
    pub folded: Vec<JsonCycle>,
}

/// A closed range.
#[derive(Debug, Serialize)]
pub struct JsonRange {
    pub min: u64,
    pub max: u64,
}

/// Frames left out of a capped stack.
#[derive(Debug, Serialize)]
pub struct JsonElided {
    pub at: usize,
    pub count: usize,
}

/// One source frame.
#[derive(Debug, Serialize)]
pub struct JsonFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// `0x`-prefixed hex call-site address (a string: 64-bit values do not fit json numbers).
    pub address: String,
    pub inlined: bool,
    pub kind: FrameKind,
    pub module: Option<String>,
}

/// A run of a cycle body repeated in a row.
#[derive(Debug, Serialize)]
pub struct JsonCycle {
    /// Index of the innermost frame of the run in the full frame list.
    pub start: usize,
    /// Frames in one body.
    pub length: usize,
    pub repeat: usize,
    /// Function names of the body, innermost first.
    pub cycle: Vec<String>,
}

impl JsonRenderer {
    /// The document for `report`.
    pub fn document<'a>(&'a self, report: &'a Report) -> JsonReport<'a> {
        let run = &report.run;
        let c = report.profile.counts;
        JsonReport {
            format_version: FORMAT_VERSION,
            pid: run.pid,
            binary: run.binary.display().to_string(),
            go_version: run.go_version.as_deref(),
            duration_secs: run.duration_secs,
            frequency_hz: run.frequency_hz,
            max_frames: run.max_frames,
            ended_by: run.ended_by,
            execs: run
                .execs
                .iter()
                .map(|e| JsonExec {
                    after_secs: e.after_secs,
                    binary: e.binary.display().to_string(),
                    go_version: e.go_version.as_deref(),
                    build_id: e.build_id.as_deref(),
                })
                .collect(),
            fatal: report.fatal.as_ref(),
            runtime_events: report.runtime_events.as_ref(),
            samples: JsonSamples {
                total: c.total,
                kept: c.kept,
                lost: c.lost,
            },
            states: report
                .profile
                .by_state()
                .into_iter()
                .map(|(state, count)| JsonStateCount { state, count })
                .collect(),
            wall: run.wall_frequency_hz.map(|frequency_hz| JsonWall {
                frequency_hz,
                snapshots: c.wall_snapshots,
                samples: c.wall_total,
                kept: c.wall_kept,
                goroutine_secs: c.wall_kept_ns as f64 / 1e9,
                states: report
                    .profile
                    .wall_by_state()
                    .into_iter()
                    .map(|(state, ns)| JsonStateSecs {
                        state,
                        secs: ns as f64 / 1e9,
                    })
                    .collect(),
            }),
            warnings: &report.warnings,
            diagnosis: {
                let mut d: Vec<&Finding> = report.diagnosis.iter().collect();
                d.sort_by_key(|f| std::cmp::Reverse(f.severity));
                d
            },
            stacks: JsonStacks {
                renderer: self,
                report,
                rows: report.profile.ranked(),
            },
        }
    }

    fn stack(&self, report: &Report, row: &Row<'_>) -> JsonStack {
        let stats = row.stats;
        let frames = stack::expand(report, row.key.stack);
        let folded = stack::fold(&frames)
            .into_iter()
            .filter_map(|seg| match seg {
                Segment::Cycle { start, len, repeat } => Some(JsonCycle {
                    start,
                    length: len,
                    repeat,
                    cycle: frames
                        .get(start..start + len)
                        .unwrap_or_default()
                        .iter()
                        .map(|f| f.frame.function.to_string())
                        .collect(),
                }),
                Segment::Frame(_) => None,
            })
            .collect();
        let (frames, elided) = cap(&frames, self.max_frames);
        JsonStack {
            kind: row.key.kind,
            count: stats.count,
            wall_secs: (row.key.kind == SampleKind::Wall).then(|| stats.wall_ns as f64 / 1e9),
            state: row.key.state,
            waitreasons: stats.waitreasons.iter().copied().collect(),
            waitreason_names: stats
                .waitreasons
                .iter()
                .map(|w| stack::waitreason_name(report, *w))
                .collect(),
            labels: report
                .profile
                .label_set(row.key.labels)
                .iter()
                .cloned()
                .collect(),
            goroutines: stats.goids.len(),
            goids: stats.goids.iter().take(self.max_goids).copied().collect(),
            depth: row.stats.depth.1,
            gap_frames: stats.gap_frames,
            truncated: stats.truncated,
            stack_bytes: stats.stack_bytes.map(|(min, max)| JsonRange { min, max }),
            frames,
            elided,
            folded,
        }
    }
}

/// The frames to list: all, or the innermost and outermost halves of `max`.
fn cap(frames: &[SourceFrame], max: usize) -> (Vec<JsonFrame>, Option<JsonElided>) {
    if frames.len() <= max {
        return (frames.iter().map(json_frame).collect(), None);
    }
    let head = max / 2;
    let tail = max - head;
    let listed = frames[..head]
        .iter()
        .chain(&frames[frames.len() - tail..])
        .map(json_frame)
        .collect();
    let elided = JsonElided {
        at: head,
        count: frames.len() - head - tail,
    };
    (listed, Some(elided))
}

fn json_frame(f: &SourceFrame) -> JsonFrame {
    JsonFrame {
        function: f.frame.function.to_string(),
        file: f.frame.file.as_deref().map(str::to_owned),
        line: f.frame.line,
        address: format!("{:#x}", f.addr),
        inlined: f.frame.inlined,
        kind: f.frame.kind,
        module: f.frame.module.as_deref().map(str::to_owned),
    }
}

impl Renderer for JsonRenderer {
    fn render(&self, report: &Report, out: &mut dyn Write) -> Result<(), RenderError> {
        let doc = self.document(report);
        if self.pretty {
            serde_json::to_writer_pretty(&mut *out, &doc)?;
        } else {
            serde_json::to_writer(&mut *out, &doc)?;
        }
        writeln!(out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::Frame;

    #[test]
    fn caps_long_stacks_head_and_tail() {
        let frames: Vec<SourceFrame> = (0..10u64)
            .map(|i| SourceFrame {
                addr: i,
                frame: Frame::unknown(None, i),
            })
            .collect();
        let (listed, elided) = cap(&frames, 4);
        let addrs: Vec<&str> = listed.iter().map(|f| f.address.as_str()).collect();
        assert_eq!(addrs, ["0x0", "0x1", "0x8", "0x9"]);
        let e = elided.unwrap();
        assert_eq!((e.at, e.count), (2, 6));
        let (listed, elided) = cap(&frames, 10);
        assert_eq!(listed.len(), 10);
        assert!(elided.is_none());
    }
}
