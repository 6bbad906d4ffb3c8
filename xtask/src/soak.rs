//! `cargo xtask soak [--minutes N]`: stacksampler at 999 Hz on a deep-stack, goroutine-churning
//! program (`tests/go/faults -mode churn`: 5,000-frame workers, goroutines of random depth
//! created and gone every millisecond) for N minutes (default 60). Every 10 s it records the
//! sampler's RSS and CPU and the target's throughput; it fails when the sampler's RSS grows after
//! warm-up (last quarter's median against the first's past warm-up), when samples are lost without the report saying so, or when
//! the target slows beyond the benchmark's figure for deep stacks at 999 Hz. Results go to
//! `bench/results/<timestamp>-soak.json` and `.svg` (RSS over time).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;

use crate::{
    bench::proc::{Proc, Target, cpu_ns, status_kib},
    build::{self, BuildArgs},
    setup::PYPI_GO_VERSIONS,
    util::{run_cmd, tools_dir, workspace_root},
};

/// Sampling frequency of the soak.
const FREQUENCY_HZ: &str = "999";
/// Recursion depth of the target's workers (the benchmark's deep workload).
const DEPTH: &str = "5000";
/// Seconds between two records.
const INTERVAL: Duration = Duration::from_secs(10);
/// Share of the run treated as warm-up (caches and the stack trie fill), excluded from the slope.
const WARM_UP_SHARE: f64 = 0.25;
/// Largest RSS growth from the end of warm-up to the end of the run, KiB: one step of the heap
/// (an allocator arena, a hash table doubling) is normal, a leak is not. The least-squares
/// slope is reported too, but a short run's slope is dominated by such a single step.
const MAX_RSS_GROWTH_KIB: u64 = 4 << 10;
/// Largest throughput loss of the target per unit of its own CPU time: the benchmark's figure
/// for 5,000-frame stacks at 999 Hz (docs/benchmarks.md: 19.2%), with room for a busier machine.
const MAX_THROUGHPUT_LOSS: f64 = 0.25;

#[derive(Args)]
pub struct SoakArgs {
    /// Minutes to sample.
    #[arg(long, default_value_t = 60)]
    pub minutes: u64,
}

/// One record of the run.
#[derive(Clone, Copy, Serialize)]
struct Point {
    secs: f64,
    rss_kib: u64,
    /// Sampler CPU over the last interval, in cores.
    sampler_cores: f64,
    /// Target work units per second of its own CPU time over the last interval.
    target_units_per_cpu_s: f64,
}

#[derive(Serialize)]
struct Verdicts {
    rss_slope_kib_per_min: f64,
    /// Median RSS of the last quarter minus that of the quarter after warm-up.
    rss_growth_kib: i64,
    rss_growth_ok: bool,
    lost_samples: u64,
    lost_reported: bool,
    baseline_units_per_cpu_s: f64,
    throughput_loss: f64,
    throughput_ok: bool,
}

#[derive(Serialize)]
struct SoakResult {
    minutes: u64,
    frequency_hz: u64,
    depth: u64,
    samples_total: u64,
    points: Vec<Point>,
    verdicts: Verdicts,
}

pub fn run(args: &SoakArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let stacksampler = build::run(&BuildArgs::default())?;
    let target_bin = build_target(&root)?;
    let mut target = Target::start(
        &target_bin,
        &["-mode", "churn", "-depth", DEPTH].map(str::to_owned),
    )?;
    // The workers need a moment to reach their depth; then the unsampled baseline.
    std::thread::sleep(Duration::from_secs(2));
    let baseline = target.measure(INTERVAL, None)?.units_per_cpu_s;
    eprintln!("xtask soak: baseline {baseline:.0} units per CPU second");

    let out_dir = root.join("target/soak");
    std::fs::create_dir_all(&out_dir)?;
    let report_path = out_dir.join("report.json");
    let seconds = (args.minutes * 60).to_string();
    let mut sampler = Proc::spawn(
        "stacksampler",
        Command::new(&stacksampler)
            .args([
                "--pid",
                &target.pid().to_string(),
                "--frequency",
                FREQUENCY_HZ,
            ])
            .args(["--duration", &seconds, "-o"])
            .arg(&report_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    let sampler_pid = sampler.pid();
    let began = Instant::now();
    let mut points = Vec::new();
    let mut last_cpu = cpu_ns(sampler_pid);
    let total = Duration::from_secs(args.minutes * 60);
    while began.elapsed() + INTERVAL <= total {
        let m = target.measure(INTERVAL, None)?;
        let cpu = cpu_ns(sampler_pid);
        let rss = status_kib(sampler_pid, "VmRSS:").unwrap_or(0);
        points.push(Point {
            secs: began.elapsed().as_secs_f64(),
            rss_kib: rss,
            sampler_cores: cpu.saturating_sub(last_cpu) as f64 / 1e9 / INTERVAL.as_secs_f64(),
            target_units_per_cpu_s: m.units_per_cpu_s,
        });
        last_cpu = cpu;
        if points.len() % 6 == 0 {
            eprintln!(
                "xtask soak: {:.0} s, sampler RSS {} KiB",
                began.elapsed().as_secs_f64(),
                rss
            );
        }
    }
    let exit = sampler.wait_timeout(Duration::from_secs(120))?;
    if !exit.success() {
        bail!("stacksampler failed: {}", exit.describe());
    }
    drop(target);
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report_path)
            .with_context(|| format!("reading {}", report_path.display()))?,
    )?;
    let result = judge(args.minutes, &points, &report, baseline);
    let (json, svg) = write_results(&root, &result)?;
    let v = &result.verdicts;
    println!(
        "soak: {} min at {FREQUENCY_HZ} Hz, {} samples; RSS growth after warm-up {} KiB ({}, \
         slope {:.1} KiB/min), lost {} ({}), target loss {:.1}% ({}); {} and {}",
        args.minutes,
        result.samples_total,
        v.rss_growth_kib,
        ok_word(v.rss_growth_ok),
        v.rss_slope_kib_per_min,
        v.lost_samples,
        if v.lost_reported {
            "reported"
        } else {
            "NOT reported"
        },
        v.throughput_loss * 100.0,
        ok_word(v.throughput_ok),
        json.display(),
        svg.display()
    );
    if !(v.rss_growth_ok && v.lost_reported && v.throughput_ok) {
        bail!("the soak failed (see above)");
    }
    Ok(())
}

