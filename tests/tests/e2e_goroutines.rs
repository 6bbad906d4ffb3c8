//! End to end, goroutine awareness: the real `stacksampler` binary samples Go programs built by
//! every toolchain the test machine has (1.19 to 1.27), normal, stripped and PIE+cgo, and the
//! goroutine ids, states and labels it reports are checked against what the programs print.
//!
//! - `tests/go/goroutines`: a spinner (`running`), a goroutine reading `/dev/zero` in a loop
//!   (`syscall`) and a spinner under `pprof.Do(ctx, pprof.Labels("req", "42"), ...)`.
//! - `tests/go/stackgrow`: one goroutine growing its stack over and over; samples taken on the
//!   system stack in `runtime.newstack` must carry its goid and its whole recursion.
//! - An unsupported Go release (the version string patched to go1.99 in a stripped copy): one
//!   warning, state `unknown`, no goroutine ids.

use serde_json::Value;
use stacksampler_tests::{
    GoToolchain, Variant, build_go, exclusive, go_toolchains,
    goroutines::{
        MIN_BUSY_SAMPLES, Started, check_goroutines, claiming_go_minor, goids, has_function, label,
    },
    primary_go_toolchains,
    report::{count_where, functions, stacks},
    run_stacksampler,
};

/// Seconds each matrix run samples.
const MATRIX_SECONDS: &str = "2";
/// Seconds the stack growth test samples.
const GROWTH_SECONDS: &str = "3";
/// The pseudo-frame marking a system-stack switch in reports.
const SWITCH_FRAME: &str = "--- switched to goroutine stack ---";

/// Runs stacksampler on `pid` for `seconds` with `extra` arguments; returns the json report
/// and stderr.
fn sample(pid: &str, seconds: &str, extra: &[&str]) -> (Value, String) {
    let mut args = vec!["--pid", pid, "--duration", seconds, "--format", "json"];
    args.extend_from_slice(extra);
    let out = run_stacksampler(&args);
    assert!(
        out.status.success(),
        "stacksampler {args:?} failed: {}",
        out.stderr
    );
    (out.json(), out.stderr)
}

/// Every toolchain x every variant: real goids, `running`, `syscall`, labels.
#[test]
fn goroutine_matrix() {
    let _serial = exclusive();
    let mut passed = Vec::new();
    for tc in go_toolchains() {
        for variant in Variant::ALL {
            let exe = build_go("goroutines", &tc, variant);
            let started = Started::spawn(&exe);
            let what = format!("{} {variant:?}", tc.label());
            let (report, _) = sample(&started.pid(), MATRIX_SECONDS, &[]);
            passed.push(check_goroutines(&what, &report, &started));
        }
    }
    for line in &passed {
        eprintln!("passed: {line}");
    }
}

/// `--goid N` keeps one goroutine; `--label key=value` keeps labelled ones.
#[test]
fn goid_and_label_filters() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let exe = build_go("goroutines", &tc, Variant::Normal);
        let started = Started::spawn(&exe);
        let spinner = started.goid("spinner");
        let what = tc.label();

        let goid = spinner.to_string();
        let (report, _) = sample(&started.pid(), MATRIX_SECONDS, &["--goid", &goid]);
        let kept = report["samples"]["kept"].as_u64().unwrap_or(0);
        assert!(kept >= MIN_BUSY_SAMPLES, "{what}: --goid kept {kept}");
        for s in stacks(&report) {
            assert_eq!(goids(&s), [spinner], "{what}: --goid {spinner} kept {s}");
        }

        let (report, _) = sample(&started.pid(), MATRIX_SECONDS, &["--label", "req=42"]);
        let kept = report["samples"]["kept"].as_u64().unwrap_or(0);
        assert!(kept >= MIN_BUSY_SAMPLES, "{what}: --label kept {kept}");
        for s in stacks(&report) {
            assert_eq!(label(&s, "req").as_deref(), Some("42"), "{what}: {s}");
            assert_eq!(goids(&s), [started.goid("labelled")], "{what}: {s}");
        }
    }
}

/// Samples taken in `runtime.newstack`/`copystack` on the system stack carry the growing
/// goroutine's id and its whole recursion below the switch point; text shows the separator.
#[test]
fn stack_growth_switches_to_the_goroutine_stack() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        for variant in [Variant::Normal, Variant::Stripped] {
            check_growth(&tc, variant);
        }
    }
}

