//! Wall-clock runs: the target's throughput while `stacksampler record --wall` snapshots its
//! 10,000 parked goroutines (and its workers) at 10 Hz beside the 99 Hz CPU sampling, as a ratio
//! to the unprofiled windows either side (B P B P ...), next to a plain `record` at 99 Hz in the
//! same rounds: the difference is what the snapshots cost the target.

use std::time::Duration;

use serde::Serialize;

use super::{
    Ctx, median,
    overhead::{Tool, profiled_window},
    proc::Target,
};

/// Parked goroutines of the target.
pub const GOROUTINES: usize = 10_000;
/// `--wall-frequency` measured.
pub const WALL_HZ: u64 = 10;
/// CPU sampling frequency of both runs.
const CPU_HZ: u64 = 99;

#[derive(Serialize)]
pub struct WallConfig {
    /// `record --wall` or `record`.
    pub run: String,
    /// Profiled throughput / mean of the unprofiled windows either side, per round.
    pub ratios: Vec<f64>,
    /// (1 - median ratio) in percent.
    pub loss_pct: f64,
    /// Per CPU-second of the target, as `overhead`'s estimate: per-CPU-second loss plus the
    /// cores the profiler process takes, percent.
    pub estimated_loss_pct: f64,
    /// CPU the profiler process used during the window, in cores (median).
    pub profiler_cores_median: f64,
}

#[derive(Serialize)]
pub struct WallResult {
    pub goroutines: usize,
    pub wall_hz: u64,
    pub cpu_hz: u64,
    pub window_s: f64,
    pub rounds: usize,
    pub configs: Vec<WallConfig>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<WallResult> {
    let args: Vec<String> = [
        "-workload",
        "shallow",
        "-workers",
        &ctx.nproc.to_string(),
        "-parked",
        &GOROUTINES.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let window = ctx.window;
    let mut target = Target::start(&ctx.tools.target, &args)?;
    target.throughput(Duration::from_secs(1))?; // warm-up, not counted
    let wall_hz = WALL_HZ.to_string();
    let runs: [(&str, Vec<&str>); 2] = [
        (
            "record --wall",
            vec!["--wall", "--wall-frequency", &wall_hz],
        ),
        ("record", vec![]),
    ];
    let mut prev = target.measure(window, None)?;
    let mut per_run: Vec<Vec<(f64, f64, f64)>> = runs.iter().map(|_| vec![]).collect();
    for round in 0..ctx.rounds {
        for k in 0..runs.len() {
            let index = (k + round) % runs.len();
            let (name, extra) = &runs[index];
            let p = profiled_window(ctx, &mut target, Tool::Stacksampler, CPU_HZ, extra, window)?;
            let base = target.measure(window, None)?;
            let ratio = p.m.units_per_s / ((prev.units_per_s + base.units_per_s) / 2.0);
            let cpu_ratio =
                p.m.units_per_cpu_s / ((prev.units_per_cpu_s + base.units_per_cpu_s) / 2.0);
            eprintln!(
                "bench: wall round {}/{} {name}: ratio {ratio:.4}, per CPU-second {cpu_ratio:.4} (profiler {:.3} cores)",
                round + 1,
                ctx.rounds,
                p.m.other_cpu_frac
            );
            per_run[index].push((ratio, cpu_ratio, p.m.other_cpu_frac));
            prev = base;
        }
    }
    let configs = runs
        .iter()
        .zip(per_run)
        .map(|((name, _), r)| {
            let ratios: Vec<f64> = r.iter().map(|x| x.0).collect();
            let cpu_ratio = median(&r.iter().map(|x| x.1).collect::<Vec<_>>());
            let cores = median(&r.iter().map(|x| x.2).collect::<Vec<_>>());
            WallConfig {
                run: (*name).to_owned(),
                loss_pct: (1.0 - median(&ratios)) * 100.0,
                estimated_loss_pct: (1.0 - cpu_ratio * (1.0 - cores / ctx.nproc as f64)) * 100.0,
                profiler_cores_median: cores,
                ratios,
            }
        })
        .collect();
    Ok(WallResult {
        goroutines: GOROUTINES,
        wall_hz: WALL_HZ,
        cpu_hz: CPU_HZ,
        window_s: window.as_secs_f64(),
        rounds: ctx.rounds,
        configs,
    })
}
