//! Cost of mixed Go and C stacks: kernel time per sample (bpf_stats) and user-space unwinding
//! time per native sample, on `tests/go/cgomix` in three modes: a pure-Go goroutine of the cgo
//! binary (no native part: the baseline), a goroutine spinning in libc called from C (a cgo
//! call: stack copy, frames from `curg.sched`), and the cgo callback of 30 Go and 40 C frames.

use serde::Serialize;

use super::{
    Ctx, MAX_FRAMES,
    kernel::{idle_cost, sample_verbose},
    proc::Target,
};

/// How long the program runs: longer than any measurement; it is killed (by pid) when dropped.
const PROGRAM_SECONDS: &str = "600";

#[derive(Serialize)]
pub struct ModeCost {
    /// `go`, `libc` or `callback` (cgomix's `-mode`).
    pub mode: &'static str,
    pub measured_depth: u64,
    pub target_hits: u64,
    pub delivered: u64,
    pub ns_per_run: f64,
    /// One target sample's own kernel cost (filtered runs removed).
    pub ns_per_target_sample: f64,
    /// stacksampler's `native unwinding:` line (samples, frames, cut, ns per native sample).
    pub native_unwinding: Option<String>,
}

#[derive(Serialize)]
pub struct NativeCost {
    /// ns per filtered run (the target idle), removed from every row.
    pub filter_ns_per_run: f64,
    pub modes: Vec<ModeCost>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<NativeCost> {
    let filter_ns = idle_cost(ctx)?.ns_per_run;
    let mut modes = Vec::new();
    for mode in ["go", "libc", "callback"] {
        let args: Vec<String> = ["-mode", mode, "-seconds", PROGRAM_SECONDS]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let target = Target::start(&ctx.tools.cgomix, &args)?;
        let run = sample_verbose(ctx, target.pid(), MAX_FRAMES)?;
        drop(target);
        let cost = ModeCost {
            mode,
            measured_depth: run.measured_depth(),
            target_hits: run.target_hits,
            delivered: run.delivered,
            ns_per_run: run.ns_per_run,
            ns_per_target_sample: run.ns_per_target_sample(filter_ns),
            native_unwinding: run.native_line.clone(),
        };
        eprintln!(
            "bench: native, {mode} (depth {}): {:.0} ns per target sample in the kernel; {}",
            cost.measured_depth,
            cost.ns_per_target_sample,
            cost.native_unwinding
                .as_deref()
                .unwrap_or("no native samples")
        );
        modes.push(cost);
    }
    Ok(NativeCost {
        filter_ns_per_run: filter_ns,
        modes,
    })
}
