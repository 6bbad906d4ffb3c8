//! Ground truth for the symbolizer: Go's own `runtime.CallersFrames`.
//!
//! `tests/go/symoracle` records PCs with `runtime.Callers` at several places (inlined chains,
//! methods, closures, generics, recursion, a goroutine) and prints how Go expands them. The test
//! symbolizes the same call-site addresses (PC - 1) in the live process through
//! `ProcessSymbolizer::new(pid)` and requires the function/file/line sequences to be equal, for
//! every Go version and build variant. Symbolization happens after the target exited, as the
//! sampler does it.

use std::{collections::HashMap, path::Path, process::Command, time::Duration};

use stacksampler::symbolize::{Frame, FrameKind, ProcessSymbolizer, Symbolize, Symbols};
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, go_toolchains, primary_go_toolchains,
};

const PROGRAM: &str = "symoracle";

/// One frame as Go prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    function: String,
    file: String,
    line: u32,
}

impl Expected {
    fn parse(text: &str) -> Self {
        let mut it = text.split('\t');
        let function = it.next().expect("function").to_owned();
        let file = it.next().expect("file").to_owned();
        let line = it.next().expect("line").parse().expect("line number");
        Self {
            function,
            file,
            line,
        }
    }

    fn of(frame: &Frame) -> Self {
        Self {
            function: frame.function.to_string(),
            file: frame.file.as_deref().unwrap_or_default().to_owned(),
            line: frame.line.unwrap_or(0),
        }
    }
}

/// One capture point of the oracle.
#[derive(Debug, Default)]
struct Stack {
    name: String,
    /// `runtime.Callers` PCs, each with its own expansion.
    pcs: Vec<(u64, Expected)>,
    /// The whole stack expanded at once.
    frames: Vec<Expected>,
}

/// Everything the oracle printed.
#[derive(Debug, Default)]
struct Oracle {
    stacks: Vec<Stack>,
    c_addrs: HashMap<String, u64>,
}

fn read_oracle(proc: &mut GoProcess) -> Oracle {
    let mut oracle = Oracle::default();
    loop {
        let line = proc.read_line().expect("oracle exited before READY");
        if line == "READY" {
            return oracle;
        }
        if let Some(name) = line.strip_prefix("STACK ") {
            oracle.stacks.push(Stack {
                name: name.to_owned(),
                ..Stack::default()
            });
        } else if let Some(rest) = line.strip_prefix("PC ") {
            let (pc, frame) = rest.split_once(' ').expect("PC line");
            let pc = u64::from_str_radix(pc, 16).expect("hex pc");
            let stack = oracle.stacks.last_mut().expect("PC before STACK");
            stack.pcs.push((pc, Expected::parse(frame)));
        } else if let Some(rest) = line.strip_prefix("FRAME ") {
            let stack = oracle.stacks.last_mut().expect("FRAME before STACK");
            stack.frames.push(Expected::parse(rest));
        } else if let Some(rest) = line.strip_prefix("CADDR ") {
            let (name, addr) = rest.split_once(' ').expect("CADDR line");
            oracle.c_addrs.insert(
                name.to_owned(),
                u64::from_str_radix(addr, 16).expect("hex addr"),
            );
        }
    }
}

/// Call-site address of a `runtime.Callers` PC (CallersFrames looks up `pc - 1`).
fn call_site(pc: u64) -> u64 {
    pc - 1
}

fn all_addrs(oracle: &Oracle) -> Vec<u64> {
    let mut addrs: Vec<u64> = oracle
        .stacks
        .iter()
        .flat_map(|s| s.pcs.iter().map(|(pc, _)| call_site(*pc)))
        .collect();
    addrs.extend(oracle.c_addrs.values().map(|a| a + 1));
    addrs
}

/// Compares our frames with Go's, stack by stack; returns the differences.
fn compare(oracle: &Oracle, symbols: &Symbols) -> Vec<String> {
    let mut problems = Vec::new();
    for stack in &oracle.stacks {
        // Each PC alone: our innermost frame is Go's frame for that PC.
        for (pc, expected) in &stack.pcs {
            let ours = symbols.frames(call_site(*pc));
            let got = Expected::of(&ours[0]);
            if &got != expected {
                problems.push(format!(
                    "{}: pc {pc:#x}: ours {got:?}, Go {expected:?}",
                    stack.name
                ));
            }
        }
        // The whole stack: expanding physical PCs (skipping the PCs Callers adds for the outer
        // inlined frames, which our expansion already covers) gives Go's sequence exactly.
        let mut ours_seq = Vec::new();
        let mut i = 0;
        while i < stack.pcs.len() {
            let frames = symbols.frames(call_site(stack.pcs[i].0));
            let last = frames.len() - 1;
            for (k, f) in frames.iter().enumerate() {
                if f.inlined != (k < last) {
                    problems.push(format!("{}: bad inlined flag on {f:?}", stack.name));
                }
            }
            ours_seq.extend(frames.iter().map(Expected::of));
            i += frames.len();
        }
        if ours_seq != stack.frames {
            problems.push(format!(
                "{}: sequence differs:\n  ours {ours_seq:#?}\n  Go   {:#?}",
                stack.name, stack.frames
            ));
        }
    }
    problems
}

