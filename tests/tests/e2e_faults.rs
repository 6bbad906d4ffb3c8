//! End to end, faults: the real `stacksampler` binary against targets that die, stop, multiply
//! their threads or vanish at once, and samplers that are killed or doubled. Every case checks
//! that nothing the sampler loaded stays in the kernel (programs, maps and links read back
//! through the bpf syscall) and that the target is unharmed.
//!
//! Target: `tests/go/faults` (a deterministic checksum loop, 1,000 locked threads, an instant
//! exit) and `tests/go/demo`.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive,
    kernel::{assert_released, held_by, wait_attached},
    primary_go_toolchains,
    report::{count_where, functions},
    run_stacksampler, stacksampler_bin,
};

/// Attach/detach cycles against one target.
const CYCLES: usize = 100;
/// Seconds each of those cycles samples.
const CYCLE_SECONDS: &str = "0.05";

fn newest() -> GoToolchain {
    primary_go_toolchains().pop().expect("a toolchain")
}

/// Starts stacksampler on `pid` in the background, json to stdout.
fn start_sampler(pid: u32, extra: &[&str]) -> Child {
    Command::new(stacksampler_bin())
        .args(["--pid", &pid.to_string(), "--format", "json"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stacksampler")
}

/// Sends `signal` to our own child `pid`.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

fn report_of(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what}: stacksampler failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: report is not json ({e})"))
}

fn demo(tc: &GoToolchain) -> GoProcess {
    let exe = build_go("demo", tc, Variant::Normal);
    let mut p = GoProcess::spawn(&exe, &["-seconds", "60", "-workers", "hot,syscall"]);
    p.wait_for_line("ready");
    p
}

/// The target is SIGKILLed mid-run: the report is still written, ended by the target's exit.
#[test]
fn target_killed_mid_run_still_reports() {
    let _serial = exclusive();
    let target = demo(&newest());
    let sampler = start_sampler(target.pid(), &["--duration", "30"]);
    let held = wait_attached(sampler.id());
    std::thread::sleep(Duration::from_secs(1));
    signal(target.pid(), libc::SIGKILL);
    let began = Instant::now();
    let out = sampler.wait_with_output().expect("wait for stacksampler");
    let report = report_of(&out, "target killed");
    assert_eq!(report["ended_by"], "target_exited");
    assert!(
        report["samples"]["kept"].as_u64().unwrap_or(0) > 10,
        "{}",
        report["samples"]
    );
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "ended only after {:?}",
        began.elapsed()
    );
    assert_released(&held, "target killed");
    drop(target);
}

