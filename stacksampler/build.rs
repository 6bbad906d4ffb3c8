//! Builds the eBPF object with the pinned nightly (through aya-build) so that it is embedded in
//! the `stacksampler` binary: one self-contained executable.
//!
//! `cargo xtask setup` installs bpf-linker under the tools folder; it is put on PATH here so a
//! plain `cargo build` works after setup. `AYA_BUILD_SKIP=1` skips the eBPF build (for
//! `cargo check`/clippy): the binary then refuses to run with a clear error.
use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The dated nightly installed as `nightly` (2026-05-19, LLVM 22); `cargo xtask setup` checks it.
const BPF_TOOLCHAIN: &str = "nightly";

fn tools_dir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("STACKSAMPLER_TOOLS") {
        return Some(PathBuf::from(dir));
    }
    env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/stacksampler"))
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=STACKSAMPLER_TOOLS");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("stacksampler");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // An empty placeholder keeps `include_bytes!` happy; the loader rejects it at run time.
        if !object.exists() {
            std::fs::write(&object, b"")?;
        }
    }
    if let Some(tools) = tools_dir() {
        let linker_bin = tools.join("bpf-linker/bin");
        if linker_bin.join("bpf-linker").exists() {
            let path = env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![linker_bin];
            dirs.extend(env::split_paths(&path));
            // SAFETY: the build script is single-threaded here.
            unsafe { env::set_var("PATH", env::join_paths(dirs)?) };
        }
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "stacksampler-ebpf")
        .ok_or_else(|| anyhow!("stacksampler-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent of {}", ebpf.manifest_path))?
        .as_str()
        .to_owned();
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(BPF_TOOLCHAIN),
    )
}
