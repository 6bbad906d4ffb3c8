//! Goroutine creation: the instruction after `CALL runtime.newproc1` in `runtime.newproc.func1`,
//! or `runtime.newproc1` entry as the fallback.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use stacksampler_common::{EventFlags, EventKind};

use crate::{
    maps::count,
    programs::event_record::{
        WalkStart, begin, config, goid_of, sched_start, stack_hi_of, submit, user_goroutine,
        walk_into,
    },
    regs::{entry_return_address, regs},
};

/// Common part of the two creation probes: `new_g` is the new goroutine when known.
#[inline(always)]
unsafe fn goroutine_created(ctx: &ProbeContext, new_g: u64, caller_pc: u64) {
    let Some(cfg) = config() else { return };
    count(|c| c.create_hits += 1);
    let r = regs(ctx);
    let go = &cfg.go;
    let Some((cpu, rec)) = begin(EventKind::GOROUTINE_CREATE) else {
        return;
    };
    unsafe {
        if new_g != 0 {
            rec.header.goid = goid_of(go, new_g);
            rec.header.g_addr = new_g;
        }
        rec.header.arg0 = new_g;
        rec.header.arg1 = caller_pc;
        match user_goroutine(go, r.g) {
            Some((creator, system)) => {
                rec.header.parent_goid = goid_of(go, creator);
                let start = if system {
                    rec.header.flags |= EventFlags::SYSTEM_STACK;
                    sched_start(go, creator, false)
                } else {
                    WalkStart {
                        pc: r.ip,
                        caller: entry_return_address(ctx, &r),
                        fp: r.fp,
                        stack_hi: stack_hi_of(go, creator),
                    }
                };
                walk_into(rec, &start, cfg.create_walk_limit);
            }
            None => {
                rec.header.flags |= EventFlags::NO_GOROUTINE;
                count(|c| c.read_errors += 1);
            }
        }
    }
    submit(cpu);
}

/// The instruction after `CALL runtime.newproc1` in `runtime.newproc.func1`: AX = new `g`.
#[uprobe]
pub fn go_newproc_created(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    // SAFETY: see goroutine_created.
    unsafe { goroutine_created(&ctx, r.args[0], 0) };
    0
}

/// Fallback: `runtime.newproc1(fn *funcval, callergp *g, callerpc uintptr, ...)` entry.
#[uprobe]
pub fn go_newproc1(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    // SAFETY: see goroutine_created.
    unsafe { goroutine_created(&ctx, 0, r.args[2]) };
    0
}