/// The sampler itself is SIGKILLed: the kernel frees all it held, the target runs on.
#[test]
fn sampler_killed_leaves_nothing_attached() {
    let _serial = exclusive();
    let mut target = demo(&newest());
    let mut sampler = start_sampler(target.pid(), &["--duration", "30"]);
    let held = wait_attached(sampler.id());
    assert!(
        !held.maps.is_empty(),
        "the sampler holds its maps: {held:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    signal(sampler.id(), libc::SIGKILL);
    let status = sampler.wait().expect("reap stacksampler");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_released(&held, "sampler killed");
    assert!(
        target.wait_timeout(Duration::from_millis(200)).is_none(),
        "the target died with the sampler"
    );
}

/// The target is stopped (SIGSTOP) for the whole run: no hang, a clean report with no samples
/// of it, and it continues afterwards.
#[test]
fn stopped_target_gives_a_clean_report() {
    let _serial = exclusive();
    let mut target = demo(&newest());
    signal(target.pid(), libc::SIGSTOP);
    let began = Instant::now();
    let out = Command::new(stacksampler_bin())
        .args([
            "--pid",
            &target.pid().to_string(),
            "--duration",
            "2",
            "--format",
            "json",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("stacksampler");
    let took = began.elapsed();
    signal(target.pid(), libc::SIGCONT);
    let report = report_of(&out, "stopped target");
    assert_eq!(report["ended_by"], "duration");
    assert_eq!(
        report["samples"]["total"], 0,
        "a stopped target runs no code"
    );
    assert!(
        took < Duration::from_secs(15),
        "took {took:?} for a 2 s run"
    );
    assert!(
        target.wait_timeout(Duration::from_millis(300)).is_none(),
        "the target did not survive being stopped"
    );
}

/// 100 attach/detach cycles against one target: its own output and exit status are
/// byte-identical to an unsampled run of the same length.
#[test]
fn hundred_attach_cycles_leave_the_target_unchanged() {
    let _serial = exclusive();
    let tc = newest();
    let exe = build_go("faults", &tc, Variant::Normal);
    let mut target = GoProcess::spawn(&exe, &["-mode", "checksum"]);
    let pid = target.pid().to_string();
    let mut samples = 0;
    for cycle in 0..CYCLES {
        let out = run_stacksampler(&[
            "--pid",
            &pid,
            "--duration",
            CYCLE_SECONDS,
            "--format",
            "json",
        ]);
        assert!(out.status.success(), "cycle {cycle}: {}", out.stderr);
        samples += out.json()["samples"]["total"].as_u64().unwrap_or(0);
    }
    target.close_stdin();
    let status = target
        .wait_timeout(Duration::from_secs(30))
        .expect("target exits");
    assert!(status.success(), "target exit status {status:?}");
    let mut sampled = Vec::new();
    while let Some(line) = target.read_line() {
        sampled.push(line);
    }
    let rounds = sampled.len();
    assert!(rounds > 0, "the target printed nothing");
    let reference = Command::new(&exe)
        .args(["-mode", "checksum", "-rounds", &rounds.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("reference run");
    assert!(reference.status.success());
    let reference: Vec<String> = String::from_utf8_lossy(&reference.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(sampled, reference, "output changed by sampling");
    assert_no_orphan_samplers();
    eprintln!(
        "passed: {CYCLES} cycles, {samples} samples, {rounds} rounds byte-identical to an \
         unsampled run"
    );
}

/// Every loaded sampling program is held by a live process: none was left behind by a run
/// that ended (other samplers on the machine may be running; a leaked one has no holder).
fn assert_no_orphan_samplers() {
    let holders = || -> Vec<u32> {
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        pids.into_iter().flat_map(|p| held_by(p).programs).collect()
    };
    let mut orphans = Vec::new();
    // A sampler exiting right now closes its fds a moment after it leaves /proc's fd lists.
    for _ in 0..20 {
        let held = holders();
        orphans = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.name_as_str() == Some("sample_stack"))
            .map(|p| p.id())
            .filter(|id| !held.contains(id))
            .collect();
        if orphans.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("sampling programs loaded with no process holding them: {orphans:?}");
}

/// Two samplers on one target at once both report it.
#[test]
fn two_samplers_on_one_target() {
    let _serial = exclusive();
    let target = demo(&newest());
    let a = start_sampler(target.pid(), &["--duration", "3"]);
    let b = start_sampler(target.pid(), &["--duration", "3"]);
    let (held_a, held_b) = (wait_attached(a.id()), wait_attached(b.id()));
    let (out_a, out_b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    for (what, out, held) in [("first", &out_a, &held_a), ("second", &out_b, &held_b)] {
        let report = report_of(out, what);
        let hot = count_where(&report, |s| {
            functions(s).iter().any(|f| f == "main.hotLoop")
        });
        assert!(hot > 20, "{what}: {hot} samples of the hot loop");
        assert_released(held, what);
    }
}

/// A target with 1,000 threads (goroutines locked to their own thread) is sampled normally.
#[test]
fn target_with_a_thousand_threads() {
    let _serial = exclusive();
    let exe = build_go("faults", &newest(), Variant::Normal);
    let mut target = GoProcess::spawn(&exe, &["-mode", "threads", "-threads", "1000"]);
    let threads: u32 = target
        .wait_for_line("threads")
        .parse()
        .expect("thread count");
    target.wait_for_line("ready");
    assert!(threads >= 1000, "{threads} threads");
    let out = run_stacksampler(&[
        "--pid",
        &target.pid().to_string(),
        "--duration",
        "2",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    let spin = count_where(&report, |s| {
        functions(s).iter().any(|f| f == "main.spin") && s["state"] == "running"
    });
    assert!(spin > 20, "{spin} running samples of main.spin");
    assert!(
        target.wait_timeout(Duration::from_millis(200)).is_none(),
        "target died"
    );
    eprintln!("passed: {threads} threads, {spin} samples of main.spin");
}

/// A target that exits within milliseconds: a one-line error or a report, never a hang, and
/// nothing left loaded.
#[test]
fn target_exiting_at_once() {
    let _serial = exclusive();
    let exe = build_go("faults", &newest(), Variant::Normal);
    for attempt in 0..5 {
        let mut target = GoProcess::spawn(&exe, &["-mode", "quick"]);
        let began = Instant::now();
        let sampler = start_sampler(target.pid(), &["--duration", "10"]);
        let out = sampler.wait_with_output().expect("stacksampler");
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(8),
            "attempt {attempt}: took {took:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let report: Value = serde_json::from_slice(&out.stdout).expect("json");
            assert_eq!(report["ended_by"], "target_exited", "attempt {attempt}");
        } else {
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "attempt {attempt}: one line: {stderr}");
            assert!(lines[0].starts_with("stacksampler: error:"), "{stderr}");
        }
        let _ = target.wait_timeout(Duration::from_secs(1));
    }
}

/// A sample ring too small for the target's samples: the samples that find it full are lost,
/// counted in the report and said on stderr, never silently dropped; the rest are kept.
#[test]
fn overflowing_ring_counts_and_reports_lost_samples() {
    let _serial = exclusive();
    let exe = build_go("faults", &newest(), Variant::Normal);
    // 5,000-frame workers: one sample is about 40 KiB, ten times the 4 KiB ring.
    let mut target = GoProcess::spawn(&exe, &["-mode", "churn", "-depth", "5000"]);
    target.wait_for_line("ready");
    let out = run_stacksampler(&[
        "--pid",
        &target.pid().to_string(),
        "--duration",
        "2",
        "--frequency",
        "499",
        "--max-frames",
        "16384",
        "--ring-size",
        "4KiB",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    let samples = &report["samples"];
    let lost = samples["lost"].as_u64().expect("lost count");
    let kept = samples["kept"].as_u64().expect("kept count");
    assert!(lost > 50, "lost {lost} of {samples}");
    assert!(
        out.stderr
            .contains(&format!("{lost} samples were lost (ring buffer full)")),
        "stderr does not say the loss: {}",
        out.stderr
    );
    assert!(
        report["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("lost")))),
        "the report does not carry the loss: {}",
        report["warnings"]
    );
    // What fits (the churning goroutines' shallow stacks) is still recorded.
    assert!(kept > 0, "{samples}");
    // The same run with the default ring loses nothing of it.
    let out = run_stacksampler(&[
        "--pid",
        &target.pid().to_string(),
        "--duration",
        "1",
        "--frequency",
        "499",
        "--max-frames",
        "16384",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let roomy = out.json();
    assert_eq!(roomy["samples"]["lost"], 0, "{}", roomy["samples"]);
    // A ring size the kernel would refuse is a one-line usage error.
    let bad = run_stacksampler(&["--pid", &target.pid().to_string(), "--ring-size", "5000"]);
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("power of two"), "{}", bad.stderr);
    drop(target);
    eprintln!("passed: {lost} lost and {kept} kept with a 4 KiB ring");
}
