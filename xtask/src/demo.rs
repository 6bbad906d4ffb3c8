//! `cargo xtask demo`: sample the bundled Go demo program for a few seconds and show the result.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    build::{self, BuildArgs},
    setup::PYPI_GO_VERSIONS,
    util::{run_cmd, tools_dir, workspace_root},
};

#[derive(Args)]
pub struct DemoArgs {
    /// Seconds to sample.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let stacksampler = build::run(&BuildArgs::default())?;
    let root = workspace_root();
    let out_dir = root.join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    let newest_go = PYPI_GO_VERSIONS.last().context("no Go version")?;
    let go = tools_dir().join(format!("go-{newest_go}/go/bin/go"));
    let demo_bin = out_dir.join("demo");
    run_cmd(
        Command::new(&go)
            .current_dir(root.join("tests/go/demo"))
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOCACHE", tools_dir().join("go-cache/demo"))
            .args(["build", "-o"])
            .arg(&demo_bin)
            .arg("."),
    )?;

    // The demo exits by itself when its stdin closes (or after 10 minutes at the latest).
    let mut demo = Command::new(&demo_bin)
        .args(["-seconds", "600", "-depth", "3000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the demo program")?;
    let pid = demo.id();
    let stdout = demo.stdout.take().context("demo stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        eprintln!("demo: {line}");
        if line == "ready" {
            break;
        }
    }
    eprintln!(
        "xtask: sampling the demo (pid {pid}) for {}s: {} --pid {pid} --duration {}",
        args.seconds,
        stacksampler.display(),
        args.seconds
    );
    let outputs = [
        "demo.txt",
        "demo.folded",
        "demo.json",
        "demo.svg",
        "demo.pb.gz",
    ];
    let mut cmd = Command::new(&stacksampler);
    cmd.args([
        "--pid",
        &pid.to_string(),
        "--duration",
        &args.seconds.to_string(),
    ]);
    for name in outputs {
        cmd.arg("--output").arg(out_dir.join(name));
    }
    let status = cmd.status();
    // Stop the demo: closing its stdin makes it return from main.
    drop(demo.stdin.take());
    let waited = wait_with_timeout(&mut demo, Duration::from_secs(10));
    let status = status.context("running stacksampler")?;
    if !status.success() {
        bail!("stacksampler failed: {status}");
    }
    waited?;
    let text = std::fs::read_to_string(out_dir.join("demo.txt"))?;
    print!("{text}");
    eprintln!(
        "xtask: outputs written to {}: {}",
        out_dir.display(),
        outputs.join(", ")
    );
    Ok(())
}

fn wait_with_timeout(child: &mut std::process::Child, timeout: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            // By pid: our own child only.
            child.kill()?;
            child.wait()?;
            bail!("the demo program did not exit after its stdin closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
