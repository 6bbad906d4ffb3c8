//! `cargo xtask build-ebpf [--check]`: the committed eBPF objects (docs/ebpf-object.md).
//!
//! The kernel program is built once per target architecture (the `bpf_target_arch` cfg selects
//! the register layout: x86_64 and aarch64 objects differ) with the pinned nightly and
//! bpf-linker, and committed under [`PREBUILT_DIR`] with a manifest naming the toolchain, a
//! digest of the kernel sources and each object's sha256. `stacksampler/build.rs` embeds the
//! object of its target, so building user space needs stable Rust only.
//!
//! The build is reproducible: every path the compiler would record (this checkout, the cargo
//! registry, the toolchain's `rust-src`) is remapped to a fixed prefix, so a rebuild in another
//! folder or on another machine with the same toolchain is byte-identical. `--check` rebuilds
//! into a temporary folder and fails when an object or the manifest differs from the committed
//! ones.
//!
//! Every path of the kernel crates is named here, once.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Args;
use sha2::{Digest as _, Sha256};

use crate::{
    setup::{self, EbpfToolchain},
    util::{output, run_cmd, workspace_root},
};

/// The eBPF crate (package name) and the binary target that is the object.
const EBPF_PACKAGE: &str = "stacksampler-ebpf";
const EBPF_BIN: &str = "stacksampler";
/// Where the committed objects and their manifest live, from the workspace root. Keep in step
/// with `PREBUILT_DIR` in `stacksampler/build.rs` (the one other place that reads them).
pub const PREBUILT_DIR: &str = "stacksampler-ebpf/prebuilt";
const MANIFEST: &str = "manifest.toml";
/// The folders, from the workspace root, whose files make the kernel program: their digest in
/// the manifest tells `cargo xtask build` that the objects are older than the sources. The
/// workspace's Cargo.toml and Cargo.lock are left out (they change with user-space
/// dependencies); `--check` compares the objects themselves, so a change there that matters
/// is still caught.
const KERNEL_SOURCES: &[&str] = &["stacksampler-ebpf", "stacksampler-common"];
/// Inside [`KERNEL_SOURCES`], what is output rather than source.
const NOT_SOURCES: &[&str] = &["stacksampler-ebpf/prebuilt", "stacksampler-ebpf/target"];
/// The BPF target: little-endian, for both host architectures.
const BPF_TARGET: &str = "bpfel-unknown-none";
/// The architectures an object is committed for (values of `bpf_target_arch`, which are
/// `CARGO_CFG_TARGET_ARCH` of the user-space build).
const ARCHES: &[&str] = &["x86_64", "aarch64"];
/// The fixed prefixes recorded instead of machine-specific paths.
const REMAPPED_WORKSPACE: &str = "/stacksampler";
const REMAPPED_CARGO_HOME: &str = "/cargo";

/// The committed object's file name for `arch` (`stacksampler/build.rs` uses the same rule).
fn object_name(arch: &str) -> String {
    format!("stacksampler-{arch}.bpf.o")
}

#[derive(Args, Default)]
pub struct BuildEbpfArgs {
    /// Rebuild into a temporary folder and fail if the result differs from the committed
    /// objects (what CI runs).
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &BuildEbpfArgs) -> anyhow::Result<()> {
    let root = workspace_root();
    let committed = root.join(PREBUILT_DIR);
    if !args.check {
        build_into(&root, &committed)?;
        eprintln!("build-ebpf: wrote {}", committed.display());
        return Ok(());
    }
    let fresh = root.join("target/ebpf/check");
    let _ = fs::remove_dir_all(&fresh);
    build_into(&root, &fresh)?;
    let mut names: Vec<String> = ARCHES.iter().map(|a| object_name(a)).collect();
    names.push(MANIFEST.to_owned());
    for name in &names {
        let rebuilt = fs::read(fresh.join(name))?;
        let ours = fs::read(committed.join(name)).ok();
        if ours.as_deref() != Some(&rebuilt[..]) {
            bail!(
                "{PREBUILT_DIR}/{name} differs from a rebuild of the kernel sources (rebuilt: {}); regenerate with `cargo xtask build-ebpf` and commit {PREBUILT_DIR}",
                fresh.join(name).display()
            );
        }
    }
    eprintln!("build-ebpf: the committed objects match a rebuild byte for byte");
    let _ = fs::remove_dir_all(&fresh);
    Ok(())
}

