//! `stacksampler record --wall` on `tests/go/wallclock`, whose goroutines' wall-clock time is
//! known: a worker that sleeps 90% of the time in `sleepPart` and computes 10% in
//! `computePart`; a leak of 50 goroutines a second blocked in `leakSend`; a program whose every
//! goroutine is blocked. For the oldest and newest Go. Needs root.

use std::{path::Path, process::Command};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, go_tool_pprof, primary_go_toolchains,
    report::{functions, stacks},
    run_stacksampler,
};

/// Seconds each run records.
const RUN_SECS: &str = "6";
/// Seconds the sleep/compute split is recorded: its 1 s cycle is seen by 10 snapshots a second,
/// and under scheduling jitter a cycle's 100 ms compute window gets 0, 1 or 2 of them (a late
/// snapshot also weighs its whole gap), so the share is an average over cycles.
const SPLIT_RUN_SECS: &str = "12";
/// How far the measured shares may be from 90% / 10%, in percentage points. Measured on this
/// 2-core machine at load 7-10 over 12 s: sleep 86.0-89.9%, compute 7.6-11.5% (6 s runs once
/// gave 4.9% compute).
const SPLIT_TOLERANCE_POINTS: f64 = 5.0;
/// Seconds the all-blocked program lives: both of its runs, and their start.
const BLOCKED_SECS: u32 = 14;

/// The wall-clock rows of a json report.
fn wall_rows(report: &Value) -> Vec<Value> {
    stacks(report)
        .into_iter()
        .filter(|s| s["kind"] == "wall")
        .collect()
}

/// Seconds of the wall rows of goroutine `goid` whose stack holds `function`.
fn wall_secs_in(report: &Value, goid: u64, function: &str) -> f64 {
    wall_rows(report)
        .iter()
        .filter(|s| {
            s["goids"]
                .as_array()
                .is_some_and(|g| g.contains(&goid.into()))
        })
        .filter(|s| functions(s).iter().any(|f| f == function))
        .map(|s| s["wall_secs"].as_f64().expect("wall_secs"))
        .sum()
}

/// The line of `tests/go/wallclock/main.go` holding `needle`.
fn source_line(needle: &str) -> u64 {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/wallclock/main.go");
    let text = std::fs::read_to_string(&src).expect("read main.go");
    let at = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {}", src.display()));
    at as u64 + 1
}

/// Starts `wallclock -mode MODE` (a normal build), to end by itself after `seconds` (or when
/// its stdin closes).
fn start(tc: &GoToolchain, mode: &str, seconds: u32) -> GoProcess {
    start_variant(tc, Variant::Normal, mode, seconds)
}

fn start_variant(tc: &GoToolchain, variant: Variant, mode: &str, seconds: u32) -> GoProcess {
    let exe = build_go("wallclock", tc, variant);
    GoProcess::spawn(&exe, &["-mode", mode, "-seconds", &seconds.to_string()])
}

