//! The end-to-end suite run inside the arm64 guest (`cargo xtask test-aarch64`).
//!
//! The guest's `/init` runs `guest-runner DIR`, where `DIR` holds the static arm64 `stacksampler`
//! and the arm64 Go test programs (see `tests/aarch64/init`). Every check prints `PASS name` or
//! `FAIL name: why`; the runner exits 0 only when every check passed, and `/init` prints the
//! success marker the host waits for only then.
//!
//! The checks mirror `tests/tests/e2e_sampling.rs` (x86_64): same programs, same assertions, with
//! thresholds for an emulated CPU (about 10x slower than the host).

use std::{
    io::{BufRead, BufReader, Lines},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Seconds each stacksampler run samples.
const SAMPLE_SECS: &str = "3";

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "/stacksampler".into()));
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
    suite.leaf_caller("go1.27");
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
        self.check(&format!("{label}: hot function main.hotLoop, goid and state"), result);
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
            expect_eq("innermost frame", innermost(&deep[0]).as_str(), "main.spinAtBottom")?;
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
                expect_eq("outermost frame", f.last().map(String::as_str), Some("runtime.goexit"))?;
                let outer = &f[f.len() - 3..];
                if !outer.iter().any(|n| n.starts_with("main.main")) {
                    return Err(format!("outermost frames {outer:?}"));
                }
                expect_eq("goids", goids(s), vec![goid])?;
            }
            Ok(())
        })();
        self.check(&format!("{label}: 3000-deep recursion walked whole"), result);
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
            expect_eq("innermost frame", f.first().map(String::as_str), Some("main.spinAtBottom"))?;
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
        self.check("go1.19: deep recursion, innermost frames and goid (depth limited by golang/go#58432)", result);
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
                return Err(format!("no syscall sample in main.syscallLoop of goroutine {goid}"));
            }
            let report = self.sample(demo.pid(), &["--state", "Grunning"])?;
            for s in &stacks(&report) {
                expect_eq("state", s["state"].as_str().unwrap_or(""), "running")?;
            }
            Ok(())
        })();
        self.check(&format!("{label}: --state syscall / Grunning filtering"), result);
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
            expect_eq("innermost frame", f.first().map(String::as_str), Some("main.leaf"))?;
            expect_eq("goids", goids(top), vec![goid])?;
            expect_eq("caller of the leaf", f.get(1).map(String::as_str), Some("main.callsLeaf"))?;
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
        f.iter().take(frames).cloned().collect::<Vec<_>>().join(" <- "),
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
        println!("  started {} {all:?}: pid {}, goids {:?}", exe.display(), p.pid(), p.goids);
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