/// Makes sure the committed objects were built from the kernel sources in this tree; rebuilds
/// them (installing the nightly's rust-src and bpf-linker if needed) when the sources changed.
/// A fresh clone matches (CI checks it), so this costs one digest of the sources.
pub fn ensure_current() -> anyhow::Result<()> {
    let root = workspace_root();
    let digest = sources_digest(&root)?;
    let manifest = fs::read_to_string(root.join(PREBUILT_DIR).join(MANIFEST)).unwrap_or_default();
    if manifest.lines().any(|l| l == sources_line(&digest)) {
        return Ok(());
    }
    eprintln!(
        "xtask: the kernel sources changed since {PREBUILT_DIR} was built: rebuilding it (cargo xtask build-ebpf)"
    );
    run(&BuildEbpfArgs::default())
}

fn sources_line(digest: &str) -> String {
    format!("sources-sha256 = \"{digest}\"")
}

/// Builds one object per architecture into `out` and writes the manifest next to them.
fn build_into(root: &Path, out: &Path) -> anyhow::Result<()> {
    let toolchain = setup::ensure_ebpf_toolchain()?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut objects = Vec::new();
    for arch in ARCHES {
        let built = build_object(root, &toolchain, arch)?;
        let dest = out.join(object_name(arch));
        fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
        objects.push((*arch, sha256_hex(&fs::read(&dest)?)));
    }
    let manifest = manifest_text(&toolchain, &sources_digest(root)?, &objects)?;
    fs::write(out.join(MANIFEST), manifest)?;
    Ok(())
}

/// Builds the eBPF crate for `arch`; returns the linked object.
fn build_object(root: &Path, toolchain: &EbpfToolchain, arch: &str) -> anyhow::Result<PathBuf> {
    // One target folder per architecture: the cfg is in the rustflags, and cargo would
    // otherwise rebuild everything on each switch.
    let target_dir = root.join("target/ebpf").join(arch);
    let cargo_home = cargo_home()?;
    let rust_src = toolchain.sysroot.join("lib/rustlib/src/rust");
    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        // BTF is required by bpf_loop callbacks (the load fails with "missing btf func_info"
        // without it); it is made from the debug info.
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        // The paths the debug info, and from it BTF's line info, would record. The last
        // matching prefix wins, so the most specific comes last.
        remap(&cargo_home, REMAPPED_CARGO_HOME),
        remap(root, REMAPPED_WORKSPACE),
        remap(&rust_src, &format!("/rustc/{}", toolchain.commit_hash)),
    ];
    let path = env_path_with(&toolchain.bpf_linker_dir)?;
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args(["run", &toolchain.name, "cargo", "build", "--release"])
        .args(["--package", EBPF_PACKAGE, "--bin", EBPF_BIN])
        .args(["--target", BPF_TARGET, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env("PATH", path);
    // The outer cargo's settings (this task runs under `cargo run`) must not leak in.
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(key);
    }
    eprintln!(
        "build-ebpf: building the {arch} object with {}",
        toolchain.name
    );
    run_cmd(&mut cmd)?;
    Ok(target_dir.join(BPF_TARGET).join("release").join(EBPF_BIN))
}

