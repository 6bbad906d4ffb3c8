//! End to end: the real `stacksampler` binary, as root, samples real Go programs built with the
//! oldest and the newest Go toolchain, and its json report is checked against what the programs
//! say about themselves (function names, goroutine ids, recursion depth).

use std::{process::Command, time::Duration};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, primary_go_toolchains,
    report::{count_where, functions, stacks},
    run_stacksampler, stale_frame_pointers_after_growth,
};

/// The demo program started with `workers`, waiting until it is ready; returns it with the
/// goroutine ids it printed.
fn start_demo(tc: &GoToolchain, args: &[&str]) -> (GoProcess, Vec<(String, u64)>) {
    let exe = build_go("demo", tc, Variant::Normal);
    let mut all = vec!["-seconds", "60"];
    all.extend_from_slice(args);
    let mut p = GoProcess::spawn(&exe, &all);
    let mut goids = Vec::new();
    loop {
        let line = p.read_line().expect("demo printed nothing");
        if line == "ready" {
            break;
        }
        if let Some(rest) = line.strip_prefix("goid ") {
            let mut it = rest.split_whitespace();
            let role = it.next().unwrap_or_default().to_owned();
            let id = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            goids.push((role, id));
        }
    }
    (p, goids)
}

fn goid_of(goids: &[(String, u64)], role: &str) -> u64 {
    goids
        .iter()
        .find(|(r, _)| r == role)
        .map(|(_, id)| *id)
        .unwrap_or_else(|| panic!("no goid for {role}"))
}

fn sample_json(pid: u32, extra: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut args = vec!["--pid", pid.as_str(), "--duration", "3", "--format", "json"];
    args.extend_from_slice(extra);
    let out = run_stacksampler(&args);
    assert!(
        out.status.success(),
        "stacksampler {args:?} failed: {}",
        out.stderr
    );
    out.json()
}

fn innermost(stack: &Value) -> String {
    functions(stack).first().cloned().unwrap_or_default()
}

#[test]
fn hot_function_is_the_top_stack() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let (demo, goids) = start_demo(&tc, &["-workers", "hot"]);
        let report = sample_json(demo.pid(), &[]);
        let kept = report["samples"]["kept"].as_u64().unwrap_or(0);
        assert!(kept >= 50, "{}: only {kept} samples in 3 s", tc.label());
        let top = &stacks(&report)[0];
        assert_eq!(
            innermost(top),
            "main.hotLoop",
            "{}: top stack {top}",
            tc.label()
        );
        assert_eq!(top["state"], "running", "{}", tc.label());
        let hot_goid = goid_of(&goids, "hot");
        let top_goids: Vec<u64> = top["goids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        assert_eq!(
            top_goids,
            [hot_goid],
            "{}: goids of the hot stack",
            tc.label()
        );
        // Most samples are in the hot loop.
        let hot = count_where(&report, |s| innermost(s) == "main.hotLoop");
        assert!(
            hot * 10 >= kept * 8,
            "{}: {hot} of {kept} samples in main.hotLoop",
            tc.label()
        );
    }
}

/// What a deep recursion still shows on arm64 with a Go release before
/// [`stacksampler_tests::ARM64_FIRST_ADJUSTED_FRAME_POINTERS_GO_MINOR`]: the innermost frames, 500+ recursion
/// frames, the goid.
fn check_arm64_stale_frame_pointer_recursion(tc: &GoToolchain, report: &Value, goid: u64) {
    let top = &stacks(report)[0];
    let f = functions(top);
    assert_eq!(f[0], "main.spinAtBottom", "{}: {f:?}", tc.label());
    let recursion = f
        .iter()
        .filter(|n| *n == "main.recurseA" || *n == "main.recurseB")
        .count();
    assert!(
        recursion >= 500,
        "{}: {recursion} recursion frames",
        tc.label()
    );
    let ids = top["goids"].as_array().cloned().unwrap_or_default();
    assert_eq!(ids, [Value::from(goid)], "{}", tc.label());
}

