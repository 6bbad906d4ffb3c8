//! What only the benchmark needs, set up when it runs (idempotent): the peer tools `perf` and
//! `bpftrace` from Debian, the release binary, the symbolization example and the Go programs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{
    build::{self, BuildArgs},
    setup::PYPI_GO_VERSIONS,
    util::{cargo, run_cmd, tools_dir, workspace_root},
};

pub struct Tools {
    pub stacksampler: PathBuf,
    pub symbolize_bench: PathBuf,
    /// The Go benchmark program (`tests/go/bench`), built with `go`.
    pub target: PathBuf,
    /// The mixed Go and C program (`tests/go/cgomix`), built with `go` and cgo.
    pub cgomix: PathBuf,
    pub go: PathBuf,
    pub perf: PathBuf,
    pub bpftrace: PathBuf,
}

impl Tools {
    /// Builds what the benchmark runs; `binary` is measured instead of this checkout's
    /// stacksampler when given.
    pub fn prepare(binary: Option<&Path>) -> anyhow::Result<Self> {
        let perf = ensure_perf()?;
        let bpftrace = ensure_bpftrace()?;
        let stacksampler = match binary {
            Some(b) => b.to_path_buf(),
            None => build::run(&BuildArgs::default())?,
        };
        let root = workspace_root();
        run_cmd(cargo().current_dir(&root).args([
            "build",
            "--quiet",
            "--release",
            "--package",
            "stacksampler",
            "--example",
            "symbolize_bench",
        ]))?;
        let symbolize_bench = root.join("target/release/examples/symbolize_bench");
        let newest = PYPI_GO_VERSIONS.last().context("no Go version")?;
        let go = tools_dir().join(format!("go-{newest}/go/bin/go"));
        let out = root.join("target/bench");
        std::fs::create_dir_all(&out)?;
        let build = |program: &str, cgo: bool| -> anyhow::Result<PathBuf> {
            let exe = out.join(program);
            run_cmd(
                Command::new(&go)
                    .current_dir(root.join("tests/go").join(program))
                    .env("CGO_ENABLED", if cgo { "1" } else { "0" })
                    .env("GOTOOLCHAIN", "local")
                    .env("GOPROXY", "off")
                    .env("GOCACHE", tools_dir().join("go-cache/bench"))
                    .args(["build", "-o"])
                    .arg(&exe)
                    .arg("."),
            )?;
            Ok(exe)
        };
        let target = build("bench", false)?;
        let cgomix = build("cgomix", true)?;
        Ok(Self {
            stacksampler,
            symbolize_bench,
            target,
            cgomix,
            go,
            perf,
            bpftrace,
        })
    }
}

fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A perf that works for the running kernel: it must count a cpu-clock event, not just print its
/// version (Debian's old `perf` wrapper script only points at `perf_<kernel version>`).
fn perf_works(perf: &Path) -> bool {
    runs(Command::new(perf).args(["stat", "-e", "cpu-clock", "-x", ",", "--", "true"]))
}

fn ensure_perf() -> anyhow::Result<PathBuf> {
    if !Path::new("/usr/bin/perf").exists() {
        apt_install("linux-perf")?;
    }
    let mut candidates = vec![PathBuf::from("/usr/bin/perf")];
    // Kernel-version-specific binaries, newest first.
    let mut versioned: Vec<PathBuf> = ["/usr/bin", "/usr/lib"]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten().map(|e| e.path()))
        .flat_map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_owned();
            if name.starts_with("perf_") {
                vec![p]
            } else if name.starts_with("linux-tools") {
                vec![p.join("perf")]
            } else {
                vec![]
            }
        })
        .collect();
    versioned.sort();
    versioned.reverse();
    candidates.extend(versioned);
    candidates
        .into_iter()
        .find(|p| p.exists() && perf_works(p))
        .context("no perf binary here works for the running kernel (tried /usr/bin/perf, /usr/bin/perf_*, /usr/lib/linux-tools*/perf)")
}

fn ensure_bpftrace() -> anyhow::Result<PathBuf> {
    let bpftrace = PathBuf::from("/usr/bin/bpftrace");
    if !bpftrace.exists() {
        apt_install("bpftrace")?;
    }
    if !runs(Command::new(&bpftrace).arg("--version")) {
        bail!("{} --version fails", bpftrace.display());
    }
    Ok(bpftrace)
}

fn apt_install(package: &str) -> anyhow::Result<()> {
    eprintln!("bench: apt-get install {package} (needed by the benchmark only)");
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
