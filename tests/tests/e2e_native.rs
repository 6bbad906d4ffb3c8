//! End to end, mixed Go and C stacks: the real `stacksampler` binary samples `tests/go/cgomix`
//! (built with cgo, its C at cgo's default `-O2`: no frame pointers, like Debian's libc) with the
//! oldest and the newest Go toolchain, and each stack must be one stack across the cgo boundary:
//!
//! - a cgo callback: `main.goSpin`, 30 `main.goRec`, `main.goCallback` and the callback glue
//!   (`_cgoexp_..._goCallback`, `runtime.cgocallbackg1`, `runtime.cgocallbackg`,
//!   `runtime.cgocallback`, `crosscall2`, the exported C `goCallback`), 40 `c_rec`, `c_entry`,
//!   the cgo call glue (`_cgo_..._Cfunc_c_entry`, `runtime.cgocall`, `main._Cfunc_c_entry`),
//!   `main.callC`, the goroutine's entry and `runtime.goexit`, in that order;
//! - a goroutine spinning in libc (`strtod`) called from C: its libc frames (named from Debian's
//!   libc), `c_libc_loop`, then its Go callers.

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, primary_go_toolchains,
    report::{functions, stacks},
    run_stacksampler,
};

/// Seconds sampled per toolchain.
const SECONDS: &str = "3";
/// Seconds the program runs (longer than the sampling, it exits by itself).
const PROGRAM_SECONDS: &str = "8";
/// Depths the program recurses to (tests/go/cgomix).
const C_DEPTH: usize = 40;
const GO_DEPTH: usize = 30;
/// Fewest samples each goroutine must give in a run (both spin on their own CPU at 99 Hz).
const MIN_SAMPLES: u64 = 50;
/// The pseudo-frame of a native part whose unwind stopped.
const CUT_FRAME: &str = "[native frames cut: unwind stopped]";
/// libc as Debian installs it.
const LIBC: &str = "libc.so.6";

/// One expected frame.
#[derive(Clone, Debug)]
enum Expect {
    /// This exact function name.
    Is(&'static str),
    /// A generated name: this prefix and this suffix (the middle is cgo's hash).
    Generated(&'static str, &'static str),
    /// One of these names (the name of the goroutine's entry closure changed across releases).
    AnyOf(&'static [&'static str]),
}

impl Expect {
    fn matches(&self, name: &str) -> bool {
        match self {
            Expect::Is(n) => name == *n,
            Expect::Generated(prefix, suffix) => name.starts_with(prefix) && name.ends_with(suffix),
            Expect::AnyOf(names) => names.contains(&name),
        }
    }
}

fn matches(expected: &[Expect], got: &[String]) -> bool {
    expected.len() == got.len() && expected.iter().zip(got).all(|(e, g)| e.matches(g))
}

fn minor(tc: &GoToolchain) -> u32 {
    tc.version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("toolchain version is major.minor")
}

/// The callback goroutine's stack, innermost first, as Go's runtime builds it for `tc`.
fn callback_stack(tc: &GoToolchain) -> Vec<Expect> {
    let mut e = vec![Expect::Is("main.goSpin")];
    e.extend(std::iter::repeat_n(Expect::Is("main.goRec"), GO_DEPTH));
    e.push(Expect::Is("main.goCallback"));
    e.push(Expect::Generated("_cgoexp_", "_goCallback"));
    e.push(Expect::Is("runtime.cgocallbackg1"));
    e.push(Expect::Is("runtime.cgocallbackg"));
    if minor(tc) < 21 {
        // Go 1.19 calls cgocallbackg from assembly through its ABI wrapper.
        e.push(Expect::Is("runtime.cgocallbackg"));
    }
    e.push(Expect::Is("runtime.cgocallback"));
    e.push(Expect::Is("crosscall2"));
    e.push(Expect::Is("goCallback"));
    e.extend(std::iter::repeat_n(Expect::Is("c_rec"), C_DEPTH));
    e.push(Expect::Is("c_entry"));
    e.push(Expect::Generated("_cgo_", "_Cfunc_c_entry"));
    e.extend(go_tail(
        "main._Cfunc_c_entry",
        "main.callC",
        "main.callbackEntry",
        1,
    ));
    e
}

