//! End to end: `stacksampler --watch` (runtime events through uprobes) on real Go programs built
//! with the oldest and the newest Go toolchain: stack growth sequences and `--stack-alert`,
//! goroutine leaks and their creation site, a fatal stack overflow, and the target's own
//! behaviour unchanged by the probes.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, primary_go_toolchains, stacksampler_bin,
    stale_frame_pointers_after_growth, workspace_root,
};

/// How long a target may take to finish its work.
const TARGET_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the watcher may take to attach or to finish after the target exits.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `stacksampler --watch`, stderr read by a thread.
struct Watcher {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_lines: Vec<String>,
    /// Stdout, read by a thread (an alert's folded stack alone can fill a pipe).
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Watcher {
    /// Starts the watcher on `pid` and waits until its probes are attached.
    fn start(pid: u32, extra: &[&str]) -> Self {
        let pid = pid.to_string();
        let mut args = vec![
            "--watch",
            "--pid",
            pid.as_str(),
            "--format",
            "json",
            "--verbose",
        ];
        args.extend_from_slice(extra);
        let mut child = Command::new(stacksampler_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stacksampler --watch");
        let err = child.stderr.take().expect("piped stderr");
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Self {
            child,
            stderr: rx,
            stderr_lines: Vec::new(),
            stdout: Some(stdout),
        };
        let deadline = Instant::now() + WATCH_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match w.stderr.recv_timeout(left) {
                Ok(line) => {
                    let attached = line.contains("probes attached");
                    w.stderr_lines.push(line);
                    if attached {
                        return w;
                    }
                }
                Err(_) => panic!("watcher did not attach:\n{}", w.stderr_lines.join("\n")),
            }
        }
    }

    /// Waits for the watcher to end by itself (the target exited); returns its stdout json
    /// lines and its stderr.
    fn finish(mut self) -> (ExitStatus, Vec<Value>, String) {
        let deadline = Instant::now() + WATCH_TIMEOUT;
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("watcher did not end after the target exited");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self
            .stdout
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.stderr_lines.push(line);
        }
        let stderr = self.stderr_lines.join("\n");
        let lines = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("watch stdout line is not json ({e}): {l}\n{stderr}")
                })
            })
            .collect();
        (status, lines, stderr)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // By pid only: this child and nothing else.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a target run printed and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct TargetRun {
    stdout: Vec<String>,
    code: Option<i32>,
}

/// Starts the events program in `mode`, stderr to a file; returns it after "ready" with the lines
/// printed before.
fn start_target(exe: &PathBuf, args: &[&str], stderr: &PathBuf) -> (GoProcess, Vec<String>) {
    let file = File::create(stderr).expect("create target stderr file");
    let mut p = GoProcess::spawn_command(Command::new(exe).args(args).stderr(file));
    let mut lines = Vec::new();
    loop {
        let line = p.read_line().expect("target printed nothing");
        if line == "ready" {
            return (p, lines);
        }
        lines.push(line);
    }
}

/// Lets the target go and waits for it to end by itself.
fn run_to_end(mut p: GoProcess, mut lines: Vec<String>) -> TargetRun {
    p.write_stdin("go\n");
    p.close_stdin();
    while let Some(line) = p.read_line() {
        lines.push(line);
    }
    let status = p
        .wait_timeout(TARGET_TIMEOUT)
        .expect("target did not end by itself");
    TargetRun {
        stdout: lines,
        code: status.code(),
    }
}

/// One watched run of the events program: (target run, alerts and other event lines, report,
/// watcher stderr, target stderr).
struct Watched {
    target: TargetRun,
    events: Vec<Value>,
    report: Value,
    stderr: String,
    target_stderr: String,
}

