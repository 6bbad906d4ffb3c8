//! Sampler memory: peak RSS of one long stacksampler run against 10,000 goroutines with deep,
//! mostly distinct stacks taking turns on the CPUs (`-workload many`).

use std::{
    collections::HashSet,
    fs::File,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::bail;
use serde::Serialize;

use super::{
    Ctx,
    proc::{Proc, ReportSummary, Target},
};

pub const GOROUTINES: usize = 10_000;

#[derive(Serialize)]
pub struct MemoryResult {
    pub goroutines: usize,
    pub duration_s: f64,
    pub frequency_hz: u64,
    pub samples: u64,
    pub lost: u64,
    pub distinct_stacks: usize,
    /// Goroutines seen in the report (each stack lists at most 1,000 ids, so a lower bound).
    pub goroutines_seen: usize,
    pub max_depth: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub max_rss_kib: u64,
    /// The target's own RSS, for scale.
    pub target_rss_kib: u64,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<MemoryResult> {
    let target = Target::start(
        &ctx.tools.target,
        &[
            "-workload".into(),
            "many".into(),
            "-goroutines".into(),
            GOROUTINES.to_string(),
        ],
    )?;
    let json = ctx.tmp.join("memory.json");
    let stderr_path = ctx.tmp.join("memory.stderr");
    let duration = ctx.memory_seconds;
    let mut proc = Proc::spawn(
        "stacksampler",
        Command::new(&ctx.tools.stacksampler)
            .args([
                "--pid",
                &target.pid().to_string(),
                "--duration",
                &duration.to_string(),
            ])
            .arg("--output")
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path)?),
    )?;
    let exit = proc.wait_timeout(Duration::from_secs(180 + duration as u64))?;
    let target_rss_kib = target.rss_kib().unwrap_or(0);
    if !exit.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        bail!("stacksampler failed ({}): {stderr}", exit.describe());
    }
    let report = ReportSummary::read(&json)?;
    let (samples, lost) = (report.samples.total, report.samples.lost);
    let stacks = &report.stacks;
    let goids: HashSet<u64> = stacks
        .iter()
        .flat_map(|s| s.goids.iter().copied())
        .collect();
    let result = MemoryResult {
        goroutines: GOROUTINES,
        duration_s: duration,
        frequency_hz: 99,
        samples,
        lost,
        distinct_stacks: stacks.len(),
        goroutines_seen: goids.len(),
        max_depth: stacks.iter().map(|s| s.depth).max().unwrap_or(0),
        wall_s: exit.wall.as_secs_f64(),
        cpu_s: exit.cpu.as_secs_f64(),
        max_rss_kib: exit.max_rss_kib,
        target_rss_kib,
    };
    eprintln!(
        "bench: memory: {} samples, {} distinct stacks, peak RSS {} MiB",
        result.samples,
        result.distinct_stacks,
        result.max_rss_kib / 1024
    );
    Ok(result)
}
