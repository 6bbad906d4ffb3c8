//! End to end: the verbs of the real binary. `inspect` on real Go binaries (every variant of the
//! oldest and newest toolchain, and a running process), `record` as a verb and in its legacy
//! form, and flags a verb does not take refused before anything is loaded.

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, Variant, build_go, exclusive, primary_go_toolchains, run_stacksampler,
};

fn inspect_json(args: &[&str]) -> Value {
    let mut all = vec!["inspect", "--format", "json"];
    all.extend_from_slice(args);
    let out = run_stacksampler(&all);
    assert!(out.status.success(), "inspect {args:?}: {}", out.stderr);
    out.json()
}

#[test]
fn inspect_describes_every_variant_of_a_go_binary() {
    for tc in primary_go_toolchains() {
        for variant in Variant::ALL {
            let label = format!("{} {variant:?}", tc.label());
            let exe = build_go("demo", &tc, variant);
            let exe_s = exe.display().to_string();
            let v = inspect_json(&["--binary", exe_s.as_str()]);
            assert_eq!(v["format_version"], 1, "{label}");
            assert_eq!(v["is_go"], true, "{label}");
            assert_eq!(v["executable"], exe_s, "{label}");
            let version = v["build_info"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                version.starts_with(&format!("go{}", tc.version)),
                "{label}: version {version}"
            );
            let want_source = if variant == Variant::Stripped {
                "version_table"
            } else {
                "dwarf"
            };
            assert_eq!(v["layout_source"], want_source, "{label}");
            assert_eq!(v["has_dwarf"], variant != Variant::Stripped, "{label}");
            assert_eq!(v["is_pie"], variant == Variant::PieCgo, "{label}");
            let functions = v["pclntab"]["functions"].as_u64().unwrap_or(0);
            assert!(functions > 1000, "{label}: pclntab {}", v["pclntab"]);
            // The Go build id is `actionID/contentID` (two to four base64url parts).
            let id = v["go_build_id"].as_str().unwrap_or_default();
            let parts: Vec<&str> = id.split('/').collect();
            assert!(
                (2..=4).contains(&parts.len())
                    && parts.iter().all(|p| p.len() >= 20
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')),
                "{label}: go build id {id:?}"
            );
            // Offsets as in the project's notes (docs/go-runtime.md): g.goid per release.
            let goid = v["runtime_layout"]["g_goid"].as_u64().unwrap_or(0);
            let want_goid = match tc.version.as_str() {
                "1.23" | "1.24" => 160,
                _ => 152,
            };
            assert_eq!(goid, want_goid, "{label}");
        }
    }
}

#[test]
fn inspect_of_a_process_names_its_executable_and_text_lists_the_offsets() {
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("demo", &tc, Variant::Normal);
    let mut p = GoProcess::spawn(&exe, &["-seconds", "60", "-workers", "hot"]);
    p.wait_for_line("ready");
    let pid = p.pid().to_string();
    let v = inspect_json(&["--pid", pid.as_str()]);
    assert_eq!(v["pid"], p.pid());
    assert_eq!(v["executable"], exe.display().to_string());
    assert_eq!(v["layout_source"], "dwarf");
    let out = run_stacksampler(&["inspect", "--pid", pid.as_str()]);
    assert!(out.status.success(), "{}", out.stderr);
    for want in [
        "layout:       from the binary's DWARF",
        "g.goid",
        "pclntab:",
        "warnings:",
    ] {
        assert!(out.stdout.contains(want), "no {want:?} in:\n{}", out.stdout);
    }
}

#[test]
fn record_verb_and_legacy_form_sample_alike() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("demo", &tc, Variant::Normal);
    let mut p = GoProcess::spawn(&exe, &["-seconds", "60", "-workers", "hot"]);
    p.wait_for_line("ready");
    let pid = p.pid().to_string();
    for prefix in [&["record"][..], &[]] {
        let mut args = prefix.to_vec();
        args.extend(["--pid", pid.as_str(), "-d", "1", "--format", "json"]);
        let out = run_stacksampler(&args);
        assert!(out.status.success(), "{args:?}: {}", out.stderr);
        let v = out.json();
        assert_eq!(v["pid"], p.pid(), "{args:?}");
        assert!(v["samples"]["kept"].as_u64().unwrap_or(0) > 0, "{args:?}");
    }
}

#[test]
fn a_flag_a_verb_does_not_take_fails_before_anything_is_loaded() {
    for args in [
        &["watch", "--pid", "1", "--frequency", "9"][..],
        &["--watch", "--pid", "1", "--state-frames"],
        &["record", "--pid", "1", "--stack-alert", "1MB"],
        &["inspect", "--binary", "/bin/true", "--duration", "1"],
    ] {
        let out = run_stacksampler(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} accepted: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("unexpected argument") || out.stderr.contains("invalid value"),
            "{args:?}: {}",
            out.stderr
        );
    }
}
