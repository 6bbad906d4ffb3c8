//! Golden-file tests of the report formats, inferno style.
//!
//! The inputs are synthetic reports built in code (`fixtures`); the expected outputs live in
//! `tests/data/report/results/<fixture>.<variant>`. `STACKSAMPLER_BLESS=1 cargo test -p
//! stacksampler --test report` rewrites them from the current output (review the diff!).
//!
//! Binary or bulky formats (pprof, SVG) are checked by structure instead: the pprof file is
//! decoded back and read by `go tool pprof`, the SVG parsed as XML, the DOT graph by `dot`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use stacksampler::{
    aggregate::Profile,
    diagnose::{Finding, Severity},
    goruntime::state::GoroutineState,
    report::{self, EndReason, OutputFormat, RenderOptions, Report, RunInfo},
    sample::{GoroutineInfo, Sample},
    symbolize::{Frame, FrameKind, Symbols},
};

mod fixtures {
    use super::*;

    pub const BINARY: &str = "/opt/demo/bin/demo";

    fn frame(function: &str, file: &str, line: u32, kind: FrameKind) -> Frame {
        Frame {
            function: function.to_owned(),
            file: Some(file.to_owned()),
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
            cpu: 0,
            goroutine: goid.map(|goid| GoroutineInfo {
                goid,
                state,
                waitreason,
                g_addr: 0xc000_0000,
            }),
            stack_bytes: Some(frames.len() as u64 * 64),
            frames: frames.to_vec(),
            truncated: false,
            kernel_mode: false,
            switch_index: None,
        }
    }

    fn run(pid: u32) -> RunInfo {
        RunInfo {
            pid,
            binary: PathBuf::from(BINARY),
            go_version: Some("go1.27.3".to_owned()),
            duration_secs: 5.0,
            frequency_hz: 99,
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
                function: "__GI___libc_read".to_owned(),
                file: None,
                line: None,
                inlined: false,
                module: Some(Arc::from("/usr/lib/x86_64-linux-gnu/libc.so.6")),
                kind: FrameKind::Native,
            }],
        );
        s
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
        for g in 10..20 {
            p.add(&sample(
                &[PARK, CHANRECV, WORKER, GOEXIT],
                Some(g),
                GoroutineState::Waiting,
                14,
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
                    kind: "goroutine_pileup",
                    summary: "10 goroutines parked in runtime.chanrecv".to_owned(),
                    details: vec!["entry: main.worker".to_owned()],
                    data: serde_json::json!({"goroutines": 10}),
                },
                Finding {
                    severity: Severity::Warning,
                    kind: "hot_loop",
                    summary: "main.hot holds 54% of the samples".to_owned(),
                    details: vec![],
                    data: serde_json::Value::Null,
                },
            ],
            warnings: vec!["2 samples lost (ring buffer full)".to_owned()],
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
        }
    }
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