#[test]
fn recursion_3000_deep_is_walked_whole() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let (demo, goids) = start_demo(&tc, &["-workers", "recurse", "-depth", "3000"]);
        let report = sample_json(demo.pid(), &[]);
        let recurse_goid = goid_of(&goids, "recurse");
        if stale_frame_pointers_after_growth(&tc) {
            check_arm64_stale_frame_pointer_recursion(&tc, &report, recurse_goid);
            continue;
        }
        let deep: Vec<Value> = stacks(&report)
            .into_iter()
            .filter(|s| s["depth"].as_u64().unwrap_or(0) >= 3000)
            .collect();
        assert!(!deep.is_empty(), "{}: no stack of 3000+ frames", tc.label());
        let in_spin: u64 = deep
            .iter()
            .filter(|s| innermost(s) == "main.spinAtBottom")
            .map(|s| s["count"].as_u64().unwrap_or(0))
            .sum();
        let all: u64 = deep.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
        assert!(
            in_spin * 10 >= all * 9,
            "{}: {in_spin} of {all} deep samples in the spin loop",
            tc.label()
        );
        for s in &deep {
            let f = functions(s);
            assert!(f.len() >= 3000, "{}: {} frames listed", tc.label(), f.len());
            assert_eq!(s["truncated"], false, "{}", tc.label());
            // The leaf is the spin loop, or runtime code when the sample caught the goroutine
            // being preempted or helping the runtime (asynchronous preemption runs on its
            // stack; assembly helpers such as `memeqbody` have no package prefix). Never
            // another function of the program.
            assert!(
                f[0] == "main.spinAtBottom" || !f[0].starts_with("main."),
                "{}: innermost {}",
                tc.label(),
                f[0]
            );
            let a = f.iter().filter(|n| *n == "main.recurseA").count();
            let b = f.iter().filter(|n| *n == "main.recurseB").count();
            assert!(
                a >= 1500 && b >= 1500,
                "{}: recurseA {a}, recurseB {b}",
                tc.label()
            );
            // The root end: the goroutine's entry closure and runtime.goexit.
            assert_eq!(
                f.last().map(String::as_str),
                Some("runtime.goexit"),
                "{}",
                tc.label()
            );
            assert!(
                f[f.len() - 3..].iter().any(|n| n.starts_with("main.main")),
                "{}: outermost frames {:?}",
                tc.label(),
                &f[f.len() - 3..]
            );
            let ids = s["goids"].as_array().cloned().unwrap_or_default();
            assert_eq!(ids, [Value::from(recurse_goid)], "{}", tc.label());
        }
    }
}

#[test]
fn state_filter_separates_syscall_from_running() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let (demo, goids) = start_demo(&tc, &["-workers", "syscall"]);
        let syscall_goid = goid_of(&goids, "syscall");

        let report = sample_json(demo.pid(), &["--state", "syscall"]);
        let all = stacks(&report);
        assert!(!all.is_empty(), "{}: no syscall samples", tc.label());
        for s in &all {
            assert_eq!(s["state"], "syscall", "{}: {s}", tc.label());
        }
        let in_loop = count_where(&report, |s| {
            functions(s).iter().any(|f| f == "main.syscallLoop")
                && s["goids"]
                    .as_array()
                    .is_some_and(|g| g.contains(&Value::from(syscall_goid)))
        });
        assert!(
            in_loop > 0,
            "{}: syscall samples not in main.syscallLoop",
            tc.label()
        );

        let report = sample_json(demo.pid(), &["--state", "Grunning"]);
        for s in &stacks(&report) {
            assert_eq!(s["state"], "running", "{}: {s}", tc.label());
        }
        assert_eq!(
            count_where(&report, |s| s["state"] == "syscall"),
            0,
            "{}",
            tc.label()
        );
    }
}

