//! `stacksampler dump` against Go's own goroutine dump: `tests/go/dumpstates` parks goroutines
//! in known states, writes `pprof.Lookup("goroutine").WriteTo(w, 2)` to a file, prints "ready"
//! and stays still. Every goroutine of Go's dump that is parked (not the one writing the dump,
//! not the spinning one) must be in ours with the same id, bracket status, function sequence and
//! creation site; for the oldest and newest Go, normal, stripped and PIE+cgo builds, and with
//! 10,000 more goroutines. Needs root (reads /proc/PID/mem of a child).

use std::{collections::BTreeMap, path::Path, process::Command};

use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, go_tool_pprof,
    goroutines::{claiming_go_minor, descendant_running},
    primary_go_toolchains, run_stacksampler,
};

/// One goroutine of a `debug=2` dump, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TextGoroutine {
    /// The header's bracket (`chan receive`, `syscall, locked to thread`).
    status: String,
    /// Function names shown, innermost first (arguments dropped).
    functions: Vec<String>,
    /// `created by` line (function and `in goroutine N`) and its `file:line`.
    created_by: Option<(String, String)>,
}

/// Parses Go's `goroutine?debug=2` text (ours or the runtime's).
fn parse_debug2(text: &str) -> BTreeMap<u64, TextGoroutine> {
    let mut out = BTreeMap::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.is_empty());
        let Some(header) = lines.next() else { continue };
        let Some(rest) = header.strip_prefix("goroutine ") else {
            continue;
        };
        let (id, status) = rest.split_once(" [").expect("goroutine header");
        let status = status.trim_end_matches("]:").to_owned();
        let id: u64 = id.parse().expect("goroutine id");
        let mut functions = Vec::new();
        let mut created_by = None;
        let lines: Vec<&str> = lines.collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let location = lines
                .get(i + 1)
                .and_then(|l| l.strip_prefix('\t'))
                .map(|l| l.split(" +0x").next().unwrap_or(l).to_owned());
            if let Some(c) = line.strip_prefix("created by ") {
                created_by = Some((c.to_owned(), location.clone().unwrap_or_default()));
                i += 2;
            } else if line.starts_with('\t') {
                i += 1;
            } else {
                let name = line.rfind('(').map_or(line, |p| &line[..p]);
                functions.push(name.to_owned());
                i += 2;
            }
        }
        out.insert(
            id,
            TextGoroutine {
                status,
                functions,
                created_by,
            },
        );
    }
    out
}

/// What one comparison found.
#[derive(Debug, Default)]
struct Agreement {
    /// Parked goroutines in Go's dump.
    parked: usize,
    /// Of those, the ones ours matches in id, status, functions and creation site.
    agreeing: usize,
    /// Disagreements, described.
    problems: Vec<String>,
}

fn compare(go: &BTreeMap<u64, TextGoroutine>, ours: &BTreeMap<u64, TextGoroutine>) -> Agreement {
    let mut a = Agreement::default();
    for (id, theirs) in go {
        // The goroutine that wrote the dump, and the spinning one, move on.
        if theirs.status == "running" || theirs.status == "runnable" {
            continue;
        }
        a.parked += 1;
        match ours.get(id) {
            Some(mine) if mine == theirs => a.agreeing += 1,
            Some(mine) => a
                .problems
                .push(format!("goroutine {id}: Go {theirs:?}, ours {mine:?}")),
            None => a.problems.push(format!("goroutine {id} missing from ours")),
        }
    }
    a
}

