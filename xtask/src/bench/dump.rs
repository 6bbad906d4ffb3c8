//! Goroutine dumps: `stacksampler dump` of the benchmark program with 10,000 and 100,000 parked
//! goroutines (wall time from launch to file written, the dump's own read time and bytes read
//! from the target), side by side with the target's own `pprof.Lookup("goroutine").WriteTo(w, 2)`,
//! timed inside the target: the world stays stopped for that whole call, so its time is the pause
//! every goroutine of the target sees. Ours reads `/proc/PID/mem` and stops nothing.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{Ctx, median, proc::Target};

/// Parked goroutine counts measured.
const GOROUTINES: [usize; 2] = [10_000, 100_000];

#[derive(Serialize)]
pub struct DumpResult {
    pub goroutines: usize,
    pub runs: usize,
    /// `stacksampler dump` wall time, launch to file written (median), seconds.
    pub median_wall_s: f64,
    /// The dump's own read time (its json `elapsed_s`, median), seconds.
    pub median_read_s: f64,
    /// CPU time of that read (its json `cpu_s`, median): the read time on an idle machine.
    pub median_read_cpu_s: f64,
    /// Bytes read from the target (last run).
    pub bytes_read: u64,
    /// Goroutines listed (last run).
    pub listed: u64,
    /// The target's own debug=2 dump (median), seconds: a stop-the-world pause.
    pub median_self_dump_s: f64,
    /// Size of the target's own dump, bytes.
    pub self_dump_bytes: u64,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<DumpResult>> {
    let mut out = Vec::new();
    for n in GOROUTINES {
        let mut target = Target::start(
            &ctx.tools.target,
            &[
                "-workload".into(),
                "shallow".into(),
                "-workers".into(),
                "1".into(),
                "-parked".into(),
                n.to_string(),
            ],
        )?;
        let file = ctx.tmp.join("dump.json");
        let (mut wall, mut read, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = serde_json::Value::Null;
        for _ in 0..ctx.ttr_runs {
            let started = Instant::now();
            let status = Command::new(&ctx.tools.stacksampler)
                .args([
                    "dump",
                    "--pid",
                    &target.pid().to_string(),
                    "--format",
                    "json",
                    "-o",
                ])
                .arg(&file)
                .status()
                .context("run stacksampler dump")?;
            if !status.success() {
                bail!("stacksampler dump failed: {status}");
            }
            wall.push(started.elapsed().as_secs_f64());
            last = serde_json::from_slice(&std::fs::read(&file)?)?;
            read.push(last["elapsed_s"].as_f64().unwrap_or(f64::NAN));
            cpu.push(last["cpu_s"].as_f64().unwrap_or(f64::NAN));
        }
        let mut own = Vec::new();
        let mut own_bytes = 0;
        for _ in 0..ctx.ttr_runs {
            let (ns, bytes) = target.self_dump()?;
            own.push(ns as f64 / 1e9);
            own_bytes = bytes;
        }
        out.push(DumpResult {
            goroutines: n,
            runs: ctx.ttr_runs,
            median_wall_s: median(&wall),
            median_read_s: median(&read),
            median_read_cpu_s: median(&cpu),
            bytes_read: last["bytes_read"].as_u64().unwrap_or(0),
            listed: last["goroutines"].as_array().map_or(0, |g| g.len() as u64),
            median_self_dump_s: median(&own),
            self_dump_bytes: own_bytes,
        });
    }
    Ok(out)
}
