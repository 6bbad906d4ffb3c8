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

/// Bytes of kernel memory the bpf maps of process `pid` lock, as the kernel reports them
/// (`memlock` in `/proc/PID/fdinfo/FD` of each map fd: what `bpftool map show` prints as
/// `bytes_memlock`), and the number of maps.
fn bpf_map_memlock(pid: u32) -> (u64, usize) {
    let mut total = 0;
    let mut maps = 0;
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).expect("read fdinfo").flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if !info.lines().any(|l| l.starts_with("map_type:")) {
            continue;
        }
        maps += 1;
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("a map's fdinfo has memlock");
    }
    (total, maps)
}

/// Runs stacksampler with `args` (it must print `marker` on stderr once attached) and returns
/// its maps' memlock read while it runs.
fn memlock_while_running(args: &[&str], marker: &str) -> (u64, usize) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(stacksampler_tests::stacksampler_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn stacksampler");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains(marker) {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.wait();
            panic!("stacksampler {args:?} ended before {marker:?}:\n{seen}");
        }
        seen.push_str(&line);
    }
    let measured = bpf_map_memlock(child.id());
    // The rest of stderr, then the run's own end (--duration).
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let status = child.wait().expect("wait stacksampler");
    assert!(status.success(), "stacksampler {args:?}: {seen}");
    measured
}

/// Possible CPUs (`/sys/devices/system/cpu/possible`, e.g. `0-1`): per-CPU arrays have as many
/// slots.
fn possible_cpus() -> u64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").expect("possible cpus");
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap_or(0) - a.parse::<u64>().unwrap_or(0) + 1,
            None => 1,
        })
        .sum()
}

/// The sizes docs/design.md documents ("Kernel memory per mode").
const MIB: u64 = 1 << 20;
/// One sample or event scratch slot (header + 16384 frames), rounded up as the kernel does.
const SCRATCH_SLOT_BYTES: u64 = 132 << 10;
/// The maps of one entry and aya-log's ring (`AYA_LOGS`, 128 KiB), with their overheads.
const SMALL_MAPS_BYTES: u64 = 512 << 10;

#[test]
fn map_memory_per_mode_is_at_most_the_documented_size() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("events", &tc, Variant::Normal);
    let cpus = possible_cpus();
    // The events program idles until told to go; it is never told here.
    let mut p = GoProcess::spawn(&exe, &["-mode", "grow"]);
    p.wait_for_line("ready");
    let pid = p.pid().to_string();

    // record: 16 MiB samples + 1 MiB fatal events + a sample and an event slot per CPU.
    let record_doc = 17 * MIB + 2 * SCRATCH_SLOT_BYTES * cpus + SMALL_MAPS_BYTES;
    let (record, maps) = memlock_while_running(
        &["record", "--pid", pid.as_str(), "-d", "2", "-v"],
        "sampling",
    );
    assert!(maps >= 8, "only {maps} bpf maps seen");
    assert!(
        (16 * MIB..=record_doc).contains(&record),
        "record locks {record} bytes, documented at most {record_doc} ({cpus} CPUs)"
    );
    if cpus <= 24 {
        assert!(record <= 24 * MIB, "record locks {record} bytes");
    }

    // watch: 8 MiB events + an event slot per CPU; the sample maps shrunk to a page and a slot.
    let watch_doc = 8 * MIB + SCRATCH_SLOT_BYTES * (cpus + 1) + 4096 + SMALL_MAPS_BYTES;
    let (watch, _) = memlock_while_running(
        &["watch", "--pid", pid.as_str(), "-d", "1"],
        "probes attached",
    );
    assert!(
        (8 * MIB..=watch_doc).contains(&watch),
        "watch locks {watch} bytes, documented at most {watch_doc} ({cpus} CPUs)"
    );
}
