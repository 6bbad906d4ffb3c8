//! Kernel cost per sample from bpf_stats (`stacksampler --verbose` enables them and prints the
//! program's run count and run time), against stacks of about 10, 1,000 and 10,000 frames that
//! do not change between samples (workers spinning at the bottom of a recursion), and against
//! 1,000- and 10,000-frame stacks rebuilt between samples (the `deep-changing` workload).

use std::{
    fs::File,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{
    Ctx, MAX_FRAMES,
    proc::{Proc, ReportSummary, Target},
};

/// Frames below `main.recurse` in a deep worker's sampled stack (runtime.goexit, the closure,
/// main.work, main.unit and the SHA-256 code), measured: the `depth` column shows the real depth.
const BASE_FRAMES: usize = 6;
/// `--max-frames` upper bound of stacksampler.
const MAX_FRAMES_LIMIT: u32 = 16384;

#[derive(Serialize)]
pub struct DepthCost {
    /// `None`: the target is idle, every run is a filtered one (another process's thread).
    pub requested_depth: Option<usize>,
    /// The stack is rebuilt between samples (returns from the whole recursion and descends
    /// again through another call site) instead of staying as it is.
    pub changing: bool,
    /// Depth of the most sampled stack (frames walked).
    pub measured_depth: u64,
    pub max_frames: u32,
    pub frequency_hz: u64,
    pub duration_s: f64,
    /// Perf events that hit the target's threads.
    pub target_hits: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Program runs on every CPU and every process (the program filters by tgid itself).
    pub runs: u64,
    pub run_time_ns: u64,
    pub ns_per_run: f64,
    /// Total run time / samples delivered: what one sample of the target costs, including the
    /// runs on other processes that only filtered.
    pub ns_per_sample: f64,
    /// (run time - filtered runs x the idle row's ns per run) / target hits: one target
    /// sample's own cost.
    pub ns_per_target_sample: Option<f64>,
}

#[derive(Serialize)]
pub struct KernelCost {
    pub depths: Vec<DepthCost>,
    /// Slope of ns per target sample between the two deepest stacks.
    pub ns_per_frame: f64,
}

/// The number printed just before `suffix` in `line`.
fn number_before(line: &str, suffix: &str) -> anyhow::Result<f64> {
    let head = &line[..line
        .find(suffix)
        .with_context(|| format!("no {suffix:?} in {line:?}"))?];
    head.split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("no number before {suffix:?} in {line:?}"))
}

/// What one `stacksampler --verbose` run said of its kernel (and native unwinding) cost.
pub struct VerboseRun {
    pub report: ReportSummary,
    pub target_hits: u64,
    pub delivered: u64,
    pub lost: u64,
    pub runs: u64,
    pub ns_per_run: f64,
    pub run_time_ns: u64,
    /// The `native unwinding:` line, when the run had native samples.
    pub native_line: Option<String>,
}

impl VerboseRun {
    /// Depth of the most sampled stack.
    pub fn measured_depth(&self) -> u64 {
        self.report
            .stacks
            .iter()
            .max_by_key(|s| s.count)
            .map_or(0, |s| s.depth)
    }

    /// One target sample's own cost: the run time less the filtered runs at `filter_ns` each.
    pub fn ns_per_target_sample(&self, filter_ns: f64) -> f64 {
        let filtered = self.runs.saturating_sub(self.target_hits) as f64;
        (self.run_time_ns as f64 - filtered * filter_ns) / self.target_hits.max(1) as f64
    }
}

/// Samples `pid` for the kernel-cost duration with `--verbose` (bpf_stats on).
pub fn sample_verbose(ctx: &Ctx, pid: u32, max_frames: u32) -> anyhow::Result<VerboseRun> {
    let duration = ctx.kernel_seconds;
    let json = ctx.tmp.join("kernel.json");
    let stderr_path = ctx.tmp.join("kernel.stderr");
    let mut proc = Proc::spawn(
        "stacksampler",
        Command::new(&ctx.tools.stacksampler)
            .args([
                "--pid",
                &pid.to_string(),
                "--duration",
                &duration.to_string(),
            ])
            .args([
                "--max-frames",
                &max_frames.to_string(),
                "--verbose",
                "--output",
            ])
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path)?),
    )?;
    let exit = proc.wait_timeout(Duration::from_secs(120 + duration as u64))?;
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    if !exit.success() {
        bail!("stacksampler failed ({}): {stderr}", exit.describe());
    }
    let line = stderr
        .lines()
        .find(|l| l.contains("ns per delivered sample"))
        .with_context(|| format!("no kernel cost line in stacksampler's output: {stderr}"))?;
    let runs = number_before(line, " runs,")? as u64;
    let ns_per_run = number_before(line, " ns per run")?;
    Ok(VerboseRun {
        report: ReportSummary::read(&json)?,
        target_hits: number_before(line, " perf events on the target")? as u64,
        delivered: number_before(line, " delivered,")? as u64,
        lost: number_before(line, " lost,")? as u64,
        runs,
        ns_per_run,
        run_time_ns: (ns_per_run * runs as f64).round() as u64,
        native_line: stderr
            .lines()
            .find(|l| l.contains("native unwinding:"))
            .map(str::to_owned),
    })
}