struct Run {
    go_dump: String,
    text: String,
    json: serde_json::Value,
    pprof: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts the program, reads Go's dump, dumps it ourselves in text, json and pprof.
fn dump_both_ways(tc: &GoToolchain, variant: Variant, extra: usize) -> Run {
    let exe = build_go("dumpstates", tc, variant);
    let dir = tempfile::tempdir().unwrap();
    let go_file = dir.path().join("go-dump.txt");
    let extra = extra.to_string();
    let mut target = GoProcess::spawn(
        &exe,
        &["-dump", go_file.to_str().unwrap(), "-extra", &extra],
    );
    target.wait_for_line("ready");
    let pid = target.pid().to_string();
    let text = run_stacksampler(&["dump", "--pid", &pid]);
    assert!(text.status.success(), "dump failed: {}", text.stderr);
    let json = run_stacksampler(&["dump", "--pid", &pid, "--format", "json"]);
    assert!(json.status.success(), "json dump failed: {}", json.stderr);
    let pprof = dir.path().join("goroutines.pb.gz");
    let out = run_stacksampler(&[
        "dump",
        "--pid",
        &pid,
        "--format",
        "pprof",
        "-o",
        pprof.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "pprof dump failed: {}", out.stderr);
    drop(target);
    Run {
        go_dump: std::fs::read_to_string(&go_file).expect("Go's own dump"),
        text: text.stdout,
        json: json.json(),
        pprof,
        _dir: dir,
    }
}

#[test]
fn dump_agrees_with_go_for_every_parked_goroutine() {
    let _guard = exclusive();
    let mut figures = Vec::new();
    for tc in primary_go_toolchains() {
        for variant in Variant::ALL {
            let run = dump_both_ways(&tc, variant, 0);
            let go = parse_debug2(&run.go_dump);
            let ours = parse_debug2(&run.text);
            let a = compare(&go, &ours);
            let label = format!("{} {variant:?}", tc.label());
            // The known states: 11 parked goroutines (all but the dump writer and the spinner).
            assert!(a.parked >= 11, "{label}: Go's dump has {} parked", a.parked);
            assert!(
                a.problems.is_empty(),
                "{label}: {}/{} agree:\n{}\nGo's dump:\n{}\nours:\n{}",
                a.agreeing,
                a.parked,
                a.problems.join("\n"),
                run.go_dump,
                run.text
            );
            figures.push(format!(
                "{label}: {}/{} parked goroutines agree",
                a.agreeing, a.parked
            ));

            // The json: labels, thread lock, running stack not captured, consistent reads.
            let gs = run.json["goroutines"].as_array().expect("goroutines");
            let by_start = |f: &str| {
                gs.iter()
                    .find(|g| {
                        g["stack"]["frames"]
                            .as_array()
                            .is_some_and(|fr| fr.iter().any(|x| x["function"] == f))
                    })
                    .unwrap_or_else(|| panic!("{label}: no goroutine in {f}"))
            };
            assert_eq!(
                by_start("main.labelled")["labels"],
                serde_json::json!([["worker", "w1"]]),
                "{label}"
            );
            assert_eq!(by_start("main.locked")["locked_to_thread"], true, "{label}");
            assert_eq!(by_start("main.syscallRead")["state"], "syscall", "{label}");
            assert_eq!(by_start("main.syscallRead")["stack"]["source"], "syscall");
            let spinner = gs
                .iter()
                .find(|g| {
                    g["start_function"] == "main.spin"
                        || g["stack"]["frames"][0]["function"] == "main.spin"
                })
                .expect("spinning goroutine");
            if spinner["state"] == "running" {
                assert_eq!(spinner["stack"]["source"], "not_captured", "{label}");
                assert!(spinner["stack"]["frames"].as_array().unwrap().is_empty());
            }
            assert_eq!(run.json["incomplete"], false);
            let expected_source = if variant == Variant::Stripped {
                "code"
            } else {
                "symbol_table"
            };
            assert_eq!(run.json["allgs_source"], expected_source, "{label}");

            // The goroutine profile opens in go tool pprof, with the state labels.
            let traces = go_tool_pprof(&tc.go, &["-traces"], &run.pprof).0;
            for needle in ["main.chanReceive", "main.mutexWait", "state:chan receive"] {
                assert!(
                    traces.replace(' ', "").contains(&needle.replace(' ', "")),
                    "{label}: pprof -traces lacks {needle}:\n{traces}"
                );
            }
        }
    }
    eprintln!("{}", figures.join("\n"));
}

/// The 1-based line of `dumpstates/main.go` holding `needle`, first after the line holding
/// `after`.
fn source_line(after: &str, needle: &str) -> u64 {
    let src = std::fs::read_to_string(
        stacksampler_tests::workspace_root().join("tests/go/dumpstates/main.go"),
    )
    .unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let start = lines.iter().position(|l| l.contains(after)).unwrap();
    let at = lines[start..]
        .iter()
        .position(|l| l.contains(needle.trim_start_matches('\t')))
        .unwrap();
    (start + at + 1) as u64
}

#[test]
fn ten_thousand_goroutines_agree_with_go() {
    let _guard = exclusive();
    for tc in primary_go_toolchains() {
        let run = dump_both_ways(&tc, Variant::Normal, 10_000);
        let go = parse_debug2(&run.go_dump);
        let ours = parse_debug2(&run.text);
        let a = compare(&go, &ours);
        assert!(a.parked >= 10_011, "{}: {} parked", tc.label(), a.parked);
        assert!(
            a.problems.is_empty(),
            "{}: {}/{} agree; first problems:\n{}",
            tc.label(),
            a.agreeing,
            a.parked,
            a.problems[..a.problems.len().min(10)].join("\n")
        );
        eprintln!(
            "{}: {}/{} parked goroutines agree (dump read {} bytes in {:.3} s)",
            tc.label(),
            a.agreeing,
            a.parked,
            run.json["bytes_read"],
            run.json["elapsed_s"].as_f64().unwrap_or(0.0)
        );
        assert!(run.json["goroutines"].as_array().unwrap().len() >= 10_012);
        // The pile-up: the 10,000 leaked goroutines, at leak's receive, created in main.main.
        let finding = &run.json["findings"][0];
        assert_eq!(
            finding["kind"], "goroutine_pileup",
            "{}",
            run.json["findings"]
        );
        assert_eq!(finding["data"]["goroutines"], 10_000);
        assert_eq!(finding["data"]["status"], "chan receive");
        assert_eq!(finding["data"]["blocking"]["function"], "main.leak");
        assert_eq!(
            finding["data"]["blocking"]["line"],
            source_line("func leak", "\t<-ch"),
            "{finding}"
        );
        assert_eq!(finding["data"]["created_by"]["function"], "main.main");
        assert_eq!(
            finding["data"]["created_by"]["line"],
            source_line("func main", "go leak(never"),
            "{finding}"
        );
    }
}

#[test]
fn grouped_form_counts_identical_stacks_most_common_first() {
    let _guard = exclusive();
    let tc = primary_go_toolchains().pop().unwrap();
    let exe = build_go("dumpstates", &tc, Variant::Normal);
    let mut target = GoProcess::spawn(&exe, &["-extra", "300"]);
    target.wait_for_line("ready");
    let out = run_stacksampler(&["dump", "--pid", &target.pid().to_string(), "--group"]);
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("goroutine profile: total "),
        "{}",
        out.stdout
    );
    // leak(ch, i%3): three stacks of 100 goroutines each, ahead of every single goroutine.
    let counts: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.split_once(" @ ").and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert_eq!(&counts[..3], &[100, 100, 100], "{}", out.stdout);
    assert!(counts[3..].iter().all(|c| *c < 100));
    let first_group = out.stdout.split("\n\n").next().unwrap();
    assert!(
        first_group.contains("# state: chan receive"),
        "{first_group}"
    );
    assert!(first_group.contains("main.leak+0x"), "{first_group}");
}

#[test]
fn a_program_not_written_in_go_is_one_line_error() {
    let mut sleeper = GoProcess::spawn(Path::new("/bin/sleep"), &["30"]);
    let out = run_stacksampler(&["dump", "--pid", &sleeper.pid().to_string()]);
    assert!(!out.status.success());
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a Go program"), "{err}");
    sleeper.close_stdin();
}

/// Calls of `deepRecurse` under the deep goroutine (plus the outermost one).
const DEEP_CALLS: u64 = 5000;

#[test]
fn deep_stacks_have_their_exact_depth_and_outermost_frames() {
    let _guard = exclusive();
    for tc in primary_go_toolchains() {
        let exe = build_go("dumpstates", &tc, Variant::Normal);
        let deep = DEEP_CALLS.to_string();
        let mut target = GoProcess::spawn(&exe, &["-deep", &deep]);
        target.wait_for_line("ready");
        let pid = target.pid().to_string();
        let out = run_stacksampler(&["dump", "--pid", &pid, "--format", "json"]);
        assert!(out.status.success(), "{}", out.stderr);
        let json = out.json();
        let g = json["goroutines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| {
                g["stack"]["frames"][0]["function"] == "runtime.gopark"
                    && g["stack"]["frames"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f["function"] == "main.deepRecurse")
            })
            .expect("the deep goroutine")
            .clone();
        let count = |key: &str| {
            g["stack"][key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["function"] == "main.deepRecurse")
                .count() as u64
        };
        let stack = &g["stack"];
        assert_eq!(stack["truncated"], false, "{}", tc.label());
        assert_eq!(
            count("frames") + count("tail") + stack["elided"].as_u64().unwrap(),
            DEEP_CALLS + 1,
            "{}: head {} tail {} elided {}",
            tc.label(),
            count("frames"),
            count("tail"),
            stack["elided"]
        );
        // The outermost frames are kept: the recursion's entry, then goexit.
        let tail = stack["tail"].as_array().unwrap();
        assert_eq!(tail.last().unwrap()["function"], "runtime.goexit");
        let text = run_stacksampler(&["dump", "--pid", &pid]);
        assert!(text.stdout.contains(" frames elided..."), "{}", tc.label());
    }
}

