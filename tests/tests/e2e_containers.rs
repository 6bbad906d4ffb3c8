//! End to end, production targets: the real `stacksampler` binary, given the host pid as an
//! operator would, samples Go programs
//!
//! - in their own PID namespace (`unshare --pid --fork --mount-proc`, what Docker and
//!   Kubernetes do), as PID 1 and not, and in a nested PID namespace: the demo's hot, deep and
//!   syscall goroutines keep their own ids and states (Go records thread ids as the namespace
//!   numbers them, which the kernel side must compare with the right ids);
//! - whose binary exists only in a tmpfs mounted inside a private mount namespace: symbols, Go
//!   layout and the pprof mapping's build id come from the file the target runs;
//! - that a shell `exec`s one second into the run: frames after the exec are named from the Go
//!   binary, frames before it from the shell, and the report says when it happened.
//!
//! Also: an `--output` into a missing folder fails before anything is sampled, and a Go target
//! whose goroutine fields come back unknown gets the warning (and others do not).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, go_tool_pprof,
    goroutines::{MIN_BUSY_SAMPLES, Started, claiming_go_minor, goids, has_function},
    primary_go_toolchains,
    report::{count_where, functions, stacks},
    run_stacksampler, stacksampler_bin,
};

/// Seconds each run samples.
const SECONDS: &str = "2";
/// Recursion depth of the demo's deep goroutine: past the kernel walk's default 8192 frames,
/// so the rest is read from the target's memory through its host pid.
const DEEP_DEPTH: &str = "10000";
/// The warning for unknown goroutine fields starts with this.
const UNKNOWN_WARNING: &str = "goroutine fields are unknown";

/// How the target is placed.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// A child of a shell that is PID 1 of a new PID namespace.
    NotPid1,
    /// PID 1 of a PID namespace inside another new one.
    Nested,
}

impl Placement {
    const ALL: [Placement; 3] = [Placement::Pid1, Placement::NotPid1, Placement::Nested];

    /// How many PID namespaces deep the program is (its `NSpid` has this many ids + 1).
    fn levels(self) -> usize {
        match self {
            Placement::Pid1 | Placement::NotPid1 => 1,
            Placement::Nested => 2,
        }
    }

    /// The program's own pid in its innermost namespace.
    fn own_pid(self) -> u32 {
        match self {
            Placement::Pid1 | Placement::Nested => 1,
            Placement::NotPid1 => 2,
        }
    }
}

/// `unshare` into a new PID namespace with its own /proc; the namespace dies with `unshare`.
fn unshare_pid(cmd: &mut Command) -> &mut Command {
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
}

/// The demo program with its three roles, deep enough to need the user-space continuation.
fn demo_args() -> [&'static str; 4] {
    ["-seconds", "60", "-depth", DEEP_DEPTH]
}

fn spawn_placed(exe: &Path, placement: Placement) -> Started {
    let mut cmd = Command::new("unshare");
    unshare_pid(&mut cmd);
    match placement {
        Placement::Pid1 => {
            cmd.arg(exe).args(demo_args());
        }
        Placement::NotPid1 => {
            // The shell stays PID 1 and waits: the program is its child, PID 2.
            cmd.args(["sh", "-c", "\"$0\" \"$@\"; exit 0"])
                .arg(exe)
                .args(demo_args());
        }
        Placement::Nested => {
            cmd.arg("unshare");
            unshare_pid(&mut cmd).arg(exe).args(demo_args());
        }
    }
    let name = exe.file_name().and_then(|n| n.to_str()).expect("exe name");
    Started::spawn_wrapped(&mut cmd, name)
}