fn watched_run(tc: &GoToolchain, variant: Variant, args: &[&str], watch_args: &[&str]) -> Watched {
    let exe = build_go("events", tc, variant);
    let err_path = workspace_root().join(format!("target/events-{}-stderr.txt", tc.label()));
    let (p, before) = start_target(&exe, args, &err_path);
    let watcher = Watcher::start(p.pid(), watch_args);
    let target = run_to_end(p, before);
    let (status, mut lines, stderr) = watcher.finish();
    assert!(
        status.success(),
        "{}: watcher failed:\n{stderr}",
        tc.label()
    );
    let report = lines.pop().expect("no report line");
    assert_eq!(
        report["event"],
        "report",
        "{}: last line is the report",
        tc.label()
    );
    let target_stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    Watched {
        target,
        events: lines,
        report,
        stderr,
        target_stderr,
    }
}

fn unwatched_run(tc: &GoToolchain, variant: Variant, args: &[&str]) -> (TargetRun, String) {
    let exe = build_go("events", tc, variant);
    let err_path = workspace_root().join(format!("target/events-{}-plain-stderr.txt", tc.label()));
    let (p, before) = start_target(&exe, args, &err_path);
    let run = run_to_end(p, before);
    (run, std::fs::read_to_string(&err_path).unwrap_or_default())
}

fn line_value(lines: &[String], prefix: &str) -> u64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:?}"))
}

#[test]
fn stack_growth_shows_every_doubling_and_alerts_once() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        for variant in [Variant::Normal, Variant::Stripped] {
            let label = format!("{} {variant:?}", tc.label());
            let w = watched_run(&tc, variant, &["-mode", "grow"], &["--stack-alert", "1MB"]);
            let goid = line_value(&w.target.stdout, "goid ");
            assert_eq!(w.target.code, Some(0), "{label}");

            let history = w.report["stack_growth"]
                .as_array()
                .and_then(|h| h.iter().find(|g| g["goid"].as_u64() == Some(goid)))
                .unwrap_or_else(|| {
                    panic!(
                        "{label}: no growth history for goroutine {goid}: {}",
                        w.report
                    )
                });
            let mut sizes = vec![history["initial_bytes"].as_u64().unwrap_or(0)];
            sizes.extend(
                history["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["bytes"].as_u64()),
            );
            // Every doubling in order, from the starting size through at least 2 MiB.
            assert!(sizes[0] <= 8 << 10, "{label}: first size {sizes:?}");
            for pair in sizes.windows(2) {
                assert_eq!(pair[1], pair[0] * 2, "{label}: sizes {sizes:?}");
            }
            assert!(
                *sizes.last().unwrap_or(&0) >= 2 << 20,
                "{label}: sizes {sizes:?}"
            );
            let times: Vec<f64> = history["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["t_s"].as_f64())
                .collect();
            assert!(
                times.windows(2).all(|t| t[0] <= t[1]),
                "{label}: times {times:?}"
            );
            // The recursion is on the stack when it grows.
            let deepest = history["steps"]
                .as_array()
                .and_then(|s| s.last())
                .cloned()
                .unwrap_or_default();
            assert_eq!(deepest["top"][0], "main.recurse", "{label}: {deepest}");
            assert!(
                deepest["depth"].as_u64().unwrap_or(0) > 5000,
                "{label}: {deepest}"
            );

            // --stack-alert 1MB: exactly once, for this goroutine, at 1 MiB, with its folded stack.
            let alerts: Vec<&Value> = w
                .events
                .iter()
                .filter(|e| e["event"] == "stack_alert")
                .collect();
            assert_eq!(alerts.len(), 1, "{label}: alerts {alerts:?}");
            assert_eq!(alerts[0]["goid"].as_u64(), Some(goid), "{label}");
            assert_eq!(alerts[0]["stack_bytes"].as_u64(), Some(1 << 20), "{label}");
            let folded = alerts[0]["folded"].as_str().unwrap_or_default();
            // arm64 before Go 1.21: the grown stack's walk ends short of `runtime.goexit`
            // (measured: at `main.grow.func1`).
            let from_root = if stale_frame_pointers_after_growth(&tc) {
                folded.trim_start_matches("runtime.goexit;")
            } else {
                folded.strip_prefix("runtime.goexit;").unwrap_or_default()
            };
            assert!(
                from_root.starts_with("main.grow.func") && folded.ends_with(";main.recurse"),
                "{label}: folded {}",
                &folded[..folded.len().min(200)]
            );
            assert_eq!(
                w.stderr.matches("ALERT goroutine").count(),
                1,
                "{label}: {}",
                w.stderr
            );
            assert!(
                w.stderr.contains(&format!("ALERT goroutine {goid} ")),
                "{label}"
            );
            assert_eq!(w.report["events"]["lost"], 0, "{label}");
            // Cost per hit printed with --verbose.
            assert!(
                w.stderr.contains("probe go_copystack:"),
                "{label}: {}",
                w.stderr
            );
        }
    }
}

