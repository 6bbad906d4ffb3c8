//! Stack growth and shrink: the `runtime.copystack` uprobe.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use stacksampler_common::{EventFlags, EventKind};

use crate::{
    maps::count,
    programs::event_record::{
        begin, config, goid_of, sched_start, submit, user, user_goroutine, walk_into,
    },
    regs::regs,
};

/// `runtime.copystack(gp *g, newsize uintptr)` (runs on `g0`).
#[uprobe]
pub fn go_copystack(ctx: ProbeContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    count(|c| c.copystack_hits += 1);
    let r = regs(&ctx);
    let go = &cfg.go;
    let (gp, newsize) = (r.args[0], r.args[1]);
    if gp == 0 {
        count(|c| c.read_errors += 1);
        return 0;
    }
    // SAFETY: user memory is read through bpf_probe_read_user only.
    unsafe {
        let lo: u64 = user(gp + go.g_stack_lo as u64).unwrap_or(0);
        let hi: u64 = user(gp + go.g_stack_hi as u64).unwrap_or(0);
        let old = hi.wrapping_sub(lo);
        let kind = if newsize > old {
            EventKind::STACK_GROWTH
        } else {
            EventKind::STACK_SHRINK
        };
        let Some((cpu, rec)) = begin(kind) else {
            return 0;
        };
        rec.header.goid = goid_of(go, gp);
        rec.header.g_addr = gp;
        rec.header.arg0 = newsize;
        rec.header.arg1 = old;
        if let Some((cur, _)) = user_goroutine(go, r.g) {
            rec.header.parent_goid = goid_of(go, cur);
        }
        rec.header.flags |= EventFlags::SYSTEM_STACK;
        // A growth's context was saved by morestack at the prologue of the function that needed
        // more stack: its caller's pc is at sched.sp (amd64) or in sched.lr (arm64).
        let start = sched_start(go, gp, kind == EventKind::STACK_GROWTH);
        let limit = if kind == EventKind::STACK_GROWTH {
            cfg.growth_walk_limit
        } else {
            // Shrinks only count; their stacks are not needed.
            0
        };
        walk_into(rec, &start, limit);
        submit(cpu);
    }
    0
}
