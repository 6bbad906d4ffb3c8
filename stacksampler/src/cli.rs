//! The command line: verbs parsed with clap and turned into the library's typed options.
//!
//! This is the only module that knows clap, and it belongs to the binary (`main.rs` declares
//! it; the library has no `cli` module). Each verb is one [`Command`] variant and one `*Args`
//! struct with a `to_options`-style conversion; adding a verb (`dump`, `top`, `agent`) is one
//! variant, one args struct and one arm in `main.rs`.
//!
//! The documented legacy forms keep working: a command line that does not start with a verb is
//! a `record` command line (`stacksampler --pid P ...`), or a `watch` one when it carries
//! `--watch` ([`Cli::parse_args`] rewrites it before clap sees it, so each verb's own flag set
//! decides what is accepted: `--watch --frequency 9` is an error, not ignored).

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use stacksampler::{
    agent::{
        AgentOptions, MIN_INTERVAL,
        discover::Discovery,
        files::OutputDir,
        otlp::OtlpOptions,
        push::{HttpUrl, host_name},
        pyroscope::PyroscopeOptions,
    },
    bpf::RingBytes,
    dump::output::{DumpFormat, GoroutineFilter, WriteOptions},
    goruntime::state::StateSet,
    inspect::{InspectFormat, InspectTarget},
    record::{RecordOptions, filter::Filter, wall::DEFAULT_WALL_FREQUENCY_HZ},
    report::{OutputFormat, OutputPlan, RenderOptions},
    sample::LabelFilter,
    top::{DEFAULT_REFRESH, TopOptions},
    units::parse_size,
    watch::{WatchFormat, WatchOptions, WatchOutputPlan},
};
use stacksampler_common::{DEFAULT_MAX_FRAMES, MAX_STACK_FRAMES};

/// The legacy switch that turns a verb-less command line into `watch`.
const LEGACY_WATCH_FLAG: &str = "--watch";
/// Flags of [`Cli`] itself, accepted before or after the verb.
const GLOBAL_FLAGS: [&str; 2] = ["-v", "--verbose"];

/// Live stack sampler for running Go programs (eBPF).
///
/// Needs root (CAP_BPF and CAP_PERFMON) for `record` and `watch`. Without a verb the command
/// line is a `record` one (`stacksampler --pid P` = `stacksampler record --pid P`), or a `watch`
/// one with `--watch`.
#[derive(Debug, Parser)]
#[command(name = "stacksampler", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print kernel-side diagnostics (aya-log) and progress details on stderr.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample the CPU stacks of every thread of a process, then report (the default verb).
    ///
    /// Samples every thread of PID at FREQUENCY Hz per CPU, records each sample's user stack
    /// (far past the kernel's 127-frame limit) and goroutine, and reports the hottest stacks
    /// with their goroutine states. A fatal error of the target is reported first.
    Record(RecordArgs),
    /// Follow the Go runtime through uprobes instead of sampling CPU: stack growth per
    /// goroutine, goroutine creation and exit (live count, leak sources), fatal errors.
    ///
    /// Runs until the target exits, --duration, or Ctrl-C; a live status line goes to stderr.
    Watch(WatchArgs),
    /// A live full-screen view of a running program, refreshed every second: functions ranked
    /// by own and total share of samples, goroutine states, the deepest stacks, findings.
    ///
    /// Keys: q quits, p pauses the display (sampling goes on), s cycles a state filter, 1-4
    /// sort, ? help. Needs a terminal; use `record` otherwise.
    Top(TopArgs),
    /// What stacksampler knows about a process or an executable: Go version, where the runtime
    /// layout comes from, its offsets, build ids, pclntab and DWARF presence, warnings.
    Inspect(InspectArgs),
    /// Print every goroutine of a running Go program, read from its memory without stopping it.
    ///
    /// Reads the target's memory only (process_vm_readv): no ptrace stop, no signal, no eBPF.
    /// Text is Go's own goroutine?debug=2 form (--group: debug=1).
    Dump(DumpArgs),
    /// Continuous profiling: sample processes until SIGINT/SIGTERM and export one profile per
    /// process per interval (rotating pprof files) and live metrics (Prometheus /metrics).
    ///
    /// Each target is sampled as `record` samples it; a target that exits is dropped with one
    /// line on stderr and the agent goes on.
    Agent(AgentArgs),
}