#[test]
fn goroutine_leak_grows_at_its_rate_and_names_its_site() {
    let _serial = exclusive();
    let source = std::fs::read_to_string(workspace_root().join("tests/go/events/main.go"))
        .expect("read events source");
    let leak_line = source
        .lines()
        .position(|l| l.contains("// LEAK-SITE"))
        .expect("LEAK-SITE marker") as u64
        + 1;
    for tc in primary_go_toolchains() {
        let label = tc.label();
        let started = Instant::now();
        let w = watched_run(
            &tc,
            Variant::Normal,
            &["-mode", "leak", "-rate", "50", "-seconds", "4"],
            &[],
        );
        let elapsed = started.elapsed().as_secs_f64();
        let leaked = line_value(&w.target.stdout, "leaked ");
        assert_eq!(leaked, 200, "{label}");
        let g = &w.report["goroutines"];
        assert_eq!(g["creation_goids_known"], true, "{label}");
        // 200 leaked + 200 short-lived (+ the runtime's own).
        let created = g["created"].as_u64().unwrap_or(0);
        assert!(
            (400..420).contains(&created),
            "{label}: created {created}: {g}"
        );
        let net = g["net_change"].as_i64().unwrap_or(0);
        assert!((195..=205).contains(&net), "{label}: net change {net}: {g}");
        // ~50/s: the live count rises over the 4 s of leaking.
        let rate = net as f64 / 4.0;
        assert!(
            (40.0..=60.0).contains(&rate),
            "{label}: {rate}/s over {elapsed:.1}s"
        );
        let timeline: Vec<i64> = w.report["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["net_change"].as_i64())
            .collect();
        assert!(
            timeline.windows(2).all(|p| p[1] + 5 >= p[0]),
            "{label}: timeline {timeline:?}"
        );
        let mid: Vec<i64> = timeline
            .iter()
            .copied()
            .filter(|n| (20..180).contains(n))
            .collect();
        assert!(
            mid.len() >= 2,
            "{label}: the count rises gradually: {timeline:?}"
        );

        let top = &w.report["leak_sites"][0];
        assert_eq!(
            top["function"], "main.leak",
            "{label}: {}",
            w.report["leak_sites"]
        );
        assert_eq!(top["line"].as_u64(), Some(leak_line), "{label}: {top}");
        assert!(
            top["file"]
                .as_str()
                .unwrap_or("")
                .ends_with("events/main.go"),
            "{label}: {top}"
        );
        let count = top["count"].as_u64().unwrap_or(0);
        assert!((195..=200).contains(&count), "{label}: {top}");
        assert_eq!(w.report["events"]["lost"], 0, "{label}");
    }
}

#[test]
fn fatal_stack_overflow_is_reported_first_with_its_deep_stack() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let label = tc.label();
        let w = watched_run(
            &tc,
            Variant::Normal,
            &["-mode", "overflow", "-maxstack", "4194304"],
            &[],
        );
        assert_eq!(w.target.code, Some(2), "{label}: Go's fatal exit code");
        assert!(
            w.target_stderr.contains("fatal error: stack overflow"),
            "{label}"
        );
        let fatal = &w.report["fatal"];
        assert_eq!(fatal["message"], "stack overflow", "{label}: {fatal}");
        let head = fatal_functions(fatal, "head");
        let tail = fatal_functions(fatal, "tail");
        assert_eq!(head.len(), 50, "{label}");
        assert_eq!(tail.len(), 50, "{label}");
        assert!(
            head.iter().all(|f| *f == "main.overflow"),
            "{label}: head {head:?}"
        );
        // arm64 before Go 1.21: the overflowing stack grew many times and its walk ends short
        // of the root (measured: the tail is all `main.overflow`), so its root end and its
        // depth are not Go's.
        let stale = stale_frame_pointers_after_growth(&tc);
        if !stale {
            assert_eq!(
                tail[tail.len() - 3..],
                ["main.main", "runtime.main", "runtime.goexit"],
                "{label}"
            );
        }
        let depth = fatal["depth"].as_u64().unwrap_or(0);
        let omitted = fatal["omitted"].as_u64().unwrap_or(0);
        assert_eq!(depth, 100 + omitted, "{label}: {fatal}");
        // Go 1.21+ prints the exact count of the frames it elided: ours must agree.
        if let Some(elided) = w.target_stderr.lines().find_map(|l| {
            l.strip_prefix("...")?
                .strip_suffix(" frames elided...")?
                .parse::<u64>()
                .ok()
        }) {
            assert_eq!(omitted, elided, "{label}: frames elided");
        } else if !stale {
            // Go 1.19: about 4 MiB / 96-byte frames.
            assert!((40_000..48_000).contains(&depth), "{label}: depth {depth}");
        }
        // The text report puts it at the top.
        assert!(
            w.report["events"]["by_kind"]["fatal"].as_u64().unwrap_or(0) >= 1,
            "{label}"
        );
    }
}