/// The kernel cost of filtered runs only (the target idle): what every run pays.
pub fn idle_cost(ctx: &Ctx) -> anyhow::Result<DepthCost> {
    measure(ctx, None, false)
}

fn measure(ctx: &Ctx, requested: Option<usize>, changing: bool) -> anyhow::Result<DepthCost> {
    let depth = requested.unwrap_or(0);
    let recursion = depth.saturating_sub(BASE_FRAMES);
    let workers = if requested.is_some() { ctx.nproc } else { 0 };
    let workload = if changing { "deep-changing" } else { "deep" };
    let args: Vec<String> = ["-workload", workload, "-depth", &recursion.to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain(["-workers".to_owned(), workers.to_string()])
        .collect();
    let _target = Target::start(&ctx.tools.target, &args)?;
    let max_frames = if depth > MAX_FRAMES as usize {
        MAX_FRAMES_LIMIT
    } else {
        MAX_FRAMES
    };
    let run = sample_verbose(ctx, _target.pid(), max_frames)?;
    Ok(DepthCost {
        requested_depth: requested,
        changing,
        measured_depth: run.measured_depth(),
        max_frames,
        frequency_hz: 99,
        duration_s: ctx.kernel_seconds,
        target_hits: run.target_hits,
        delivered: run.delivered,
        lost: run.lost,
        runs: run.runs,
        run_time_ns: run.run_time_ns,
        ns_per_run: run.ns_per_run,
        ns_per_sample: run.run_time_ns as f64 / run.delivered.max(1) as f64,
        ns_per_target_sample: None,
    })
}

/// Requested depths of the unchanged-stack rows, then of the changing-stack rows.
const UNCHANGED_DEPTHS: [usize; 3] = [10, 1_000, 10_000];
const CHANGING_DEPTHS: [usize; 2] = [1_000, 10_000];

pub fn run(ctx: &Ctx) -> anyhow::Result<KernelCost> {
    let idle = measure(ctx, None, false)?;
    eprintln!(
        "bench: kernel cost with the target idle (filtered runs only): {:.0} ns per run",
        idle.ns_per_run
    );
    let filter_ns = idle.ns_per_run;
    let mut depths = vec![idle];
    let rows = UNCHANGED_DEPTHS
        .iter()
        .map(|&d| (d, false))
        .chain(CHANGING_DEPTHS.iter().map(|&d| (d, true)));
    for (depth, changing) in rows {
        let mut d = measure(ctx, Some(depth), changing)?;
        let filtered = d.runs.saturating_sub(d.target_hits) as f64;
        d.ns_per_target_sample =
            Some((d.run_time_ns as f64 - filtered * filter_ns) / d.target_hits.max(1) as f64);
        eprintln!(
            "bench: kernel cost at depth {}{} (measured {}): {:.0} ns per delivered sample, {:.0} ns per target sample, {:.0} ns per run",
            depth,
            if changing { ", changing" } else { "" },
            d.measured_depth,
            d.ns_per_sample,
            d.ns_per_target_sample.unwrap_or(f64::NAN),
            d.ns_per_run
        );
        depths.push(d);
    }
    // The two deepest unchanged rows.
    let (a, b) = (&depths[2], &depths[3]);
    let ns_per_frame = (b.ns_per_target_sample.unwrap_or(f64::NAN)
        - a.ns_per_target_sample.unwrap_or(f64::NAN))
        / (b.measured_depth as f64 - a.measured_depth as f64).max(1.0);
    Ok(KernelCost {
        depths,
        ns_per_frame,
    })
}
