//! `cargo xtask bench`: target overhead side by side with perf, kernel cost per sample, time to
//! report side by side with bpftrace, sampler memory and symbolization, in one run. Results are
//! printed as a markdown table and saved as json (with the machine description) under
//! `bench/results/`. The method is in docs/benchmarks.md.
//!
//! Every process started is reaped (killed by its pid when something fails), every sysctl changed
//! is restored, also on Ctrl-C (turned into an error the benchmark unwinds through).

mod agent;
mod dump;
mod kernel;
mod machine;
mod memory;
mod native;
mod overhead;
pub(crate) mod proc;
mod symbolize;
mod sysctl;
mod table;
mod tools;
mod ttr;
mod wall;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::util::workspace_root;

/// Frame limit of both samplers in the overhead runs: stacksampler's `--max-frames` and perf's
/// `kernel.perf_event_max_stack`.
pub const MAX_FRAMES: u32 = 8192;
/// Recursion depth of the deep overhead workload.
const DEEP_DEPTH: usize = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    Symbolize,
    Kernel,
    Ttr,
    Overhead,
    Memory,
    Dump,
    Wall,
    Native,
    Agent,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Rounds of the interleaved overhead measurement (each ratio is a median over them).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds of each throughput window.
    #[arg(long, default_value_t = 3.0)]
    pub window: f64,
    /// Seconds of the sampler-memory run.
    #[arg(long, default_value_t = 60.0)]
    pub memory_seconds: f64,
    /// Runs per tool and target for time to report.
    #[arg(long, default_value_t = 3)]
    pub ttr_runs: usize,
    /// A fast pass to check the benchmark itself (1 round of 1 s windows, short runs); its
    /// numbers are not results.
    #[arg(long)]
    pub quick: bool,
    /// Run only these sections (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Directory for the results (default `bench/results`, `target/bench/quick` with --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measure this stacksampler binary instead of building the checkout's (A/B comparisons
    /// of two builds on the same targets).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// What every section needs.
pub struct Ctx {
    tools: tools::Tools,
    tmp: PathBuf,
    nproc: usize,
    window: Duration,
    rounds: usize,
    kernel_seconds: f64,
    ttr_runs: usize,
    memory_seconds: f64,
    symbolize_addresses: usize,
}

/// Scratch files, removed at the end.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Serialize)]
pub struct Settings {
    quick: bool,
    rounds: usize,
    window_s: f64,
    max_frames: u32,
    deep_depth: usize,
    kernel_seconds: f64,
    ttr_runs: usize,
    memory_seconds: f64,
    symbolize_addresses: usize,
    /// The stacksampler measured when it is not this checkout's build (`--binary`).
    binary: Option<PathBuf>,
}

#[derive(Serialize)]
pub struct Goal {
    pub goal: String,
    pub met: bool,
    pub met_by_estimate: bool,
    pub detail: String,
}

#[derive(Serialize)]
pub struct Results {
    pub machine: machine::Machine,
    pub settings: Settings,
    /// 1/5/15-minute load averages at the start, at each section's start, and at the end.
    pub load_average: Vec<(String, [f64; 3])>,
    pub elapsed_s: f64,
    pub symbolization: Option<Vec<serde_json::Value>>,
    pub kernel_cost: Option<kernel::KernelCost>,
    pub time_to_report: Option<Vec<ttr::TtrResult>>,
    pub overhead: Option<Vec<overhead::WorkloadResult>>,
    pub memory: Option<memory::MemoryResult>,
    pub dump: Option<Vec<dump::DumpResult>>,
    pub wall: Option<wall::WallResult>,
    pub native_cost: Option<native::NativeCost>,
    pub agent_cost: Option<Vec<agent::AgentCost>>,
    pub goals: Vec<Goal>,
}

