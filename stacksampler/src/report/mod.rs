//! Rendering a finished run: the [`Report`] model and one module per output format.
//!
//! Every format implements [`Renderer`]; [`renderer`] picks the one for an [`OutputFormat`].
//! [`render`] writes one format to one writer, [`write_outputs`] writes all the outputs an
//! [`OutputPlan`] asks for (several files from one run, the format of each taken from its
//! extension).
//!
//! Formats: [`text`] (terminal), [`folded`] (inferno/FlameGraph input), [`json`]
//! (docs/json-format.md), [`pprof`] (`go tool pprof`), [`flamegraph`] (SVG through inferno),
//! [`callgraph`] (caller -> callee table, and Graphviz DOT).

pub mod callgraph;
pub mod events;
pub mod findings;
pub mod flamegraph;
pub mod folded;
pub mod json;
pub mod pprof;
pub mod stack;
pub mod text;

use std::{
    io::{BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::{aggregate::Profile, diagnose::Finding, symbolize::Symbols};

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// `--duration` elapsed.
    Duration,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The target process exited.
    TargetExited,
    /// The target died of a Go fatal error (`Report::fatal` has it).
    TargetDied,
}

impl EndReason {
    /// Words for the text header.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Duration => "duration elapsed",
            Self::Interrupted => "interrupted",
            Self::TargetExited => "target exited",
            Self::TargetDied => "target died of a fatal error",
        }
    }
}

/// Facts about the run that every format may show.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub pid: u32,
    /// The target's executable (as `/proc/PID/exe` named it at start).
    pub binary: PathBuf,
    /// Build id of that executable (the GNU build id in hex, else Go's), read at start from the
    /// file the target runs (`/proc/PID/exe`, so a container's binary is the right one).
    pub build_id: Option<String>,
    /// Go version from the binary's build info, when it is a Go binary.
    pub go_version: Option<String>,
    /// The programs the target `exec`ed during the run, in order (their samples are named from
    /// their own executable).
    pub execs: Vec<crate::images::ExecInfo>,
    /// Wall time sampled, seconds.
    pub duration_secs: f64,
    /// Sampling frequency per CPU, Hz.
    pub frequency_hz: u64,
    /// Wall-clock snapshots of every goroutine per second (`record --wall`), when taken.
    pub wall_frequency_hz: Option<u64>,
    /// Frame limit of the kernel walk.
    pub max_frames: u32,
    pub ended_by: EndReason,
}

/// Everything a renderer needs.
#[derive(Debug)]
pub struct Report {
    pub run: RunInfo,
    pub profile: Profile,
    pub symbols: Symbols,
    /// Findings of the diagnosis, most severe first.
    pub diagnosis: Vec<Finding>,
    /// Things the operator should know (no Go layout, lost samples...), one line each.
    pub warnings: Vec<crate::warning::Warning>,
    /// The Go fatal error the target died of during the run (shown first by every format
    /// that has room for it).
    pub fatal: Option<events::FatalReport>,
    /// Stack growth and goroutine creation/exit seen during the run (`record --events`), in the
    /// watch report's model (its `fatal` is [`Report::fatal`]).
    pub runtime_events: Option<events::WatchReport>,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Ranked stacks for a terminal.
    Text,
    /// `frame;frame;... count` lines, outermost first (inferno, FlameGraph).
    Folded,
    /// The documented json schema (docs/json-format.md).
    Json,
    /// gzipped pprof protobuf for `go tool pprof` (`.pb.gz`).
    Pprof,
    /// SVG flame graph (inferno).
    Flamegraph,
    /// Caller -> callee edges with sample counts, as a text table.
    Callgraph,
    /// Caller -> callee edges as a Graphviz DOT graph.
    Dot,
}

impl OutputFormat {
    /// Every format.
    pub const ALL: [OutputFormat; 7] = [
        Self::Text,
        Self::Folded,
        Self::Json,
        Self::Pprof,
        Self::Flamegraph,
        Self::Callgraph,
        Self::Dot,
    ];

