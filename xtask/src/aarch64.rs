//! arm64: the cross build (`cargo xtask build --target aarch64-unknown-linux-musl`) and
//! `cargo xtask test-aarch64`, which proves the arm64 build on a real arm64 Linux kernel booted
//! under qemu-system-aarch64 (see docs/aarch64.md).
//!
//! test-aarch64:
//! 1. set-up (idempotent, only here so x86_64 runs do not pay for it): the stable toolchain's
//!    `aarch64-unknown-linux-musl` std, Debian's `gcc-aarch64-linux-gnu` (the linker) and
//!    `qemu-system-arm`;
//! 2. cross-builds the static stacksampler (the eBPF object follows: build.rs embeds the committed
//!    arm64 object for an aarch64 target) and the test binaries of the end-to-end test files the
//!    guest runs ([`GUEST_TESTS`]: the same `#[test]` functions as on x86_64), and prebuilds the
//!    Go programs those tests need (Go 1.27, 1.21 and Debian's 1.19, `CGO_ENABLED=0 GOARCH=arm64`)
//!    for the harness's prebuilt mode (`tests/src/lib.rs`);
//! 3. fetches Debian's arm64 cloud kernel and busybox-static through a private `APT_CONFIG`
//!    (its own architecture, lists, status and cache: the host's dpkg is never touched), cached
//!    under `<tools>/aarch64/`;
//! 4. packs an initramfs (cpio newc, gzip) with `tests/aarch64/init` as `/init`;
//! 5. boots it with a timeout and fails unless the guest prints its success marker with this
//!    run's nonce and a `PASS` line for every guest test (a guest that does not boot is a
//!    failure, never a skip).

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    build::{self, BuildArgs},
    setup::{DEBIAN_GO, PYPI_GO_VERSIONS},
    util::{output, run_cmd, tools_dir, workspace_root},
};