/// The kernel writes most samples without waking the reader (see `SAMPLES_POLL_INTERVAL`):
/// samples must still arrive while the run goes on, not only when it ends. `--verbose` prints
/// the samples received so far once a second.
#[test]
fn samples_are_read_while_the_run_goes_on() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let (demo, _) = start_demo(&tc, &["-workers", "hot"]);
    let pid = demo.pid().to_string();
    let out = run_stacksampler(&[
        "--pid",
        &pid,
        "--duration",
        "3",
        "--verbose",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    // "stacksampler: sampling 1s, 97 samples"
    let progress: Vec<u64> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("stacksampler: sampling "))
        .filter_map(|l| l.split(", ").nth(1)?.strip_suffix(" samples")?.parse().ok())
        .collect();
    let first = *progress
        .first()
        .unwrap_or_else(|| panic!("no progress line: {}", out.stderr));
    // One always-running goroutine at 99 Hz: about 99 samples by the first line, a second in.
    assert!(
        first >= 20,
        "{} samples read after a second: {}",
        first,
        out.stderr
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let total = out.json()["samples"]["total"].as_u64().unwrap_or(0);
    assert!(total >= first, "{total} in the report, {first} a second in");
}

#[test]
fn min_depth_keeps_deep_stacks_only() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let (demo, _) = start_demo(&tc, &["-workers", "hot,recurse", "-depth", "2000"]);
    let report = sample_json(demo.pid(), &["--min-depth", "1024"]);
    let all = stacks(&report);
    assert!(!all.is_empty(), "no deep stacks kept");
    for s in &all {
        assert!(
            s["depth"].as_u64().unwrap_or(0) >= 1024,
            "shallow stack kept: depth {}",
            s["depth"]
        );
    }
    let dropped = report["samples"]["total"].as_u64().unwrap_or(0)
        - report["samples"]["kept"].as_u64().unwrap_or(0);
    assert!(
        dropped > 0,
        "the hot loop's shallow samples should have been dropped"
    );

    let unfiltered = sample_json(demo.pid(), &[]);
    assert!(
        stacks(&unfiltered)
            .iter()
            .any(|s| s["depth"].as_u64().unwrap_or(0) < 100),
        "without --min-depth the shallow hot stack is there"
    );
}

#[test]
fn target_exiting_mid_run_still_reports() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("demo", &tc, Variant::Normal);
    let mut demo = GoProcess::spawn(&exe, &["-workers", "hot", "-seconds", "4"]);
    demo.wait_for_line("ready");
    let pid = demo.pid().to_string();
    // Sample for up to 60 s: the run must end when the target does.
    let out = run_stacksampler(&["--pid", &pid, "--duration", "60", "--format", "json"]);
    assert!(out.status.success(), "stacksampler failed: {}", out.stderr);
    assert!(out.stderr.contains("exited"), "stderr: {}", out.stderr);
    let report = out.json();
    assert!(report["samples"]["kept"].as_u64().unwrap_or(0) > 0);
    assert!(report["duration_secs"].as_f64().unwrap_or(99.0) < 30.0);
    assert_eq!(innermost(&stacks(&report)[0]), "main.hotLoop");
    assert!(demo.wait_timeout(Duration::from_secs(10)).is_some());
}