/// Median (upper median for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs and changes sysctls: run it as root");
    }
    proc::catch_interrupts();
    let started = Instant::now();
    let tools = tools::Tools::prepare(args.binary.as_deref())?;
    let machine = machine::Machine::describe(
        &tools.perf.display().to_string(),
        &tools.bpftrace.display().to_string(),
        &tools.go,
    );
    let tmp = std::env::temp_dir().join(format!("stacksampler-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _tmp_guard = TmpDir(tmp.clone());
    let quick = args.quick;
    let ctx = Ctx {
        tools,
        tmp,
        nproc: machine.nproc,
        window: Duration::from_secs_f64(if quick { 1.0 } else { args.window }),
        rounds: if quick { 1 } else { args.rounds },
        kernel_seconds: if quick { 2.0 } else { 5.0 },
        ttr_runs: if quick { 1 } else { args.ttr_runs },
        memory_seconds: if quick { 5.0 } else { args.memory_seconds },
        symbolize_addresses: if quick { 10_000 } else { 100_000 },
    };
    let settings = Settings {
        quick,
        rounds: ctx.rounds,
        window_s: ctx.window.as_secs_f64(),
        max_frames: MAX_FRAMES,
        deep_depth: DEEP_DEPTH,
        kernel_seconds: ctx.kernel_seconds,
        ttr_runs: ctx.ttr_runs,
        memory_seconds: ctx.memory_seconds,
        symbolize_addresses: ctx.symbolize_addresses,
        binary: args.binary.clone(),
    };
    let wanted = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut load = vec![("start".to_owned(), machine::load_average())];
    let mark = |name: &str, load: &mut Vec<(String, [f64; 3])>| {
        eprintln!(
            "bench: == {name} ({:.0} s in) ==",
            started.elapsed().as_secs_f64()
        );
        load.push((name.to_owned(), machine::load_average()));
    };

    let symbolization = if wanted(Section::Symbolize) {
        mark("symbolization", &mut load);
        Some(symbolize::run(&ctx)?)
    } else {
        None
    };
    let kernel_cost = if wanted(Section::Kernel) {
        mark("kernel cost", &mut load);
        Some(kernel::run(&ctx)?)
    } else {
        None
    };
    let time_to_report = if wanted(Section::Ttr) {
        mark("time to report", &mut load);
        Some(ttr::run(&ctx)?)
    } else {
        None
    };
    let overhead = if wanted(Section::Overhead) {
        // perf walks as deep as stacksampler: the callchain limit at stacksampler's frame limit.
        let _sysctl = sysctl::Sysctl::set("kernel.perf_event_max_stack", MAX_FRAMES as u64)?;
        mark("overhead, shallow workload", &mut load);
        let shallow = overhead::run(&ctx, "shallow", None)?;
        mark("overhead, deep workload", &mut load);
        let deep = overhead::run(&ctx, "deep", Some(DEEP_DEPTH))?;
        Some(vec![shallow, deep])
    } else {
        None
    };
    let memory = if wanted(Section::Memory) {
        mark("sampler memory", &mut load);
        Some(memory::run(&ctx)?)
    } else {
        None
    };
    let dump = if wanted(Section::Dump) {
        mark("goroutine dumps", &mut load);
        Some(dump::run(&ctx)?)
    } else {
        None
    };
    let wall = if wanted(Section::Wall) {
        mark("wall-clock snapshots", &mut load);
        Some(wall::run(&ctx)?)
    } else {
        None
    };
    let native_cost = if wanted(Section::Native) {
        mark("mixed Go and C stacks", &mut load);
        Some(native::run(&ctx)?)
    } else {
        None
    };
    let agent_cost = if wanted(Section::Agent) {
        mark("the agent's own cost", &mut load);
        Some(agent::run(&ctx)?)
    } else {
        None
    };
    load.push(("end".to_owned(), machine::load_average()));

    let mut results = Results {
        machine,
        settings,
        load_average: load,
        elapsed_s: started.elapsed().as_secs_f64(),
        symbolization,
        kernel_cost,
        time_to_report,
        overhead,
        memory,
        dump,
        wall,
        native_cost,
        agent_cost,
        goals: vec![],
    };
    results.goals = goals(&results);
    // A --quick pass checks the benchmark; its numbers stay out of bench/results.
    let out_dir = args.out.clone().unwrap_or_else(|| {
        workspace_root().join(if quick {
            "target/bench/quick"
        } else {
            "bench/results"
        })
    });
    std::fs::create_dir_all(&out_dir)?;
    let stamp: String = results
        .machine
        .date_utc
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let name = format!(
        "{stamp}-{}{}",
        results.machine.git_commit.get(..10).unwrap_or("unknown"),
        if quick { "-quick" } else { "" }
    );
    let json_path = out_dir.join(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md = table::render(&results);
    let md_path = out_dir.join(format!("{name}.md"));
    std::fs::write(&md_path, &md)?;
    println!("{md}");
    eprintln!(
        "bench: done in {:.0} s; results in {} and {}",
        results.elapsed_s,
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

/// Most kernel time for one sample of an unchanged 10,003-frame stack.
const UNCHANGED_DEEP_SAMPLE_NS: f64 = 30_000.0;
/// Most sampler peak RSS in the run against 10,000 goroutines.
const MEMORY_RSS_KIB: u64 = 100 * 1024;
/// Longest time to report of a 1-second profile.
const TIME_TO_REPORT_S: f64 = 0.9;

/// Goals on the kernel cost of a deep sample, the sampler's memory and its time to report.
fn cost_goals(r: &Results) -> Vec<Goal> {
    let mut goals = vec![];
    if let Some(k) = &r.kernel_cost {
        let row = |changing: bool| {
            k.depths
                .iter()
                .find(|d| d.requested_depth == Some(10_000) && d.changing == changing)
        };
        if let Some(d) = row(false) {
            let ns = d.ns_per_target_sample.unwrap_or(f64::NAN);
            let changed = row(true).and_then(|c| c.ns_per_target_sample);
            goals.push(Goal {
                goal: format!(
                    "kernel cost of a sample of an unchanged 10,003-frame stack: at most {:.0} µs",
                    UNCHANGED_DEEP_SAMPLE_NS / 1000.0
                ),
                met: ns <= UNCHANGED_DEEP_SAMPLE_NS,
                met_by_estimate: ns <= UNCHANGED_DEEP_SAMPLE_NS,
                detail: format!(
                    "{:.1} µs per target sample unchanged ({} frames measured), {} changing between samples; {:.1} ns per frame",
                    ns / 1000.0,
                    d.measured_depth,
                    changed.map_or("not measured".to_owned(), |c| format!("{:.1} µs", c / 1000.0)),
                    k.ns_per_frame
                ),
            });
        }
    }
    if let Some(m) = &r.memory {
        goals.push(Goal {
            goal: format!(
                "sampler peak RSS against {} goroutines: at most {} MiB",
                m.goroutines,
                MEMORY_RSS_KIB / 1024
            ),
            met: m.max_rss_kib <= MEMORY_RSS_KIB,
            met_by_estimate: m.max_rss_kib <= MEMORY_RSS_KIB,
            detail: format!(
                "{:.1} MiB over {:.0} s, {} samples, {} distinct stacks",
                m.max_rss_kib as f64 / 1024.0,
                m.duration_s,
                m.samples,
                m.distinct_stacks
            ),
        });
    }
    if let Some(ttr) = &r.time_to_report {
        let ours: Vec<&ttr::TtrResult> = ttr.iter().filter(|t| t.tool == "stacksampler").collect();
        if !ours.is_empty() {
            let worst = ours
                .iter()
                .map(|t| t.median_wall_s)
                .fold(f64::NAN, f64::max);
            let worst_cpu = ours.iter().map(|t| t.median_cpu_s).fold(f64::NAN, f64::max);
            goals.push(Goal {
                goal: format!("time to report of a 1 s profile: at most {TIME_TO_REPORT_S} s"),
                met: worst <= TIME_TO_REPORT_S,
                met_by_estimate: worst_cpu <= TIME_TO_REPORT_S,
                detail: ours
                    .iter()
                    .map(|t| {
                        format!(
                            "{}: {:.2} s ({:.2} s of CPU, the estimate)",
                            t.target, t.median_wall_s, t.median_cpu_s
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
    }
    goals
}

/// The goals, judged on the measured medians; `met_by_estimate` judges the same goal on
/// the load-insensitive estimate (per-CPU-second loss plus the profiler's cores).
fn goals(r: &Results) -> Vec<Goal> {
    let mut goals = vec![];
    if let Some(d) = r
        .dump
        .as_ref()
        .and_then(|d| d.iter().find(|d| d.goroutines == 100_000))
    {
        goals.push(Goal {
            goal: "100,000 goroutines dumped in under 1 s with no pause of the target".into(),
            met: d.median_read_s < 1.0,
            met_by_estimate: d.median_read_cpu_s < 1.0,
            detail: format!(
                "read {:.3} s ({:.3} s of CPU: the idle-machine estimate; {} bytes), {:.3} s launch to file; the target's own dump stops it {:.3} s",
                d.median_read_s,
                d.median_read_cpu_s,
                d.bytes_read,
                d.median_wall_s,
                d.median_self_dump_s
            ),
        });
    }
    if let Some(w) = &r.wall
        && let Some(c) = w.configs.iter().find(|c| c.run == "record --wall")
    {
        let plain = w.configs.iter().find(|c| c.run == "record");
        goals.push(Goal {
            goal: format!(
                "under 1% throughput loss during a {} Hz --wall run on {} goroutines",
                w.wall_hz, w.goroutines
            ),
            met: c.loss_pct < 1.0,
            met_by_estimate: c.estimated_loss_pct < 1.0,
            detail: format!(
                "measured median loss {:.2}% (plain record at {} Hz in the same rounds: {:.2}%); estimate for an idle machine {:.2}% ({:.2}%); profiler {:.3} cores",
                c.loss_pct,
                w.cpu_hz,
                plain.map_or(f64::NAN, |p| p.loss_pct),
                c.estimated_loss_pct,
                plain.map_or(f64::NAN, |p| p.estimated_loss_pct),
                c.profiler_cores_median
            ),
        });
    }
    goals.extend(cost_goals(r));
    let Some(overhead) = &r.overhead else {
        return goals;
    };
    let workload = |name: &str| overhead.iter().find(|w| w.workload == name);
    let find = |name: &str, tool: overhead::Tool, hz: u64| {
        workload(name)?
            .configs
            .iter()
            .find(|c| c.tool == tool && c.frequency_hz == hz)
    };
    if let (Some(w), Some(c)) = (
        workload("shallow"),
        find("shallow", overhead::Tool::Stacksampler, 99),
    ) {
        goals.push(Goal {
            goal: "at 99 Hz, at most 1% throughput loss on the shallow workload".into(),
            met: c.loss_pct <= 1.0,
            met_by_estimate: c.estimated_loss_pct <= 1.0,
            detail: format!(
                "measured median loss {:.2}% (ratios {:.4}..{:.4}, unprofiled windows spread {:.2}%); estimate for an idle machine {:.2}%",
                c.loss_pct, c.min_ratio, c.max_ratio, w.base_cv_pct, c.estimated_loss_pct
            ),
        });
    }
    // Sampling cost independent of stack depth: loss limits per workload and frequency.
    for (name, hz, limit_pct) in [("deep", 999, 3.0), ("deep", 99, 0.5), ("shallow", 99, 0.3)] {
        if let (Some(w), Some(c)) = (workload(name), find(name, overhead::Tool::Stacksampler, hz)) {
            let depth = w.depth.map_or(String::new(), |d| format!(" ({d} frames)"));
            goals.push(Goal {
                goal: format!(
                    "{name} workload{depth} at {hz} Hz: at most {limit_pct}% throughput loss"
                ),
                met: c.loss_pct <= limit_pct,
                met_by_estimate: c.estimated_loss_pct <= limit_pct,
                detail: format!(
                    "measured median loss {:.2}% (ratios {:.4}..{:.4}, unprofiled windows spread {:.2}%); estimate for an idle machine {:.2}%; {} lost",
                    c.loss_pct,
                    c.min_ratio,
                    c.max_ratio,
                    w.base_cv_pct,
                    c.estimated_loss_pct,
                    c.lost_total
                ),
            });
        }
    }
    for hz in [99, 999] {
        if let (Some(s), Some(p)) = (
            find("deep", overhead::Tool::Stacksampler, hz),
            find("deep", overhead::Tool::Perf, hz),
        ) {
            goals.push(Goal {
                goal: format!("deep workload at {hz} Hz: lower overhead than perf at equal depth"),
                met: s.loss_pct < p.loss_pct,
                met_by_estimate: s.estimated_loss_pct < p.estimated_loss_pct,
                detail: format!(
                    "measured loss stacksampler {:.2}% vs perf {:.2}%; estimates {:.2}% vs {:.2}%; {:.0} vs {:.0} samples per window",
                    s.loss_pct,
                    p.loss_pct,
                    s.estimated_loss_pct,
                    p.estimated_loss_pct,
                    s.samples_median,
                    p.samples_median
                ),
            });
        }
    }
    goals
}