/// Records `pid` with `--wall` for `secs` and `extra` flags; returns the json report.
fn record_wall(pid: u32, secs: &str, extra: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut args = vec![
        "record",
        "--wall",
        "--pid",
        &pid,
        "--duration",
        secs,
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = run_stacksampler(&args);
    assert!(
        out.status.success(),
        "record --wall failed:\n{}",
        out.stderr
    );
    out.json()
}

#[test]
fn wall_shares_follow_sleep_and_compute_and_cpu_samples_stay_apart() {
    let _guard = exclusive();
    for tc in primary_go_toolchains() {
        let mut target = start(&tc, "split", 60);
        let worker: u64 = target.wait_for_line("goid worker").parse().expect("goid");
        target.wait_for_line("ready");
        let dir = tempfile::tempdir().expect("temp dir");
        let folded = dir.path().join("wall.folded");
        let pprof = dir.path().join("wall.pb.gz");
        let json = dir.path().join("wall.json");
        let pid = target.pid().to_string();
        let out = run_stacksampler(&[
            "record",
            "--wall",
            "--pid",
            &pid,
            "--duration",
            SPLIT_RUN_SECS,
            "-o",
            json.to_str().unwrap(),
            "-o",
            folded.to_str().unwrap(),
            "-o",
            pprof.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}: {}", tc.label(), out.stderr);
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("json");
        let wall = &report["wall"];
        assert_eq!(wall["frequency_hz"], 10, "{}", tc.label());
        assert!(wall["snapshots"].as_u64().unwrap() >= 50, "{wall}");

        let sleep = wall_secs_in(&report, worker, "main.sleepPart");
        let compute = wall_secs_in(&report, worker, "main.computePart");
        // A running worker whose live stack no CPU sample gave yet: counted, not placed.
        let uncaptured = wall_secs_in(&report, worker, "[running, stack not captured]");
        let total = sleep + compute + uncaptured;
        assert!(total > 5.0, "{}: worker wall time {total} s", tc.label());
        let (sleep_pct, compute_pct) = (sleep * 100.0 / total, compute * 100.0 / total);
        eprintln!(
            "{}: worker wall time {total:.2} s: sleepPart {sleep_pct:.1}%, computePart \
             {compute_pct:.1}%, not captured {:.1}%",
            tc.label(),
            uncaptured * 100.0 / total
        );
        assert!(
            (sleep_pct - 90.0).abs() <= SPLIT_TOLERANCE_POINTS,
            "{}: sleepPart {sleep_pct:.1}%",
            tc.label()
        );
        assert!(
            (compute_pct - 10.0).abs() <= SPLIT_TOLERANCE_POINTS,
            "{}: computePart {compute_pct:.1}%",
            tc.label()
        );

        // CPU samples are rows of their own: computePart only, never the sleep.
        let cpu: Vec<Value> = stacks(&report)
            .into_iter()
            .filter(|s| s["kind"] == "cpu")
            .collect();
        assert!(
            cpu.iter()
                .any(|s| functions(s).iter().any(|f| f == "main.computePart")),
            "{}: no CPU row in computePart",
            tc.label()
        );
        assert!(
            !cpu.iter()
                .any(|s| functions(s).iter().any(|f| f == "main.sleepPart")),
            "{}: a CPU row in sleepPart",
            tc.label()
        );
        // Folded: the kind is the root frame.
        let folded = std::fs::read_to_string(&folded).unwrap();
        assert!(
            folded
                .lines()
                .any(|l| l.starts_with("[wall];") && l.contains("main.sleepPart")),
            "{folded}"
        );
        assert!(
            folded
                .lines()
                .all(|l| l.starts_with("[wall];") || l.starts_with("[cpu];")),
            "{folded}"
        );
        // pprof: a wall sample type beside the CPU ones, and the kind as a label.
        let (raw, _) = go_tool_pprof(&tc.go, &["-raw"], &pprof);
        assert!(
            raw.contains("samples/count cpu/nanoseconds wall/nanoseconds"),
            "{}",
            &raw[..raw.len().min(600)]
        );
        let (top, _) = go_tool_pprof(
            &tc.go,
            &["-top", "-sample_index=wall", "-tagfocus=kind=wall"],
            &pprof,
        );
        assert!(top.contains("main.sleepPart"), "{top}");
    }
}

/// Every build: a stripped binary's goroutine list is found from code, a PIE's is relocated; the
/// names come from `.gopclntab` where there is no DWARF.
#[test]
fn a_leak_is_found_with_its_blocking_line_and_creation_site() {
    let _guard = exclusive();
    let blocking_line = source_line("leaked <- i");
    let go_line = source_line("go leakSend(i)");
    for (tc, variant) in primary_go_toolchains()
        .into_iter()
        .flat_map(|tc| Variant::ALL.map(|v| (tc.clone(), v)))
    {
        let label = format!("{} {variant:?}", tc.label());
        let mut target = start_variant(&tc, variant, "leak", 60);
        target.wait_for_line("ready");
        let report = record_wall(target.pid(), RUN_SECS, &[]);
        let growth: Vec<&Value> = report["diagnosis"]
            .as_array()
            .expect("diagnosis")
            .iter()
            .filter(|f| f["kind"] == "goroutine_growth")
            .collect();
        assert_eq!(growth.len(), 1, "{label}: {growth:?}");
        let d = &growth[0]["data"];
        eprintln!("{label}: {}", growth[0]["summary"]);
        assert_eq!(d["status"], "chan send", "{label}: {d}");
        assert_eq!(d["blocking"]["function"], "main.leakSend", "{label}: {d}");
        assert_eq!(d["blocking"]["line"], blocking_line, "{label}: {d}");
        let creator = d["created_by"]["function"].as_str().expect("created_by");
        assert!(creator.starts_with("main.spawnLeaks"), "{label}: {d}");
        assert_eq!(d["created_by"]["line"], go_line, "{label}: {d}");
        let (first, last) = (d["first"].as_u64().unwrap(), d["last"].as_u64().unwrap());
        assert!(last > first + 100, "{label}: {d}");
        // 50 a second by the program's clock; fewer when the machine is busy, never more.
        let rate = d["rate_per_s"].as_f64().unwrap();
        assert!((15.0..=55.0).contains(&rate), "{label}: {d}");
    }
}

#[test]
fn every_goroutine_blocked_is_found_and_filters_apply_to_wall_samples() {
    let _guard = exclusive();
    for tc in primary_go_toolchains() {
        // It reads no stdin (that would be a goroutine in a system call): it ends by itself.
        let mut target = start(&tc, "blocked", BLOCKED_SECS);
        target.wait_for_line("ready");
        let report = record_wall(
            target.pid(),
            RUN_SECS,
            &["--state", "waiting", "--label", "role=stuck"],
        );
        let blocked: Vec<&Value> = report["diagnosis"]
            .as_array()
            .expect("diagnosis")
            .iter()
            .filter(|f| f["kind"] == "all_goroutines_blocked")
            .collect();
        assert_eq!(
            blocked.len(),
            1,
            "{}: {:?}",
            tc.label(),
            report["diagnosis"]
        );
        let d = &blocked[0]["data"];
        // 4 on a channel, 4 on a mutex, main on its timer's channel.
        assert_eq!(d["goroutines"], 9, "{d}");
        assert!(d["snapshots"].as_u64().unwrap() >= 50, "{d}");

        // The filters kept the 8 labelled goroutines only, all waiting.
        let rows = wall_rows(&report);
        assert_eq!(rows.len(), 2, "{}: {rows:?}", tc.label());
        for row in &rows {
            assert_eq!(row["state"], "waiting", "{row}");
            assert_eq!(row["labels"]["role"], "stuck", "{row}");
            assert_eq!(row["goroutines"], 4, "{row}");
        }
        let wall = &report["wall"];
        assert!(
            wall["kept"].as_u64().unwrap() < wall["samples"].as_u64().unwrap(),
            "{wall}"
        );

        // A state none of them is in keeps no wall sample.
        let running = record_wall(target.pid(), "1", &["--state", "running"]);
        assert!(wall_rows(&running).is_empty(), "{}", running["stacks"]);
        assert!(running["wall"]["samples"].as_u64().unwrap() > 0);
        assert_eq!(running["wall"]["kept"], 0);
        assert!(
            target
                .wait_timeout(std::time::Duration::from_secs(u64::from(BLOCKED_SECS)))
                .is_some(),
            "the blocked program did not end by itself"
        );
    }
}

#[test]
fn wall_on_a_program_not_written_in_go_is_one_line_error() {
    // Ends by itself soon after the run.
    let mut sleeper = GoProcess::spawn_command(Command::new("sleep").arg("2"));
    let pid = sleeper.pid().to_string();
    let out = run_stacksampler(&["record", "--wall", "--pid", &pid, "--duration", "1"]);
    assert!(!out.status.success(), "{}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("stacksampler: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].contains("wall-clock snapshots: ") && errors[0].ends_with("is not a Go program"),
        "{}",
        errors[0]
    );
    assert_eq!(
        errors[0].matches("is not a Go program").count(),
        1,
        "{}",
        errors[0]
    );
    assert!(
        sleeper
            .wait_timeout(std::time::Duration::from_secs(5))
            .is_some()
    );
}
