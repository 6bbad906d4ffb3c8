//! Runtime events: entry uprobes on the Go runtime of a running program (the probes themselves
//! are attached by [`crate::bpf::uprobes`]).
//!
//! - [`sites`]: where the probes go (file offsets from `.symtab`, or `.gopclntab` when stripped).
//! - [`decode`]: ring buffer records -> [`RuntimeEvent`].
//! - [`tracker`]: growth sequences per goroutine, live goroutines and their creation stacks,
//!   fatal errors, `--stack-alert` crossings.
//! - [`report`]: the report (fatal error first), text and json.
//! - [`watch`]: the `--watch` mode (no CPU sampling, live status line).
//!
//! A `record` run attaches the probes to the sampler's object and feeds its own [`Tracker`]
//! (`crate::run`). See `docs/runtime-events.md`.

pub mod decode;
pub mod report;
pub mod sites;
pub mod tracker;
pub mod watch;

pub use decode::{RuntimeEvent, RuntimeEventKind};
pub use tracker::Tracker;
pub use watch::watch;

use std::{path::PathBuf, time::Duration};

use crate::{goruntime::GoRuntimeError, symbolize::SymbolizeError, target::TargetError};

/// What one watch does.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Process (tgid) to watch.
    pub pid: u32,
    /// How long to watch; `None`: until interrupted or the target exits.
    pub duration: Option<Duration>,
    /// Alert once per goroutine whose stack reaches this many bytes.
    pub stack_alert: Option<u64>,
    /// Format of standard output, and of files without a known extension.
    pub format: WatchFormat,
    /// Files to write the report to (format by extension, else `format`); empty: stdout.
    pub output: Vec<PathBuf>,
    /// Status line every second even off a terminal, kernel run-time statistics.
    pub verbose: bool,
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

/// Parses a size: `1048576`, `512K`, `512KB`, `512KiB`, `1M`, `1MB`, `1MiB`, `1G`...
///
/// `KB`/`MB`/`GB` are binary (1024-based), as Go's runtime sizes stacks.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1MB, 512KiB, 65536)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    let bytes = value * mult as f64;
    if !(bytes >= 1.0 && bytes.is_finite() && bytes < u64::MAX as f64) {
        return Err(format!("size must be positive, got {s:?}"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MB").is_err());
    }
}