/// Runs the oracle built by `tc` as `variant` (or through `command` when given) and checks it.
fn check(exe: &Path, label: &str, command: Option<Command>, variant: Variant) {
    let mut proc = match command {
        Some(mut cmd) => GoProcess::spawn_command(&mut cmd),
        None => GoProcess::spawn(exe, &[]),
    };
    let oracle = read_oracle(&mut proc);
    assert!(
        oracle.stacks.len() >= 6,
        "{label}: too few stacks: {oracle:?}"
    );
    let mut symbolizer = ProcessSymbolizer::new(proc.pid()).expect("ProcessSymbolizer::new");
    let native = (variant == Variant::PieCgo).then(|| blocked_thread_pcs(proc.pid()));
    // Let the target exit first: symbolization must not need it any more.
    proc.close_stdin();
    assert!(
        proc.wait_timeout(Duration::from_secs(10)).is_some(),
        "{label}: the oracle did not exit after stdin closed"
    );
    let mut addrs = all_addrs(&oracle);
    addrs.extend(native.iter().flatten());
    let symbols = symbolizer.symbolize(&addrs);
    let problems = compare(&oracle, &symbols);
    // The inlined chain inlineLeaf <- inlineMid <- outerNoInline is one physical frame.
    let chain = oracle
        .stacks
        .iter()
        .find(|s| s.name == "inline-chain")
        .expect("inline-chain stack");
    let first = symbols.frames(call_site(chain.pcs[0].0));
    let names: Vec<&str> = first.iter().map(|f| &*f.function).collect();
    assert_eq!(
        names,
        ["main.inlineLeaf", "main.inlineMid", "main.outerNoInline"],
        "{label}: inline expansion"
    );
    assert!(
        problems.is_empty(),
        "{label}: {} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
    let exe_name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(
        symbolizer
            .problems()
            .iter()
            .all(|p| !p.path.contains(exe_name)),
        "{label}: {:?}",
        symbolizer.problems()
    );
    if variant == Variant::PieCgo {
        check_native(
            label,
            &oracle,
            &symbols,
            native.as_deref().unwrap_or_default(),
        );
    }
}

/// Address ranges of `pid`'s mappings of libc.
fn libc_ranges(pid: u32) -> Vec<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| l.contains("libc.so") || l.contains("libc-"))
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect()
}

/// User-space PCs of every thread of `pid` blocked in a system call (`/proc/PID/task/*/syscall`
/// ends with the stack pointer and the PC). Waits (up to 10 s, the machine may be busy) until a
/// thread sleeps in `nanosleep`/`clock_nanosleep` *inside libc*: the cgo goroutine needs a moment
/// to get there, and the Go runtime's own `usleep` (sysmon) makes the same system call from Go
/// code, which must not end the wait.
fn blocked_thread_pcs(pid: u32) -> Vec<u64> {
    const SYS_NANOSLEEP: u64 = 35;
    const SYS_CLOCK_NANOSLEEP: u64 = 230;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let libc = libc_ranges(pid);
        let mut pcs = Vec::new();
        let mut sleeping = false;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return pcs;
        };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else {
                continue;
            };
            let nr = text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(pc) = text
                .split_whitespace()
                .last()
                .and_then(|pc| u64::from_str_radix(pc.trim_start_matches("0x"), 16).ok())
            {
                let in_libc = libc.iter().any(|&(lo, hi)| (lo..hi).contains(&pc));
                sleeping |= in_libc && matches!(nr, Some(SYS_NANOSLEEP | SYS_CLOCK_NANOSLEEP));
                pcs.push(pc.saturating_sub(1));
            }
        }
        if sleeping || std::time::Instant::now() > deadline {
            return pcs;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_native(label: &str, oracle: &Oracle, symbols: &Symbols, blocked: &[u64]) {
    let usleep = oracle.c_addrs.get("usleep").expect("CADDR usleep");
    let f = &symbols.frames(usleep + 1)[0];
    assert_eq!(&*f.function, "usleep", "{label}: {f:?}");
    assert_eq!(f.kind, FrameKind::Native);
    assert!(
        f.module.as_deref().is_some_and(|m| m.contains("libc")),
        "{label}: {f:?}"
    );
    let sleeper = oracle
        .c_addrs
        .get("symoracle_c_sleeper")
        .expect("CADDR sleeper");
    let f = &symbols.frames(sleeper + 1)[0];
    assert_eq!(&*f.function, "symoracle_c_sleeper", "{label}: {f:?}");
    assert!(
        f.file.as_deref().is_some_and(|p| p.ends_with("cgo.go")) && f.line.is_some(),
        "{label}: the cgo function has DWARF lines: {f:?}"
    );
    // The thread running the cgo goroutine is blocked in libc's nanosleep.
    let names: Vec<String> = blocked
        .iter()
        .map(|pc| symbols.frames(*pc)[0].function.to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("nanosleep")),
        "{label}: no thread named in nanosleep: {names:?}"
    );
}

fn run_all(toolchains: &[GoToolchain], variants: &[Variant]) {
    for tc in toolchains {
        for &variant in variants {
            let exe = build_go(PROGRAM, tc, variant);
            check(&exe, &format!("{} {variant:?}", tc.label()), None, variant);
        }
    }
}

#[test]
fn matches_callers_frames_go119_and_newest_every_variant() {
    run_all(&primary_go_toolchains(), &Variant::ALL);
}

#[test]
fn matches_callers_frames_every_go_version_stripped() {
    run_all(&go_toolchains(), &[Variant::Stripped]);
}

/// The target runs in its own mount namespace from a path that does not exist on the host.
#[test]
fn symbolizes_a_target_in_another_mount_namespace() {
    let tc = primary_go_toolchains().pop().expect("newest toolchain");
    let exe = build_go(PROGRAM, &tc, Variant::Stripped);
    let inside = "/opt/stacksampler-symoracle-in-namespace";
    assert!(
        !Path::new(inside).exists(),
        "{inside} must not exist on the host"
    );
    let script = format!(
        "mount -t tmpfs tmpfs /opt && touch {inside} && mount --bind {} {inside} && exec {inside}",
        exe.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    check(&exe, "mount namespace", Some(cmd), Variant::Stripped);
}