fn check_growth(tc: &GoToolchain, variant: Variant) {
    let what = format!("{} {variant:?}", tc.label());
    let exe = build_go("stackgrow", tc, variant);
    let started = Started::spawn(&exe);
    let grower = started.goid("grower");
    let dir = tempfile::tempdir().expect("temp dir");
    let text_path = dir.path().join("report.txt");
    let text_arg = text_path.to_string_lossy().into_owned();
    let json_path = dir.path().join("report.json");
    let json_arg = json_path.to_string_lossy().into_owned();
    let out = run_stacksampler(&[
        "--pid",
        &started.pid(),
        "--duration",
        GROWTH_SECONDS,
        "-o",
        &text_arg,
        "-o",
        &json_arg,
    ]);
    assert!(out.status.success(), "{what}: {}", out.stderr);
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("json report")).expect("json");

    let mut growth_samples = 0;
    let mut complete = 0;
    let mut deepest = 0;
    for s in stacks(&report) {
        let names = functions(&s);
        let Some(at) = names.iter().position(|f| f == SWITCH_FRAME) else {
            continue;
        };
        let system = &names[..at];
        let goroutine = &names[at + 1..];
        // Growth enters runtime.newstack through runtime.morestack (a copystack from a GC
        // worker shrinking a stack runs for, and is reported as, that worker goroutine).
        if !system
            .iter()
            .any(|f| f == "runtime.newstack" || f == "runtime.copystack")
            || !system.iter().any(|f| f.starts_with("runtime.morestack"))
        {
            continue;
        }
        // The system side ends at the switch: runtime.newstack's frame record links to the
        // goroutine's frames (runtime.morestack makes no frame), and the walk leaves them to
        // the goroutine side, wherever the two stacks lie.
        assert!(
            system
                .last()
                .is_some_and(|f| f.starts_with("runtime.morestack")),
            "{what}: the system side goes past runtime.morestack: {system:?}"
        );
        // Other goroutines grow too (a GC worker, a runtime goroutine): only the recursion's
        // growth is checked, and it must be attributed to the growing goroutine.
        if goroutine.first().map(String::as_str) != Some("main.grow") {
            continue;
        }
        assert_eq!(goids(&s), [grower], "{what}: goids of a growth sample");
        // Below the switch: the recursion, down to the goroutine's entry.
        let recursion = goroutine.iter().filter(|f| *f == "main.grow").count();
        growth_samples += s["count"].as_u64().unwrap_or(0);
        if goroutine.last().map(String::as_str) != Some("runtime.goexit") {
            // Only while copystack rewrites the saved frame pointers (state copystack) does
            // the chain mix old and new stack addresses, and the walk stops early.
            assert_eq!(
                s["state"], "copystack",
                "{what}: the goroutine side must reach runtime.goexit: {goroutine:?}"
            );
            continue;
        }
        assert!(
            goroutine.iter().any(|f| f == "main.main.func1"),
            "{what}: no main.main.func1 below the switch: {goroutine:?} (state {}, count {})",
            s["state"],
            s["count"]
        );
        assert_eq!(
            recursion + 2,
            goroutine.len(),
            "{what}: the goroutine side is grow x {recursion}, func1, goexit: {goroutine:?}"
        );
        complete += s["count"].as_u64().unwrap_or(0);
        deepest = deepest.max(recursion);
    }
    assert!(
        growth_samples >= 3,
        "{what}: {growth_samples} samples in newstack/copystack with a switch"
    );
    assert!(complete >= 1, "{what}: no complete growth stack");
    // The program grows past 1000 frames of 4 KiB: some growth copies a deep stack.
    assert!(
        deepest >= 100,
        "{what}: deepest complete recursion at a growth {deepest}"
    );
    let text = std::fs::read_to_string(&text_path).expect("text report");
    assert!(
        text.lines().any(|l| l.trim() == SWITCH_FRAME),
        "{what}: text report has no separator line"
    );
    eprintln!(
        "passed: {what}: {growth_samples} growth samples of goroutine {grower} ({complete} \
         complete), recursion up to {deepest}"
    );
}

/// An unknown Go release without DWARF: one warning, state `unknown`, no goids, no labels.
#[test]
fn unsupported_version_reports_unknown() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a primary toolchain");
    let exe = claiming_go_minor(&build_go("goroutines", &tc, Variant::Stripped), "99");
    let started = Started::spawn(&exe);
    let (report, stderr) = sample(&started.pid(), MATRIX_SECONDS, &[]);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "warnings: {stderr}");
    assert!(warnings[0].contains("go1.99"), "{warnings:?}");
    assert_eq!(
        report["warnings"].as_array().map(Vec::len),
        Some(1),
        "{}",
        report["warnings"]
    );
    let kept = report["samples"]["kept"].as_u64().unwrap_or(0);
    assert!(kept >= MIN_BUSY_SAMPLES, "kept {kept}");
    for s in stacks(&report) {
        assert_eq!(s["state"], "unknown", "{s}");
        assert!(goids(&s).is_empty(), "goids of {s}");
        assert_eq!(s["labels"], serde_json::json!({}), "{s}");
    }
    // Symbols still work: the spinner is named.
    assert!(count_where(&report, |s| has_function(s, "main.spinUser")) >= MIN_BUSY_SAMPLES);
}
