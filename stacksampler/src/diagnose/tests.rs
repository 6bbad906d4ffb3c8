//! Diagnosis on synthetic profiles: hand-made symbols, samples built as the decoder builds them.

use super::*;
use crate::report::findings::{details, summary};
use crate::{
    goruntime::state::GoroutineState,
    sample::{GoroutineInfo, Sample},
    symbolize::{Frame, FrameKind},
};

/// Hands out addresses, each symbolized to the frames given (innermost first).
#[derive(Default)]
struct Syms {
    symbols: Symbols,
    next: u64,
}

impl Syms {
    /// An address whose only frame is `function` at `file:line`.
    fn addr(&mut self, function: &str, file: &str, line: u32) -> u64 {
        self.inlined(&[(function, file, line)])
    }

    /// An address expanding to several frames, innermost (most inlined) first.
    fn inlined(&mut self, frames: &[(&str, &str, u32)]) -> u64 {
        self.next += 0x10;
        let addr = 0x40_0000 + self.next;
        let last = frames.len() - 1;
        let frames = frames
            .iter()
            .enumerate()
            .map(|(i, (function, file, line))| Frame {
                function: (*function).into(),
                file: Some((*file).into()),
                line: Some(*line),
                inlined: i < last,
                module: None,
                kind: if function.starts_with("runtime.") {
                    FrameKind::GoRuntime
                } else {
                    FrameKind::Go
                },
            })
            .collect();
        self.symbols.by_addr.insert(addr, frames);
        addr
    }
}

fn sample(frames: Vec<u64>, goid: u64, state: GoroutineState, time_ns: u64, bytes: u64) -> Sample {
    Sample {
        time_ns,
        goroutine: Some(GoroutineInfo {
            goid,
            state,
            waitreason: if state == GoroutineState::Waiting {
                7
            } else {
                0
            },
            g_addr: 0xc000_0000 + goid * 0x1000,
        }),
        stack_bytes: Some(bytes),
        frames,
        ..Default::default()
    }
}

