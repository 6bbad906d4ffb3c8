//! The end-to-end suite run inside the arm64 guest (`cargo xtask test-aarch64`).
//!
//! The guest's `/init` runs `guest-runner DIR`, where `DIR` holds the static arm64 `stacksampler`
//! and the arm64 Go test programs (see `tests/aarch64/init`). Every check prints `PASS name` or
//! `FAIL name: why`; the runner exits 0 only when every check passed, and `/init` prints the
//! success marker the host waits for only then.
//!
//! The checks mirror `tests/tests/e2e_sampling.rs` (x86_64): same programs, same assertions, with
//! thresholds for an emulated CPU (about 10x slower than the host); the `--watch` checks mirror
//! two of `tests/tests/e2e_events.rs` (stack growth with `--stack-alert`, fatal stack overflow).

use std::{
    io::{BufRead, BufReader, Lines, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Seconds each stacksampler run samples.
const SAMPLE_SECS: &str = "3";
/// How long a watched events program or the watcher may take (attach, run, end) in the guest.
const WATCH_TIMEOUT: Duration = Duration::from_secs(180);

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/stacksampler".into()),
    );
    let mut suite = Suite {
        stacksampler: dir.join("bin/stacksampler"),
        go: dir.join("go"),
        passed: 0,
        failed: Vec::new(),
        expected_failures: 0,
    };
    for label in ["go1.27", "go1.19"] {
        suite.hot_function(label, &format!("demo-{label}"));
        suite.state_filter(label);
    }
    suite.recursion_3000("go1.27");
    // Go 1.21 is the first release whose copystack adjusts arm64 frame pointers (golang/go#58432).
    suite.recursion_3000("go1.21");
    suite.recursion_go119();
    suite.hot_function("go1.27 stripped", "demo-go1.27-stripped");
    suite.dump_stripped("go1.27");
    suite.leaf_caller("go1.27");
    suite.watch_stack_growth("go1.27");
    suite.watch_stack_overflow("go1.27");
    println!(
        "guest-runner: {} passed, {} failed, {} known failures{}",
        suite.passed,
        suite.failed.len(),
        suite.expected_failures,
        if suite.failed.is_empty() {
            String::new()
        } else {
            format!(": {}", suite.failed.join(", "))
        }
    );
    std::process::exit(if suite.failed.is_empty() { 0 } else { 1 });
}

struct Suite {
    stacksampler: PathBuf,
    go: PathBuf,
    passed: usize,
    failed: Vec<String>,
    expected_failures: usize,
}

