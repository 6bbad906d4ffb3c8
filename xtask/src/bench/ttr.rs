//! Time to report: wall time and peak RSS of a 1-second profile, from launch to report written
//! (load, verify, attach, sample 1 s, detach, symbolize, write), for stacksampler and for
//! bpftrace's one-liner `profile:hz:99 /pid == PID/ { @[ustack(1000)] = count(); }`, against the
//! shallow workload and against workers 1,000 frames deep (bpftrace's own limit).

use std::{
    fs::File,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::bail;
use serde::Serialize;

use super::{
    Ctx, median,
    proc::{Proc, Target},
    sysctl::Sysctl,
};

#[derive(Serialize)]
pub struct TtrResult {
    pub tool: String,
    pub target: String,
    pub command: String,
    pub runs: usize,
    pub wall_s: Vec<f64>,
    pub median_wall_s: f64,
    /// Peak RSS over the runs, KiB.
    pub max_rss_kib: u64,
    pub median_cpu_s: f64,
    /// Size of the report written (last run).
    pub report_bytes: u64,
}

fn one(
    ctx: &Ctx,
    tool: &str,
    target_name: &str,
    pid: u32,
    runs: usize,
) -> anyhow::Result<TtrResult> {
    let out = ctx.tmp.join(format!("ttr-{tool}.txt"));
    let stderr_path = ctx.tmp.join("ttr.stderr");
    let (program, args): (&std::path::Path, Vec<String>) = match tool {
        "stacksampler" => (
            &ctx.tools.stacksampler,
            vec![
                "--pid".into(),
                pid.to_string(),
                "--duration".into(),
                "1".into(),
                "--output".into(),
                out.display().to_string(),
            ],
        ),
        _ => (
            &ctx.tools.bpftrace,
            vec![
                "-o".into(),
                out.display().to_string(),
                "-e".into(),
                format!(
                    "profile:hz:99 /pid == {pid}/ {{ @[ustack(1000)] = count(); }} interval:s:1 {{ exit(); }}"
                ),
            ],
        ),
    };
    let command = format!("{} {}", program.display(), args.join(" "));
    let mut walls = vec![];
    let mut cpus = vec![];
    let mut rss = 0;
    for _ in 0..runs {
        let _ = std::fs::remove_file(&out);
        let mut proc = Proc::spawn(
            tool,
            Command::new(program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&stderr_path)?),
        )?;
        let exit = proc.wait_timeout(Duration::from_secs(120))?;
        if !exit.success() {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            bail!("{tool} failed ({}): {stderr}", exit.describe());
        }
        walls.push(exit.wall.as_secs_f64());
        cpus.push(exit.cpu.as_secs_f64());
        rss = rss.max(exit.max_rss_kib);
    }
    let report_bytes = std::fs::metadata(&out).map_or(0, |m| m.len());
    if report_bytes == 0 {
        bail!("{tool} wrote an empty report ({command})");
    }
    eprintln!(
        "bench: time to report, {tool} on {target_name}: {:.2} s, {} MiB",
        median(&walls),
        rss / 1024
    );
    Ok(TtrResult {
        tool: tool.to_owned(),
        target: target_name.to_owned(),
        command,
        runs,
        median_wall_s: median(&walls),
        wall_s: walls,
        max_rss_kib: rss,
        median_cpu_s: median(&cpus),
        report_bytes,
    })
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<TtrResult>> {
    // bpftrace's ustack(1000) needs the kernel's callchain limit at 1000 or more.
    let _sysctl = Sysctl::at_least("kernel.perf_event_max_stack", 1000)?;
    let mut rows = vec![];
    for (name, args) in [
        ("shallow", vec!["-workload", "shallow"]),
        ("deep 1000", vec!["-workload", "deep", "-depth", "1000"]),
    ] {
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        args.extend(["-workers".to_owned(), ctx.nproc.to_string()]);
        let target = Target::start(&ctx.tools.target, &args)?;
        for tool in ["stacksampler", "bpftrace"] {
            // bpftrace takes over a minute to print 1,000-frame stacks here: one run is enough.
            let runs = if tool == "bpftrace" && name != "shallow" {
                1
            } else {
                ctx.ttr_runs
            };
            rows.push(one(ctx, tool, name, target.pid(), runs)?);
        }
    }
    Ok(rows)
}
