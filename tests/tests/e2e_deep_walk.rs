//! The kernel's frame-pointer walk on a deep stack whose outer part changes between samples
//! while every frame above the change is rebuilt with the same words at the same addresses
//! (`tests/go/deepwalk`): the case a walk that stopped at a remembered frame would get wrong.
//! Every sample's walk (from bulk copies of the stack) must equal the record-by-record walk
//! (`STACKSAMPLER_VERIFY_WALK=1`), and no sample may show the outer part of the other phase.

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, Variant, build_go, exclusive, primary_go_toolchains,
    report::{functions, stacks},
    run_stacksampler_with_env, workspace_root,
};

/// Frames above `main.fork`'s caller (`main.outer`'s recursion) and below it (`main.inner`'s).
const OUTER: u64 = 100;
const INNER: u64 = 4000;

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

#[test]
fn rebuilt_outer_part_is_never_stale_and_equals_the_record_walk() {
    let _serial = exclusive();
    let site_a = source_line("// siteA");
    let site_b = source_line("// siteB");
    for tc in primary_go_toolchains() {
        let label = tc.label();
        let exe = build_go("deepwalk", &tc, Variant::Normal);
        let outer = OUTER.to_string();
        let inner = INNER.to_string();
        let mut target = GoProcess::spawn(&exe, &["-outer", &outer, "-inner", &inner]);
        let goid: u64 = target.wait_for_line("goid").parse().expect("goid");
        target.wait_for_line("ready");
        let pid = target.pid().to_string();
        let out = run_stacksampler_with_env(
            &[
                "--pid",
                &pid,
                "--duration",
                "3",
                "--frequency",
                "499",
                "--format",
                "json",
            ],
            &[("STACKSAMPLER_VERIFY_WALK", "1")],
        );
        assert!(out.status.success(), "{label}: {}", out.stderr);
        target.close_stdin();

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
            if !s["goids"]
                .as_array()
                .is_some_and(|g| g.contains(&Value::from(goid)))
            {
                continue;
            }
            let f = functions(&s);
            let Some(phase) = f.iter().take(3).find_map(|name| match name.as_str() {
                "main.leafA" => Some(0),
                "main.leafB" => Some(1),
                _ => None,
            }) else {
                continue;
            };
            let want = [site_a, site_b][phase];
            assert_eq!(
                line_of(&s, "main.fork"),
                Some(want),
                "{label}: a sample in {} shows main.fork at the other site (stale outer part): {f:?}",
                f[0]
            );
            // leaf + inner(INNER..0) + fork + outer(OUTER..0) + main.main.func1 + goexit.
            let depth = 1 + (INNER + 1) + 1 + (OUTER + 1) + 2;
            assert_eq!(s["depth"], depth, "{label}: depth of {f:?}");
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
