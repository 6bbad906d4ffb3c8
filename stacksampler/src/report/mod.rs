//! Rendering a finished run: the [`Report`] model and one module per output format.

use std::{io::Write, path::PathBuf};

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
}

/// Facts about the run that every format may show.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub pid: u32,
    /// The target's executable (as `/proc/PID/exe` named it at start).
    pub binary: PathBuf,
    /// Go version from the binary's build info, when it is a Go binary.
    pub go_version: Option<String>,
    /// Wall time sampled, seconds.
    pub duration_secs: f64,
    /// Sampling frequency per CPU, Hz.
    pub frequency_hz: u64,
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
    pub warnings: Vec<String>,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Ranked stacks for a terminal.
    Text,
    /// `frame;frame;... count` lines, outermost first (inferno, FlameGraph).
    Folded,
    /// The documented json schema (docs/json-format.md).
    Json,
}

/// Error writing a report.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `report` in `format` to `out`.
pub fn render(report: &Report, format: OutputFormat, out: &mut dyn Write) -> Result<(), RenderError> {
    let _ = (report, format);
    writeln!(out, "(report rendering not written yet)")?;
    Ok(())
}