/// The ids of `pid` in each PID namespace it is in, outermost (the host's) first.
fn ns_pids(pid: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid line")
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Runs stacksampler on the host pid `pid` with `extra` arguments; returns the json report.
fn sample(pid: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--pid", pid, "--duration", SECONDS, "--format", "json"];
    args.extend_from_slice(extra);
    let out = run_stacksampler(&args);
    assert!(
        out.status.success(),
        "stacksampler {args:?}: {}",
        out.stderr
    );
    out.json()
}

fn warnings(report: &Value) -> Vec<String> {
    report["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Most samples with an unnamed frame around an exec, in percent.
const EXEC_UNNAMED_PERCENT: u64 = 2;
/// Most samples of a role without their goroutine right after an exec, in percent: the kernel
/// program learns the new program's runtime layout from user space a poll interval later.
const EXEC_UNKNOWN_PERCENT: u64 = 25;

/// The demo's three roles, each with its own goroutine id and state; returns a summary.
fn check_demo_roles(what: &str, report: &Value, started: &Started) -> String {
    check_roles(what, report, started, false)
}

/// [`check_demo_roles`] for a program that was exec'd during the run: samples taken before the
/// kernel side had the new layout may lack their goroutine (a few, never a wrong one).
fn check_roles(what: &str, report: &Value, started: &Started, after_exec: bool) -> String {
    let mut summary = Vec::new();
    for (role, function, state) in [
        ("hot", "main.hotLoop", "running"),
        ("recurse", "main.spinAtBottom", "running"),
        ("syscall", "main.syscallLoop", "syscall"),
    ] {
        let goid = started.goid(role);
        let rows: Vec<Value> = stacks(report)
            .into_iter()
            .filter(|s| has_function(s, function))
            .collect();
        let samples: u64 = rows.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
        assert!(
            samples >= MIN_BUSY_SAMPLES,
            "{what}: {samples} samples of {role} ({function})"
        );
        let mut without_goroutine = 0;
        for s in &rows {
            if after_exec && goids(s).is_empty() {
                without_goroutine += s["count"].as_u64().unwrap_or(0);
                continue;
            }
            assert_eq!(goids(s), [goid], "{what}: {role} row {s}");
        }
        assert!(
            without_goroutine * 100 <= samples * EXEC_UNKNOWN_PERCENT,
            "{what}: {without_goroutine} of {samples} {role} samples without their goroutine"
        );
        let in_state = count_where(report, |s| has_function(s, function) && s["state"] == state);
        assert!(
            in_state * 2 >= samples,
            "{what}: only {in_state} of {samples} {role} samples are {state}"
        );
        if role == "recurse" {
            let deepest = rows.iter().filter_map(|s| s["depth"].as_u64()).max();
            let want: u64 = DEEP_DEPTH.parse().expect("depth");
            assert!(
                deepest.is_some_and(|d| d >= want),
                "{what}: deepest recursion {deepest:?} frames"
            );
            assert!(
                rows.iter()
                    .any(|s| functions(s).last().map(String::as_str) == Some("runtime.goexit")),
                "{what}: no deep stack reaches runtime.goexit"
            );
        }
        summary.push(format!("{role} {goid} {state} {in_state}/{samples}"));
    }
    format!("{what}: {}", summary.join(", "))
}

/// Go 1.19 and 1.27, normal and stripped, PID 1 / not PID 1 / nested: real goids and states.
#[test]
fn goroutines_in_pid_namespaces() {
    let _serial = exclusive();
    let mut passed = Vec::new();
    for tc in primary_go_toolchains() {
        for variant in [Variant::Normal, Variant::Stripped] {
            let exe = build_go("demo", &tc, variant);
            for placement in Placement::ALL {
                let what = format!("{} {variant:?} {placement:?}", tc.label());
                let started = spawn_placed(&exe, placement);
                let ids = ns_pids(&started.pid());
                assert_eq!(ids.len(), placement.levels() + 1, "{what}: NSpid {ids:?}");
                assert_eq!(
                    ids.last().copied(),
                    Some(placement.own_pid()),
                    "{what}: {ids:?}"
                );
                assert_eq!(started.own_pid(), Some(placement.own_pid()), "{what}");
                let report = sample(&started.pid(), &[]);
                assert!(
                    warnings(&report).is_empty(),
                    "{what}: {:?}",
                    warnings(&report)
                );
                passed.push(check_demo_roles(&what, &report, &started));
            }
        }
    }
    for line in &passed {
        eprintln!("passed: {line}");
    }
}

/// The file's own build id, read by the toolchains' tools: the GNU build id when the linker
/// wrote one (`readelf -n`; Go 1.24 and later do), else Go's (`go tool buildid`).
fn file_build_id(tc: &GoToolchain, file: &Path) -> String {
    let notes = Command::new("readelf")
        .arg("-n")
        .arg(file)
        .output()
        .expect("readelf -n (binutils)");
    assert!(notes.status.success(), "readelf -n {}", file.display());
    let notes = String::from_utf8_lossy(&notes.stdout).into_owned();
    if let Some(id) = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
    {
        return id.trim().to_owned();
    }
    let out = Command::new(&tc.go)
        .args(["tool", "buildid"])
        .arg(file)
        .output()
        .expect("go tool buildid");
    assert!(out.status.success(), "go tool buildid {}", file.display());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The build id `go tool pprof -raw` shows for the mapping of `file` (as the target names it).
fn pprof_mapping_build_id(tc: &GoToolchain, profile: &Path, file: &str) -> Option<String> {
    let (text, _) = go_tool_pprof(&tc.go, &["-raw"], profile);
    // "Mappings" rows: `ID: START/LIMIT/OFFSET FILE BUILDID [FN][FL]...`.
    let rows = text.split_once("Mappings").map(|(_, m)| m.to_owned())?;
    rows.lines().find_map(|line| {
        let mut words = line.split_whitespace().skip(2);
        (words.next()? == file).then(|| words.next().unwrap_or_default().to_owned())
    })
}

/// The binary lives only in a tmpfs mounted in the target's private mount namespace.
#[test]
fn binary_only_inside_a_private_mount_namespace() {
    let _serial = exclusive();
    let mut passed = Vec::new();
    for tc in primary_go_toolchains() {
        for variant in [Variant::Normal, Variant::Stripped] {
            let what = format!("{} {variant:?} in a private tmpfs", tc.label());
            let exe = build_go("demo", &tc, variant);
            let dir = tempfile::tempdir().expect("temp dir");
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&mnt).expect("mount point");
            let mut cmd = Command::new("unshare");
            cmd.arg("--mount");
            unshare_pid(&mut cmd)
                .args([
                    "sh",
                    "-c",
                    "mount -t tmpfs tmpfs \"$0\" && cp \"$1\" \"$0/app\" && shift && \
                     exec \"$0/app\" \"$@\"",
                ])
                .arg(&mnt)
                .arg(&exe)
                .args(demo_args());
            let started = Started::spawn_wrapped(&mut cmd, "app");
            let inside = mnt.join("app");
            assert!(
                !inside.exists(),
                "{what}: the host sees {}",
                inside.display()
            );

            let profile = dir.path().join("profile.pb.gz");
            let json = dir.path().join("report.json");
            let out = run_stacksampler(&[
                "--pid",
                &started.pid(),
                "--duration",
                SECONDS,
                "-o",
                &profile.to_string_lossy(),
                "-o",
                &json.to_string_lossy(),
            ]);
            assert!(out.status.success(), "{what}: {}", out.stderr);
            let report: Value =
                serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("json");
            assert_eq!(
                report["binary"],
                inside.to_string_lossy().as_ref(),
                "{what}"
            );
            assert!(
                report["go_version"].is_string(),
                "{what}: {}",
                report["go_version"]
            );
            assert!(
                warnings(&report).is_empty(),
                "{what}: {:?}",
                warnings(&report)
            );
            let roles = check_demo_roles(&what, &report, &started);
            let want = file_build_id(&tc, &exe);
            let got = pprof_mapping_build_id(&tc, &profile, &inside.to_string_lossy());
            assert_eq!(
                got.as_deref(),
                Some(want.as_str()),
                "{what}: mapping build id"
            );
            passed.push(format!("{roles}; build id {want}"));
        }
    }
    for line in &passed {
        eprintln!("passed: {line}");
    }
}

/// A shell busy for a moment, then `exec`ing the Go program one second into the run.
#[test]
fn exec_during_the_run_names_frames_from_the_new_binary() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let what = tc.label();
        let exe = build_go("demo", &tc, Variant::Normal);
        let dir = tempfile::tempdir().expect("temp dir");
        // The shell waits for a line, spins in its own code, then becomes the Go program.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "read go; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec \"$0\" \"$@\"",
        ])
        .arg(&exe)
        .args(demo_args());
        let mut shell = GoProcess::spawn_command(&mut cmd);
        let pid = shell.pid().to_string();
        let json = dir.path().join("report.json");
        let text = dir.path().join("report.txt");
        let sampler = Command::new(stacksampler_bin())
            .args(["--pid", &pid, "--duration", "4", "-o"])
            .arg(&json)
            .arg("-o")
            .arg(&text)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stacksampler");
        std::thread::sleep(Duration::from_secs(1));
        shell.write_stdin("go\n");
        let started = Started::ready(shell, |p| p);
        let out = sampler.wait_with_output().expect("stacksampler");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {stderr}");
        let report: Value =
            serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("json");
        let execs = report["execs"].as_array().cloned().unwrap_or_default();
        assert_eq!(execs.len(), 1, "{what}: execs {}", report["execs"]);
        assert_eq!(execs[0]["binary"], exe.to_string_lossy().as_ref(), "{what}");
        assert!(execs[0]["go_version"].is_string(), "{what}: {}", execs[0]);
        let after = execs[0]["after_secs"].as_f64().unwrap_or(0.0);
        assert!(after > 0.0 && after < 3.5, "{what}: exec after {after} s");
        // After the exec: the Go program's goroutines, named and with their ids.
        let roles = check_roles(&what, &report, &started, true);
        // Before it: the shell's own frames, named from the shell.
        let shell_samples = count_where(&report, |s| {
            functions(s)
                .iter()
                .any(|f| f.starts_with("dash") || f.starts_with("bash"))
        });
        assert!(
            shell_samples >= 1,
            "{what}: no sample of the shell before the exec"
        );
        // A sample the tick takes inside execve itself (new memory, old registers) can walk
        // into words of the new stack: a rare unnamed frame, never a wrongly named one.
        let unnamed = count_where(&report, |s| {
            functions(s).iter().any(|f| f.starts_with("0x4"))
        });
        let total = report["samples"]["total"].as_u64().unwrap_or(0);
        assert!(
            unnamed * 100 <= total * EXEC_UNNAMED_PERCENT,
            "{what}: {unnamed} of {total} samples with unnamed Go frames after the exec"
        );
        let text = std::fs::read_to_string(&text).expect("text report");
        assert!(
            text.lines().any(|l| l.starts_with("exec: after ")),
            "{what}: the text report does not say when the exec happened"
        );
        eprintln!("passed: {roles}; exec after {after:.2} s, {shell_samples} shell samples");
    }
}