impl Suite {
    /// Records the outcome of one check.
    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                println!("PASS {name}");
                self.passed += 1;
            }
            Err(why) => {
                println!("FAIL {name}: {why}");
                self.failed.push(name.to_owned());
            }
        }
    }

    fn sample(&self, pid: u32, extra: &[&str]) -> Result<Value, String> {
        let pid = pid.to_string();
        let started = Instant::now();
        let out = Command::new(&self.stacksampler)
            .args(["--pid", &pid, "--duration", SAMPLE_SECS, "--format", "json"])
            .args(extra)
            .output()
            .map_err(|e| format!("running {}: {e}", self.stacksampler.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines() {
            println!("  stacksampler: {line}");
        }
        if !out.status.success() {
            return Err(format!("stacksampler {extra:?} failed: {}", out.status));
        }
        let report: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("stacksampler printed no json: {e}"))?;
        println!(
            "  sampled pid {pid} {extra:?}: {} samples total, {} kept, {} lost, {} stacks ({:.1} s)",
            report["samples"]["total"],
            report["samples"]["kept"],
            report["samples"]["lost"],
            stacks(&report).len(),
            started.elapsed().as_secs_f64()
        );
        Ok(report)
    }

    fn start(&self, program: &str, args: &[&str]) -> Result<GoProcess, String> {
        GoProcess::start(&self.go.join(program), args)
    }

    /// The innermost frame of the most sampled stack is the busy function, the state is running
    /// and the goroutine id is the one the program printed.
    fn hot_function(&mut self, label: &str, program: &str) {
        let result = (|| {
            let demo = self.start(program, &["-workers", "hot"])?;
            let hot_goid = demo.goid("hot")?;
            let report = self.sample(demo.pid(), &[])?;
            let kept = report["samples"]["kept"].as_u64().unwrap_or(0);
            if kept < 50 {
                return Err(format!("only {kept} samples in {SAMPLE_SECS} s"));
            }
            let all = stacks(&report);
            let top = all.first().ok_or("no stacks")?;
            show("top stack", top, 6);
            expect_eq("innermost frame", innermost(top).as_str(), "main.hotLoop")?;
            expect_eq("state", top["state"].as_str().unwrap_or(""), "running")?;
            expect_eq("goids", goids(top), vec![hot_goid])?;
            let hot = count_where(&report, |s| innermost(s) == "main.hotLoop");
            if hot * 10 < kept * 8 {
                return Err(format!("{hot} of {kept} samples in main.hotLoop"));
            }
            if report["go_version"].as_str().is_none() {
                return Err("no go_version in the report".into());
            }
            Ok(())
        })();
        self.check(
            &format!("{label}: hot function main.hotLoop, goid and state"),
            result,
        );
    }

    /// `dump` of a stripped build finds the goroutine list from the arm64 code of
    /// `runtime.allgadd` and lists the demo's goroutines: the one in a system call with its
    /// stack, the running one listed (running goroutines have no stack in a dump).
    fn dump_stripped(&mut self, label: &str) {
        let result = (|| {
            let demo = self.start(
                &format!("demo-{label}-stripped"),
                &["-workers", "hot,syscall"],
            )?;
            let hot_goid = demo.goid("hot")?;
            let syscall_goid = demo.goid("syscall")?;
            let out = Command::new(&self.stacksampler)
                .args(["dump", "--pid", &demo.pid().to_string(), "--format", "json"])
                .output()
                .map_err(|e| format!("running {}: {e}", self.stacksampler.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "dump failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let dump: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("dump printed no json: {e}"))?;
            expect_eq("allgs_source", dump["allgs_source"].as_str(), Some("code"))?;
            let goroutines = dump["goroutines"].as_array().ok_or("no goroutines")?;
            println!("  dump: {} goroutines", goroutines.len());
            let find = |goid: u64| {
                goroutines
                    .iter()
                    .find(|g| g["goid"].as_u64() == Some(goid))
                    .ok_or(format!("goroutine {goid} not listed"))
            };
            let frames = |g: &Value| -> Vec<String> {
                g["stack"]["frames"]
                    .as_array()
                    .map(|f| {
                        f.iter()
                            .filter_map(|f| f["function"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            expect_eq(
                "hot state",
                find(hot_goid)?["state"].as_str(),
                Some("running"),
            )?;
            let syscall = find(syscall_goid)?;
            expect_eq("syscall state", syscall["state"].as_str(), Some("syscall"))?;
            let names = frames(syscall);
            if !names.iter().any(|f| f == "main.syscallLoop") {
                return Err(format!("syscall goroutine's stack {names:?}"));
            }
            let main = frames(find(1)?);
            if !main.iter().any(|f| f == "main.main") {
                return Err(format!("goroutine 1's stack {main:?}"));
            }
            Ok(())
        })();
        self.check(
            &format!("{label} stripped: dump finds allgs from arm64 code"),
            result,
        );
    }

    /// A 3000-deep recursion is walked whole, down to runtime.goexit.
    fn recursion_3000(&mut self, label: &str) {
        let result = (|| {
            let demo = self.start(
                &format!("demo-{label}"),
                &["-workers", "recurse", "-depth", "3000"],
            )?;
            let goid = demo.goid("recurse")?;
            let report = self.sample(demo.pid(), &[])?;
            let deep: Vec<Value> = stacks(&report)
                .into_iter()
                .filter(|s| s["depth"].as_u64().unwrap_or(0) >= 3000)
                .collect();
            if deep.is_empty() {
                let depths: Vec<u64> = stacks(&report)
                    .iter()
                    .map(|s| s["depth"].as_u64().unwrap_or(0))
                    .collect();
                return Err(format!("no stack of 3000+ frames (depths {depths:?})"));
            }
            show("most sampled deep stack", &deep[0], 4);
            // Other deep stacks may end in the runtime (asynchronous preemption at the bottom).
            expect_eq(
                "innermost frame",
                innermost(&deep[0]).as_str(),
                "main.spinAtBottom",
            )?;
            for s in &deep {
                let f = functions(s);
                if f.len() < 3000 {
                    return Err(format!("{} frames listed", f.len()));
                }
                expect_eq("truncated", s["truncated"].as_bool(), Some(false))?;
                let a = f.iter().filter(|n| *n == "main.recurseA").count();
                let b = f.iter().filter(|n| *n == "main.recurseB").count();
                if a < 1500 || b < 1500 {
                    return Err(format!("recurseA {a}, recurseB {b}"));
                }
                expect_eq(
                    "outermost frame",
                    f.last().map(String::as_str),
                    Some("runtime.goexit"),
                )?;
                let outer = &f[f.len() - 3..];
                if !outer.iter().any(|n| n.starts_with("main.main")) {
                    return Err(format!("outermost frames {outer:?}"));
                }
                expect_eq("goids", goids(s), vec![goid])?;
            }
            Ok(())
        })();
        self.check(
            &format!("{label}: 3000-deep recursion walked whole"),
            result,
        );
    }

    /// Go 1.19 (and 1.20) on arm64 do not adjust saved frame pointers when they copy a growing
    /// stack (golang/go#58432, fixed in Go 1.21): a frame-pointer walk of a deep recursion stops
    /// where the stack was last copied. What must still hold: the samples are the recursing
    /// goroutine's, innermost frames first, and the walk stops cleanly.
    fn recursion_go119(&mut self) {
        let result = (|| {
            let demo = self.start("demo-go1.19", &["-workers", "recurse", "-depth", "3000"])?;
            let goid = demo.goid("recurse")?;
            let report = self.sample(demo.pid(), &[])?;
            let all = stacks(&report);
            let top = all.first().ok_or("no stacks")?;
            show("top stack", top, 4);
            let f = functions(top);
            expect_eq(
                "innermost frame",
                f.first().map(String::as_str),
                Some("main.spinAtBottom"),
            )?;
            let recursion = f
                .iter()
                .filter(|n| *n == "main.recurseA" || *n == "main.recurseB")
                .count();
            if recursion < 500 {
                return Err(format!("only {recursion} recursion frames"));
            }
            expect_eq("goids", goids(top), vec![goid])?;
            println!(
                "  go1.19 arm64: walk stops at depth {} of ~3005 (stale frame pointers after copystack)",
                top["depth"]
            );
            Ok(())
        })();
        self.check(
            "go1.19: deep recursion, innermost frames and goid (depth limited by golang/go#58432)",
            result,
        );
    }

    /// `--state syscall` keeps only syscall samples, among them the syscall worker's;
    /// `--state Grunning` keeps none of them.
    fn state_filter(&mut self, label: &str) {
        let result = (|| {
            let demo = self.start(&format!("demo-{label}"), &["-workers", "syscall"])?;
            let goid = demo.goid("syscall")?;
            let report = self.sample(demo.pid(), &["--state", "syscall"])?;
            let all = stacks(&report);
            let top = all.first().ok_or("no syscall samples")?;
            show("top syscall stack", top, 8);
            for s in &all {
                expect_eq("state", s["state"].as_str().unwrap_or(""), "syscall")?;
            }
            let in_loop = count_where(&report, |s| {
                functions(s).iter().any(|f| f == "main.syscallLoop") && goids(s).contains(&goid)
            });
            if in_loop == 0 {
                return Err(format!(
                    "no syscall sample in main.syscallLoop of goroutine {goid}"
                ));
            }
            let report = self.sample(demo.pid(), &["--state", "Grunning"])?;
            for s in &stacks(&report) {
                expect_eq("state", s["state"].as_str().unwrap_or(""), "running")?;
            }
            Ok(())
        })();
        self.check(
            &format!("{label}: --state syscall / Grunning filtering"),
            result,
        );
    }

    /// arm64: a frameless leaf keeps its caller's return address in LR (X30) only; the caller
    /// must still appear as the second frame.
    fn leaf_caller(&mut self, label: &str) {
        let result = (|| {
            let p = self.start(&format!("leaf-{label}"), &[])?;
            let goid = p.goid("leaf")?;
            let report = self.sample(p.pid(), &[])?;
            let all = stacks(&report);
            let top = all.first().ok_or("no stacks")?;
            show("top stack", top, 5);
            let f = functions(top);
            expect_eq(
                "innermost frame",
                f.first().map(String::as_str),
                Some("main.leaf"),
            )?;
            expect_eq("goids", goids(top), vec![goid])?;
            expect_eq(
                "caller of the leaf",
                f.get(1).map(String::as_str),
                Some("main.callsLeaf"),
            )?;
            Ok(())
        })();
        // The kernel records LR; user space inserts it when .gopclntab says the interrupted
        // function has an empty frame at the pc.
        self.check(
            &format!("{label}: caller of a frameless leaf (return address in LR)"),
            result,
        );
    }
}

/// The `--watch` runs: the events program (`tests/go/events`) started, the watcher attached to it
/// (its uprobes on the arm64 Go runtime), then the program let go and run to its end.
impl Suite {
    fn watched(
        &self,
        program: &str,
        args: &[&str],
        watch_args: &[&str],
    ) -> Result<Watched, String> {
        let exe = self.go.join(program);
        let target_err = PathBuf::from(format!("/tmp/{program}-stderr.txt"));
        let err_file = std::fs::File::create(&target_err).map_err(|e| e.to_string())?;
        let mut target = Reaped(
            Command::new(&exe)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(err_file)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", exe.display()))?,
        );
        let mut out = BufReader::new(target.0.stdout.take().ok_or("no stdout")?).lines();
        let mut stdout = Vec::new();
        loop {
            match out.next() {
                Some(Ok(line)) if line == "ready" => break,
                Some(Ok(line)) => stdout.push(line),
                _ => return Err(format!("{} exited before printing ready", exe.display())),
            }
        }
        let pid = target.0.id().to_string();
        println!(
            "  started {} {args:?}: pid {pid}, printed {stdout:?}",
            exe.display()
        );

        let started = Instant::now();
        let mut watcher = Reaped(
            Command::new(&self.stacksampler)
                .args(["--watch", "--pid", &pid, "--format", "json", "--verbose"])
                .args(watch_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("running {}: {e}", self.stacksampler.display()))?,
        );
        // Stdout read by a thread (an alert's folded stack alone can fill a pipe), stderr lines
        // sent through a channel.
        let mut wout = watcher.0.stdout.take().ok_or("no watcher stdout")?;
        let json = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = wout.read_to_string(&mut s);
            s
        });
        let werr = watcher.0.stderr.take().ok_or("no watcher stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(werr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = Vec::new();
        let show_line = |l: &str| println!("  stacksampler: {}", &l[..l.floor_char_boundary(200)]);
        loop {
            let left = WATCH_TIMEOUT.saturating_sub(started.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    show_line(&line);
                    let attached = line.contains("probes attached");
                    stderr.push(line);
                    if attached {
                        break;
                    }
                }
                Err(_) => return Err("the watcher did not attach its probes".into()),
            }
        }
        println!(
            "  watcher attached after {:.1} s",
            started.elapsed().as_secs_f64()
        );

        // Let the program go; it ends by itself.
        let mut stdin = target.0.stdin.take().ok_or("no stdin")?;
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        stdout.extend(out.map_while(Result::ok));
        let code = target
            .wait(WATCH_TIMEOUT)
            .ok_or("the events program did not end")?
            .code();
        let status = watcher
            .wait(WATCH_TIMEOUT)
            .ok_or("the watcher did not end after the target")?;
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            show_line(&line);
            stderr.push(line);
        }
        if !status.success() {
            return Err(format!("the watcher failed: {status}"));
        }
        let mut events: Vec<Value> = json
            .join()
            .map_err(|_| "watcher stdout thread")?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| format!("watch stdout line is not json ({e})"))
            })
            .collect::<Result<_, _>>()?;
        let report = events.pop().ok_or("no report line")?;
        expect_eq("last line", report["event"].as_str(), Some("report"))?;
        println!(
            "  watched pid {pid}: exit code {code:?}, {} events, {} lost ({:.1} s)",
            report["events"]["received"],
            report["events"]["lost"],
            started.elapsed().as_secs_f64()
        );
        Ok(Watched {
            stdout,
            code,
            events,
            report,
            stderr: stderr.join("\n"),
            target_stderr: std::fs::read_to_string(&target_err).unwrap_or_default(),
        })
    }

    /// `--watch --stack-alert 1MB` on a goroutine recursing in doubling steps (as
    /// `e2e_events::stack_growth_shows_every_doubling_and_alerts_once` on x86_64): uprobe on
    /// `runtime.copystack` with (gp, newsize) in R0, R1 and `g` in X28.
    fn watch_stack_growth(&mut self, label: &str) {
        let result = (|| {
            let w = self.watched(
                &format!("events-{label}"),
                &["-mode", "grow"],
                &["--stack-alert", "1MB"],
            )?;
            let goid = w.printed("goid ")?;
            expect_eq("exit code", w.code, Some(0))?;
            let history = w.report["stack_growth"]
                .as_array()
                .and_then(|h| h.iter().find(|g| g["goid"].as_u64() == Some(goid)))
                .ok_or_else(|| {
                    format!(
                        "no growth history for goroutine {goid}: {}",
                        w.report["stack_growth"]
                    )
                })?;
            let steps: Vec<Value> = history["steps"].as_array().cloned().unwrap_or_default();
            let mut sizes = vec![history["initial_bytes"].as_u64().unwrap_or(0)];
            sizes.extend(steps.iter().filter_map(|s| s["bytes"].as_u64()));
            println!("  goroutine {goid} stack sizes: {sizes:?}");
            if sizes[0] > 8 << 10 {
                return Err(format!("first size {sizes:?}"));
            }
            if sizes.windows(2).any(|p| p[1] != p[0] * 2) || *sizes.last().unwrap_or(&0) < 2 << 20 {
                return Err(format!(
                    "not every doubling up to 2 MiB in order: {sizes:?}"
                ));
            }
            let times: Vec<f64> = steps.iter().filter_map(|s| s["t_s"].as_f64()).collect();
            if times.windows(2).any(|t| t[0] > t[1]) {
                return Err(format!("growth times out of order: {times:?}"));
            }
            let deepest = steps.last().cloned().unwrap_or_default();
            println!(
                "  deepest growth: depth {}, top {}",
                deepest["depth"], deepest["top"]
            );
            expect_eq(
                "deepest growth's top frame",
                deepest["top"][0].as_str(),
                Some("main.recurse"),
            )?;
            if deepest["depth"].as_u64().unwrap_or(0) <= 5000 {
                return Err(format!("deepest growth's depth {}", deepest["depth"]));
            }
            let alerts: Vec<&Value> = w
                .events
                .iter()
                .filter(|e| e["event"] == "stack_alert")
                .collect();
            expect_eq("alerts", alerts.len(), 1)?;
            expect_eq("alert goid", alerts[0]["goid"].as_u64(), Some(goid))?;
            expect_eq(
                "alert size",
                alerts[0]["stack_bytes"].as_u64(),
                Some(1 << 20),
            )?;
            let folded = alerts[0]["folded"].as_str().unwrap_or_default();
            println!(
                "  alert: goid {}, {} bytes, depth {}, folded {}...{}",
                alerts[0]["goid"],
                alerts[0]["stack_bytes"],
                alerts[0]["depth"],
                &folded[..folded.floor_char_boundary(60)],
                &folded[folded.ceil_char_boundary(folded.len().saturating_sub(40))..]
            );
            if !(folded.starts_with("runtime.goexit;main.grow.func")
                && folded.ends_with(";main.recurse"))
            {
                return Err("alert's folded stack is not goexit;grow.func...;recurse".into());
            }
            expect_eq(
                "ALERT lines on stderr",
                w.stderr.matches("ALERT goroutine").count(),
                1,
            )?;
            if !w.stderr.contains(&format!("ALERT goroutine {goid} ")) {
                return Err(format!("no ALERT line for goroutine {goid}"));
            }
            expect_eq("events lost", w.report["events"]["lost"].as_u64(), Some(0))?;
            if !w.stderr.contains("probe go_copystack:") {
                return Err("no go_copystack cost line (--verbose)".into());
            }
            Ok(())
        })();
        self.check(
            &format!("{label}: --watch stack growth doublings and --stack-alert 1MB once with the goid (uprobes)"),
            result,
        );
    }

    /// The overflow mode dies with `fatal error: stack overflow`: the report's fatal message
    /// (uprobe on `runtime.throw`, message in R0, R1) and its deep stack, walked from the
    /// goroutine's `sched` (morestack's caller in `sched.lr`), with Go's own elided count.
    fn watch_stack_overflow(&mut self, label: &str) {
        let result = (|| {
            let w = self.watched(
                &format!("events-{label}"),
                &["-mode", "overflow", "-maxstack", "1048576"],
                &[],
            )?;
            expect_eq("exit code", w.code, Some(2))?;
            if !w.target_stderr.contains("fatal error: stack overflow") {
                return Err("the program did not die of a stack overflow".into());
            }
            let fatal = &w.report["fatal"];
            let names = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["function"].as_str().map(str::to_owned))
                    .collect()
            };
            let (head, tail) = (names(&fatal["head"]), names(&fatal["tail"]));
            println!(
                "  fatal: {:?} goroutine {}, depth {}, omitted {}, head {:?}..., tail ...{:?}",
                fatal["message"],
                fatal["goid"],
                fatal["depth"],
                fatal["omitted"],
                &head[..head.len().min(2)],
                &tail[tail.len().saturating_sub(3)..]
            );
            expect_eq(
                "fatal message",
                fatal["message"].as_str(),
                Some("stack overflow"),
            )?;
            expect_eq("head frames", head.len(), 50)?;
            expect_eq("tail frames", tail.len(), 50)?;
            if head.iter().any(|f| f != "main.overflow") {
                return Err(format!("head {head:?}"));
            }
            expect_eq(
                "outermost frames",
                tail[tail.len() - 3..].to_vec(),
                vec![
                    "main.main".to_owned(),
                    "runtime.main".into(),
                    "runtime.goexit".into(),
                ],
            )?;
            let depth = fatal["depth"].as_u64().unwrap_or(0);
            let omitted = fatal["omitted"].as_u64().unwrap_or(0);
            expect_eq("depth", depth, 100 + omitted)?;
            let elided = w
                .target_stderr
                .lines()
                .find_map(|l| {
                    l.strip_prefix("...")?
                        .strip_suffix(" frames elided...")?
                        .parse::<u64>()
                        .ok()
                })
                .ok_or("Go printed no elided-frames count")?;
            expect_eq("frames elided (ours, Go's)", omitted, elided)?;
            Ok(())
        })();
        self.check(
            &format!("{label}: --watch fatal \"stack overflow\": message, head, tail and Go's elided count (uprobes)"),
            result,
        );
    }
}