fn cycle_functions(f: &Finding) -> Vec<String> {
    data(f)["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["function"].as_str().unwrap().to_string())
        .collect()
}

/// The frames of `main.main -> recA -> recB -> ... ` with `recursion` frames of recursion,
/// innermost first, spinning in `recB` (so `recursion` is even).
struct Mutual {
    syms: Syms,
    spin: u64,
    a: u64,
    b: u64,
    root: Vec<u64>,
}

impl Mutual {
    fn new() -> Self {
        let mut syms = Syms::default();
        let spin = syms.addr("main.recB", "/src/app/main.go", 30);
        let a = syms.addr("main.recA", "/src/app/main.go", 12);
        let b = syms.addr("main.recB", "/src/app/main.go", 22);
        let root = vec![
            syms.addr("main.main", "/src/app/main.go", 42),
            syms.addr("runtime.main", "/usr/lib/go/src/runtime/proc.go", 283),
            syms.addr(
                "runtime.goexit",
                "/usr/lib/go/src/runtime/asm_amd64.s",
                1700,
            ),
        ];
        Self {
            syms,
            spin,
            a,
            b,
            root,
        }
    }

    fn stack(&self, recursion: usize) -> Vec<u64> {
        let mut s = vec![self.spin];
        for i in 1..recursion {
            s.push(if i % 2 == 1 { self.a } else { self.b });
        }
        s.extend(&self.root);
        s
    }
}

#[test]
fn mutual_recursion_20000_deep() {
    let m = Mutual::new();
    let mut p = Profile::default();
    let stack = m.stack(20_000);
    assert_eq!(stack.len(), 20_003);
    for t in 0..10 {
        // Spinning at the bottom: same depth, same stack bytes.
        p.add(&sample(
            stack.clone(),
            18,
            GoroutineState::Running,
            t * 10_000_000,
            1_600_000,
        ));
    }
    let findings = diagnose(&p, &m.syms.symbols, &DiagnoseOptions::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.kind(), RUNAWAY_RECURSION);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(cycle_functions(f), ["main.recA", "main.recB"]);
    assert_eq!(data(f)["cycle"][0]["line"], 12);
    assert_eq!(data(f)["cycle"][1]["line"], 22);
    assert_eq!(data(f)["repeat"], 10_000);
    assert_eq!(data(f)["cycle_frames"], 20_000);
    assert_eq!(data(f)["depth"], 20_003);
    assert_eq!(data(f)["depth_exact"], true);
    assert_eq!(data(f)["entry"]["function"], "main.main");
    assert_eq!(data(f)["entry"]["line"], 42);
    assert_eq!(data(f)["stack_bytes"], 1_600_000);
    assert_eq!(data(f)["growth_bytes_per_sec"], 0.0);
    assert_eq!(data(f)["limit_bytes"], DEFAULT_MAX_STACK_BYTES);
    assert_eq!(data(f)["goids"], serde_json::json!([18]));
    assert_eq!(
        summary(f),
        "goroutine 18 recurses main.recA -> main.recB 10000 times (20003 frames, 1.5 MiB of stack), \
         entered from main.main at main.go:42; 0.2% of the 953.7 MiB limit"
    );
    assert!(
        details(f).iter().any(|d| d == "  main.recA (main.go:12)"),
        "{:?}",
        details(f)
    );
    assert!(
        details(f)
            .iter()
            .any(|d| d == "entered from main.main (main.go:42)")
    );
}

#[test]
fn growing_recursion_near_a_lowered_limit_is_critical() {
    let m = Mutual::new();
    let mut p = Profile::default();
    // Sampled once a second while it grows by 2000 frames (156.2 KiB) a second.
    for k in 0..10u64 {
        let depth = 10_000 + 2_000 * k as usize;
        p.add(&sample(
            m.stack(depth),
            18,
            GoroutineState::Running,
            k * 1_000_000_000,
            depth as u64 * 80,
        ));
    }
    let default = diagnose(&p, &m.syms.symbols, &DiagnoseOptions::default());
    assert_eq!(default.len(), 1);
    // 953.7 MiB away at 156.2 KiB/s: over an hour, not critical yet.
    assert_eq!(default[0].severity, Severity::Warning);
    let growth = data(&default[0])["growth_bytes_per_sec"].as_f64().unwrap();
    assert!((growth - 160_000.0).abs() < 1.0, "{growth}");
    assert_eq!(data(&default[0])["repeat"], 14_000);
    assert_eq!(data(&default[0])["samples"], 10);

    let lowered = DiagnoseOptions {
        max_stack_bytes: Some(64 << 20),
        ..DiagnoseOptions::default()
    };
    let f = &diagnose(&p, &m.syms.symbols, &lowered)[0];
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(data(f)["limit_bytes"], 64 << 20);
    assert_eq!(data(f)["limit_from_target"], true);
    let eta = data(f)["seconds_to_limit"].as_f64().unwrap();
    assert!(
        (eta - ((64 << 20) - 2_240_000) as f64 / 160_000.0).abs() < 1.0,
        "{eta}"
    );
    assert!(summary(f).contains("growing 156.2 KiB/s"), "{}", summary(f));
}

#[test]
fn shallower_samples_reuse_the_deepest_analysis() {
    let m = Mutual::new();
    let mut p = Profile::default();
    // The shallower stacks branch off the deepest one near the leaf.
    for (k, depth) in [5_000usize, 4_998, 4_990, 3_000, 60].iter().enumerate() {
        p.add(&sample(
            m.stack(*depth),
            7,
            GoroutineState::Running,
            k as u64,
            4096,
        ));
    }
    // Spinning in recA instead (an odd number of recursion frames): the same chimney, since
    // cycles are aligned on the root side.
    p.add(&sample(
        m.stack(4_000)[1..].to_vec(),
        7,
        GoroutineState::Running,
        9,
        4096,
    ));
    let findings = diagnose(&p, &m.syms.symbols, &DiagnoseOptions::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    // Every row but the 60-frame one (30 repetitions) counts.
    assert_eq!(data(f)["samples"], 5);
    assert_eq!(data(f)["repeat"], 2_500);
    assert_eq!(data(f)["depth"], 5_003);
    assert_eq!(cycle_functions(f), ["main.recA", "main.recB"]);
}

#[test]
fn sprintf_cycle_through_an_inlined_string_method() {
    let mut syms = Syms::default();
    // (*T).String is the autogenerated wrapper with T.String inlined into it: one address, two
    // frames. The cycle is 5 addresses but 6 functions.
    let string = syms.inlined(&[
        ("main.T.String", "/src/app/main.go", 10),
        ("main.(*T).String", "<autogenerated>", 1),
    ]);
    let sprintf = syms.addr("fmt.Sprintf", "/go/src/fmt/print.go", 239);
    let do_printf = syms.addr("fmt.(*pp).doPrintf", "/go/src/fmt/print.go", 1200);
    let print_arg = syms.addr("fmt.(*pp).printArg", "/go/src/fmt/print.go", 759);
    let handle = syms.addr("fmt.(*pp).handleMethods", "/go/src/fmt/print.go", 673);
    let leaf = syms.addr("runtime.mallocgc", "/go/src/runtime/malloc.go", 1000);
    let main = syms.addr("main.main", "/src/app/main.go", 50);
    let rt = syms.addr("runtime.main", "/go/src/runtime/proc.go", 283);
    let mut stack = vec![leaf, do_printf, sprintf];
    for _ in 0..300 {
        stack.extend([string, handle, print_arg, do_printf, sprintf]);
    }
    // Root side: main.main called (*T).String, which is `string` followed (innermost first) by
    // main.main: drop the last sprintf level so the outermost repetition starts at String.
    stack.extend([string, main, rt]);
    let mut p = Profile::default();
    p.add(&sample(stack, 1, GoroutineState::Running, 0, 300_000));
    let findings = diagnose(&p, &syms.symbols, &DiagnoseOptions::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(
        cycle_functions(f),
        [
            "main.(*T).String",
            "main.T.String",
            "fmt.Sprintf",
            "fmt.(*pp).doPrintf",
            "fmt.(*pp).printArg",
            "fmt.(*pp).handleMethods",
        ]
    );
    assert_eq!(data(f)["repeat"], 300);
    assert_eq!(data(f)["entry"]["function"], "main.main");
    assert_eq!(data(f)["entry"]["line"], 50);
    assert_eq!(data(f)["cycle"][1]["line"], 10);
}

#[test]
fn shallow_cpu_bound_profile_has_no_finding() {
    let mut syms = Syms::default();
    let root = [
        syms.addr("main.main", "/src/app/main.go", 20),
        syms.addr("runtime.main", "/go/src/runtime/proc.go", 283),
    ];
    let work = syms.addr("main.work", "/src/app/main.go", 30);
    let hash = syms.addr("main.hash", "/src/app/main.go", 40);
    let leaves: Vec<u64> = (0..20)
        .map(|i| {
            syms.addr(
                "crypto/sha256.block",
                "/go/src/crypto/sha256/block.go",
                100 + i,
            )
        })
        .collect();
    // A legitimate shallow recursion: 10 levels of a tree walk.
    let walk = syms.addr("main.walk", "/src/app/tree.go", 8);
    let mut p = Profile::default();
    for i in 0..2_000u64 {
        let mut s = vec![leaves[(i % 20) as usize], hash, work];
        if i % 5 == 0 {
            s = vec![leaves[0]];
            s.extend([walk; 10]);
        }
        s.extend(root);
        p.add(&sample(
            s,
            1 + i % 4,
            GoroutineState::Running,
            i * 10_000_000,
            8192,
        ));
    }
    let findings = diagnose(&p, &syms.symbols, &DiagnoseOptions::default());
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn pileup_of_150_goroutines() {
    let mut syms = Syms::default();
    let parked = vec![
        syms.addr("runtime.gopark", "/go/src/runtime/proc.go", 424),
        syms.addr("runtime.chanrecv", "/go/src/runtime/chan.go", 583),
        syms.addr("runtime.chanrecv1", "/go/src/runtime/chan.go", 442),
        syms.addr("main.worker", "/src/app/main.go", 30),
        syms.addr("runtime.goexit", "/go/src/runtime/asm_amd64.s", 1700),
    ];
    let busy = vec![
        syms.addr("main.serve", "/src/app/main.go", 60),
        syms.addr("runtime.goexit", "/go/src/runtime/asm_amd64.s", 1700),
    ];
    let mut p = Profile::default();
    for goid in 100..250 {
        p.add(&sample(
            parked.clone(),
            goid,
            GoroutineState::Waiting,
            goid,
            4096,
        ));
        // Seen twice: still one goroutine.
        p.add(&sample(
            parked.clone(),
            goid,
            GoroutineState::Waiting,
            goid + 1,
            4096,
        ));
    }
    for goid in 300..350 {
        p.add(&sample(
            busy.clone(),
            goid,
            GoroutineState::Running,
            goid,
            4096,
        ));
    }
    let findings = diagnose(&p, &syms.symbols, &DiagnoseOptions::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.kind(), GOROUTINE_PILEUP);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(data(f)["goroutines"], 150);
    assert_eq!(data(f)["samples"], 300);
    assert_eq!(data(f)["states"]["waiting"], 150);
    assert_eq!(data(f)["stack"][3]["function"], "main.worker");
    assert_eq!(data(f)["goids"].as_array().unwrap().len(), 150);
    assert_eq!(
        summary(f),
        "150 goroutines waiting in main.worker (main.go:30) with the same stack"
    );

    let fewer = DiagnoseOptions {
        pileup_min_goroutines: 151,
        ..DiagnoseOptions::default()
    };
    assert!(diagnose(&p, &syms.symbols, &fewer).is_empty());
}

#[test]
fn pileup_groups_by_innermost_frames() {
    let mut syms = Syms::default();
    let inner = [
        syms.addr("runtime.gopark", "/go/src/runtime/proc.go", 424),
        syms.addr("sync.(*Mutex).Lock", "/go/src/sync/mutex.go", 90),
        syms.addr("main.(*Cache).Get", "/src/app/cache.go", 17),
    ];
    let callers: Vec<u64> = (0..4)
        .map(|i| syms.addr("main.handler", "/src/app/http.go", 100 + i))
        .collect();
    let mut p = Profile::default();
    for goid in 0..120u64 {
        let mut s = inner.to_vec();
        s.push(callers[(goid % 4) as usize]);
        p.add(&sample(s, goid, GoroutineState::Waiting, goid, 4096));
    }
    let by_inner = DiagnoseOptions {
        pileup_frames: Some(3),
        ..DiagnoseOptions::default()
    };
    let f = diagnose(&p, &syms.symbols, &by_inner);
    assert_eq!(f.len(), 1);
    assert_eq!(data(&f[0])["goroutines"], 120);
    assert_eq!(data(&f[0])["stack_complete"], false);
    assert!(
        summary(&f[0]).contains("main.(*Cache).Get (cache.go:17)"),
        "{}",
        summary(&f[0])
    );
    let whole = DiagnoseOptions {
        pileup_frames: None,
        ..DiagnoseOptions::default()
    };
    assert!(diagnose(&p, &syms.symbols, &whole).is_empty());
}

#[test]
fn findings_most_severe_first_and_entry_may_be_missing() {
    let m = Mutual::new();
    let mut p = Profile::default();
    // Cut on the root side: the recursion reaches the outermost captured frame.
    let mut cut = m.stack(400);
    cut.truncate(400);
    let mut s = sample(cut, 5, GoroutineState::Running, 0, 900_000_000);
    s.truncated = true;
    p.add(&s);
    // And a pile-up, less severe.
    for goid in 1_000..1_100 {
        p.add(&sample(
            vec![m.root[2]],
            goid,
            GoroutineState::Runnable,
            0,
            100,
        ));
    }
    let findings = diagnose(&p, &m.syms.symbols, &DiagnoseOptions::default());
    assert_eq!(findings.len(), 2, "{findings:#?}");
    assert_eq!(findings[0].kind(), RUNAWAY_RECURSION);
    assert_eq!(findings[0].severity, Severity::Critical);
    assert_eq!(data(&findings[0])["entry"], serde_json::Value::Null);
    assert_eq!(data(&findings[0])["depth_exact"], false);
    assert!(
        summary(&findings[0]).contains("at least 400 frames"),
        "{}",
        summary(&findings[0])
    );
    assert!(summary(&findings[0]).contains("entry not captured"));
    assert_eq!(findings[1].kind(), GOROUTINE_PILEUP);
}

#[test]
fn unknown_addresses_fold_on_the_address() {
    // No symbols at all: names are the bare addresses, recursion still found.
    let mut p = Profile::default();
    let mut s: Vec<u64> = [0x1000u64, 0x2000].repeat(100);
    s.push(0x3000);
    p.add(&sample(s, 3, GoroutineState::Running, 0, 20_000));
    let findings = diagnose(&p, &Symbols::default(), &DiagnoseOptions::default());
    assert_eq!(findings.len(), 1);
    assert_eq!(data(&findings[0])["repeat"], 100);
    assert_eq!(data(&findings[0])["entry"]["function"], "0x3000");
}
