//! Target overhead: the Go program's own throughput while a profiler samples it, as a ratio to
//! its unprofiled throughput in the windows just before and just after (unprofiled and profiled
//! windows alternate on one running process: B P B P B ...).

use std::{
    fs::File,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{
    Ctx, MAX_FRAMES, median,
    proc::{Exit, Measurement, Proc, ReportSummary, Target, sampling_fds, sleep},
};

/// A profiler the target runs under.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    Stacksampler,
    Perf,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Stacksampler => "stacksampler",
            Tool::Perf => "perf",
        }
    }
}

/// The profiled configurations, in the order of the first round (later rounds rotate it).
pub const CONFIGS: [(Tool, u64); 4] = [
    (Tool::Stacksampler, 99),
    (Tool::Perf, 99),
    (Tool::Stacksampler, 999),
    (Tool::Perf, 999),
];

#[derive(Serialize)]
pub struct ConfigResult {
    pub tool: Tool,
    pub frequency_hz: u64,
    /// Profiled throughput / mean of the unprofiled windows either side, one per round.
    pub ratios: Vec<f64>,
    pub median_ratio: f64,
    pub min_ratio: f64,
    pub max_ratio: f64,
    /// (1 - median ratio) in percent.
    pub loss_pct: f64,
    /// The same ratio per second of the target's own CPU time (units per CPU-second): robust to
    /// other processes' load, counts the sampling interrupt, not the profiler process.
    pub cpu_ratios: Vec<f64>,
    pub median_cpu_ratio: f64,
    /// CPU the profiler process used during the window, in cores (median).
    pub profiler_cores_median: f64,
    /// Loss expected on a machine where the target alone keeps every core busy: the per-CPU-second
    /// loss plus the cores the profiler process takes from it, in percent.
    pub estimated_loss_pct: f64,
    /// Samples the profiler wrote per run (median).
    pub samples_median: f64,
    /// Samples the profiler reported lost, all rounds.
    pub lost_total: u64,
    /// CPU time of the whole profiler run (start-up, window, report), median, seconds.
    pub profiler_cpu_s_median: f64,
    /// From launch to its perf events (or BPF links) being open, median, seconds.
    pub attach_s_median: f64,
}

#[derive(Serialize)]
pub struct WorkloadResult {
    pub workload: String,
    /// Recursion depth of each worker (deep workload).
    pub depth: Option<usize>,
    pub workers: usize,
    pub window_s: f64,
    pub rounds: usize,
    /// Unprofiled throughput per window (work units/s), in order.
    pub base_units_per_s: Vec<f64>,
    /// Unprofiled work units per CPU-second of the target, in order.
    pub base_units_per_cpu_s: Vec<f64>,
    /// Spread of the unprofiled windows: standard deviation / mean, percent.
    pub base_cv_pct: f64,
    pub configs: Vec<ConfigResult>,
}

pub struct ProfiledWindow {
    pub m: Measurement,
    samples: u64,
    lost: u64,
    exit: Exit,
    attach: Duration,
}

/// Starts `tool` on the target (stacksampler with `extra` flags too), waits until it has its
/// perf events open (plus a grace period), measures one window, then stops it with SIGINT (both
/// tools then write their output) and reaps it.
pub fn profiled_window(
    ctx: &Ctx,
    target: &mut Target,
    tool: Tool,
    hz: u64,
    extra: &[&str],
    window: Duration,
) -> anyhow::Result<ProfiledWindow> {
    let pid = target.pid().to_string();
    let stderr_path = ctx.tmp.join(format!("{}.stderr", tool.name()));
    let out = ctx.tmp.join(match tool {
        Tool::Stacksampler => "overhead.json",
        Tool::Perf => "perf.data",
    });
    let mut cmd = match tool {
        Tool::Stacksampler => {
            let mut c = Command::new(&ctx.tools.stacksampler);
            c.args(["record", "--pid", &pid, "--frequency", &hz.to_string()])
                .args(extra)
                .args(["--max-frames", &MAX_FRAMES.to_string(), "--output"])
                .arg(&out);
            c
        }
        Tool::Perf => {
            let mut c = Command::new(&ctx.tools.perf);
            c.args(["record", "-e", "cpu-clock", "-F", &hz.to_string()])
                .args(["-g", "--call-graph", "fp", "-p", &pid, "-o"])
                .arg(&out);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path)?);
    let mut proc = Proc::spawn(tool.name(), &mut cmd)?;
    let attach = wait_attached(&mut proc, &stderr_path, Duration::from_secs(90))?;
    sleep(Duration::from_millis(250))?;
    let m = target.measure(window, Some(proc.pid()))?;
    let exit = proc.stop(libc::SIGINT, Duration::from_secs(180))?;
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    // perf record ends by re-raising the SIGINT it handled.
    let ended_by_sigint =
        libc::WIFSIGNALED(exit.status) && libc::WTERMSIG(exit.status) == libc::SIGINT;
    if !(exit.success() || tool == Tool::Perf && ended_by_sigint) {
        bail!("{} failed ({}): {stderr}", tool.name(), exit.describe());
    }
    let (samples, lost) = match tool {
        Tool::Stacksampler => stacksampler_counts(&out)?,
        Tool::Perf => perf_counts(&stderr)?,
    };
    let _ = std::fs::remove_file(&out);
    Ok(ProfiledWindow {
        m,
        samples,
        lost,
        exit,
        attach,
    })
}

