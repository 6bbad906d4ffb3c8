//! `cargo xtask build`: the release binary with the committed eBPF object of its target
//! architecture embedded (rebuilt first when the kernel sources changed since).

use std::path::PathBuf;

use clap::Args;

use crate::{
    aarch64, ebpf,
    util::{cargo, run_cmd, workspace_root},
};

#[derive(Args, Default)]
pub struct BuildArgs {
    /// Target triple for a cross build (e.g. aarch64-unknown-linux-musl).
    #[arg(long)]
    pub target: Option<String>,
}

/// Builds and returns the path of the `stacksampler` executable.
pub fn run(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    ebpf::ensure_current()?;
    let mut cmd = cargo();
    cmd.current_dir(workspace_root()).args([
        "build",
        "--release",
        "--package",
        "stacksampler",
        "--bin",
        "stacksampler",
    ]);
    let mut out = workspace_root().join("target");
    if let Some(target) = &args.target {
        cmd.args(["--target", target]);
        out = out.join(target);
        if target == aarch64::TARGET {
            aarch64::prepare_cross_build(&mut cmd)?;
        }
    }
    run_cmd(&mut cmd)?;
    let bin = out.join("release/stacksampler");
    if args.target.as_deref() == Some(aarch64::TARGET) {
        aarch64::check_static_arm64(&bin)?;
    }
    eprintln!("xtask: built {}", bin.display());
    Ok(bin)
}