#[test]
fn fatal_error_is_first_in_the_text_report() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("events", &tc, Variant::Normal);
    let err_path = workspace_root().join("target/events-text-stderr.txt");
    let (p, before) = start_target(
        &exe,
        &["-mode", "overflow", "-maxstack", "1048576"],
        &err_path,
    );
    let pid = p.pid().to_string();
    let mut child = Command::new(stacksampler_bin())
        .args(["--watch", "--pid", pid.as_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watcher");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while err.read_line(&mut line).unwrap_or(0) > 0 && !line.contains("probes attached") {
        line.clear();
    }
    let run = run_to_end(p, before);
    assert_eq!(run.code, Some(2));
    let out = child.wait_with_output().expect("watcher output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("FATAL: fatal error: stack overflow (goroutine 1)"),
        "text report: {}",
        &text[..text.len().min(500)]
    );
    assert!(
        text.contains("frames elided"),
        "{}",
        &text[..text.len().min(3000)]
    );
}

#[test]
fn target_output_and_exit_code_are_the_same_with_probes() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        for args in [
            &["-mode", "grow"][..],
            &["-mode", "leak", "-rate", "100", "-seconds", "1"],
            &["-mode", "overflow", "-maxstack", "1048576"],
        ] {
            let (plain, plain_err) = unwatched_run(&tc, Variant::Normal, args);
            let w = watched_run(&tc, Variant::Normal, args, &["--stack-alert", "64KiB"]);
            // Goroutine ids depend on scheduling (which P's id cache serves the `go`), with or
            // without probes: compare everything else.
            let comparable = |r: &TargetRun| TargetRun {
                stdout: r
                    .stdout
                    .iter()
                    .filter(|l| !l.starts_with("goid "))
                    .cloned()
                    .collect(),
                code: r.code,
            };
            assert_eq!(
                comparable(&w.target),
                comparable(&plain),
                "{} {args:?}",
                tc.label()
            );
            let first_line = |s: &str| {
                s.lines()
                    .find(|l| l.starts_with("fatal error"))
                    .map(str::to_owned)
            };
            assert_eq!(
                first_line(&w.target_stderr),
                first_line(&plain_err),
                "{} {args:?}",
                tc.label()
            );
        }
    }
}