/// The Rust target of the arm64 build: musl, so the binary is static and runs on any arm64 Linux.
pub const TARGET: &str = "aarch64-unknown-linux-musl";
/// Debian's cross gcc, used as the linker (musl's crt and libc come with Rust's target).
const LINKER: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-system-aarch64";
/// Debian packages the arm64 tasks need on the (x86_64) host: package and a file it installs.
const HOST_PACKAGES: &[(&str, &str)] = &[
    ("gcc-aarch64-linux-gnu", "/usr/bin/aarch64-linux-gnu-gcc"),
    ("qemu-system-arm", "/usr/bin/qemu-system-aarch64"),
];
/// The kernel metapackage (its dependency names the current kernel) and the guest's userland.
/// The cloud flavour is a third of the generic one's size and has all the guest needs built in
/// (PL011 console, BPF, BTF, uprobes, perf events).
const KERNEL_METAPACKAGE: &str = "linux-image-cloud-arm64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Debian release and archive the guest packages come from.
const DEBIAN_SOURCES: &str = "\
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";
/// What the guest's /init prints when every check passed, followed by ` [nonce]`.
const SUCCESS_MARKER: &str = "STACKSAMPLER-AARCH64 GUEST RESULT: all checks passed";
/// Go releases the guest's programs are prebuilt with: the newest, Debian's 1.19, and 1.21 (the
/// first whose copystack adjusts arm64 frame pointers, golang/go#58432). The tests' primary
/// toolchains there are the oldest and the newest (`primary_go_toolchains`).
const GUEST_GO_LABELS: [&str; 3] = ["go1.27", "go1.21", "go1.19"];
/// The Go programs (`tests/go/NAME`) and variants the guest tests build, prebuilt for every guest
/// toolchain: (program, variant as the harness names it, `go build` flags of that variant; keep
/// in step with `Variant` in tests/src/lib.rs). A test asking for another one panics in the
/// guest, naming it.
const GUEST_GO_PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("demo", "normal", &[]),
    ("leaf", "normal", &[]),
    ("events", "normal", &[]),
    ("events", "stripped", &["-ldflags=-s -w"]),
];
/// The file of the prebuilt folder listing its toolchains (`PREBUILT_MANIFEST` of the harness).
const PREBUILT_MANIFEST: &str = "manifest";
/// The end-to-end tests the guest runs, the same `#[test]` functions as on x86_64: (test file
/// under `tests/tests/`, test names). Under TCG every stacksampler run costs about 35 s (most of
/// it loading and attaching before the 3 s of sampling), so the list is what the arm64 build must
/// prove (registers, X28 goroutine reads, states, deep and frameless stacks, the uprobes of the
/// runtime events on Go's arm64 ABI), within the guest's time. The other tests of these files
/// stay x86_64-only, because they need what the guest has not, or prove nothing arm64-specific
/// beyond the listed ones and would only add guest time:
/// - e2e_sampling `unprivileged_user_is_told_to_use_root`: needs `setpriv` (util-linux; busybox
///   has none); `non_go_target_is_sampled_with_unknown_goroutines`: needs python3;
///   `samples_are_read_while_the_run_goes_on`, `min_depth_keeps_deep_stacks_only`,
///   `target_exiting_mid_run_still_reports`, `ctrl_c_detaches_everything_and_reports`,
///   `kernel_stacks_on_request`: architecture-independent user space, guest time only;
/// - e2e_events `goroutine_leak_grows_at_its_rate_and_names_its_site`: the creation ids it checks
///   are not known on arm64 (docs/aarch64.md, "Goroutine creation ids");
///   `plain_record_run_reports_the_fatal_error_first`,
///   `record_events_adds_stack_growth_and_goroutines_to_the_report`: sampling runs with the same
///   probes as the listed `--watch` tests, guest time only.
const GUEST_TESTS: &[(&str, &[&str])] = &[
    (
        "e2e_sampling",
        &[
            "no_such_pid_is_a_clear_error",
            "bad_arguments_are_rejected",
            "hot_function_is_the_top_stack",
            "state_filter_separates_syscall_from_running",
            "recursion_3000_deep_is_walked_whole",
            "caller_of_a_frameless_leaf_is_kept",
        ],
    ),
    (
        "e2e_events",
        &[
            "stack_growth_shows_every_doubling_and_alerts_once",
            "fatal_stack_overflow_is_reported_first_with_its_deep_stack",
            "fatal_error_is_first_in_the_text_report",
            "watch_output_file_gets_the_json_report",
            "target_output_and_exit_code_are_the_same_with_probes",
        ],
    ),
];

#[derive(Args)]
pub struct TestAarch64Args {
    /// Seconds the guest may run (boot, suite, power-off) before it is killed and the run fails.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// CPUs of the guest.
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
}

/// Makes `cmd` (a `cargo build --target aarch64-unknown-linux-musl`) work: installs the target's
/// std and the cross linker when missing, and names the linker for this command only (a global
/// cargo config would apply to every build).
pub fn prepare_cross_build(cmd: &mut Command) -> anyhow::Result<()> {
    ensure_rust_target()?;
    ensure_host_packages()?;
    cmd.env(linker_env(), LINKER);
    Ok(())
}

fn linker_env() -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        TARGET.to_uppercase().replace('-', "_")
    )
}

fn ensure_rust_target() -> anyhow::Result<()> {
    // The toolchain cargo builds user space with (the workspace default: stable).
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .exists()
    {
        return Ok(());
    }
    eprintln!("aarch64: rustup target add {TARGET}");
    run_cmd(Command::new("rustup").args(["target", "add", TARGET]))
}

fn ensure_host_packages() -> anyhow::Result<()> {
    crate::setup::ensure_debian_packages("aarch64", HOST_PACKAGES)
}