/// `stacksampler agent`.
#[derive(Clone, Debug, Args)]
pub struct AgentArgs {
    /// Process to sample; repeatable.
    #[arg(long, short = 'p', required_unless_present = "all_go")]
    pub pid: Vec<u32>,

    /// Also sample every Go process of the host (containers too), found by a scan of /proc each
    /// interval: new ones are attached, those that exit are dropped.
    #[arg(long)]
    pub all_go: bool,

    /// With --all-go: only executables under DIR (as each process names its executable).
    #[arg(long, value_name = "DIR", requires = "all_go")]
    pub exe_dir: Option<PathBuf>,

    /// Length of each profile: seconds (`15`, `15s`) or minutes (`1m`).
    #[arg(long, default_value = "15s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Write each interval's profile to DIR as `<service>-<pid>-<timestamp>.pb.gz`.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Keep the newest N files per process in --output-dir (older ones are removed).
    #[arg(long, value_name = "N", requires = "output_dir", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// Push each profile to the Pyroscope server at URL (http://HOST:PORT), as
    /// `<service>.cpu{host=..,pid=..}`.
    #[arg(long, value_name = "URL")]
    pub pyroscope: Option<HttpUrl>,

    /// Push each profile to the OTLP/HTTP profiles receiver at URL (an OpenTelemetry Collector
    /// with `service.profilesSupport`: http://HOST:4318), as `POST URL/v1development/profiles`
    /// (opentelemetry-proto v1.10.0).
    #[arg(long, value_name = "URL")]
    pub otlp: Option<HttpUrl>,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

impl AgentArgs {
    /// The library's options for this command line.
    pub fn options(&self, verbose: bool) -> AgentOptions {
        AgentOptions {
            pids: self.pid.clone(),
            all_go: self.all_go.then(|| Discovery {
                exe_dir: self.exe_dir.clone(),
            }),
            interval: self.interval,
            // The pid is set per target.
            record: self.sampling.record(0, None, verbose),
            output_dir: self.output_dir.clone().map(|dir| OutputDir {
                dir,
                keep: self.keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
            }),
            metrics_addr: self.metrics_addr,
            pyroscope: self.pyroscope.clone().map(|url| PyroscopeOptions {
                url,
                host: host_name(),
                sample_rate: self.sampling.frequency,
            }),
            otlp: self.otlp.clone().map(|url| OtlpOptions {
                url,
                host: host_name(),
            }),
        }
    }
}

/// `--interval`: `15`, `15s` or `2m`, at least [`MIN_INTERVAL`].
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = match s.strip_suffix('m') {
        Some(minutes) => parse_duration(minutes)
            .map(|d| d * 60)
            .map_err(|_| format!("{s:?} is not a number of minutes"))?,
        None => parse_duration(s)?,
    };
    if d < MIN_INTERVAL {
        return Err(format!(
            "the interval must be at least {}s, got {s}",
            MIN_INTERVAL.as_secs()
        ));
    }
    Ok(d)
}

/// `stacksampler dump`.
#[derive(Clone, Debug, Args)]
pub struct DumpArgs {
    /// Process to dump.
    #[arg(long, short = 'p')]
    pub pid: u32,

    /// Output format: text (Go's goroutine?debug=2), json (docs/dump.md) or pprof (a goroutine
    /// profile for `go tool pprof`).
    #[arg(long, short = 'f', default_value = "text", value_parser = parse_dump_format)]
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

    #[command(flatten)]
    pub goroutines: GoroutineArgs,
}