#[test]
fn watch_output_file_gets_the_json_report() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("events", &tc, Variant::Normal);
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("x.json");
    let text_path = dir.path().join("x.txt");
    let err_path = workspace_root().join("target/events-output-stderr.txt");
    let (p, before) = start_target(&exe, &["-mode", "grow"], &err_path);
    let json_s = json_path.display().to_string();
    let text_s = text_path.display().to_string();
    let pid = p.pid();
    let watcher = Watcher::start(pid, &["-o", json_s.as_str(), "-o", text_s.as_str()]);
    let target = run_to_end(p, before);
    assert_eq!(target.code, Some(0));
    let (status, lines, stderr) = watcher.finish();
    assert!(status.success(), "{stderr}");
    assert!(lines.is_empty(), "stdout has no report with -o: {lines:?}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("x.json written"))
            .unwrap_or_else(|e| panic!("x.json is not json: {e}"));
    assert_eq!(report["event"], "report");
    assert_eq!(report["format_version"], 1);
    assert_eq!(report["ended_by"], "target_exited");
    assert_eq!(report["pid"], pid);
    assert!(
        report["events"]["by_kind"]["stack_growth"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report}"
    );
    let text = std::fs::read_to_string(&text_path).expect("x.txt written");
    assert!(text.contains("ended by target exited"), "{text}");
    assert!(
        stderr.contains(&format!("wrote {json_s} (json)")),
        "{stderr}"
    );
}

/// A plain sampling run (`stacksampler --pid P`, no verb, no flag about events) of a target that
/// dies of a stack overflow: the fatal error comes first in the text report and in the json,
/// and the run says the target died.
#[test]
fn plain_record_run_reports_the_fatal_error_first() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let label = tc.label();
        let exe = build_go("events", &tc, Variant::Normal);
        let dir = tempfile::tempdir().expect("temp dir");
        let json_path = dir.path().join("report.json");
        let err_path = workspace_root().join(format!("target/events-record-{label}-stderr.txt"));
        let (p, before) = start_target(
            &exe,
            &["-mode", "overflow", "-maxstack", "1048576"],
            &err_path,
        );
        let pid = p.pid().to_string();
        let json_s = json_path.display().to_string();
        let text_path = dir.path().join("report.txt");
        let text_s = text_path.display().to_string();
        let child = start_recorder(&[
            "--pid",
            pid.as_str(),
            "-o",
            text_s.as_str(),
            "-o",
            json_s.as_str(),
        ]);
        let run = run_to_end(p, before);
        assert_eq!(run.code, Some(2), "{label}: Go's fatal exit code");
        let status = finish_recorder(child);
        assert!(status.success(), "{label}: stacksampler failed");
        let text = std::fs::read_to_string(&text_path).expect("report.txt written");
        assert!(
            text.starts_with("FATAL: fatal error: stack overflow (goroutine 1)"),
            "{label}: text report: {}",
            &text[..text.len().min(500)]
        );
        // The failing goroutine's frames follow (a function line, then its file:line), innermost
        // first: the recursion.
        let frames: Vec<&str> = text
            .lines()
            .skip(2)
            .map(str::trim)
            .filter(|l| !l.starts_with('/'))
            .take(5)
            .collect();
        assert!(
            frames.iter().all(|f| f.starts_with("main.overflow")),
            "{label}: first frames {frames:?}"
        );
        assert!(text.contains("frames elided"), "{label}");
        assert!(
            text.contains("ended: target died of a fatal error"),
            "{label}: {}",
            &text[..text.len().min(3000)]
        );

        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(&json_path).expect("report.json written"),
        )
        .unwrap_or_else(|e| panic!("{label}: report.json is not json: {e}"));
        assert_eq!(report["ended_by"], "target_died", "{label}");
        let fatal = &report["fatal"];
        assert_eq!(fatal["message"], "stack overflow", "{label}: {fatal}");
        assert_eq!(fatal["goid"], 1, "{label}");
        let head = fatal_functions(fatal, "head");
        assert_eq!(head.len(), 50, "{label}");
        assert!(
            head.iter().all(|f| *f == "main.overflow"),
            "{label}: {head:?}"
        );
        let tail = fatal_functions(fatal, "tail");
        assert_eq!(
            tail[tail.len().saturating_sub(3)..],
            ["main.main", "runtime.main", "runtime.goexit"],
            "{label}"
        );
        // In the json the fatal error comes before the samples.
        let raw = std::fs::read_to_string(&json_path).unwrap_or_default();
        assert!(
            raw.find("\"fatal\"") < raw.find("\"samples\""),
            "{label}: fatal after samples"
        );
    }
}

