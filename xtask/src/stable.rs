//! `cargo xtask test-stable`: proves that stable Rust alone builds a working stacksampler.
//!
//! 1. clones HEAD into a temporary folder (what a user gets from `git clone`);
//! 2. hides every toolchain but stable: `RUSTUP_HOME` points at a private rustup folder whose
//!    only toolchain is a link to the stable one, so any `rustup run nightly` or `+nightly`
//!    (aya-build, the eBPF crate's rust-toolchain.toml) fails; bpf-linker is taken off `PATH`
//!    and the tools folder is empty. It checks that the nightly is indeed unusable;
//! 3. runs the README's stable-only install, `cargo install --locked --path stacksampler`, into
//!    a fresh target folder;
//! 4. runs the end-to-end sampling tests (`tests/tests/e2e_sampling.rs`) against that binary
//!    (`STACKSAMPLER_BIN`).
//!
//! Only committed files are tested (a clone of HEAD).

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::util::{cargo, output, run_cmd, workspace_root};

/// The end-to-end test package, and the test file run against the stable-only binary.
const TESTS_PACKAGE: &str = "stacksampler-tests";
const E2E_TEST: &str = "e2e_sampling";
/// Environment variables of the outer cargo run that would steer the inner build.
const OUTER_CARGO_ENV: &[&str] = &[
    "CARGO",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTUP_TOOLCHAIN",
];

#[derive(Args)]
pub struct TestStableArgs {
    /// Keep the temporary clone, toolchain folder and build afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Extra arguments for the test binary (e.g. a test name).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

pub fn run(args: &TestStableArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let head = output(
        Command::new("git")
            .current_dir(&root)
            .args(["rev-parse", "HEAD"]),
    )?
    .trim()
    .to_owned();
    let dirty = output(Command::new("git").current_dir(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))?;
    if !dirty.trim().is_empty() {
        eprintln!("test-stable: uncommitted changes are not tested (a clone of HEAD {head} is)");
    }
    let base = std::env::temp_dir().join(format!("stacksampler-stable-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let result = run_in(&root, &base, &head, args);
    if args.keep || result.is_err() {
        eprintln!("test-stable: left {}", base.display());
    } else {
        let _ = fs::remove_dir_all(&base);
    }
    result
}

fn run_in(root: &Path, base: &Path, head: &str, args: &TestStableArgs) -> anyhow::Result<()> {
    let clone = base.join("src");
    run_cmd(
        Command::new("git")
            .args(["clone", "--quiet"])
            .arg(root)
            .arg(&clone),
    )?;
    run_cmd(
        Command::new("git")
            .current_dir(&clone)
            .args(["checkout", "--quiet", "--detach", head]),
    )?;
    let rustup_home = stable_only_rustup_home(base)?;
    let tools = base.join("tools");
    fs::create_dir_all(&tools)?;
    let path = path_without_bpf_linker();
    let stable_only = |program: &str| {
        let mut cmd = Command::new(program);
        cmd.env("RUSTUP_HOME", &rustup_home)
            .env("RUSTUP_TOOLCHAIN", "stable")
            .env("STACKSAMPLER_TOOLS", &tools)
            .env("PATH", &path);
        for key in OUTER_CARGO_ENV.iter().filter(|k| **k != "RUSTUP_TOOLCHAIN") {
            cmd.env_remove(key);
        }
        cmd
    };

    // The proof that nothing below can use the nightly or bpf-linker.
    let nightly = stable_only("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .context("starting rustup")?;
    if nightly.status.success() {
        bail!(
            "the nightly is still usable in the stable-only environment: {}",
            String::from_utf8_lossy(&nightly.stdout).trim()
        );
    }
    if stable_only("bpf-linker").arg("--version").output().is_ok() {
        bail!("bpf-linker is still on PATH in the stable-only environment");
    }
    let toolchains = output(stable_only("rustup").args(["toolchain", "list"]))?;
    eprintln!(
        "test-stable: toolchains visible: {}; nightly: unusable; bpf-linker: not on PATH",
        toolchains.split_whitespace().collect::<Vec<_>>().join(" ")
    );

    let install = base.join("install");
    let started = Instant::now();
    run_cmd(
        stable_only("cargo")
            .current_dir(&clone)
            .args([
                "install",
                "--locked",
                "--quiet",
                "--path",
                "stacksampler",
                "--root",
            ])
            .arg(&install)
            .env("CARGO_TARGET_DIR", base.join("target")),
    )?;
    let bin = install.join("bin/stacksampler");
    eprintln!(
        "test-stable: `cargo install --locked --path stacksampler` with stable only took {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        bin.display()
    );

    let started = Instant::now();
    run_cmd(
        cargo()
            .current_dir(root)
            .env("STACKSAMPLER_BIN", &bin)
            .args([
                "test",
                "--release",
                "--package",
                TESTS_PACKAGE,
                "--test",
                E2E_TEST,
                "--",
            ])
            .args(&args.rest),
    )?;
    eprintln!(
        "test-stable: {E2E_TEST} passed against the stable-only binary in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A rustup folder whose only toolchain is a link to the installed stable one; returns it.
fn stable_only_rustup_home(base: &Path) -> anyhow::Result<PathBuf> {
    let sysroot = PathBuf::from(
        output(Command::new("rustup").args(["run", "stable", "rustc", "--print", "sysroot"]))?
            .trim(),
    );
    let name = sysroot
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("no toolchain name in {}", sysroot.display()))?
        .to_owned();
    let home = base.join("rustup");
    fs::create_dir_all(home.join("toolchains"))?;
    symlink(&sysroot, home.join("toolchains").join(&name))?;
    fs::write(
        home.join("settings.toml"),
        format!(
            "version = \"12\"\ndefault_toolchain = \"{name}\"\nprofile = \"minimal\"\nauto_self_update = \"disable\"\n"
        ),
    )?;
    Ok(home)
}

/// `PATH` without the folders that hold a `bpf-linker`.
fn path_without_bpf_linker() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept = std::env::split_paths(&path).filter(|d| !d.join("bpf-linker").exists());
    std::env::join_paths(kept).unwrap_or(path)
}