fn remap(from: &Path, to: &str) -> String {
    format!("--remap-path-prefix={}={to}", from.display())
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// `PATH` with `dir` first (bpf-linker is the bpf target's linker and is looked up there).
fn env_path_with(dir: &Path) -> anyhow::Result<OsString> {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    Ok(std::env::join_paths(dirs)?)
}

fn manifest_text(
    toolchain: &EbpfToolchain,
    sources: &str,
    objects: &[(&str, String)],
) -> anyhow::Result<String> {
    let linker =
        output(Command::new(toolchain.bpf_linker_dir.join("bpf-linker")).arg("--version"))?;
    let mut text = format!(
        "# The eBPF objects embedded in stacksampler, one per target architecture.\n\
         # Written by `cargo xtask build-ebpf`, checked by `cargo xtask build-ebpf --check`\n\
         # (docs/ebpf-object.md). Do not edit: regenerate.\n\
         toolchain = \"{}\"\n\
         rustc = \"{}\"\n\
         llvm = \"{}\"\n\
         bpf-linker = \"{}\"\n\
         target = \"{BPF_TARGET}\"\n\
         {}\n",
        toolchain.pinned_name,
        toolchain.rustc_version,
        toolchain.llvm_version,
        linker.trim(),
        sources_line(sources),
    );
    for (arch, sha) in objects {
        text.push_str(&format!(
            "\n[\"{}\"]\nbpf_target_arch = \"{arch}\"\nsha256 = \"{sha}\"\n",
            object_name(arch)
        ));
    }
    Ok(text)
}

/// sha256 over the kernel sources: each file's path (from the workspace root) and contents, in
/// path order.
fn sources_digest(root: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for dir in KERNEL_SOURCES {
        collect_files(root, &root.join(dir), &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for rel in &files {
        let data = fs::read(root.join(rel)).with_context(|| format!("reading {rel}"))?;
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        hasher.update((data.len() as u64).to_le_bytes());
        hasher.update(&data);
    }
    Ok(hex(&hasher.finalize()))
}

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let rel = path
            .strip_prefix(root)?
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?
            .to_owned();
        if NOT_SOURCES.contains(&rel.as_str()) {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, files)?;
        } else {
            files.push(rel);
        }
    }
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace-shaped folder holding only the kernel crates' files.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(name: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("xtask-ebpf-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            let fake = FakeRoot(root);
            fake.write("stacksampler-ebpf/src/main.rs", "fn main() {}");
            fake.write("stacksampler-common/src/lib.rs", "pub struct Config;");
            fake.write(&format!("{PREBUILT_DIR}/{MANIFEST}"), "toolchain = \"x\"");
            fake
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sources_digest_follows_kernel_sources_only() {
        let root = FakeRoot::new("digest");
        let first = sources_digest(&root.0).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(sources_digest(&root.0).unwrap(), first);

        // The objects and the manifest are outputs: writing them does not make the sources new.
        root.write(
            &format!("{PREBUILT_DIR}/{}", object_name("x86_64")),
            "\x7fELF",
        );
        root.write("stacksampler-ebpf/target/release/stacksampler", "built");
        assert_eq!(sources_digest(&root.0).unwrap(), first);

        // Editing, adding or moving a kernel source file does.
        root.write("stacksampler-common/src/lib.rs", "pub struct Config(u32);");
        let edited = sources_digest(&root.0).unwrap();
        assert_ne!(edited, first);
        root.write("stacksampler-ebpf/src/programs/uprobe.rs", "");
        let added = sources_digest(&root.0).unwrap();
        assert_ne!(added, edited);
        fs::rename(
            root.0.join("stacksampler-ebpf/src/programs/uprobe.rs"),
            root.0.join("stacksampler-ebpf/src/uprobe.rs"),
        )
        .unwrap();
        assert_ne!(sources_digest(&root.0).unwrap(), added);
    }

    #[test]
    fn manifest_names_toolchain_sources_and_each_object() {
        let toolchain = EbpfToolchain {
            name: "nightly".into(),
            pinned_name: "nightly-2026-05-19".into(),
            rustc_version: "1.97.0-nightly (e50aa6fba 2026-05-19)".into(),
            commit_hash: "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a".into(),
            llvm_version: "22.1.4".into(),
            sysroot: PathBuf::from("/nonexistent"),
            bpf_linker_dir: PathBuf::from("/nonexistent"),
        };
        let objects = [("x86_64", "ab".repeat(32)), ("aarch64", "cd".repeat(32))];
        // The linker's version comes from running it; a missing linker is an error.
        assert!(manifest_text(&toolchain, "00", &objects).is_err());
        let dir = FakeRoot::new("manifest");
        let linker = dir.0.join("bin/bpf-linker");
        dir.write("bin/bpf-linker", "#!/bin/sh\necho bpf-linker 0.13.0\n");
        fs::set_permissions(&linker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let toolchain = EbpfToolchain {
            bpf_linker_dir: dir.0.join("bin"),
            ..toolchain
        };
        let text = manifest_text(&toolchain, "00", &objects).unwrap();
        for line in [
            "toolchain = \"nightly-2026-05-19\"",
            "rustc = \"1.97.0-nightly (e50aa6fba 2026-05-19)\"",
            "llvm = \"22.1.4\"",
            "bpf-linker = \"bpf-linker 0.13.0\"",
            "sources-sha256 = \"00\"",
            "[\"stacksampler-x86_64.bpf.o\"]",
            "[\"stacksampler-aarch64.bpf.o\"]",
            "bpf_target_arch = \"aarch64\"",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.contains(&format!("sha256 = \"{}\"", "cd".repeat(32))));
    }
}