fn ok_word(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

/// The faults program, built with the newest Go.
fn build_target(root: &Path) -> anyhow::Result<PathBuf> {
    let newest = PYPI_GO_VERSIONS.last().context("no Go version")?;
    let go = tools_dir().join(format!("go-{newest}/go/bin/go"));
    let out = root.join("target/soak/faults");
    std::fs::create_dir_all(root.join("target/soak"))?;
    run_cmd(
        Command::new(&go)
            .current_dir(root.join("tests/go/faults"))
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .args(["build", "-o"])
            .arg(&out)
            .arg("."),
    )?;
    Ok(out)
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

fn judge(minutes: u64, points: &[Point], report: &serde_json::Value, baseline: f64) -> SoakResult {
    let warm: Vec<&Point> = points
        .iter()
        .skip((points.len() as f64 * WARM_UP_SHARE) as usize)
        .collect();
    let xs: Vec<f64> = warm.iter().map(|p| p.secs / 60.0).collect();
    let ys: Vec<f64> = warm.iter().map(|p| p.rss_kib as f64).collect();
    let rss_slope = slope(&xs, &ys);
    let quarter = (warm.len() / 3).max(1);
    let median = |p: &[&Point]| -> i64 {
        let mut v: Vec<u64> = p.iter().map(|p| p.rss_kib).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as i64
    };
    let growth = median(&warm[warm.len().saturating_sub(quarter)..])
        - median(&warm[..quarter.min(warm.len())]);
    let lost = report["samples"]["lost"].as_u64().unwrap_or(0);
    let lost_reported = lost == 0
        || report["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|s| s.as_str().is_some_and(|s| s.contains("lost")))
        });
    let sampled: Vec<f64> = warm.iter().map(|p| p.target_units_per_cpu_s).collect();
    let mean = sampled.iter().sum::<f64>() / sampled.len().max(1) as f64;
    let loss = if baseline > 0.0 {
        1.0 - mean / baseline
    } else {
        0.0
    };
    SoakResult {
        minutes,
        frequency_hz: FREQUENCY_HZ.parse().unwrap_or(0),
        depth: DEPTH.parse().unwrap_or(0),
        samples_total: report["samples"]["total"].as_u64().unwrap_or(0),
        points: points.to_vec(),
        verdicts: Verdicts {
            rss_slope_kib_per_min: rss_slope,
            rss_growth_kib: growth,
            rss_growth_ok: growth <= MAX_RSS_GROWTH_KIB as i64,
            lost_samples: lost,
            lost_reported,
            baseline_units_per_cpu_s: baseline,
            throughput_loss: loss,
            throughput_ok: loss <= MAX_THROUGHPUT_LOSS,
        },
    }
}

/// Writes the json and the RSS plot; returns their paths.
fn write_results(root: &Path, result: &SoakResult) -> anyhow::Result<(PathBuf, PathBuf)> {
    let stamp = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y%m%dT%H%M%SZ"])
            .output()
            .context("date")?
            .stdout,
    )?;
    let dir = root.join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join(format!("{}-soak.json", stamp.trim()));
    std::fs::write(&json, serde_json::to_vec_pretty(result)?)?;
    let svg = json.with_extension("svg");
    std::fs::write(&svg, rss_plot(result))?;
    Ok((json, svg))
}

/// A small SVG line chart of the sampler's RSS over the run.
fn rss_plot(result: &SoakResult) -> String {
    const W: f64 = 800.0;
    const H: f64 = 300.0;
    const PAD: f64 = 50.0;
    let max_t = result.points.last().map_or(1.0, |p| p.secs).max(1.0);
    let max_rss = result
        .points
        .iter()
        .map(|p| p.rss_kib)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let pts: Vec<String> = result
        .points
        .iter()
        .map(|p| {
            let x = PAD + p.secs / max_t * (W - 2.0 * PAD);
            let y = H - PAD - p.rss_kib as f64 / max_rss * (H - 2.0 * PAD);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{PAD}" y="20">stacksampler RSS during a {m}-minute soak at {hz} Hz ({depth}-frame stacks, goroutine churn); slope after warm-up {s:.1} KiB/min</text>
<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="black"/>
<text x="{PAD}" y="{tb}">0 s</text><text x="{r}" y="{tb}" text-anchor="end">{max_t:.0} s</text>
<text x="5" y="{PAD}">{mr:.1} MiB</text><text x="5" y="{b}">0</text>
<polyline fill="none" stroke="#c03000" stroke-width="2" points="{pts}"/>
</svg>
"##,
        m = result.minutes,
        hz = result.frequency_hz,
        depth = result.depth,
        s = result.verdicts.rss_slope_kib_per_min,
        b = H - PAD,
        r = W - PAD,
        tb = H - PAD + 16.0,
        mr = max_rss / 1024.0,
        pts = pts.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        assert!((slope(&xs, &[10.0, 12.0, 14.0, 16.0]) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&xs, &[5.0, 5.0, 5.0, 5.0]), 0.0);
        assert_eq!(slope(&[1.0], &[3.0]), 0.0);
    }
}