#[test]
fn a_go_release_without_a_known_layout_is_one_line_error() {
    let _guard = exclusive();
    let tc = primary_go_toolchains().pop().unwrap();
    let exe = claiming_go_minor(&build_go("dumpstates", &tc, Variant::Stripped), "99");
    let mut target = GoProcess::spawn(&exe, &[]);
    target.wait_for_line("ready");
    let out = run_stacksampler(&["dump", "--pid", &target.pid().to_string()]);
    assert!(!out.status.success());
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("go1.99"), "{err}");
    assert!(err.contains("runtime layout table"), "{err}");
}

#[test]
fn a_target_in_its_own_pid_namespace_agrees_with_go() {
    let _guard = exclusive();
    for tc in primary_go_toolchains() {
        let exe = build_go("dumpstates", &tc, Variant::PieCgo);
        let dir = tempfile::tempdir().unwrap();
        let go_file = dir.path().join("go-dump.txt");
        let mut unshare = GoProcess::spawn_command(
            Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                .arg(&exe)
                .args(["-dump", go_file.to_str().unwrap()]),
        );
        unshare.wait_for_line("ready");
        let name = exe.file_name().unwrap().to_str().unwrap();
        let pid = descendant_running(unshare.pid(), name).expect("the program's host pid");
        let out = run_stacksampler(&["dump", "--pid", &pid.to_string()]);
        assert!(out.status.success(), "{}", out.stderr);
        let go_dump = std::fs::read_to_string(&go_file).unwrap();
        let a = compare(&parse_debug2(&go_dump), &parse_debug2(&out.stdout));
        assert!(
            a.parked >= 11 && a.problems.is_empty(),
            "{}: {:?}",
            tc.label(),
            a
        );
        eprintln!(
            "{} in a PID namespace: {}/{} parked goroutines agree",
            tc.label(),
            a.agreeing,
            a.parked
        );
    }
}