    /// The format a file name asks for by its extension: `.txt`, `.folded`, `.json`, `.pb.gz`
    /// (or `.pprof`), `.svg`, `.dot`; `None` for any other name.
    pub fn from_path(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let by_suffix = [
            (".pb.gz", Self::Pprof),
            (".pprof", Self::Pprof),
            (".svg", Self::Flamegraph),
            (".folded", Self::Folded),
            (".json", Self::Json),
            (".txt", Self::Text),
            (".dot", Self::Dot),
        ];
        by_suffix
            .into_iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix))
            .map(|(_, format)| format)
    }

    /// The name used on the command line (`--format NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Folded => "folded",
            Self::Json => "json",
            Self::Pprof => "pprof",
            Self::Flamegraph => "flamegraph",
            Self::Callgraph => "callgraph",
            Self::Dot => "dot",
        }
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;

    /// Parses a format [`name`](OutputFormat::name).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
                format!("unknown format {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// Knobs shared by the formats; `Default` is what the command line gives without flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Put the goroutine state as the outermost frame (`[running]`) in folded output and flame
    /// graphs, so running and syscall time are separable.
    pub state_frames: bool,
    /// Folded output: keep one body of each repeated cycle instead of every repetition.
    pub collapse_recursion: bool,
    /// Text: a stack rendered in more lines than this shows its innermost and outermost lines
    /// with the elided frame count between.
    pub max_stack_lines: usize,
    /// Text: at most this many stacks (the rest are summed in one line); `None` for all.
    pub max_stacks: Option<usize>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            state_frames: false,
            collapse_recursion: false,
            max_stack_lines: text::DEFAULT_MAX_STACK_LINES,
            max_stacks: None,
        }
    }
}

/// One output format: writes a whole report to a writer.
pub trait Renderer {
    /// Writes `report` to `out`.
    fn render(&self, report: &Report, out: &mut dyn Write) -> Result<(), RenderError>;
}

/// The renderer of `format`, configured by `options`.
pub fn renderer(format: OutputFormat, options: &RenderOptions) -> Box<dyn Renderer> {
    match format {
        OutputFormat::Text => Box::new(text::TextRenderer {
            max_stack_lines: options.max_stack_lines,
            max_stacks: options.max_stacks,
        }),
        OutputFormat::Folded => Box::new(folded::FoldedRenderer {
            state_frames: options.state_frames,
            collapse_recursion: options.collapse_recursion,
        }),
        OutputFormat::Json => Box::new(json::JsonRenderer::default()),
        OutputFormat::Pprof => Box::new(pprof::PprofRenderer),
        OutputFormat::Flamegraph => Box::new(flamegraph::FlamegraphRenderer {
            state_frames: options.state_frames,
        }),
        OutputFormat::Callgraph => Box::new(callgraph::CallgraphRenderer {
            style: callgraph::Style::Table,
        }),
        OutputFormat::Dot => Box::new(callgraph::CallgraphRenderer {
            style: callgraph::Style::Dot,
        }),
    }
}

/// Error writing a report.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The writer failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Serializing json failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Encoding the pprof protobuf failed.
    #[error("pprof: {0}")]
    Pprof(#[from] prost::EncodeError),
}

/// Writes `report` in `format` (default options) to `out`.
pub fn render(
    report: &Report,
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), RenderError> {
    render_with(report, format, &RenderOptions::default(), out)
}

/// Writes `report` in `format` with `options` to `out`.
pub fn render_with(
    report: &Report,
    format: OutputFormat,
    options: &RenderOptions,
    out: &mut dyn Write,
) -> Result<(), RenderError> {
    renderer(format, options).render(report, out)?;
    out.flush()?;
    Ok(())
}

/// Where the outputs of one run go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputPlan {
    /// Files to write (`--output`, repeatable); empty: standard output only.
    pub files: Vec<PathBuf>,
    /// Format for standard output and for files without a known extension (`--format`).
    pub format: OutputFormat,
    /// Knobs shared by the formats.
    pub options: RenderOptions,
}

impl OutputPlan {
    /// Each destination with its format: files by extension (else `format`), or standard
    /// output (`None`) when no file is named.
    pub fn destinations(&self) -> Vec<(Option<&Path>, OutputFormat)> {
        if self.files.is_empty() {
            return vec![(None, self.format)];
        }
        self.files
            .iter()
            .map(|p| {
                (
                    Some(p.as_path()),
                    OutputFormat::from_path(p).unwrap_or(self.format),
                )
            })
            .collect()
    }
}

/// One output [`write_outputs`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenOutput {
    /// The file, `None` for standard output.
    pub path: Option<PathBuf>,
    pub format: OutputFormat,
}