/// Waits until `proc` holds perf events or BPF links (it is sampling); fails if it ends first.
pub fn wait_attached(
    proc: &mut Proc,
    stderr_path: &Path,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if sampling_fds(proc.pid()) > 0 {
            return Ok(start.elapsed());
        }
        if let Some(exit) = proc.try_wait()? {
            let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
            bail!(
                "the profiler ended before attaching ({}): {stderr}",
                exit.describe()
            );
        }
        if start.elapsed() > timeout {
            bail!("the profiler did not attach within {timeout:?}");
        }
        sleep(Duration::from_millis(5))?;
    }
}

/// `samples.total` and `samples.lost` of a stacksampler json report.
pub fn stacksampler_counts(json: &Path) -> anyhow::Result<(u64, u64)> {
    let report = ReportSummary::read(json)?;
    Ok((report.samples.total, report.samples.lost))
}

/// Samples written and chunks lost, from perf record's closing lines
/// (`[ perf record: Captured and wrote 1.2 MB perf.data (345 samples) ]`).
fn perf_counts(stderr: &str) -> anyhow::Result<(u64, u64)> {
    let samples = stderr
        .lines()
        .filter(|l| l.contains("Captured and wrote"))
        .find_map(|l| {
            l.rsplit_once('(')?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("no sample count in perf record's output: {stderr}"))?;
    // "Processed N events and lost M chunks!"
    let lost = stderr
        .lines()
        .filter_map(|l| {
            l.split_once(" and lost ")?
                .1
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    Ok((samples, lost))
}

/// Runs the interleaved overhead measurement on one workload.
pub fn run(ctx: &Ctx, workload: &str, depth: Option<usize>) -> anyhow::Result<WorkloadResult> {
    let workers = ctx.nproc;
    let mut args = vec![
        "-workload".to_owned(),
        if depth.is_some() { "deep" } else { "shallow" }.to_owned(),
        "-workers".to_owned(),
        workers.to_string(),
    ];
    if let Some(d) = depth {
        args.extend(["-depth".to_owned(), d.to_string()]);
    }
    let window = ctx.window;
    let mut target = Target::start(&ctx.tools.target, &args)?;
    target.throughput(Duration::from_secs(1))?; // warm-up, not counted
    let mut prev = target.measure(window, None)?;
    let mut bases = vec![prev];
    let mut per_config: Vec<Vec<(f64, f64, ProfiledWindow)>> =
        CONFIGS.iter().map(|_| vec![]).collect();
    for round in 0..ctx.rounds {
        for k in 0..CONFIGS.len() {
            let index = (k + round) % CONFIGS.len();
            let (tool, hz) = CONFIGS[index];
            let profiled = profiled_window(ctx, &mut target, tool, hz, &[], window)?;
            let base = target.measure(window, None)?;
            let ratio = profiled.m.units_per_s / ((prev.units_per_s + base.units_per_s) / 2.0);
            let cpu_ratio =
                profiled.m.units_per_cpu_s / ((prev.units_per_cpu_s + base.units_per_cpu_s) / 2.0);
            eprintln!(
                "bench: overhead {workload} round {}/{} {} {hz} Hz: ratio {ratio:.4}, per CPU-second {cpu_ratio:.4} ({} samples, {} lost, profiler {:.3} cores)",
                round + 1,
                ctx.rounds,
                tool.name(),
                profiled.samples,
                profiled.lost,
                profiled.m.other_cpu_frac
            );
            prev = base;
            bases.push(base);
            per_config[index].push((ratio, cpu_ratio, profiled));
        }
    }
    let configs = CONFIGS
        .iter()
        .zip(per_config)
        .map(|(&(tool, hz), runs)| {
            let ratios: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let cpu_ratios: Vec<f64> = runs.iter().map(|r| r.1).collect();
            let profiler_cores = median(
                &runs
                    .iter()
                    .map(|r| r.2.m.other_cpu_frac)
                    .collect::<Vec<_>>(),
            );
            let med = median(&ratios);
            ConfigResult {
                tool,
                frequency_hz: hz,
                median_ratio: med,
                min_ratio: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                max_ratio: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                loss_pct: (1.0 - med) * 100.0,
                median_cpu_ratio: median(&cpu_ratios),
                profiler_cores_median: profiler_cores,
                estimated_loss_pct: (1.0
                    - median(&cpu_ratios) * (1.0 - profiler_cores / ctx.nproc as f64))
                    * 100.0,
                samples_median: median(
                    &runs.iter().map(|r| r.2.samples as f64).collect::<Vec<_>>(),
                ),
                lost_total: runs.iter().map(|r| r.2.lost).sum(),
                profiler_cpu_s_median: median(
                    &runs
                        .iter()
                        .map(|r| r.2.exit.cpu.as_secs_f64())
                        .collect::<Vec<_>>(),
                ),
                attach_s_median: median(
                    &runs
                        .iter()
                        .map(|r| r.2.attach.as_secs_f64())
                        .collect::<Vec<_>>(),
                ),
                ratios,
                cpu_ratios,
            }
        })
        .collect();
    let rates: Vec<f64> = bases.iter().map(|b| b.units_per_s).collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let var = rates.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / rates.len() as f64;
    Ok(WorkloadResult {
        workload: workload.to_owned(),
        depth,
        workers,
        window_s: window.as_secs_f64(),
        rounds: ctx.rounds,
        base_cv_pct: var.sqrt() / mean * 100.0,
        base_units_per_s: rates,
        base_units_per_cpu_s: bases.iter().map(|b| b.units_per_cpu_s).collect(),
        configs,
    })
}