impl DumpArgs {
    /// Which goroutines to keep.
    pub fn filter(&self) -> GoroutineFilter {
        let g = &self.goroutines;
        GoroutineFilter {
            state: g.state,
            goid: g.goid,
            labels: g.label.clone(),
        }
    }

    /// How to write the dump.
    pub fn write_options(&self) -> WriteOptions {
        WriteOptions {
            format: self.format,
            group: self.group,
            system: self.system,
        }
    }
}

fn parse_dump_format(s: &str) -> Result<DumpFormat, String> {
    s.parse()
}

/// The process a verb works on.
#[derive(Clone, Debug, Args)]
pub struct TargetArgs {
    /// Process to sample.
    #[arg(long, short = 'p')]
    pub pid: u32,
}

/// When a run stops by itself.
#[derive(Clone, Debug, Args)]
pub struct StopArgs {
    /// Seconds to run; without it, until Ctrl-C or the target exits.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Which samples are kept.
#[derive(Clone, Debug, Args)]
pub struct FilterArgs {
    #[command(flatten)]
    pub goroutines: GoroutineArgs,

    /// Keep only samples whose user stack has at least N frames.
    #[arg(long, default_value_t = 0)]
    pub min_depth: usize,
}

/// Which goroutines are kept: the filter flags `record` (and `top`, `agent`) and `dump` share.
#[derive(Clone, Debug, Args)]
pub struct GoroutineArgs {
    /// Keep only goroutines in these states: `running,syscall` or `Grunning|Gsyscall`.
    #[arg(long)]
    pub state: Option<StateSet>,

    /// Keep only the goroutine with this id.
    #[arg(long)]
    pub goid: Option<u64>,

    /// Keep only goroutines with this pprof label (`pprof.Do`); repeatable, all must match.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<LabelFilter>,
}

impl From<&FilterArgs> for Filter {
    fn from(a: &FilterArgs) -> Self {
        let g = &a.goroutines;
        Self {
            states: g.state,
            min_depth: a.min_depth,
            goid: g.goid,
            labels: g.label.clone(),
        }
    }
}

/// `stacksampler record`.
#[derive(Clone, Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub stop: StopArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Report format for standard output (and for --output files without a known extension):
    /// text, folded, json, pprof, flamegraph, callgraph or dot.
    #[arg(long, short = 'f', default_value = "text", value_parser = parse_output_format)]
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

    /// Also record runtime events into the report: stack growth per goroutine, goroutine
    /// creation and exit (a target's fatal error is always recorded).
    #[arg(long)]
    pub events: bool,

    /// Also take every goroutine's stack, running or not, --wall-frequency times a second
    /// (read from the target's memory, as `dump` does): wall-clock samples beside the CPU
    /// samples, so off-CPU time shows.
    #[arg(long)]
    pub wall: bool,

    /// Wall-clock snapshots of every goroutine per second (with --wall).
    #[arg(long, requires = "wall", default_value_t = DEFAULT_WALL_FREQUENCY_HZ, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub wall_frequency: u64,
}

/// How samples are taken and which are kept (`record` and `top`).
#[derive(Clone, Debug, Args)]
pub struct SamplingArgs {
    /// Samples per second on each CPU.
    #[arg(long, short = 'F', default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Frames walked per sample in the kernel.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAMES, value_parser = parse_max_frames)]
    pub max_frames: u32,

    /// Also record the kernel stack of samples taken in kernel mode (system calls, page
    /// faults), symbolized from /proc/kallsyms, on top of the user stack.
    #[arg(long)]
    pub kernel: bool,

    /// Size of the kernel's sample ring buffer (a power of two from 4KiB to 1GiB, default
    /// 16MiB): samples that find it full are lost, counted and reported.
    #[arg(long, value_name = "SIZE", value_parser = parse_ring_size)]
    pub ring_size: Option<RingBytes>,
}

/// `--ring-size`: a size (`64K`, `16MiB`) the kernel takes as a ring buffer.
fn parse_ring_size(s: &str) -> Result<RingBytes, String> {
    RingBytes::new(parse_size(s)?).map_err(|e| e.to_string())
}