/// Checks that `path` is a static arm64 ELF executable (what `file` calls "ARM aarch64,
/// statically linked"): machine EM_AARCH64 and no PT_INTERP program header.
pub fn check_static_arm64(path: &Path) -> anyhow::Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if data.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    const EM_AARCH64: u16 = 183;
    const PT_INTERP: u32 = 3;
    if u16_at(18) != Some(EM_AARCH64) {
        bail!(
            "{} is not an arm64 executable (e_machine {:?})",
            path.display(),
            u16_at(18)
        );
    }
    let phoff = u64_at(32).context("truncated ELF header")? as usize;
    let phentsize = u16_at(54).context("truncated ELF header")? as usize;
    let phnum = u16_at(56).context("truncated ELF header")? as usize;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize) == Some(PT_INTERP) {
            bail!(
                "{} is dynamically linked (it has an interpreter)",
                path.display()
            );
        }
    }
    Ok(())
}

pub fn run(args: &TestAarch64Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let guest_dir = root.join("target").join(TARGET).join("guest");
    fs::create_dir_all(&guest_dir)?;

    let stacksampler = build::run(&BuildArgs {
        target: Some(TARGET.to_owned()),
    })?;
    let tests = build_test_binaries(&root)?;
    let go_programs = prebuild_go_programs(&root, &guest_dir.join("go"))?;
    let guest = fetch_guest_packages()?;
    eprintln!(
        "aarch64: builds and packages ready after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let initramfs = guest_dir.join("initramfs.cpio.gz");
    pack_initramfs(
        &root,
        &guest,
        &GuestFiles {
            stacksampler: &stacksampler,
            tests: &tests,
            go_programs: &go_programs,
        },
        &initramfs,
    )?;

    let nonce = format!(
        "{:x}{:x}",
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos(),
        std::process::id()
    );
    let boot_started = Instant::now();
    let log = boot(args, &guest.kernel, &initramfs, &nonce)?;
    fs::write(guest_dir.join("console.log"), &log)?;
    let (results, missing) = guest_results(&log);
    eprintln!(
        "aarch64: guest ran {:.0} s (console log: {}); test-aarch64 took {:.0} s in all",
        boot_started.elapsed().as_secs_f64(),
        guest_dir.join("console.log").display(),
        started.elapsed().as_secs_f64()
    );
    for r in &results {
        eprintln!("aarch64:   {r}");
    }
    let passed = results.iter().filter(|r| r.starts_with("PASS ")).count();
    let failed = results.len() - passed;
    let marker = format!("{SUCCESS_MARKER} [{nonce}]");
    if !log.lines().any(|l| l.trim_end() == marker) {
        bail!(
            "the arm64 guest did not report success ({passed} tests passed, {failed} failed, {} did not run; see the console log above)",
            missing.len()
        );
    }
    if failed > 0 || !missing.is_empty() {
        bail!(
            "the guest printed its marker but {failed} tests failed and these did not run: {missing:?}"
        );
    }
    eprintln!("aarch64: all {passed} guest tests passed");
    Ok(())
}

/// Cross-builds the test binaries of [`GUEST_TESTS`]' files; returns (file name, executable).
fn build_test_binaries(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut cmd = crate::util::cargo();
    cmd.current_dir(root).args([
        "test",
        "--no-run",
        "--release",
        "--locked",
        "--target",
        TARGET,
        "-p",
        "stacksampler-tests",
        "--message-format=json-render-diagnostics",
    ]);
    for (file, _) in GUEST_TESTS {
        cmd.args(["--test", file]);
    }
    prepare_cross_build(&mut cmd)?;
    cmd.stderr(Stdio::inherit());
    let messages = output(&mut cmd)?;
    let mut built = Vec::new();
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let is_test = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if message["reason"] != "compiler-artifact" || !is_test {
            continue;
        }
        if let Some(exe) = message["executable"].as_str() {
            built.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    for (file, _) in GUEST_TESTS {
        let (_, exe) = built
            .iter()
            .find(|(name, _)| name == file)
            .with_context(|| format!("cargo built no test executable for {file}"))?;
        check_static_arm64(exe)?;
    }
    Ok(built)
}

/// The `go` command of a guest toolchain label (`go1.27`).
fn go_for(label: &str) -> anyhow::Result<PathBuf> {
    if label == "go1.19" {
        return Ok(PathBuf::from(DEBIAN_GO));
    }
    let minor = label.trim_start_matches("go");
    let version = PYPI_GO_VERSIONS
        .iter()
        .find(|v| v.starts_with(&format!("{minor}.")))
        .with_context(|| format!("no {label} among the PyPI Go versions"))?;
    Ok(tools_dir().join(format!("go-{version}/go/bin/go")))
}

/// Prebuilds every program of [`GUEST_GO_PROGRAMS`] with every guest toolchain into `out`, named
/// as the test harness looks them up (`PROGRAM-LABEL-VARIANT`), and writes the manifest that
/// lists the toolchains (`tests/src/lib.rs`, prebuilt mode). Returns the files (manifest
/// included): (name in the guest's folder, path on the host).
fn prebuild_go_programs(root: &Path, out: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    fs::create_dir_all(out)?;
    let mut files = Vec::new();
    for label in GUEST_GO_LABELS {
        for (program, variant, flags) in GUEST_GO_PROGRAMS {
            let name = format!("{program}-{label}-{variant}");
            let exe = out.join(&name);
            run_cmd(
                Command::new(go_for(label)?)
                    .current_dir(root.join("tests/go").join(program))
                    .env("CGO_ENABLED", "0")
                    .env("GOOS", "linux")
                    .env("GOARCH", "arm64")
                    .env("GOTOOLCHAIN", "local")
                    .env("GOPROXY", "off")
                    .env(
                        "GOCACHE",
                        tools_dir().join(format!("go-cache/arm64-{label}")),
                    )
                    .arg("build")
                    .args(*flags)
                    .arg("-o")
                    .arg(&exe)
                    .arg("."),
            )?;
            check_static_arm64(&exe)?;
            files.push((name, exe));
        }
    }
    let manifest = out.join(PREBUILT_MANIFEST);
    let versions: String = GUEST_GO_LABELS
        .iter()
        .map(|l| format!("go {}\n", l.trim_start_matches("go")))
        .collect();
    fs::write(&manifest, versions)?;
    files.push((PREBUILT_MANIFEST.to_owned(), manifest));
    Ok(files)
}

/// The guest's test list, one line per test binary: `BINARY NAME NAME ...` (read by /init).
fn guest_test_list() -> String {
    GUEST_TESTS
        .iter()
        .map(|(file, names)| format!("{file} {}\n", names.join(" ")))
        .collect()
}

/// The guest's result lines (`PASS FILE::NAME (N s)` or `FAIL ...`, one per test, printed by
/// /init), and the guest tests that have none.
fn guest_results(log: &str) -> (Vec<&str>, Vec<String>) {
    let results: Vec<&str> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL "))
        .collect();
    let missing = GUEST_TESTS
        .iter()
        .flat_map(|(file, names)| names.iter().map(move |name| format!("{file}::{name} ")))
        .filter(|test| !results.iter().any(|l| l[5..].starts_with(test.as_str())))
        .collect();
    (results, missing)
}

/// The guest's kernel image and busybox, extracted from Debian's arm64 packages.
struct GuestPackages {
    kernel: PathBuf,
    busybox: PathBuf,
}

/// Fetches (once; cached under `<tools>/aarch64/`) the arm64 kernel and busybox-static through a
/// private apt configuration, and extracts them with `dpkg -x`.
fn fetch_guest_packages() -> anyhow::Result<GuestPackages> {
    let dir = tools_dir().join("aarch64");
    let packages = GuestPackages {
        kernel: dir.join("vmlinuz"),
        busybox: dir.join("busybox"),
    };
    if packages.kernel.exists() && packages.busybox.exists() {
        return Ok(packages);
    }
    let apt = dir.join("apt");
    for sub in [
        "lists/partial",
        "cache/archives/partial",
        "sources.list.d",
        "preferences.d",
        "debs",
    ] {
        fs::create_dir_all(apt.join(sub))?;
    }
    let status = apt.join("status");
    if !status.exists() {
        fs::write(&status, "")?;
    }
    fs::write(apt.join("sources.list"), DEBIAN_SOURCES)?;
    let conf = apt.join("apt.conf");
    let p = |s: &str| apt.join(s).display().to_string();
    fs::write(
        &conf,
        format!(
            "APT::Architecture \"arm64\";\n\
             APT::Architectures {{ \"arm64\"; }};\n\
             APT::Sandbox::User \"root\";\n\
             Dir::State::Lists \"{}\";\n\
             Dir::State::status \"{}\";\n\
             Dir::Cache \"{}\";\n\
             Dir::Etc::SourceList \"{}\";\n\
             Dir::Etc::SourceParts \"{}\";\n\
             Dir::Etc::PreferencesParts \"{}\";\n\
             Acquire::IndexTargets::deb::DEP-11::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled \"false\";\n\
             Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled \"false\";\n",
            p("lists"),
            status.display(),
            p("cache"),
            p("sources.list"),
            p("sources.list.d"),
            p("preferences.d"),
        ),
    )?;
    let apt_cmd = |program: &str| {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &conf).current_dir(apt.join("debs"));
        c
    };
    eprintln!(
        "aarch64: fetching Debian's arm64 kernel and busybox-static (private apt state under {})",
        apt.display()
    );
    run_cmd(apt_cmd("apt-get").args(["update", "-qq"]))?;
    let depends = output(apt_cmd("apt-cache").args(["depends", KERNEL_METAPACKAGE]))?;
    let kernel_package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{KERNEL_METAPACKAGE} names no kernel package:\n{depends}"))?
        .to_owned();
    for entry in fs::read_dir(apt.join("debs"))? {
        fs::remove_file(entry?.path())?;
    }
    run_cmd(apt_cmd("apt-get").args(["download", "-q", &kernel_package, BUSYBOX_PACKAGE]))?;
    let extracted = dir.join("extracted");
    let _ = fs::remove_dir_all(&extracted);
    fs::create_dir_all(&extracted)?;
    for entry in fs::read_dir(apt.join("debs"))? {
        run_cmd(
            Command::new("dpkg")
                .arg("-x")
                .arg(entry?.path())
                .arg(&extracted),
        )?;
    }
    let vmlinuz = fs::read_dir(extracted.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {kernel_package}"))?;
    fs::copy(extracted.join("bin/busybox"), &packages.busybox)?;
    // The kernel last: its presence marks a complete cache.
    fs::copy(&vmlinuz, &packages.kernel)?;
    fs::write(dir.join("kernel-package"), format!("{kernel_package}\n"))?;
    let _ = fs::remove_dir_all(&extracted);
    Ok(packages)
}

/// What the guest runs, built on the host.
struct GuestFiles<'a> {
    stacksampler: &'a Path,
    /// (test file name, test executable).
    tests: &'a [(String, PathBuf)],
    /// The prebuilt folder's files: (name, path on the host).
    go_programs: &'a [(String, PathBuf)],
}

/// Packs the guest's initramfs: a gzip-compressed cpio (newc) archive. Layout (read by
/// tests/aarch64/init): `/stacksampler/bin/stacksampler`, the test binaries in
/// `/stacksampler/tests/`, the prebuilt Go programs and their manifest in `/stacksampler/go/`,
/// and the test list in `/stacksampler/guest-tests`.
fn pack_initramfs(
    root: &Path,
    guest: &GuestPackages,
    files: &GuestFiles,
    out: &Path,
) -> anyhow::Result<()> {
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "stacksampler",
        "stacksampler/bin",
        "stacksampler/tests",
        "stacksampler/go",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init's standard streams before devtmpfs is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("init", 0o755, &fs::read(root.join("tests/aarch64/init"))?);
    cpio.file("bin/busybox", 0o755, &fs::read(&guest.busybox)?);
    cpio.file(
        "stacksampler/bin/stacksampler",
        0o755,
        &fs::read(files.stacksampler)?,
    );
    for (name, path) in files.tests {
        cpio.file(
            &format!("stacksampler/tests/{name}"),
            0o755,
            &fs::read(path)?,
        );
    }
    for (name, path) in files.go_programs {
        cpio.file(&format!("stacksampler/go/{name}"), 0o755, &fs::read(path)?);
    }
    cpio.file(
        "stacksampler/guest-tests",
        0o644,
        guest_test_list().as_bytes(),
    );
    let archive = cpio.finish();
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(out).with_context(|| format!("creating {}", out.display()))?)
        .spawn()
        .context("starting gzip")?;
    gzip.stdin
        .take()
        .context("gzip stdin")?
        .write_all(&archive)?;
    let status = gzip.wait()?;
    if !status.success() {
        bail!("gzip failed: {status}");
    }
    eprintln!(
        "aarch64: initramfs {} ({} MB uncompressed)",
        out.display(),
        archive.len() >> 20
    );
    Ok(())
}

