//! The `stacksampler dump` command line.

use std::{io::Write, path::PathBuf};

use clap::{Parser, ValueEnum};

use crate::{filter::LabelFilter, goruntime::state::StateSet};

use super::{Dump, Goroutine, pprof, text};

/// Print every goroutine of a running Go program, read from its memory without stopping it.
///
/// Reads /proc/PID/mem only: no ptrace stop, no signal. Needs root (or ptrace access).
#[derive(Clone, Debug, Parser)]
#[command(name = "stacksampler dump", version, about, long_about)]
pub struct DumpArgs {
    /// Process to dump.
    #[arg(long, short = 'p')]
    pub pid: u32,

    /// Output format: text (Go's goroutine?debug=2), json (docs/dump.md) or pprof (a goroutine
    /// profile for `go tool pprof`).
    #[arg(long, short = 'f', value_enum, default_value_t = DumpFormat::Text)]
    pub format: DumpFormat,

    /// Write to FILE instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,

    /// Text: group identical stacks (Go's goroutine?debug=1), most common first.
    #[arg(long)]
    pub group: bool,

    /// Text: also list the runtime's own goroutines (Go's dumps hide them).
    #[arg(long)]
    pub system: bool,

    /// Keep only goroutines in these states: `waiting,syscall` or `Gwaiting|Gsyscall`.
    #[arg(long)]
    pub state: Option<StateSet>,

    /// Keep only the goroutine with this id.
    #[arg(long)]
    pub goid: Option<u64>,

    /// Keep only goroutines with this pprof label; repeatable, all must match.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<LabelFilter>,
}

/// Formats of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DumpFormat {
    Text,
    Json,
    Pprof,
}

impl DumpArgs {
    /// Parses a command line (`stacksampler dump ...`: the first element is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }
}

impl DumpArgs {
    /// Whether `g` passes `--state`, `--goid` and `--label`.
    pub fn keeps(&self, g: &Goroutine) -> bool {
        self.state.is_none_or(|s| s.contains(g.state))
            && self.goid.is_none_or(|id| id == g.goid)
            && self
                .label
                .iter()
                .all(|f| g.labels.iter().any(|(k, v)| *k == f.key && *v == f.value))
    }
}

/// Writes `dump` in the format `args` asks for.
pub fn write(dump: &Dump, args: &DumpArgs, out: &mut dyn Write) -> std::io::Result<()> {
    let options = text::TextOptions {
        system: args.system,
    };
    match (args.format, args.group) {
        (DumpFormat::Text, false) => text::write_text(dump, options, out),
        (DumpFormat::Text, true) => text::write_grouped(dump, options, out),
        (DumpFormat::Json, _) => {
            serde_json::to_writer(&mut *out, dump).map_err(std::io::Error::from)?;
            writeln!(out)
        }
        (DumpFormat::Pprof, _) => pprof::write(dump, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_command_line() {
        let a = DumpArgs::from_args(["dump", "--pid", "7", "--format", "pprof", "-o", "g.pb.gz"])
            .unwrap();
        assert_eq!((a.pid, a.format), (7, DumpFormat::Pprof));
        assert_eq!(a.output, Some(PathBuf::from("g.pb.gz")));
        let a = DumpArgs::from_args(["dump", "-p", "7", "--group"]).unwrap();
        assert!(a.group && a.format == DumpFormat::Text && a.output.is_none());
        assert!(DumpArgs::from_args(["dump"]).is_err());
        assert!(DumpArgs::from_args(["dump", "--pid", "7", "--format", "svg"]).is_err());
        assert!(DumpArgs::from_args(["dump", "--pid", "7", "--state", "sleepy"]).is_err());
    }

    #[test]
    fn filters_by_state_goid_and_label() {
        let a = DumpArgs::from_args(["dump", "--pid", "7", "--state", "waiting", "--label", "k=v"])
            .unwrap();
        let mut g = crate::dump::test_support::goroutine(1, Vec::new());
        g.labels.clear();
        assert!(!a.keeps(&g));
        g.labels.push(("k".into(), "v".into()));
        assert!(a.keeps(&g));
        g.state = crate::goruntime::state::GoroutineState::Running;
        assert!(!a.keeps(&g));
        let by_id = DumpArgs::from_args(["dump", "--pid", "7", "--goid", "3"]).unwrap();
        g.goid = 3;
        assert!(by_id.keeps(&g));
        g.goid = 4;
        assert!(!by_id.keeps(&g));
    }
}