#[test]
fn no_such_pid_is_a_clear_error() {
    let _serial = exclusive();
    // Pids above pid_max never exist.
    let out = run_stacksampler(&["--pid", "4194999", "--duration", "1"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no such process: 4194999"),
        "stderr: {}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
}

#[test]
fn unprivileged_user_is_told_to_use_root() {
    let _serial = exclusive();
    let bin = stacksampler_tests::stacksampler_bin();
    let me = std::process::id().to_string();
    // setpriv (util-linux) drops to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .args(["--pid", &me, "--duration", "1"])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("needs root"), "stderr: {stderr}");
}

#[test]
fn bad_arguments_are_rejected() {
    let _serial = exclusive();
    for args in [
        &["--pid", "1", "--state", "sleepy"][..],
        &["--pid", "1", "--max-frames", "0"],
        &["--pid", "notapid"],
    ] {
        let out = run_stacksampler(args);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(out.stderr.contains("error"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn non_go_target_is_sampled_with_unknown_goroutines() {
    let _serial = exclusive();
    // A native (C) busy loop that ends by itself: python3 spinning for 8 s.
    let mut p = GoProcess::spawn_command(Command::new("python3").args([
        "-c",
        "import time,sys\nprint('ready', flush=True)\nt=time.time()+8\nwhile time.time()<t: pass",
    ]));
    p.wait_for_line("ready");
    let pid = p.pid().to_string();
    let out = run_stacksampler(&["--pid", &pid, "--duration", "2", "--format", "json"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("not a Go binary"),
        "stderr: {}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("not a Go binary").count(),
        1,
        "said once"
    );
    let report = out.json();
    assert!(report["samples"]["kept"].as_u64().unwrap_or(0) > 20);
    for s in stacks(&report) {
        assert_eq!(s["state"], "unknown");
    }
}

#[test]
fn ctrl_c_detaches_everything_and_reports() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let (demo, _) = start_demo(&tc, &["-workers", "hot"]);
    let pid = demo.pid().to_string();
    let sampler = Command::new(stacksampler_tests::stacksampler_bin())
        .args(["--pid", &pid, "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start stacksampler");
    let sampler_pid = sampler.id();
    // Wait until the program is attached (its fds hold program ids), then interrupt it.
    let mut ids = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        ids = stacksampler_tests::kernel::bpf_program_ids(sampler_pid);
        if !ids.is_empty() {
            break;
        }
    }
    assert!(!ids.is_empty(), "stacksampler never loaded a program");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child by pid.
    assert_eq!(
        unsafe { libc::kill(sampler_pid as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = sampler.wait_with_output().expect("wait for stacksampler");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["ended_by"], "interrupted");
    assert!(report["samples"]["kept"].as_u64().unwrap_or(0) > 50);
    // Nothing it loaded is left in the kernel.
    let loaded: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect();
    for id in ids {
        assert!(
            !loaded.contains(&id),
            "program {id} still loaded after exit"
        );
    }
}

#[test]
fn caller_of_a_frameless_leaf_is_kept() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let exe = build_go("leaf", &tc, Variant::Normal);
        let mut p = GoProcess::spawn(&exe, &["-seconds", "60"]);
        p.wait_for_line("ready");
        let report = sample_json(p.pid(), &[]);
        let top = &stacks(&report)[0];
        let f = functions(top);
        // main.leaf pushes no frame: its caller is only reachable through the return address
        // at the stack pointer, which the kernel records and user space inserts.
        assert_eq!(
            f[..2],
            ["main.leaf", "main.callsLeaf"],
            "{}: {f:?}",
            tc.label()
        );
        // The goroutine's stack grew (fmt.Printf) before the loop: with stale frame pointers the
        // walk ends before the root (measured on arm64 Go 1.19: at `main.main.func1`).
        if !stale_frame_pointers_after_growth(&tc) {
            assert_eq!(
                f.last().map(String::as_str),
                Some("runtime.goexit"),
                "{}",
                tc.label()
            );
        }
    }
}

#[test]
fn kernel_stacks_on_request() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let (demo, _) = start_demo(&tc, &["-workers", "syscall"]);
    let kinds = |s: &Value| -> Vec<String> {
        s["frames"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    // With --kernel, syscall samples start with the kernel's read path (from /proc/kallsyms),
    // then continue into the Go code that made the call.
    let report = sample_json(demo.pid(), &["--kernel", "--state", "syscall"]);
    let top = &stacks(&report)[0];
    let f = functions(top);
    let k = kinds(top);
    let n_kernel = k.iter().take_while(|k| *k == "kernel").count();
    assert!(n_kernel >= 3, "kernel frames on top: {f:?} {k:?}");
    assert!(f[..n_kernel].iter().any(|n| n.contains("read")), "{f:?}");
    assert!(
        f[n_kernel..].iter().any(|n| n == "main.syscallLoop"),
        "{f:?}"
    );
    assert!(k[n_kernel..].iter().all(|k| k != "kernel"), "{k:?}");
    // Depth counts user frames only (return addresses: inlined frames share one).
    let user_addresses = top["frames"]
        .as_array()
        .map(|fr| {
            fr.iter()
                .filter(|f| f["kind"] != "kernel" && f["inlined"] != true)
                .count()
        })
        .unwrap_or(0);
    assert_eq!(top["depth"].as_u64(), Some(user_addresses as u64));
    // Without it, no kernel frame.
    let report = sample_json(demo.pid(), &["--state", "syscall"]);
    for s in stacks(&report) {
        assert!(kinds(&s).iter().all(|k| k != "kernel"), "{s}");
    }
}