#[test]
fn filters_keep_the_goroutines_they_match() {
    let _guard = exclusive();
    let tc = primary_go_toolchains().pop().unwrap();
    let exe = build_go("dumpstates", &tc, Variant::Normal);
    let mut target = GoProcess::spawn(&exe, &[]);
    target.wait_for_line("ready");
    let pid = target.pid().to_string();
    let json = |extra: &[&str]| {
        let mut args = vec!["dump", "--pid", &pid, "--format", "json"];
        args.extend_from_slice(extra);
        let out = run_stacksampler(&args);
        assert!(out.status.success(), "{}", out.stderr);
        out.json()["goroutines"].as_array().unwrap().clone()
    };
    let labelled = json(&["--label", "worker=w1"]);
    assert_eq!(labelled.len(), 1, "{labelled:?}");
    assert_eq!(labelled[0]["labels"], serde_json::json!([["worker", "w1"]]));
    let goid = labelled[0]["goid"].as_u64().unwrap();
    let by_id = json(&["--goid", &goid.to_string()]);
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0]["goid"], goid);
    let in_syscall = json(&["--state", "syscall"]);
    assert!(!in_syscall.is_empty());
    assert!(
        in_syscall.iter().all(|g| g["state"] == "syscall"),
        "{in_syscall:?}"
    );
    assert!(json(&[]).len() > in_syscall.len() + 10);
}
