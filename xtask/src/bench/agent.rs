//! The agent's own cost: CPU share and resident memory of one `stacksampler agent` sampling N
//! Go programs at once (each with one worker on the CPU and parked goroutines), with every
//! export on (files, the metrics endpoint), measured over a window after a warm-up.

use std::{
    fs::File,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;
use serde::Serialize;

use super::{
    Ctx,
    proc::{Proc, Target, cpu_ns, sleep, status_kib},
};

/// Numbers of targets measured.
const TARGET_COUNTS: &[usize] = &[1, 4, 8];
/// Parked goroutines per target (read at every interval for the goroutine metrics).
const PARKED: usize = 200;
/// Interval of the agent's profiles.
const INTERVAL_S: u64 = 5;
/// Time from start to the measurement window: attach and the first intervals.
const WARM_UP: Duration = Duration::from_secs(12);

#[derive(Serialize)]
pub struct AgentCost {
    pub targets: usize,
    pub frequency_hz: u64,
    pub interval_s: u64,
    pub window_s: f64,
    /// The agent's CPU time over the window / the window (1.0 = one CPU).
    pub cpu_share: f64,
    /// Its resident memory at the end of the window, and its peak.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// Profile files written over the whole run (one per target per interval).
    pub files: usize,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<AgentCost>> {
    let window = if ctx.rounds <= 1 {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(30)
    };
    TARGET_COUNTS.iter().map(|&n| one(ctx, n, window)).collect()
}

fn one(ctx: &Ctx, targets: usize, window: Duration) -> anyhow::Result<AgentCost> {
    let running: Vec<Target> = (0..targets)
        .map(|_| {
            Target::start(
                &ctx.tools.target,
                &[
                    "-workload".into(),
                    "shallow".into(),
                    "-workers".into(),
                    "1".into(),
                    "-parked".into(),
                    PARKED.to_string(),
                ],
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let out = ctx.tmp.join(format!("agent-{targets}"));
    std::fs::create_dir_all(&out)?;
    let stderr_path = ctx.tmp.join(format!("agent-{targets}.stderr"));
    let mut cmd = Command::new(&ctx.tools.stacksampler);
    cmd.arg("agent");
    for t in &running {
        cmd.args(["--pid", &t.pid().to_string()]);
    }
    cmd.args(["--interval", &format!("{INTERVAL_S}s")])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--output-dir")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path)?);
    let mut agent = Proc::spawn("stacksampler agent", &mut cmd)?;
    sleep(WARM_UP)?;
    if let Some(exit) = agent.try_wait()? {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        bail!("the agent ended ({}): {stderr}", exit.describe());
    }
    let pid = agent.pid();
    let (c0, t0) = (cpu_ns(pid), Instant::now());
    sleep(window)?;
    let (c1, t1) = (cpu_ns(pid), Instant::now());
    let rss_kib = status_kib(pid, "VmRSS:").unwrap_or(0);
    let exit = agent.stop(libc::SIGTERM, Duration::from_secs(30))?;
    let peak_rss_kib = exit.max_rss_kib;
    if !exit.success() {
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        bail!("the agent failed ({}): {stderr}", exit.describe());
    }
    let files = std::fs::read_dir(&out)?.count();
    drop(running);
    let window_s = (t1 - t0).as_secs_f64();
    let cost = AgentCost {
        targets,
        frequency_hz: 99,
        interval_s: INTERVAL_S,
        window_s,
        cpu_share: (c1.saturating_sub(c0)) as f64 / 1e9 / window_s,
        rss_kib,
        peak_rss_kib,
        files,
    };
    eprintln!(
        "bench: agent on {targets} targets: {:.2}% of a CPU, {} MiB resident ({} files)",
        cost.cpu_share * 100.0,
        cost.rss_kib / 1024,
        cost.files
    );
    Ok(cost)
}
