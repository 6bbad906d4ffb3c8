//! The command line, parsed into a [`Config`] the library runs from.

use std::path::PathBuf;

use clap::Parser;
use stacksampler_common::{DEFAULT_MAX_FRAMES, MAX_STACK_FRAMES};

use crate::{filter::LabelFilter, goruntime::state::StateSet, report::OutputFormat};

/// Live stack sampler for running Go programs (eBPF).
///
/// Samples every thread of PID at FREQUENCY Hz per CPU, records each sample's user stack (far
/// past the kernel's 127-frame limit) and goroutine, and reports the hottest stacks with their
/// goroutine states. Needs root (CAP_BPF and CAP_PERFMON).
#[derive(Clone, Debug, Parser)]
#[command(name = "stacksampler", version, about, long_about)]
pub struct Config {
    /// Process to sample.
    #[arg(long, short = 'p')]
    pub pid: u32,

    /// Seconds to sample; without it, until Ctrl-C or the target exits.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<f64>,

    /// Samples per second on each CPU.
    #[arg(long, short = 'F', default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,

    /// Keep only goroutines in these states: `Grunning|Gsyscall` or `running,syscall`.
    #[arg(long)]
    pub state: Option<StateSet>,

    /// Keep only the goroutine with this id.
    #[arg(long)]
    pub goid: Option<u64>,

    /// Keep only goroutines with this pprof label (`pprof.Do`); repeatable, all must match.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<LabelFilter>,

    /// Keep only samples whose user stack has at least N frames.
    #[arg(long, default_value_t = 0)]
    pub min_depth: usize,

    /// Frames walked per sample in the kernel.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAMES, value_parser = parse_max_frames)]
    pub max_frames: u32,

    /// Report format for standard output (and for --output files without a known extension):
    /// text, folded, json, pprof, flamegraph, callgraph or dot.
    #[arg(long, short = 'f', value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,

    /// Write the report to FILE instead of standard output; repeatable. The format follows the
    /// extension (.txt, .folded, .json, .pb.gz, .svg, .dot), else --format.
    #[arg(long, short = 'o')]
    pub output: Vec<PathBuf>,

    /// Folded and flame graph output: the goroutine state as the root frame (`[running]`).
    #[arg(long)]
    pub state_frames: bool,

    /// Folded output: keep one body of each repeated call cycle instead of every repetition.
    #[arg(long)]
    pub collapse_recursion: bool,

    /// Also record the kernel stack of samples taken in kernel mode (system calls, page
    /// faults), symbolized from /proc/kallsyms, on top of the user stack.
    #[arg(long)]
    pub kernel: bool,

    /// Print kernel-side diagnostics (aya-log) and progress details on stderr.
    #[arg(long, short = 'v')]
    pub verbose: bool,

    /// Watch the Go runtime through uprobes instead of sampling CPU: stack growth per goroutine,
    /// goroutine creation and exit (live count, leak sources), fatal errors. Runs until the
    /// target exits, --duration, or Ctrl-C; a live status line goes to stderr.
    #[arg(long)]
    pub watch: bool,

    /// With --watch: alert (stderr line + json event) the moment a goroutine's stack reaches
    /// SIZE (1MB, 512KiB, 65536; KB/MB/GB are 1024-based), once per goroutine.
    #[arg(long, value_name = "SIZE", value_parser = crate::events::parse_size, requires = "watch")]
    pub stack_alert: Option<u64>,
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive, got {s}"));
    }
    Ok(secs)
}

fn parse_max_frames(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a frame count"))?;
    if n == 0 || n as usize > MAX_STACK_FRAMES {
        return Err(format!(
            "--max-frames must be 1..={MAX_STACK_FRAMES}, got {n}"
        ));
    }
    Ok(n)
}

impl Config {
    /// Parses a command line (the first element is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goruntime::state::GoroutineState;

    #[test]
    fn parses_the_documented_command_line() {
        let c = Config::from_args([
            "stacksampler",
            "--pid",
            "42",
            "--duration",
            "5",
            "--state",
            "Grunning|Gsyscall",
            "--min-depth",
            "1024",
            "--format",
            "folded",
        ])
        .unwrap();
        assert_eq!(c.pid, 42);
        assert_eq!(c.duration, Some(5.0));
        assert_eq!(c.frequency, 99);
        assert_eq!(c.max_frames, DEFAULT_MAX_FRAMES);
        let states = c.state.unwrap();
        assert!(states.contains(GoroutineState::Syscall));
        assert!(!states.contains(GoroutineState::Waiting));
        assert_eq!(c.min_depth, 1024);
        assert_eq!(c.format, OutputFormat::Folded);
    }

    #[test]
    fn output_is_repeatable_with_render_flags() {
        let c = Config::from_args([
            "stacksampler",
            "--pid",
            "1",
            "-o",
            "a.svg",
            "--output",
            "b.pb.gz",
            "--state-frames",
            "--collapse-recursion",
            "--format",
            "dot",
        ])
        .unwrap();
        assert_eq!(c.output, [PathBuf::from("a.svg"), PathBuf::from("b.pb.gz")]);
        assert!(c.state_frames && c.collapse_recursion);
        assert_eq!(c.format, OutputFormat::Dot);
        let c = Config::from_args(["stacksampler", "--pid", "1"]).unwrap();
        assert!(c.output.is_empty() && !c.state_frames && !c.collapse_recursion);
    }

    #[test]
    fn parses_goroutine_filters() {
        let c = Config::from_args([
            "stacksampler",
            "--pid",
            "1",
            "--goid",
            "17",
            "--label",
            "req=42",
            "--label",
            "user=a=b",
            "--state",
            "waiting,Gsyscall",
        ])
        .unwrap();
        assert_eq!(c.goid, Some(17));
        assert_eq!(c.label.len(), 2);
        assert_eq!(
            (c.label[1].key.as_str(), c.label[1].value.as_str()),
            ("user", "a=b")
        );
        let c = Config::from_args(["stacksampler", "--pid", "1"]).unwrap();
        assert!(c.goid.is_none() && c.label.is_empty());
        assert!(Config::from_args(["stacksampler", "--pid", "1", "--label", "x"]).is_err());
        assert!(Config::from_args(["stacksampler", "--pid", "1", "--goid", "-1"]).is_err());
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &["stacksampler"][..],
            &["stacksampler", "--pid", "x"],
            &["stacksampler", "--pid", "1", "--state", "sleepy"],
            &["stacksampler", "--pid", "1", "--max-frames", "0"],
            &["stacksampler", "--pid", "1", "--max-frames", "99999999"],
            &["stacksampler", "--pid", "1", "--duration", "-3"],
            &["stacksampler", "--pid", "1", "--frequency", "0"],
        ] {
            assert!(Config::from_args(bad).is_err(), "{bad:?} accepted");
        }
    }
}