/// Function names of a fatal report's `head` or `tail`.
fn fatal_functions<'a>(fatal: &'a Value, end: &str) -> Vec<&'a str> {
    fatal[end]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["function"].as_str())
        .collect()
}

/// Starts a sampling run (`--verbose` added) and returns once it samples (its progress line).
fn start_recorder(args: &[&str]) -> Child {
    let mut child = Command::new(stacksampler_bin())
        .args(args)
        .arg("--verbose")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stacksampler");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains("stacksampler: sampling") {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.wait();
            panic!("stacksampler {args:?} ended before sampling:\n{seen}");
        }
        seen.push_str(&line);
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

/// Waits (bounded) for a sampling run to end by itself after its target exited.
fn finish_recorder(mut child: Child) -> ExitStatus {
    let deadline = Instant::now() + WATCH_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stacksampler did not end after its target exited");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `record --events`: stack growth and goroutine creation in the sampling report.
#[test]
fn record_events_adds_stack_growth_and_goroutines_to_the_report() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("events", &tc, Variant::Normal);
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("r.json");
    let text_path = dir.path().join("r.txt");
    let err_path = workspace_root().join("target/events-record-events-stderr.txt");
    let (p, before) = start_target(&exe, &["-mode", "grow"], &err_path);
    let pid = p.pid().to_string();
    let (json_s, text_s) = (
        json_path.display().to_string(),
        text_path.display().to_string(),
    );
    let child = start_recorder(&[
        "record",
        "--pid",
        pid.as_str(),
        "--events",
        // The growth takes a fraction of a second of CPU: sample densely enough to see it.
        "--frequency",
        "999",
        "-o",
        json_s.as_str(),
        "-o",
        text_s.as_str(),
    ]);
    let run = run_to_end(p, before);
    assert_eq!(run.code, Some(0));
    let goid = line_value(&run.stdout, "goid ");
    assert!(finish_recorder(child).success());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("r.json written"))
            .expect("r.json is json");
    assert_eq!(report["ended_by"], "target_exited");
    assert!(
        report.get("fatal").is_none(),
        "no fatal error: {}",
        report["fatal"]
    );
    let events = &report["runtime_events"];
    assert!(
        events["events"]["by_kind"]["stack_growth"]
            .as_u64()
            .unwrap_or(0)
            >= 8,
        "{events}"
    );
    let history = events["stack_growth"]
        .as_array()
        .and_then(|h| h.iter().find(|g| g["goid"].as_u64() == Some(goid)))
        .unwrap_or_else(|| panic!("no growth history for goroutine {goid}: {events}"));
    let last = history["steps"]
        .as_array()
        .and_then(|s| s.last())
        .and_then(|s| s["bytes"].as_u64())
        .unwrap_or(0);
    assert!(last >= 2 << 20, "{history}");
    // The growing goroutine was created before the run; its exit is seen.
    assert!(
        events["goroutines"]["exited"].as_u64().unwrap_or(0) >= 1,
        "{events}"
    );
    assert!(report["samples"]["total"].as_u64().unwrap_or(0) > 0);
    let text = std::fs::read_to_string(&text_path).expect("r.txt written");
    assert!(text.contains("runtime events:"), "{text}");
    assert!(text.contains(&format!("goroutine {goid}: ")), "{text}");
}
