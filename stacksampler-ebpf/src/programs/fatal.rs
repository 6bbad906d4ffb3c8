//! Fatal errors: the `runtime.throw` / `runtime.fatal` uprobes (message, goroutine, stack).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_probe_read_user as raw_read_user, macros::uprobe,
    programs::ProbeContext,
};
use stacksampler_common::{EVENT_MESSAGE_BYTES, EventFlags, EventKind};

use crate::{
    maps::count,
    programs::event_record::{
        WalkStart, begin, config, goid_of, sched_start, stack_hi_of, submit, user_goroutine,
        walk_into,
    },
    regs::{entry_return_address, regs},
};

/// A fatal error at a function entry: `message` = (AX, BX) when `with_message`.
#[inline(always)]
unsafe fn fatal(ctx: &ProbeContext, kind: u32, with_message: bool) {
    let Some(cfg) = config() else { return };
    count(|c| c.fatal_hits += 1);
    let r = regs(ctx);
    let go = &cfg.go;
    let Some((cpu, rec)) = begin(kind) else {
        return;
    };
    unsafe {
        let caller = entry_return_address(ctx, &r);
        rec.header.arg1 = caller;
        if with_message {
            let (ptr, len) = (r.args[0], r.args[1]);
            rec.header.arg0 = len;
            let mut n = len as u32;
            if len > EVENT_MESSAGE_BYTES as u64 {
                n = EVENT_MESSAGE_BYTES as u32;
            }
            if n > 0 && n <= EVENT_MESSAGE_BYTES as u32 && ptr != 0 {
                let dst = rec.header.message.as_mut_ptr().cast::<c_void>();
                if raw_read_user(dst, n, ptr as *const c_void) == 0 {
                    rec.header.message_len = n;
                }
            }
        }
        match user_goroutine(go, r.g) {
            Some((gp, system)) => {
                rec.header.goid = goid_of(go, gp);
                rec.header.g_addr = gp;
                rec.header.parent_goid = goid_of(go, r.g);
                let start = if system {
                    rec.header.flags |= EventFlags::SYSTEM_STACK;
                    // On g0 (e.g. newstack's "stack overflow"): the goroutine's saved context.
                    // sched.sp holds a caller's pc only when morestack saved it: user space
                    // keeps that frame when `arg1` (the thrower) is runtime.newstack.
                    sched_start(go, gp, true)
                } else {
                    WalkStart {
                        pc: r.ip,
                        caller,
                        fp: r.fp,
                        stack_hi: stack_hi_of(go, gp),
                    }
                };
                walk_into(rec, &start, cfg.fatal_walk_limit);
            }
            None => {
                rec.header.flags |= EventFlags::NO_GOROUTINE;
                count(|c| c.read_errors += 1);
                let start = WalkStart {
                    pc: r.ip,
                    caller,
                    fp: r.fp,
                    stack_hi: 0,
                };
                walk_into(rec, &start, cfg.fatal_walk_limit);
            }
        }
    }
    submit(cpu);
}

/// `runtime.throw(s string)` and `runtime.fatal(s string)`.
#[uprobe]
pub fn go_throw(ctx: ProbeContext) -> u32 {
    // SAFETY: see fatal.
    unsafe { fatal(&ctx, EventKind::FATAL, true) };
    0
}