impl SamplingArgs {
    /// Record options sampling `pid` this way.
    fn record(&self, pid: u32, duration: Option<Duration>, verbose: bool) -> RecordOptions {
        RecordOptions {
            pid,
            duration,
            frequency_hz: self.frequency,
            max_frames: self.max_frames,
            kernel_stacks: self.kernel,
            events: false,
            event_details: true,
            filter: Filter::from(&self.filter),
            verbose,
            samples_ring: self.ring_size,
            wall_frequency_hz: None,
        }
    }
}

impl RecordArgs {
    /// The library's options for this command line.
    pub fn options(&self, verbose: bool) -> RecordOptions {
        RecordOptions {
            events: self.events,
            wall_frequency_hz: self.wall.then_some(self.wall_frequency),
            ..self
                .sampling
                .record(self.target.pid, self.stop.duration, verbose)
        }
    }

    /// Where the report goes.
    pub fn output_plan(&self) -> OutputPlan {
        OutputPlan {
            files: self.output.clone(),
            format: self.format,
            options: RenderOptions {
                state_frames: self.state_frames,
                collapse_recursion: self.collapse_recursion,
                ..RenderOptions::default()
            },
        }
    }
}

/// `stacksampler top`.
#[derive(Clone, Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// On exit, write the whole session's report to FILE as `record` would; repeatable. The
    /// format follows the extension (.txt, .folded, .json, .pb.gz, .svg, .dot), else text.
    #[arg(long, short = 'o')]
    pub output: Vec<PathBuf>,
}

impl TopArgs {
    /// The library's options for this command line.
    pub fn options(&self, verbose: bool) -> TopOptions {
        TopOptions {
            record: self.sampling.record(self.target.pid, None, verbose),
            refresh: DEFAULT_REFRESH,
        }
    }

    /// Where the session's report goes on exit (nothing without `--output`).
    pub fn output_plan(&self) -> OutputPlan {
        OutputPlan {
            files: self.output.clone(),
            format: OutputFormat::Text,
            options: RenderOptions::default(),
        }
    }
}

/// `stacksampler watch`.
#[derive(Clone, Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub stop: StopArgs,

    /// Alert (stderr line + json event) the moment a goroutine's stack reaches SIZE (1MB,
    /// 512KiB, 65536; KB/MB/GB are 1024-based), once per goroutine.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub stack_alert: Option<u64>,

    /// Report format for standard output (and for --output files without a known extension):
    /// text or json.
    #[arg(long, short = 'f', default_value = "text", value_parser = parse_watch_format)]
    pub format: WatchFormat,

    /// Write the report to FILE instead of standard output; repeatable. The format follows the
    /// extension (.txt, .json), else --format.
    #[arg(long, short = 'o')]
    pub output: Vec<PathBuf>,
}

impl WatchArgs {
    /// The library's options for this command line.
    pub fn options(&self, verbose: bool) -> WatchOptions {
        WatchOptions {
            pid: self.target.pid,
            duration: self.stop.duration,
            stack_alert: self.stack_alert,
            verbose,
        }
    }

    /// Where the report goes.
    pub fn output_plan(&self, verbose: bool) -> WatchOutputPlan {
        WatchOutputPlan {
            files: self.output.clone(),
            format: self.format,
            verbose,
        }
    }
}

/// `stacksampler inspect`.
#[derive(Clone, Debug, Args)]
pub struct InspectArgs {
    /// A running process (its executable, as the process sees it).
    #[arg(
        long,
        short = 'p',
        required_unless_present = "binary",
        conflicts_with = "binary"
    )]
    pub pid: Option<u32>,

    /// An executable on disk.
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,

    /// text or json.
    #[arg(long, short = 'f', default_value = "text", value_parser = parse_inspect_format)]
    pub format: InspectFormat,
}