/// The Go frames below a cgo call: the call glue, the caller, the goroutine's entry function,
/// its `go` statement's closure (the `n`th of `main.main`) and `runtime.goexit`.
fn go_tail(
    cfunc: &'static str,
    caller: &'static str,
    entry: &'static str,
    n: usize,
) -> Vec<Expect> {
    let closures: &'static [&'static str] = match n {
        1 => &["main.main.gowrap1", "main.main.func1"],
        _ => &["main.main.gowrap2", "main.main.func2"],
    };
    vec![
        Expect::Is("runtime.cgocall"),
        Expect::Is(cfunc),
        Expect::Is(caller),
        Expect::Is(entry),
        Expect::AnyOf(closures),
        Expect::Is("runtime.goexit"),
    ]
}

fn count(stack: &Value) -> u64 {
    stack["count"].as_u64().unwrap_or(0)
}

fn modules(stack: &Value) -> Vec<String> {
    stack["frames"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|f| f["module"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Samples a running cgomix for SECONDS; returns the json report and the executable's file
/// name.
fn sample(tc: &GoToolchain) -> (Value, String) {
    let exe = build_go("cgomix", tc, Variant::PieCgo);
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut program = GoProcess::spawn(&exe, &["-seconds", PROGRAM_SECONDS]);
    program.wait_for_line("ready");
    let pid = program.pid().to_string();
    let out = run_stacksampler(&["--pid", &pid, "--duration", SECONDS, "--format", "json"]);
    assert!(out.status.success(), "stacksampler failed: {}", out.stderr);
    (out.json(), name)
}

/// The callback goroutine's samples are one stack from the spinning Go leaf through the 40 C
/// frames to `runtime.goexit`, exactly; the libc goroutine's are libc frames, its C caller and
/// its Go callers.
#[test]
fn mixed_go_and_c_stacks() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let what = tc.label();
        let (report, exe_name) = sample(&tc);
        let all = stacks(&report);

        // The callback: every stack whose leaf is the spinning Go function.
        let expected = callback_stack(&tc);
        let spinning: Vec<&Value> = all
            .iter()
            .filter(|s| functions(s).first().map(String::as_str) == Some("main.goSpin"))
            .collect();
        let spin_samples: u64 = spinning.iter().map(|s| count(s)).sum();
        assert!(
            spin_samples >= MIN_SAMPLES,
            "{what}: {spin_samples} samples in main.goSpin"
        );
        for s in &spinning {
            let got = functions(s);
            assert!(
                matches(&expected, &got),
                "{what}: callback stack is not the expected one:\n got {got:?}\nwant {expected:?}"
            );
        }

        // The libc loop: libc frames, c_libc_loop, the Go callers.
        let tail = go_tail(
            "main._Cfunc_c_libc_loop",
            "main.libcLoop",
            "main.libcEntry",
            2,
        );
        let mut in_c = 0;
        let mut in_libc = 0;
        for s in all
            .iter()
            .filter(|s| functions(s).iter().any(|f| f == "c_libc_loop"))
        {
            let got = functions(s);
            let mods = modules(s);
            let at = got.iter().position(|f| f == "c_libc_loop").unwrap_or(0);
            // libc's frames, and right above c_libc_loop possibly the program's PLT stub
            // (`strtod@plt`, unnamed: `cgomix+0x...`).
            let libc_end = match at.checked_sub(1) {
                Some(plt) if got[plt].starts_with(&format!("{exe_name}+0x")) => plt,
                _ => at,
            };
            assert!(
                mods[..libc_end].iter().all(|m| m.ends_with(LIBC)),
                "{what}: frames above c_libc_loop are not libc's: {got:?} {mods:?}"
            );
            assert!(
                matches(&tail, &got[at + 1..]),
                "{what}: below c_libc_loop, not its Go callers: {got:?}"
            );
            in_c += count(s);
            if libc_end > 0 {
                in_libc += count(s);
            }
        }
        assert!(in_c >= MIN_SAMPLES, "{what}: {in_c} samples in c_libc_loop");
        // A cut native part ends in the marker; the C code here always has unwind information
        // (a first call through the dynamic linker's lazy binding may not: allow 1 in 50).
        let cut: u64 = all
            .iter()
            .filter(|s| functions(s).iter().any(|f| f == CUT_FRAME))
            .map(count)
            .sum();
        assert!(
            cut * 50 <= in_c + spin_samples,
            "{what}: {cut} samples with a cut native part"
        );
        assert!(
            in_libc * 2 >= in_c,
            "{what}: only {in_libc} of {in_c} samples in c_libc_loop had its libc frames"
        );
        eprintln!(
            "passed: {what}: {spin_samples} callback samples of {} frames, {in_c} in C ({in_libc} in libc)",
            expected.len()
        );
    }
}
