//! Stack-overflow hunting end to end: exact depth of stacks far deeper than the kernel
//! walk, recursion cycles found and named with their entry point, a dying target still reported,
//! no false positive on a shallow program.

use std::{process::Command, time::Duration};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, Variant, build_go, exclusive, primary_go_toolchains,
    report::{functions, stacks},
    run_stacksampler, stacksampler_bin, workspace_root,
};

/// Line number of the first line of `tests/go/deep/main.go` containing `needle`.
fn source_line(needle: &str) -> u64 {
    let src = std::fs::read_to_string(workspace_root().join("tests/go/deep/main.go"))
        .expect("read deep/main.go");
    src.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in deep/main.go"))
}

fn start(tc: &stacksampler_tests::GoToolchain, args: &[&str]) -> (GoProcess, u64) {
    let exe = build_go("deep", tc, Variant::Normal);
    let mut p = GoProcess::spawn(&exe, args);
    let goid = p.wait_for_line("goid").parse().expect("goid");
    p.wait_for_line("ready");
    (p, goid)
}

fn sample(pid: u32, secs: &str) -> Value {
    let pid = pid.to_string();
    let out = run_stacksampler(&["--pid", &pid, "--duration", secs, "--format", "json"]);
    assert!(out.status.success(), "{}", out.stderr);
    out.json()
}