/// A cpio archive in the "newc" format the kernel unpacks (ASCII hex headers, 4-byte alignment).
#[derive(Default)]
struct Cpio {
    data: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), content: &[u8]) {
        self.inode += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime
            content.len(),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() + 1,
            0, // checksum (unused by newc)
        );
        self.data.extend_from_slice(header.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(content);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, content: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), content);
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.inode = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data
    }
}

/// Boots the guest and returns its console output. Echoes the console as it comes; kills qemu
/// (its own child, by pid) when the timeout passes.
fn boot(
    args: &TestAarch64Args,
    kernel: &Path,
    initramfs: &Path,
    nonce: &str,
) -> anyhow::Result<String> {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-M",
        "virt",
        "-cpu",
        "cortex-a72",
        "-m",
        "2G",
        "-nic",
        "none",
    ])
    .args(["-smp", &args.smp.to_string()])
    .args(["-nographic", "-no-reboot", "-kernel"])
    .arg(kernel)
    .arg("-initrd")
    .arg(initramfs)
    .arg("-append")
    .arg(format!(
        "console=ttyAMA0 loglevel=4 panic=-1 rdinit=/init stacksampler.nonce={nonce}"
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    eprintln!("aarch64: booting {cmd:?} (timeout {} s)", args.timeout);
    let mut child = cmd.spawn().with_context(|| format!("starting {QEMU}"))?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    // Echoes the console line by line as it comes and hands the whole log over at its end.
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut log = String::new();
        let mut line = Vec::new();
        // Bytes, not UTF-8 lines: the console may carry anything.
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            eprintln!("guest| {text}");
            log.push_str(text);
            log.push('\n');
            line.clear();
        }
        let _ = tx.send(log);
    });
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            // By pid: qemu is this task's own child.
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    match status {
        None => bail!(
            "the arm64 guest did not finish within {} s (killed)",
            args.timeout
        ),
        Some(s) if !s.success() => bail!("{QEMU} failed: {s}"),
        Some(_) => Ok(log),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_newc_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"hi");
        let data = c.finish();
        assert!(data.starts_with(b"070701"));
        // 110-byte header + "init\0" (115, padded to 116) + 2 bytes (padded to 120).
        assert_eq!(&data[110..115], b"init\0");
        assert_eq!(&data[116..118], b"hi");
        assert_eq!(&data[120..126], b"070701");
        assert_eq!(data.len() % 4, 0);
        assert!(data.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
