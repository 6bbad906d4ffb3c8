//! What a watch does ([`WatchOptions`]), where its report goes ([`WatchOutputPlan`]) and the
//! errors that end it ([`WatchError`]).

use std::{io::Write, path::PathBuf, time::Duration};

use crate::{
    goruntime::GoRuntimeError,
    report::events::{self as event_report, WatchReport},
    symbolize::SymbolizeError,
    target::TargetError,
};

/// What one watch does.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Process (tgid) to watch.
    pub pid: u32,
    /// How long to watch; `None`: until interrupted or the target exits.
    pub duration: Option<Duration>,
    /// Alert once per goroutine whose stack reaches this many bytes.
    pub stack_alert: Option<u64>,
    /// Kernel run-time statistics of the probes.
    pub verbose: bool,
}

/// Where a watch report goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOutputPlan {
    /// Files (format by extension, else `format`); empty: standard output.
    pub files: Vec<PathBuf>,
    /// Format of standard output, and of files without a known extension.
    pub format: WatchFormat,
    /// Text: list the probes and their kernel cost.
    pub verbose: bool,
}

/// The files of a [`WatchOutputPlan`], opened before anything is attached (temporary files
/// beside each destination, renamed over it when the report is complete, as for `record`).
pub struct PreparedWatchOutputs {
    files: Vec<(PathBuf, WatchFormat, tempfile::NamedTempFile)>,
}

impl WatchOutputPlan {
    /// Opens every output file now.
    pub fn prepare(&self) -> Result<PreparedWatchOutputs, WatchError> {
        let files = self
            .files
            .iter()
            .map(|path| {
                let format = WatchFormat::from_path(path).unwrap_or(self.format);
                crate::report::create_temp_beside(path)
                    .map(|temp| (path.clone(), format, temp))
                    .map_err(|source| WatchError::Output {
                        path: path.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(PreparedWatchOutputs { files })
    }

    /// Writes `report` into the prepared files (renamed into place), or to `stdout` when no
    /// file is named; returns the files written with their formats.
    pub fn write(
        &self,
        report: &WatchReport,
        prepared: PreparedWatchOutputs,
        stdout: &mut dyn Write,
    ) -> Result<Vec<(PathBuf, WatchFormat)>, WatchError> {
        if self.files.is_empty() {
            write_report(report, self.format, self.verbose, stdout)?;
            return Ok(Vec::new());
        }
        let mut written = Vec::new();
        for (path, format, mut temp) in prepared.files {
            let output_error = |source| WatchError::Output {
                path: path.clone(),
                source,
            };
            write_report(report, format, self.verbose, temp.as_file_mut()).map_err(output_error)?;
            temp.persist(&path).map_err(|e| output_error(e.error))?;
            written.push((path, format));
        }
        Ok(written)
    }
}

/// Writes `report` in `format` to `out`.
pub fn write_report(
    report: &WatchReport,
    format: WatchFormat,
    verbose: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        WatchFormat::Json => {
            serde_json::to_writer(&mut *out, report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        WatchFormat::Text => write!(out, "{}", event_report::render_text(report, verbose))?,
    }
    out.flush()
}

/// Output formats of the watch report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFormat {
    /// For a terminal, fatal error first.
    Text,
    /// One json document (alerts as json lines before it on standard output).
    Json,
}

impl WatchFormat {
    /// Every format.
    pub const ALL: [WatchFormat; 2] = [Self::Text, Self::Json];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }

    /// The format a file name asks for (`.json`, `.txt`), `None` for any other name.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        match crate::report::OutputFormat::from_path(path)? {
            crate::report::OutputFormat::Json => Some(Self::Json),
            crate::report::OutputFormat::Text => Some(Self::Text),
            _ => None,
        }
    }
}

impl std::str::FromStr for WatchFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown watch format {s:?} (one of: text, json)"))
    }
}

/// Errors that end a watch before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("inspecting the target's executable: {0}")]
    Inspect(#[from] GoRuntimeError),
    /// Events need goroutine ids: no layout, no watch.
    #[error("the Go runtime layout of {0} is unknown: runtime events need it")]
    NoLayout(String),
    #[error(transparent)]
    Bpf(#[from] crate::bpf::BpfError),
    #[error("preparing symbolization: {0}")]
    Symbolize(#[from] SymbolizeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("writing {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
