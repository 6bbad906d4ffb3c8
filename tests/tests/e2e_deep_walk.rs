//! The kernel's frame-pointer walk on a deep stack whose outer part changes between samples
//! while every frame above the change is rebuilt with the same words at the same addresses
//! (`tests/go/deepwalk`): the case a walk that stopped at a remembered frame would get wrong.
//! Every sample's walk (from bulk copies of the stack) must equal the record-by-record walk
//! (`STACKSAMPLER_VERIFY_WALK=1`), and no sample may show the outer part of the other phase.
//! Past `--max-frames`, where user space reads the rest of the stack after the sample, every
//! continuation must be walked to the root and counted exactly.

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, RunOutput, Variant, build_go, exclusive, primary_go_toolchains,
    report::{functions, stacks},
    run_stacksampler_with_env, workspace_root,
};

/// Frames above `main.fork`'s caller (`main.outer`'s recursion) and below it (`main.inner`'s).
const OUTER: u64 = 100;
const INNER: u64 = 4000;
/// `main.inner`'s recursion past the kernel walk (8,192 frames by default).
const INNER_PAST_KERNEL_WALK: u64 = 10_000;

/// leaf + inner(inner..0) + fork + outer(OUTER..0) + main.main.func1 + goexit.
fn depth_with(inner: u64) -> u64 {
    1 + (inner + 1) + 1 + (OUTER + 1) + 2
}

/// The phase of a sample of the deepwalk goroutine at a leaf: 0 for `main.leafA`, 1 for
/// `main.leafB`; `None` for any other sample.
fn leaf_phase(s: &Value, goid: u64) -> Option<usize> {
    if !s["goids"]
        .as_array()
        .is_some_and(|g| g.contains(&Value::from(goid)))
    {
        return None;
    }
    functions(s)
        .iter()
        .take(3)
        .find_map(|name| match name.as_str() {
            "main.leafA" => Some(0),
            "main.leafB" => Some(1),
            _ => None,
        })
}

/// Line number of the first line of `tests/go/deepwalk/main.go` containing `needle`.
fn source_line(needle: &str) -> u64 {
    let src = std::fs::read_to_string(workspace_root().join("tests/go/deepwalk/main.go"))
        .expect("read deepwalk/main.go");
    src.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in deepwalk/main.go"))
}

/// The `"line"` of the first frame of `stack` in `function`.
fn line_of(stack: &Value, function: &str) -> Option<u64> {
    stack["frames"]
        .as_array()?
        .iter()
        .find(|f| f["function"] == function)?["line"]
        .as_u64()
}

/// The number in `text` just before `suffix`.
fn number_before(text: &str, suffix: &str) -> Option<u64> {
    let head = &text[..text.find(suffix)?];
    head.split_whitespace().last()?.parse().ok()
}

/// Samples deepwalk (`-inner inner`) for 3 s at 499 Hz with `extra` flags and `env`; returns
/// the recursing goroutine's id and the finished run (json on stdout).
fn sample_deepwalk(
    tc: &GoToolchain,
    inner: u64,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (u64, RunOutput) {
    let exe = build_go("deepwalk", tc, Variant::Normal);
    let outer = OUTER.to_string();
    let inner = inner.to_string();
    let mut target = GoProcess::spawn(&exe, &["-outer", &outer, "-inner", &inner]);
    let goid: u64 = target.wait_for_line("goid").parse().expect("goid");
    target.wait_for_line("ready");
    let pid = target.pid().to_string();
    let mut args = vec![
        "--pid",
        &pid,
        "--duration",
        "3",
        "--frequency",
        "499",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = run_stacksampler_with_env(&args, env);
    assert!(out.status.success(), "{}: {}", tc.label(), out.stderr);
    target.close_stdin();
    (goid, out)
}

#[test]
fn rebuilt_outer_part_is_never_stale_and_equals_the_record_walk() {
    let _serial = exclusive();
    let site_a = source_line("// siteA");
    let site_b = source_line("// siteB");
    for tc in primary_go_toolchains() {
        let label = tc.label();
        let (goid, out) = sample_deepwalk(&tc, INNER, &[], &[("STACKSAMPLER_VERIFY_WALK", "1")]);

        // Every sample walked twice; none differed.
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("walk check:"))
            .unwrap_or_else(|| panic!("{label}: no walk check line: {}", out.stderr));
        let checked = number_before(line, " samples walked twice").unwrap_or(0);
        let differed = number_before(line, " differed").unwrap_or(u64::MAX);
        assert!(
            checked >= 200,
            "{label}: only {checked} samples checked: {line}"
        );
        assert_eq!(differed, 0, "{label}: {line}");
        let report = out.json();
        let warnings = report["warnings"].to_string();
        assert!(!warnings.contains("walk check"), "{label}: {warnings}");

        // Samples at a leaf: the phase is the leaf, and main.fork's call site must be the one
        // that phase went through, with the exact depth.
        let mut phase_samples = [0u64; 2];
        for s in stacks(&report) {
            let Some(phase) = leaf_phase(&s, goid) else {
                continue;
            };
            let f = functions(&s);
            let want = [site_a, site_b][phase];
            assert_eq!(
                line_of(&s, "main.fork"),
                Some(want),
                "{label}: a sample in {} shows main.fork at the other site (stale outer part): {f:?}",
                f[0]
            );
            assert_eq!(s["depth"], depth_with(INNER), "{label}: depth of {f:?}");
            assert_eq!(s["truncated"], false, "{label}");
            phase_samples[phase] += s["count"].as_u64().unwrap_or(0);
        }
        assert!(
            phase_samples[0] >= 20 && phase_samples[1] >= 20,
            "{label}: too few samples of each phase (A {}, B {})",
            phase_samples[0],
            phase_samples[1]
        );
    }
}

#[test]
fn past_the_kernel_walk_every_continuation_reaches_the_root() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let label = tc.label();
        let (goid, out) = sample_deepwalk(&tc, INNER_PAST_KERNEL_WALK, &["--verbose"], &[]);

        // "deep stacks: N of M continuations walked to the root (F frames, B read), P past
        // the budget": every one walked (the rest is ~2,000 frames, far within the budget).
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("deep stacks:"))
            .unwrap_or_else(|| panic!("{label}: no deep stacks line: {}", out.stderr));
        let completed = number_before(line, " of ").unwrap_or(0);
        let walks = number_before(line, " continuations").unwrap_or(u64::MAX);
        assert!(completed >= 200, "{label}: {line}");
        assert!(
            walks - completed <= walks / 100,
            "{label}: continuations not trusted: {line}"
        );
        assert_eq!(
            number_before(line, " past the budget"),
            Some(0),
            "{label}: {line}"
        );

        let mut phase_samples = [0u64; 2];
        for s in stacks(&out.json()) {
            let Some(phase) = leaf_phase(&s, goid) else {
                continue;
            };
            if s["truncated"] == true {
                continue;
            }
            assert_eq!(
                s["depth"],
                depth_with(INNER_PAST_KERNEL_WALK),
                "{label}: depth of {:?}",
                functions(&s)
            );
            assert_eq!(
                functions(&s).last().map(String::as_str),
                Some("runtime.goexit"),
                "{label}"
            );
            phase_samples[phase] += s["count"].as_u64().unwrap_or(0);
        }
        assert!(
            phase_samples[0] >= 20 && phase_samples[1] >= 20,
            "{label}: too few whole samples of each phase (A {}, B {})",
            phase_samples[0],
            phase_samples[1]
        );
    }
}