/// What a watched run of the events program printed and how it ended.
struct Watched {
    stdout: Vec<String>,
    code: Option<i32>,
    /// The watcher's json lines before its report (alerts).
    events: Vec<Value>,
    report: Value,
    stderr: String,
    target_stderr: String,
}

impl Watched {
    fn printed(&self, prefix: &str) -> Result<u64, String> {
        self.stdout
            .iter()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
            .ok_or_else(|| format!("the program printed no {prefix:?} line: {:?}", self.stdout))
    }
}

/// A child killed (by its pid) and reaped when dropped still running.
struct Reaped(Child);

impl Reaped {
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn stacks(report: &Value) -> Vec<Value> {
    report["stacks"].as_array().cloned().unwrap_or_default()
}

fn functions(stack: &Value) -> Vec<String> {
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

fn innermost(stack: &Value) -> String {
    functions(stack).into_iter().next().unwrap_or_default()
}

fn goids(stack: &Value) -> Vec<u64> {
    stack["goids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn count_where(report: &Value, pred: impl Fn(&Value) -> bool) -> u64 {
    stacks(report)
        .iter()
        .filter(|s| pred(s))
        .map(|s| s["count"].as_u64().unwrap_or(0))
        .sum()
}

/// Prints the state, count, depth and innermost frames of a stack (for the log).
fn show(what: &str, stack: &Value, frames: usize) {
    let f = functions(stack);
    println!(
        "  {what}: {} samples, state {}, goids {:?}, depth {}: {}{}",
        stack["count"],
        stack["state"],
        goids(stack),
        stack["depth"],
        f.iter()
            .take(frames)
            .cloned()
            .collect::<Vec<_>>()
            .join(" <- "),
        if f.len() > frames { " <- ..." } else { "" }
    );
}

/// A Go test program started with its stdin piped (it exits when stdin closes) and its
/// `goid <role> <id>` lines read up to `ready`. Dropping it stops and reaps it.
struct GoProcess {
    child: Child,
    goids: Vec<(String, u64)>,
    _lines: Lines<BufReader<ChildStdout>>,
}

impl GoProcess {
    fn start(exe: &Path, args: &[&str]) -> Result<Self, String> {
        let mut all = vec!["-seconds", "120"];
        all.extend_from_slice(args);
        let mut child = Command::new(exe)
            .args(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut p = GoProcess {
            child,
            goids: Vec::new(),
            _lines: BufReader::new(stdout).lines(),
        };
        loop {
            let line = match p._lines.next() {
                Some(Ok(line)) => line,
                _ => return Err(format!("{} exited before printing ready", exe.display())),
            };
            if line == "ready" {
                break;
            }
            if let Some(rest) = line.strip_prefix("goid ") {
                let mut it = rest.split_whitespace();
                let role = it.next().unwrap_or_default().to_owned();
                let id = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                p.goids.push((role, id));
            }
        }
        println!(
            "  started {} {all:?}: pid {}, goids {:?}",
            exe.display(),
            p.pid(),
            p.goids
        );
        Ok(p)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn goid(&self, role: &str) -> Result<u64, String> {
        self.goids
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, id)| *id)
            .ok_or_else(|| format!("the program printed no goid for {role}"))
    }
}

impl Drop for GoProcess {
    fn drop(&mut self) {
        // Closing stdin asks the program to return from main; kill it (by its pid) if it does not.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
