//! `cargo xtask fuzz [--secs N | --runs N --seed S] [--target NAME]...`: runs every libFuzzer
//! target of `fuzz/` (cargo fuzz on the pinned nightly) for N seconds each (exploring at random),
//! or for N executions from a fixed random seed (what CI runs: the same commit explores the same
//! inputs, so a CI failure is reproduced by the same command), seeded from real Go binaries (every
//! toolchain's normal, stripped and PIE+cgo builds of the demo program) and from the small
//! committed seeds in `fuzz/seeds/`, and prints the executions of each. A crash fails the task;
//! libFuzzer leaves the input under `fuzz/artifacts/<target>/`, which becomes a regression test
//! (`cargo xtask fuzz` replays `fuzz/regressions/<target>/` first).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    setup::NIGHTLY,
    util::{cargo, run_cmd, tools_dir, workspace_root},
};

/// The fuzz targets, each a file of `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &[
    "module_symbolizer",
    "go_binary",
    "sample_record",
    "event_record",
    "pprof_labels",
    "goroutine_list",
];
/// Targets whose seeds are whole Go executables.
const BINARY_TARGETS: &[&str] = &["module_symbolizer", "go_binary"];
/// Largest input libFuzzer makes for the binary targets (the seeds are 1.5-3 MiB).
const BINARY_MAX_LEN: usize = 4 << 20;
/// Largest input for the record and memory targets.
const RECORD_MAX_LEN: usize = 1 << 16;
/// cargo-fuzz release installed on first use.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// Executions per target instead of a time budget (with `--seed`, a reproducible run).
    #[arg(long)]
    pub runs: Option<u64>,
    /// libFuzzer's random seed (default: a new one each run).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run only these targets (repeatable).
    #[arg(long)]
    pub target: Vec<String>,
}

/// How long one target runs.
#[derive(Clone, Copy)]
enum Budget {
    Seconds(u64),
    Executions(u64),
}

impl FuzzArgs {
    fn budget(&self) -> Budget {
        match self.runs {
            Some(n) => Budget::Executions(n),
            None => Budget::Seconds(self.secs),
        }
    }
}

/// What one target did.
struct TargetRun {
    name: &'static str,
    executions: u64,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let cargo_fuzz = cargo_fuzz()?;
    let targets: Vec<&'static str> =
        if args.target.is_empty() {
            TARGETS.to_vec()
        } else {
            args.target
                .iter()
                .map(|t| {
                    TARGETS.iter().copied().find(|x| x == t).with_context(|| {
                        format!("no fuzz target {t}; targets: {}", TARGETS.join(", "))
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
    let binary_seeds = go_binary_seeds(&root)?;
    let mut runs = Vec::new();
    for name in targets {
        // A seeded run starts from the seeds alone, as on a fresh clone, so it explores the same
        // inputs wherever it runs; a timed run grows a corpus kept between runs.
        let corpus = if args.seed.is_some() {
            let fresh = root.join("target/fuzz-corpus-seeded").join(name);
            if fresh.exists() {
                std::fs::remove_dir_all(&fresh)?;
            }
            fresh
        } else {
            root.join("target/fuzz-corpus").join(name)
        };
        std::fs::create_dir_all(&corpus)?;
        let mut seed_dirs = vec![fuzz_dir.join("seeds").join(name)];
        if BINARY_TARGETS.contains(&name) {
            seed_dirs.push(binary_seeds.clone());
        }
        let regressions = fuzz_dir.join("regressions").join(name);
        if regressions.is_dir() {
            seed_dirs.push(regressions);
        }
        let max_len = if BINARY_TARGETS.contains(&name) {
            BINARY_MAX_LEN
        } else {
            RECORD_MAX_LEN
        };
        let executions = run_target(
            &cargo_fuzz,
            &fuzz_dir,
            name,
            &corpus,
            &seed_dirs,
            max_len,
            args.budget(),
            args.seed,
        )?;
        eprintln!("xtask fuzz: {name}: {executions} executions, no crash");
        runs.push(TargetRun { name, executions });
    }
    for r in &runs {
        println!("{:<20} {:>12} executions", r.name, r.executions);
    }
    Ok(())
}

/// cargo-fuzz, installed under the tools folder on first use.
fn cargo_fuzz() -> anyhow::Result<PathBuf> {
    let root = tools_dir().join("cargo-fuzz");
    let bin = root.join("bin/cargo-fuzz");
    if !bin.exists() {
        eprintln!("xtask fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
        run_cmd(
            cargo()
                .args([
                    "install",
                    "--locked",
                    "cargo-fuzz",
                    "--version",
                    CARGO_FUZZ_VERSION,
                ])
                .arg("--root")
                .arg(&root),
        )?;
    }
    Ok(bin)
}

/// Runs one target for its budget; returns libFuzzer's count of executions.
#[allow(clippy::too_many_arguments)]
fn run_target(
    cargo_fuzz: &Path,
    fuzz_dir: &Path,
    name: &str,
    corpus: &Path,
    seeds: &[PathBuf],
    max_len: usize,
    budget: Budget,
    seed: Option<u64>,
) -> anyhow::Result<u64> {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(fuzz_dir)
        // The eBPF object is not needed to parse files.
        .env("AYA_BUILD_SKIP", "1")
        .env("RUSTUP_TOOLCHAIN", NIGHTLY)
        .args(["fuzz", "run", name])
        .arg(corpus)
        .args(seeds.iter().filter(|d| d.is_dir()))
        .arg("--")
        .arg(match budget {
            Budget::Seconds(secs) => format!("-max_total_time={secs}"),
            Budget::Executions(runs) => format!("-runs={runs}"),
        })
        .args(seed.map(|s| format!("-seed={s}")))
        .arg(format!("-max_len={max_len}"))
        .arg("-rss_limit_mb=4096")
        .arg("-print_final_stats=1");
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {name} failed ({}); the input is under fuzz/artifacts/{name}/:\n{}",
            out.status,
            tail.join("\n")
        );
    }
    log.lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("{name}: libFuzzer printed no execution count"))
}

/// Real Go executables as seeds: the demo built by every installed toolchain, normal, stripped
/// and PIE+cgo (cached under `target/fuzz-seeds/binaries`).
fn go_binary_seeds(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/fuzz-seeds/binaries");
    std::fs::create_dir_all(&dir)?;
    let mut toolchains = vec![(
        "go1.19".to_owned(),
        PathBuf::from("/usr/lib/go-1.19/bin/go"),
    )];
    if let Ok(entries) = std::fs::read_dir(tools_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("go-") {
                toolchains.push((format!("go{version}"), e.path().join("go/bin/go")));
            }
        }
    }
    let variants: [(&str, &[&str], &str); 3] = [
        ("normal", &[], "0"),
        ("stripped", &["-ldflags=-s -w"], "0"),
        ("piecgo", &["-buildmode=pie"], "1"),
    ];
    for (label, go) in toolchains.iter().filter(|(_, go)| go.exists()) {
        for (variant, flags, cgo) in variants {
            let out = dir.join(format!("demo-{label}-{variant}"));
            if out.exists() {
                continue;
            }
            run_cmd(
                Command::new(go)
                    .current_dir(root.join("tests/go/demo"))
                    .env("CGO_ENABLED", cgo)
                    .env("GOFLAGS", "-mod=mod")
                    .env("GOTOOLCHAIN", "local")
                    .args(["build", "-o"])
                    .arg(&out)
                    .args(flags),
            )?;
        }
    }
    Ok(dir)
}