/// Error writing one of the outputs of a plan.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output file could not be created (checked before sampling starts).
    #[error("cannot create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Rendering into the file (or standard output, `path` None) failed.
    #[error("writing {} report to {}", format.name(), path.as_deref().map_or("standard output".into(), |p| p.display().to_string()))]
    Render {
        path: Option<PathBuf>,
        format: OutputFormat,
        #[source]
        source: RenderError,
    },
    /// The finished file could not be moved over its destination.
    #[error("cannot write {}", path.display())]
    Persist {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Permissions of a finished report file (before the umask): readable by everyone, as a file
/// made by `File::create` would be.
const REPORT_FILE_MODE: u32 = 0o644;

/// One `--output` file, opened before sampling.
#[derive(Debug)]
struct PreparedFile {
    path: PathBuf,
    format: OutputFormat,
    /// A new file (`O_EXCL`: never a planted symlink followed) in the destination's folder;
    /// deleted if the run ends without a report.
    temp: tempfile::NamedTempFile,
}

/// The destinations of an [`OutputPlan`], checked and opened before anything is attached: a
/// bad path fails at once instead of after a whole capture. Each file is written to a temporary
/// file beside it and renamed over it when complete, so a run killed while writing leaves no
/// half-written report.
#[derive(Debug)]
pub struct PreparedOutputs {
    files: Vec<PreparedFile>,
    /// Formats written to standard output (none when files are named).
    stdout: Vec<OutputFormat>,
}

impl OutputPlan {
    /// Creates every output file's temporary file now (see [`PreparedOutputs`]).
    pub fn prepare(&self) -> Result<PreparedOutputs, OutputError> {
        let mut prepared = PreparedOutputs {
            files: Vec::new(),
            stdout: Vec::new(),
        };
        for (path, format) in self.destinations() {
            let Some(path) = path else {
                prepared.stdout.push(format);
                continue;
            };
            let temp = create_temp_beside(path).map_err(|source| OutputError::Create {
                path: path.to_owned(),
                source,
            })?;
            prepared.files.push(PreparedFile {
                path: path.to_owned(),
                format,
                temp,
            });
        }
        Ok(prepared)
    }
}

/// A new temporary file in `path`'s folder, named after it (`O_EXCL`, mode 0644 before the
/// umask), to be persisted over `path` once complete. Fails with the folder's own error.
pub fn create_temp_beside(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    // The folder's own error (missing, not a folder) is the clearest one.
    let folder = std::fs::metadata(dir)?;
    if !folder.is_dir() {
        return Err(std::io::Error::from(std::io::ErrorKind::NotADirectory));
    }
    if path.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(REPORT_FILE_MODE))
        .tempfile_in(dir)
        // tempfile names its random path in the error; the destination is what the user gave.
        .map_err(|e| std::io::Error::from(e.kind()))
}

/// Writes every output of `plan` into the files [`OutputPlan::prepare`] opened (each in the
/// format of its extension) and renames them into place, or, when there is none, `plan.format`
/// to `stdout`. Stops at the first failure.
pub fn write_outputs(
    report: &Report,
    plan: &OutputPlan,
    prepared: PreparedOutputs,
    stdout: &mut dyn Write,
) -> Result<Vec<WrittenOutput>, OutputError> {
    let mut written = Vec::new();
    for format in prepared.stdout {
        render_with(report, format, &plan.options, stdout).map_err(|source| {
            OutputError::Render {
                path: None,
                format,
                source,
            }
        })?;
        written.push(WrittenOutput { path: None, format });
    }
    for file in prepared.files {
        let PreparedFile { path, format, temp } = file;
        let render_error = |source| OutputError::Render {
            path: Some(path.clone()),
            format,
            source,
        };
        let mut out = BufWriter::new(temp);
        render_with(report, format, &plan.options, &mut out).map_err(render_error)?;
        let temp = out
            .into_inner()
            .map_err(|e| render_error(RenderError::Io(e.into_error())))?;
        temp.persist(&path).map_err(|e| OutputError::Persist {
            path: path.clone(),
            source: e.error,
        })?;
        written.push(WrittenOutput {
            path: Some(path),
            format,
        });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_extensions() {
        let cases = [
            ("out.svg", Some(OutputFormat::Flamegraph)),
            ("/tmp/cpu.pb.gz", Some(OutputFormat::Pprof)),
            ("x.folded", Some(OutputFormat::Folded)),
            ("x.JSON", Some(OutputFormat::Json)),
            ("report.txt", Some(OutputFormat::Text)),
            ("g.dot", Some(OutputFormat::Dot)),
            ("x.gz", None),
            (".svg", None),
            ("noext", None),
        ];
        for (name, want) in cases {
            assert_eq!(OutputFormat::from_path(Path::new(name)), want, "{name}");
        }
    }

    #[test]
    fn plan_destinations() {
        let plan = OutputPlan {
            files: vec![],
            format: OutputFormat::Json,
            options: RenderOptions::default(),
        };
        assert_eq!(plan.destinations(), [(None, OutputFormat::Json)]);
        let plan = OutputPlan {
            files: vec!["a.svg".into(), "b.unknown".into()],
            format: OutputFormat::Folded,
            options: RenderOptions::default(),
        };
        let d = plan.destinations();
        assert_eq!(d[0].1, OutputFormat::Flamegraph);
        assert_eq!(d[1].1, OutputFormat::Folded);
    }
}