fn recursion_findings(report: &Value) -> Vec<Value> {
    report["diagnosis"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter(|f| f["kind"] == "runaway_recursion")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn cycle_functions(finding: &Value) -> Vec<String> {
    finding["data"]["cycle"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|f| f["function"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn mutual_recursion_20000_deep_is_measured_exactly() {
    let _serial = exclusive();
    let entry_line = source_line("recA(*depth)");
    for tc in primary_go_toolchains() {
        let (target, goid) = start(&tc, &["-mode", "mutual", "-depth", "20000"]);
        let report = sample(target.pid(), "3");
        let label = tc.label();
        // recA(20000) .. recX(0): 20,001 recursive frames, + spin (a frameless leaf: its caller
        // comes from the return address at the stack pointer) + the goroutine's closure +
        // runtime.goexit = 20,004. (Samples taken while the scheduler preempts it are on the
        // system stack and end elsewhere.)
        let deep: Vec<Value> = stacks(&report)
            .into_iter()
            .filter(|s| {
                s["goids"]
                    .as_array()
                    .is_some_and(|g| g.contains(&Value::from(goid)))
            })
            .filter(|s| functions(s).first().map(String::as_str) == Some("main.spin"))
            .collect();
        assert!(!deep.is_empty(), "{label}: no sample of goroutine {goid}");
        for s in &deep {
            assert_eq!(s["depth"], 20004, "{label}: depth");
            assert_eq!(s["truncated"], false, "{label}");
            let f = functions(s);
            assert_eq!(f[0], "main.spin", "{label}");
            assert_eq!(
                f.last().map(String::as_str),
                Some("runtime.goexit"),
                "{label}"
            );
            // Head + tail kept, the middle counted: the frame list is short, depth is exact.
            let kept = f.len() as u64 - 1 + s["gap_frames"].as_u64().unwrap_or(0);
            assert_eq!(
                kept,
                20004,
                "{label}: kept {} + gap {}",
                f.len(),
                s["gap_frames"]
            );
        }
        let findings = recursion_findings(&report);
        assert_eq!(findings.len(), 1, "{label}: {findings:?}");
        let finding = &findings[0];
        let mut cycle = cycle_functions(finding);
        cycle.sort();
        assert_eq!(cycle, ["main.recA", "main.recB"], "{label}");
        let data = &finding["data"];
        assert_eq!(data["entry"]["function"], "main.main.func1", "{label}");
        assert_eq!(data["entry"]["line"], entry_line, "{label}");
        // The deepest row: 20,004, or a few more when the scheduler's frames on the system
        // stack are counted on top of it.
        let depth = data["depth"].as_u64().unwrap_or(0);
        assert!((20_004..=20_020).contains(&depth), "{label}: depth {depth}");
        let repeat = data["repeat"].as_u64().unwrap_or(0);
        assert!(
            (9_999..=10_000).contains(&repeat),
            "{label}: repeat {repeat}"
        );
        assert_eq!(data["goids"], Value::from(vec![goid]), "{label}");
        let bytes = data["stack_bytes"].as_u64().unwrap_or(0);
        assert!(bytes > 20_000 * 16, "{label}: stack bytes {bytes}");
    }
}

#[test]
fn stringer_recursion_through_sprintf_is_a_six_frame_cycle() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("toolchain");
    let (target, _) = start(&tc, &["-mode", "stringer", "-depth", "3000"]);
    let report = sample(target.pid(), "3");
    let findings = recursion_findings(&report);
    assert_eq!(findings.len(), 1, "{findings:?}");
    let cycle = cycle_functions(&findings[0]);
    assert_eq!(cycle.len(), 6, "cycle {cycle:?}");
    for needle in [
        "main.T.String",
        "fmt.Sprintf",
        "fmt.(*pp).doPrintf",
        "fmt.(*pp).printArg",
        "fmt.(*pp).handleMethods",
    ] {
        assert!(
            cycle.iter().any(|f| f == needle),
            "{needle} not in {cycle:?}"
        );
    }
    let repeat = findings[0]["data"]["repeat"].as_u64().unwrap_or(0);
    assert!((2_990..=3_001).contains(&repeat), "repeat {repeat}");
    assert_eq!(findings[0]["data"]["entry"]["function"], "main.main.func1");
}

#[test]
fn overflowing_target_is_reported_before_it_dies() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("toolchain");
    let exe = build_go("deep", &tc, Variant::Normal);
    let mut cmd = Command::new(&exe);
    cmd.args([
        "-mode",
        "overflow",
        "-maxstack",
        &(64u64 << 20).to_string(),
        "-seconds",
        "60",
    ])
    .stderr(std::process::Stdio::piped());
    let mut target = GoProcess::spawn_command(&mut cmd);
    target.wait_for_line("ready");
    let pid = target.pid().to_string();
    let sampler = std::process::Command::new(stacksampler_bin())
        .args(["--pid", &pid, "--duration", "60", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start stacksampler");
    // Let the sampler attach, then start the runaway recursion.
    std::thread::sleep(Duration::from_secs(2));
    target.write_stdin("go\n");
    let out = sampler.wait_with_output().expect("stacksampler");
    let status = target
        .wait_timeout(Duration::from_secs(30))
        .expect("the target died of its overflow");
    assert!(!status.success(), "the target should die of stack overflow");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("exited"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    // The target's death is in the report, with its cause.
    assert_eq!(report["ended_by"], "target_died");
    assert_eq!(
        report["fatal"]["message"], "stack overflow",
        "{}",
        report["fatal"]
    );
    let findings = recursion_findings(&report);
    assert!(
        !findings.is_empty(),
        "no recursion finding: {}",
        report["diagnosis"]
    );
    let f = &findings[0];
    assert_eq!(cycle_functions(f), ["main.overflow"]);
    assert_eq!(f["data"]["entry"]["function"], "main.main.func1");
    assert_eq!(f["data"]["entry"]["line"], source_line("overflow(0)"));
    // The limit is the target's own (debug.SetMaxStack), read from runtime.maxstacksize.
    assert_eq!(f["data"]["limit_bytes"], 64u64 << 20);
    assert_eq!(f["data"]["limit_from_target"], true);
    // Deep samples were caught: far past the kernel's 8192-frame walk.
    let depth = f["data"]["depth"].as_u64().unwrap_or(0);
    assert!(depth > 20_000, "deepest sample {depth} frames");
}

#[test]
fn shallow_program_has_no_recursion_finding() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("toolchain");
    let (target, _) = start(&tc, &["-mode", "shallow"]);
    let report = sample(target.pid(), "2");
    assert!(report["samples"]["kept"].as_u64().unwrap_or(0) > 50);
    assert!(
        recursion_findings(&report).is_empty(),
        "{}",
        report["diagnosis"]
    );
    assert_eq!(functions(&stacks(&report)[0])[0], "main.spin");
}

/// A recursion too deep to read whole at every sample: the continuation's read budget holds,
/// the samples past it keep their head, are marked truncated and counted in the warning, and
/// the samples read whole still have the exact depth.
#[test]
fn a_million_frames_at_999_hz_stay_within_the_read_budget_and_say_so() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("toolchain");
    let depth: u64 = 1_000_000;
    let (target, goid) = start(&tc, &["-mode", "mutual", "-depth", &depth.to_string()]);
    let pid = target.pid().to_string();
    let out = run_stacksampler(&[
        "--pid",
        &pid,
        "--duration",
        "3",
        "--frequency",
        "999",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let report = out.json();
    // "N samples of deep stacks kept only their innermost frames ... 128 MiB/s ..."
    let warning = report["warnings"]
        .as_array()
        .and_then(|w| {
            w.iter()
                .filter_map(Value::as_str)
                .find(|w| w.contains("kept only their innermost frames"))
        })
        .unwrap_or_else(|| panic!("no read-budget warning: {}", report["warnings"]))
        .to_owned();
    assert!(warning.contains("128 MiB/s"), "{warning}");
    let over_budget: u64 = warning
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(over_budget > 0, "{warning}");

    // Truncated samples of the goroutine, wherever it was (spinning, preempted), and those at
    // the bottom of the recursion.
    let (mut whole, mut cut, mut cut_anywhere) = (0u64, 0u64, 0u64);
    for s in stacks(&report) {
        if !s["goids"]
            .as_array()
            .is_some_and(|g| g.contains(&Value::from(goid)))
        {
            continue;
        }
        let count = s["count"].as_u64().unwrap_or(0);
        if s["truncated"] == true {
            cut_anywhere += count;
        }
        if functions(&s).first().map(String::as_str) != Some("main.spin") {
            continue;
        }
        if s["truncated"] == true {
            // The head only: its depth is a lower bound, below the real one.
            assert!(s["depth"].as_u64().unwrap_or(u64::MAX) < depth, "{s}");
            cut += count;
        } else {
            // recA(depth) .. recX(0), spin, the goroutine's closure, runtime.goexit.
            assert_eq!(s["depth"], depth + 4);
            whole += count;
        }
    }
    assert!(whole >= 1, "no sample read whole ({cut} cut)");
    assert!(cut >= 1, "no sample at the bottom was cut");
    assert!(
        cut_anywhere >= over_budget,
        "{cut_anywhere} truncated samples of the goroutine, {over_budget} counted past the budget"
    );
}