impl InspectArgs {
    /// What to inspect.
    pub fn target(&self) -> InspectTarget {
        match (&self.binary, self.pid) {
            (Some(path), _) => InspectTarget::Binary(path.clone()),
            // clap's group makes exactly one of the two present.
            (None, pid) => InspectTarget::Pid(pid.unwrap_or_default()),
        }
    }
}

impl Cli {
    /// Parses a command line (the first element is the program name), legacy forms included.
    pub fn parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::try_parse_from(with_verb(args.into_iter().map(Into::into).collect()))
    }
}

/// Inserts the verb a legacy command line implies: `record`, or `watch` for `--watch` (which
/// is then removed). A line whose first argument is a verb, or a top-level `--help`/`--version`,
/// is left as it is.
fn with_verb(mut args: Vec<OsString>) -> Vec<OsString> {
    // The first argument that is not a global flag.
    let first = args
        .iter()
        .skip(1)
        .find(|a| !GLOBAL_FLAGS.iter().any(|g| *a == g))
        .map(|a| a.to_string_lossy().into_owned());
    if let Some(first) = first.as_deref() {
        let is_verb = Cli::command_names().any(|name| name == first);
        let top_level = matches!(first, "-h" | "--help" | "-V" | "--version");
        if is_verb || top_level {
            return args;
        }
    }
    let watch = args.iter().skip(1).any(|a| a == LEGACY_WATCH_FLAG);
    args.retain(|a| a != LEGACY_WATCH_FLAG);
    args.insert(1, if watch { "watch" } else { "record" }.into());
    args
}

impl Cli {
    /// Names of the verbs (and of clap's `help`).
    fn command_names() -> impl Iterator<Item = String> {
        use clap::CommandFactory as _;
        Self::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .chain(["help".to_owned()])
            .collect::<Vec<_>>()
            .into_iter()
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration must be positive, got {s}"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("duration {s}: {e}"))
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

fn parse_output_format(s: &str) -> Result<OutputFormat, String> {
    s.parse()
}

fn parse_watch_format(s: &str) -> Result<WatchFormat, String> {
    s.parse()
}

fn parse_inspect_format(s: &str) -> Result<InspectFormat, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacksampler::goruntime::state::GoroutineState;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_args(std::iter::once("stacksampler").chain(args.iter().copied()))
    }

