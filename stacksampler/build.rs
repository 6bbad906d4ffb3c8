//! Embeds the committed eBPF object of the target architecture
//! (`stacksampler-ebpf/prebuilt/stacksampler-<arch>.bpf.o`) in the `stacksampler` binary: one
//! self-contained executable, built with stable Rust alone. The objects are made by
//! `cargo xtask build-ebpf` with the pinned nightly and bpf-linker, and CI checks that a
//! rebuild is byte-identical (docs/ebpf-object.md).
//!
//! `AYA_BUILD_SKIP=1` embeds an empty placeholder instead: the binary then refuses to run with a
//! clear error.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, bail};

/// The committed objects, from this crate's folder. Keep in step with `PREBUILT_DIR` in
/// `xtask/src/ebpf.rs`, which writes them.
const PREBUILT_DIR: &str = "../stacksampler-ebpf/prebuilt";
/// ELF: magic, and the machine of BPF objects.
const ELF_MAGIC: &[u8] = b"\x7fELF";
const EM_BPF: u16 = 247;
const E_MACHINE_OFFSET: usize = 18;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let embedded = out_dir.join("stacksampler");
    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // An empty placeholder keeps `include_bytes!` happy; the loader rejects it at run time.
        fs::write(&embedded, b"")?;
        return Ok(());
    }
    // The eBPF program follows the architecture the binary is built for (cross builds too).
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let object = manifest_dir
        .join(PREBUILT_DIR)
        .join(format!("stacksampler-{arch}.bpf.o"));
    println!("cargo:rerun-if-changed={}", object.display());
    let data = fs::read(&object).with_context(|| {
        format!(
            "no committed eBPF object for {arch} at {} (objects exist for x86_64 and aarch64; `cargo xtask build-ebpf` makes them)",
            object.display()
        )
    })?;
    let machine = data
        .get(E_MACHINE_OFFSET..E_MACHINE_OFFSET + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]));
    if !data.starts_with(ELF_MAGIC) || machine != Some(EM_BPF) {
        bail!(
            "{} is not a BPF ELF object (a Git LFS pointer or a damaged checkout?); restore it with `git checkout` or rebuild it with `cargo xtask build-ebpf`",
            object.display()
        );
    }
    fs::write(&embedded, &data).with_context(|| format!("writing {}", embedded.display()))?;
    Ok(())
}
