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

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use serde_json::Value;
use stacksampler::goruntime::{self, buildinfo};
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, go_toolchains, primary_go_toolchains,
    report::{count_where, functions, stacks},
    run_stacksampler,
};

/// Seconds each matrix run samples.
const MATRIX_SECONDS: &str = "2";
/// Seconds the stack growth test samples.
const GROWTH_SECONDS: &str = "3";
/// The pseudo-frame marking a system-stack switch in reports.
const SWITCH_FRAME: &str = "--- switched to goroutine stack ---";
/// Fewest samples a busy goroutine must get in a matrix run (2 s at 99 Hz; three busy
/// goroutines share 2 CPUs with whatever else the machine runs).
const MIN_BUSY_SAMPLES: u64 = 8;

/// A started test program and the goroutine ids it printed (`goid <role> <id>` lines).
struct Started {
    process: GoProcess,
    goids: Vec<(String, u64)>,
}

impl Started {
    fn spawn(exe: &std::path::Path) -> Self {
        let mut process = GoProcess::spawn(exe, &["-seconds", "60"]);
        let mut goids = Vec::new();
        loop {
            let line = process
                .read_line()
                .unwrap_or_else(|| panic!("{} printed nothing", exe.display()));
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
        Self { process, goids }
    }

    fn goid(&self, role: &str) -> u64 {
        self.goids
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, id)| *id)
            .unwrap_or_else(|| panic!("no goid printed for {role}: {:?}", self.goids))
    }

    fn pid(&self) -> String {
        self.process.pid().to_string()
    }
}

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

fn goids(stack: &Value) -> Vec<u64> {
    stack["goids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Whether the row holds `name` on the stack of a user goroutine. A sample taken on the system
/// stack after the scheduler dropped the goroutine (`mcall` -> `goschedImpl` once `m.curg` is
/// cleared) still walks into the goroutine's frames but belongs to the scheduler (goroutine 0,
/// `idle`): it is not the goroutine's sample.
fn has_function(stack: &Value, name: &str) -> bool {
    let scheduler = stack["goids"]
        .as_array()
        .is_some_and(|g| g == &[Value::from(0)]);
    !scheduler && functions(stack).iter().any(|f| f == name)
}

fn label(stack: &Value, key: &str) -> Option<String> {
    stack["labels"][key].as_str().map(str::to_owned)
}

/// Checks one matrix run of `tests/go/goroutines`; returns a one-line summary.
fn check_goroutines(what: &str, report: &Value, started: &Started) -> String {
    let spinner = started.goid("spinner");
    let syscaller = started.goid("syscaller");
    let labelled = started.goid("labelled");
    let all = stacks(report);

    // The spinner: running, with its own goid and nothing else, never labelled.
    let spin: Vec<&Value> = all
        .iter()
        .filter(|s| has_function(s, "main.spinUser"))
        .collect();
    let spin_samples: u64 = spin.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
    assert!(
        spin_samples >= MIN_BUSY_SAMPLES,
        "{what}: {spin_samples} spinner samples"
    );
    for s in &spin {
        assert_eq!(goids(s), [spinner], "{what}: spinner row {s}");
        assert_eq!(s["labels"], serde_json::json!({}), "{what}: spinner labels");
    }
    let spin_running = count_where(report, |s| {
        has_function(s, "main.spinUser") && s["state"] == "running"
    });
    assert!(
        spin_running * 10 >= spin_samples * 9,
        "{what}: only {spin_running} of {spin_samples} spinner samples are running"
    );

    // The syscall loop: `syscall`, with its goid.
    let sys: Vec<&Value> = all
        .iter()
        .filter(|s| has_function(s, "main.readZero"))
        .collect();
    let sys_samples: u64 = sys.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
    assert!(
        sys_samples >= MIN_BUSY_SAMPLES,
        "{what}: {sys_samples} syscall-loop samples"
    );
    for s in &sys {
        assert_eq!(goids(s), [syscaller], "{what}: syscall row {s}");
    }
    let in_syscall = count_where(report, |s| {
        has_function(s, "main.readZero") && s["state"] == "syscall"
    });
    assert!(
        in_syscall * 2 >= sys_samples,
        "{what}: only {in_syscall} of {sys_samples} syscall-loop samples are in state syscall"
    );

    // The labelled spinner: running, its goid, req=42.
    let lab: Vec<&Value> = all
        .iter()
        .filter(|s| has_function(s, "main.spinLabelled"))
        .collect();
    let lab_samples: u64 = lab.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
    assert!(
        lab_samples >= MIN_BUSY_SAMPLES,
        "{what}: {lab_samples} labelled samples"
    );
    for s in &lab {
        assert_eq!(goids(s), [labelled], "{what}: labelled row {s}");
        assert_eq!(
            label(s, "req").as_deref(),
            Some("42"),
            "{what}: labels of {s}"
        );
    }
    format!(
        "{what}: spinner {spinner} running {spin_running}/{spin_samples}, syscaller {syscaller} \
         syscall {in_syscall}/{sys_samples}, labelled {labelled} req=42 {lab_samples}"
    )
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

/// A copy of `exe` whose build information names go1.99 (minor digits patched), executable.
fn patched_to_go_1_99(exe: &std::path::Path) -> PathBuf {
    let binary = goruntime::inspect(exe).expect("inspect");
    let real = binary.build_info.expect("build info").version;
    let mut data = std::fs::read(exe).expect("read binary");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let magic = find(&data, buildinfo::MAGIC).expect("build info magic");
    let at = magic + find(&data[magic..], real.as_bytes()).expect("version in build info");
    let minor_at = at + "go1.".len();
    data[minor_at] = b'9';
    data[minor_at + 1] = b'9';
    let out = exe.with_file_name(format!(
        "{}-go1.99",
        exe.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&out, &data).expect("write patched binary");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    out
}

/// An unknown Go release without DWARF: one warning, state `unknown`, no goids, no labels.
#[test]
fn unsupported_version_reports_unknown() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a primary toolchain");
    let exe = patched_to_go_1_99(&build_go("goroutines", &tc, Variant::Stripped));
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