/// A bad `--output` costs no capture: it fails at once, in one line, before sampling.
#[test]
fn output_into_a_missing_folder_fails_before_sampling() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("demo", &tc, Variant::Normal);
    let started = Started::spawn(&exe);
    let missing = PathBuf::from("/nonexistent-stacksampler-dir/flame.svg");
    let began = Instant::now();
    let out = run_stacksampler(&[
        "--pid",
        &started.pid(),
        "--duration",
        "10",
        "-o",
        &missing.to_string_lossy(),
    ]);
    let took = began.elapsed();
    assert!(!out.status.success(), "a missing folder must fail");
    // Far from the 10 s the capture would take: nothing was sampled first.
    assert!(took < Duration::from_secs(5), "failed only after {took:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", out.stderr);
    assert!(
        lines[0].contains(&*missing.to_string_lossy()),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[0].matches("No such file or directory").count(),
        1,
        "the OS error once: {}",
        lines[0]
    );
    eprintln!("passed: {} after {took:?}", lines[0]);
}

/// A Go 1.27 binary claiming to be Go 1.23 gets that release's layout, which misplaces
/// `m.procid`: every goroutine read fails, and the report says so once, with the reason.
#[test]
fn unknown_goroutine_fields_are_reported() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    assert_eq!(tc.version, "1.27", "the newest toolchain");
    let exe = claiming_go_minor(&build_go("demo", &tc, Variant::Stripped), "23");
    let started = Started::spawn(&exe);
    let out = run_stacksampler(&[
        "--pid",
        &started.pid(),
        "--duration",
        SECONDS,
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    let unknown: Vec<String> = warnings(&report)
        .into_iter()
        .filter(|w| w.starts_with(UNKNOWN_WARNING))
        .collect();
    assert_eq!(unknown.len(), 1, "warnings {:?}", warnings(&report));
    assert!(
        unknown[0].contains("m.procid"),
        "the reason: {}",
        unknown[0]
    );
    assert_eq!(
        out.stderr.matches(UNKNOWN_WARNING).count(),
        1,
        "once on stderr: {}",
        out.stderr
    );
    let text_report = Command::new(stacksampler_bin())
        .args(["--pid", &started.pid(), "--duration", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("stacksampler");
    assert!(
        String::from_utf8_lossy(&text_report.stdout).contains(UNKNOWN_WARNING),
        "the text report shows it"
    );
    // The same program with its real version: no such warning.
    let real = build_go("demo", &tc, Variant::Stripped);
    let started = Started::spawn(&real);
    let report = sample(&started.pid(), &[]);
    assert!(warnings(&report).is_empty(), "{:?}", warnings(&report));
    eprintln!("passed: {}", unknown[0]);
}