    /// The verb a command line that must parse parses to.
    fn command(args: &[&str]) -> Command {
        parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    fn dump(args: &[&str]) -> DumpArgs {
        match command(args) {
            Command::Dump(a) => a,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn record(args: &[&str]) -> RecordArgs {
        match command(args) {
            Command::Record(r) => r,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn watch(args: &[&str]) -> WatchArgs {
        match command(args) {
            Command::Watch(w) => w,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn dump_verb() {
        let a = dump(&["dump", "--pid", "7", "--format", "pprof", "-o", "g.pb.gz"]);
        assert_eq!((a.pid, a.format), (7, DumpFormat::Pprof));
        assert_eq!(a.output, Some(PathBuf::from("g.pb.gz")));
        let a = dump(&[
            "dump", "-p", "7", "--group", "--state", "waiting", "--label", "k=v",
        ]);
        assert!(a.group && a.format == DumpFormat::Text && a.output.is_none());
        assert_eq!(a.filter().labels.len(), 1);
        assert!(parse(&["dump"]).is_err());
        assert!(parse(&["dump", "--pid", "7", "--format", "svg"]).is_err());
        assert!(parse(&["dump", "--pid", "7", "--state", "sleepy"]).is_err());
        // A flag of another verb is refused.
        assert!(parse(&["dump", "--pid", "7", "--frequency", "99"]).is_err());
        assert!(parse(&["dump", "--pid", "7", "--min-depth", "3"]).is_err());
    }

    #[test]
    fn dump_and_record_read_the_goroutine_filters_alike() {
        let flags = [
            "--state",
            "waiting,Gsyscall",
            "--goid",
            "9",
            "--label",
            "k=v",
        ];
        let d = dump(&[&["dump", "--pid", "7"][..], &flags].concat()).filter();
        let r = Filter::from(
            &record(&[&["record", "--pid", "7"][..], &flags].concat())
                .sampling
                .filter,
        );
        assert_eq!((d.state, d.goid, d.labels), (r.states, r.goid, r.labels));
    }

    #[test]
    fn parses_the_documented_command_line() {
        for prefix in [&[][..], &["record"]] {
            let args: Vec<&str> = prefix
                .iter()
                .copied()
                .chain([
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
                .collect();
            let c = record(&args);
            let o = c.options(false);
            assert_eq!(o.pid, 42);
            assert_eq!(o.duration, Some(Duration::from_secs(5)));
            assert_eq!(o.frequency_hz, 99);
            assert_eq!(o.max_frames, DEFAULT_MAX_FRAMES);
            assert!(!o.kernel_stacks && !o.events && !o.verbose);
            let states = o.filter.states.unwrap();
            assert!(states.contains(GoroutineState::Syscall));
            assert!(!states.contains(GoroutineState::Waiting));
            assert_eq!(o.filter.min_depth, 1024);
            assert_eq!(c.output_plan().format, OutputFormat::Folded);
        }
    }

    #[test]
    fn output_is_repeatable_with_render_flags() {
        let c = record(&[
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
        ]);
        let plan = c.output_plan();
        assert_eq!(
            plan.files,
            [PathBuf::from("a.svg"), PathBuf::from("b.pb.gz")]
        );
        assert!(plan.options.state_frames && plan.options.collapse_recursion);
        assert_eq!(plan.format, OutputFormat::Dot);
        let plan = record(&["--pid", "1"]).output_plan();
        assert!(plan.files.is_empty());
        assert!(!plan.options.state_frames && !plan.options.collapse_recursion);
    }

    #[test]
    fn parses_goroutine_filters() {
        let c = record(&[
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
        ]);
        let f = Filter::from(&c.sampling.filter);
        assert_eq!(f.goid, Some(17));
        assert_eq!(f.labels.len(), 2);
        assert_eq!(
            (f.labels[1].key.as_str(), f.labels[1].value.as_str()),
            ("user", "a=b")
        );
        let f = Filter::from(&record(&["--pid", "1"]).sampling.filter);
        assert!(f.goid.is_none() && f.labels.is_empty());
        assert!(parse(&["--pid", "1", "--label", "x"]).is_err());
        assert!(parse(&["--pid", "1", "--goid", "-1"]).is_err());
    }

    #[test]
    fn wall_clock_flags() {
        let o = record(&["--pid", "1"]).options(false);
        assert_eq!(o.wall_frequency_hz, None);
        let o = record(&["--pid", "1", "--wall"]).options(false);
        assert_eq!(o.wall_frequency_hz, Some(DEFAULT_WALL_FREQUENCY_HZ));
        let o = record(&["--pid", "1", "--wall", "--wall-frequency", "25"]).options(false);
        assert_eq!(o.wall_frequency_hz, Some(25));
        // The frequency means nothing without --wall; 0 and more than 100 snapshots a second
        // are refused.
        assert!(parse(&["record", "--pid", "1", "--wall-frequency", "5"]).is_err());
        assert!(parse(&["record", "--pid", "1", "--wall", "--wall-frequency", "0"]).is_err());
        assert!(parse(&["record", "--pid", "1", "--wall", "--wall-frequency", "101"]).is_err());
        assert!(parse(&["top", "--pid", "1", "--wall"]).is_err());
    }

    #[test]
    fn record_flags_and_verbose_anywhere() {
        let cli = parse(&[
            "-v", "record", "--pid", "3", "--kernel", "--events", "-F", "999",
        ])
        .unwrap();
        assert!(cli.verbose);
        let Command::Record(r) = cli.command else {
            panic!("not record")
        };
        let o = r.options(cli.verbose);
        assert!(o.kernel_stacks && o.events && o.verbose);
        assert_eq!(o.frequency_hz, 999);
        let cli = parse(&["--pid", "3", "--verbose"]).unwrap();
        assert!(cli.verbose);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            &[][..],
            &["--pid", "x"],
            &["--pid", "1", "--state", "sleepy"],
            &["--pid", "1", "--max-frames", "0"],
            &["--pid", "1", "--max-frames", "99999999"],
            &["--pid", "1", "--duration", "-3"],
            &["--pid", "1", "--frequency", "0"],
            &["--pid", "1", "--format", "xml"],
            &["record"],
            &["watch"],
            &["inspect"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_watch_and_its_legacy_alias() {
        for args in [
            &[
                "watch",
                "--pid",
                "7",
                "--stack-alert",
                "64KiB",
                "-d",
                "3",
                "--format",
                "json",
            ][..],
            &[
                "--watch",
                "--pid",
                "7",
                "--stack-alert",
                "64KiB",
                "-d",
                "3",
                "--format",
                "json",
            ],
            &[
                "--pid",
                "7",
                "--watch",
                "--stack-alert",
                "64KiB",
                "-d",
                "3",
                "--format",
                "json",
            ],
        ] {
            let w = watch(args);
            let o = w.options(false);
            assert_eq!(o.pid, 7, "{args:?}");
            assert_eq!(o.stack_alert, Some(64 << 10));
            assert_eq!(o.duration, Some(Duration::from_secs(3)));
            assert_eq!(w.output_plan(false).format, WatchFormat::Json);
        }
        let w = watch(&["watch", "--pid", "7", "-o", "x.json"]);
        let plan = w.output_plan(true);
        assert_eq!(plan.files, [PathBuf::from("x.json")]);
        assert_eq!(plan.format, WatchFormat::Text);
        let o = w.options(true);
        assert!(o.verbose && o.stack_alert.is_none());
    }

    #[test]
    fn parses_top() {
        let cli = parse(&[
            "top", "--pid", "5", "-F", "49", "--state", "syscall", "-o", "t.json",
        ])
        .unwrap();
        let Command::Top(t) = cli.command else {
            panic!("not top")
        };
        let o = t.options(false).record;
        assert_eq!(o.pid, 5);
        assert_eq!(o.frequency_hz, 49);
        assert_eq!(o.duration, None);
        assert!(!o.events);
        assert!(o.filter.states.unwrap().contains(GoroutineState::Syscall));
        assert_eq!(t.output_plan().files, [PathBuf::from("t.json")]);
        for bad in [
            &["top"][..],
            &["top", "--pid", "5", "--duration", "3"],
            &["top", "--pid", "5", "--format", "json"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_agent() {
        let cli = parse(&[
            "agent",
            "--pid",
            "5",
            "--pid",
            "6",
            "--interval",
            "2s",
            "--output-dir",
            "/tmp/p",
            "--keep",
            "3",
            "--metrics-addr",
            "127.0.0.1:9464",
            "-F",
            "49",
        ])
        .unwrap();
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        let o = a.options(false);
        assert_eq!(o.pids, [5, 6]);
        assert_eq!(o.interval, Duration::from_secs(2));
        assert_eq!(o.record.frequency_hz, 49);
        assert_eq!(o.record.duration, None);
        assert_eq!(
            o.output_dir,
            Some(OutputDir {
                dir: "/tmp/p".into(),
                keep: Some(3)
            })
        );
        assert_eq!(o.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let Command::Agent(a) = parse(&["agent", "--pid", "5", "--interval", "1m"])
            .unwrap()
            .command
        else {
            panic!("not agent")
        };
        assert_eq!(a.options(false).interval, Duration::from_secs(60));
        assert_eq!(a.options(false).output_dir, None);
        assert_eq!(a.options(false).all_go, None);
        let Command::Agent(a) = parse(&["agent", "--all-go", "--exe-dir", "/srv"])
            .unwrap()
            .command
        else {
            panic!("not agent")
        };
        let o = a.options(false);
        assert!(o.pids.is_empty());
        assert_eq!(
            o.all_go,
            Some(Discovery {
                exe_dir: Some("/srv".into())
            })
        );
        for bad in [
            &["agent"][..],
            &["agent", "--pid", "5", "--interval", "0.5s"],
            &["agent", "--pid", "5", "--keep", "2"],
            &["agent", "--pid", "5", "--output-dir", "d", "--keep", "0"],
            &["agent", "--pid", "5", "--metrics-addr", "nowhere"],
            &["agent", "--pid", "5", "--duration", "3"],
            &["agent", "--pid", "5", "--exe-dir", "/srv"],
            &["agent", "--pid", "5", "--pyroscope", "https://x"],
            &["agent", "--pid", "5", "--otlp", "localhost:4318"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_inspect() {
        let cli = parse(&["inspect", "--pid", "9"]).unwrap();
        let Command::Inspect(i) = cli.command else {
            panic!("not inspect")
        };
        assert_eq!(i.target(), InspectTarget::Pid(9));
        assert_eq!(i.format, InspectFormat::Text);
        let cli = parse(&["inspect", "--binary", "/bin/true", "--format", "json"]).unwrap();
        let Command::Inspect(i) = cli.command else {
            panic!("not inspect")
        };
        assert_eq!(i.target(), InspectTarget::Binary("/bin/true".into()));
        assert_eq!(i.format, InspectFormat::Json);
        // Exactly one of --pid and --binary.
        assert!(parse(&["inspect", "--pid", "9", "--binary", "/bin/true"]).is_err());
        assert!(parse(&["inspect", "--format", "json"]).is_err());
    }

    #[test]
    fn a_flag_a_verb_does_not_take_is_an_error() {
        for bad in [
            // record takes no watch or inspect flags
            &["record", "--pid", "1", "--stack-alert", "1MB"][..],
            &["record", "--pid", "1", "--binary", "/bin/true"],
            &["record", "--pid", "1", "--watch"],
            &["--pid", "1", "--stack-alert", "1MB"],
            // watch takes none of the sampling flags
            &["watch", "--pid", "1", "--frequency", "9"],
            &["watch", "--pid", "1", "--state", "running"],
            &["watch", "--pid", "1", "--format", "pprof"],
            &["watch", "--pid", "1", "--events"],
            &["--watch", "--pid", "1", "--frequency", "9"],
            &["--watch", "--pid", "1", "--min-depth", "3"],
            &["--watch", "--pid", "1", "--kernel"],
            // inspect takes neither
            &["inspect", "--pid", "1", "--duration", "3"],
            &["inspect", "--binary", "/bin/true", "--format", "folded"],
        ] {
            let err = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::UnknownArgument
                        | clap::error::ErrorKind::InvalidValue
                        | clap::error::ErrorKind::ValueValidation
                ),
                "{bad:?}: {:?} {err}",
                err.kind()
            );
        }
    }

    /// The library must not know the command line: no library module may use clap or this
    /// module (the binary's `main.rs` is the only other file allowed to), nor print (the
    /// binary's `status.rs` and `terminal.rs` own stderr and the terminal).
    #[test]
    fn library_modules_do_not_import_the_cli() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let binary_side = [
            src.join("main.rs"),
            src.join("cli.rs"),
            src.join("status.rs"),
            src.join("terminal.rs"),
        ];
        let library: Vec<_> = files.iter().filter(|f| !binary_side.contains(f)).collect();
        assert!(
            library.len() > 20,
            "found only {} library files",
            library.len()
        );
        for file in library {
            let text = std::fs::read_to_string(file).expect("read source file");
            for needle in ["clap", "crate::cli", "mod cli", "super::cli"] {
                assert!(
                    !text.contains(needle),
                    "{} mentions {needle:?}: library modules must take typed options",
                    file.display()
                );
            }
            // The library returns data and notices; only the binary prints.
            for needle in ["println!(", "eprint!(", "print!(", "stderr()", "stdout()"] {
                assert!(
                    !text.contains(needle),
                    "{} prints ({needle:?}): report through session::Observer instead",
                    file.display()
                );
            }
        }
    }
}
