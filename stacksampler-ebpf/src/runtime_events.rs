//! Runtime events: uprobes on the Go runtime of the target, all placed at function
//! entries or at one plain instruction (never return probes: Go moves stacks, and a return probe
//! rewrites a return address on the stack being moved).
//!
//! - `runtime.copystack(gp, newsize)`: a goroutine's stack grows (or shrinks); the stack is the
//!   goroutine's own, walked from `gp.sched`.
//! - the instruction after `CALL runtime.newproc1` in `runtime.newproc.func1` (AX = the new `g`,
//!   its `goid` already set): a goroutine was created; the creator's stack is walked from
//!   `curg.sched` (the closure runs on `g0`). `runtime.newproc1` entry is the fallback.
//! - `runtime.goexit1`: a goroutine ends (runs on it: R14 = `g`).
//! - `runtime.throw` / `runtime.fatal` (message in AX/BX): a fatal error (they are the only
//!   callers of `runtime.fatalthrow`).
//!
//! Arguments follow Go's register ABI (Go 1.17+): amd64 AX, BX, CX, DI, SI, R8-R11, `g` in R14;
//! arm64 R0-R15, `g` in R28. Offsets of `runtime.g`/`m`/`gobuf` come from user space.
//!
//! Stacks are walked by the sampler's walk (`walk`) into a per-CPU [`EventRecord`]: the first
//! [`EVENT_HEAD_FRAMES`] frames in order, then a ring of [`EVENT_TAIL_FRAMES`], so a stack
//! deeper than the buffer still yields its head, its tail and its exact depth.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_get_smp_processor_id, bpf_probe_read_user as raw_read_user},
    },
    macros::{map, uprobe},
    maps::{Array, PerCpuArray, RingBuf},
    programs::ProbeContext,
};
use stacksampler_common::{
    EVENT_CONFIG_KEY, EVENT_HEAD_FRAMES, EVENT_HEADER_SIZE, EVENT_MAX_FRAMES, EVENT_MESSAGE_BYTES,
    EVENT_TAIL_FRAMES, EventConfig, EventConfigFlags, EventCounters, EventFlags, EventKind,
    EventRecord, GoLayout,
};

use crate::walk::{self, AddressRange, Sink, WalkCall, WalkFrom};

/// Ring buffer size: room for a few dozen full-depth events, or tens of thousands of
/// creation/exit events, between two user-space polls.
const EVENTS_RING_BYTES: u32 = 8 << 20;
/// Upper bound of CPUs in the object; the loader resizes [`EVENT_SCRATCH`] to the machine's count.
const MAX_CPUS: u32 = 512;
/// Hard ceiling of frames walked for one event (bpf_loop allows 1 << 23 iterations).
const MAX_WALK: u32 = 1 << 20;

#[map]
static EVENT_CONFIG: Array<EventConfig> = Array::with_max_entries(1, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
static EVENT_COUNTERS: PerCpuArray<EventCounters> = PerCpuArray::with_max_entries(1, 0);

/// One event buffer per CPU (a per-CPU array value is capped at 32 KiB; a record is 128 KiB).
#[map]
static EVENT_SCRATCH: Array<EventRecord> = Array::with_max_entries(MAX_CPUS, 0);

#[inline(always)]
fn count(f: impl FnOnce(&mut EventCounters)) {
    if let Some(c) = EVENT_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        f(unsafe { &mut *c });
    }
}

/// Registers of the probed thread at the probe (user registers).
struct Regs {
    /// Go ABI integer arguments 0..3.
    args: [u64; 3],
    /// The current `g` (R14 / X28).
    g: u64,
    ip: u64,
    /// Read on amd64 only: a function entry's return address is at the stack top there (arm64
    /// has it in LR).
    #[cfg_attr(bpf_target_arch = "aarch64", allow(dead_code))]
    sp: u64,
    fp: u64,
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn regs(ctx: &ProbeContext) -> Regs {
    // SAFETY: a uprobe's context is the user `pt_regs`; fields are read at constant offsets.
    let r: &pt_regs = unsafe { &*ctx.regs };
    Regs {
        args: [r.rax, r.rbx, r.rcx],
        g: r.r14,
        ip: r.rip,
        sp: r.rsp,
        fp: r.rbp,
    }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
fn regs(ctx: &ProbeContext) -> Regs {
    // SAFETY: as above.
    let r: &pt_regs = unsafe { &*ctx.regs };
    Regs {
        args: [r.regs[0], r.regs[1], r.regs[2]],
        g: r.regs[28],
        ip: r.pc,
        sp: r.sp,
        fp: r.regs[29],
    }
}

/// The caller's pc at a function entry (return address: top of stack on amd64, LR on arm64).
#[inline(always)]
unsafe fn entry_return_address(ctx: &ProbeContext, r: &Regs) -> u64 {
    #[cfg(bpf_target_arch = "aarch64")]
    {
        let _ = r;
        // SAFETY: constant-offset context read.
        return unsafe { (*ctx.regs).regs[30] };
    }
    #[cfg(not(bpf_target_arch = "aarch64"))]
    {
        let _ = ctx;
        unsafe { user::<u64>(r.sp) }.unwrap_or(0)
    }
}

#[inline(always)]
unsafe fn user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// The configuration, when this hit is the target's and the layout is known.
#[inline(always)]
fn config() -> Option<&'static EventConfig> {
    let cfg = EVENT_CONFIG.get(EVENT_CONFIG_KEY)?;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid != cfg.target_tgid || tgid == 0 {
        count(|c| c.foreign_hits += 1);
        return None;
    }
    if cfg.flags & EventConfigFlags::GO_LAYOUT_KNOWN == 0 {
        return None;
    }
    Some(cfg)
}

/// Where a goroutine's stack walk starts.
struct WalkStart {
    pc: u64,
    /// The caller's pc when known separately (a function entry, or a `morestack` save), else 0.
    caller: u64,
    fp: u64,
    /// Top of the goroutine's stack (`g.stack.hi`; 0 when unknown).
    stack_hi: u64,
}

/// The user goroutine running on this thread: `g` itself, or `m.curg` when `g` is `m.g0`.
/// Returns (goroutine, on system stack).
#[inline(always)]
unsafe fn user_goroutine(go: &GoLayout, g: u64) -> Option<(u64, bool)> {
    if g == 0 {
        return None;
    }
    let m: u64 = unsafe { user(g + go.g_m as u64) }?;
    if m == 0 {
        return Some((g, false));
    }
    let g0: u64 = unsafe { user(m + go.m_g0 as u64) }.unwrap_or(0);
    if g == g0 {
        let curg: u64 = unsafe { user(m + go.m_curg as u64) }.unwrap_or(0);
        if curg != 0 {
            return Some((curg, true));
        }
        return None;
    }
    Some((g, false))
}

/// `gp.sched` as a walk start; `with_sp_caller` adds the caller's pc [`morestack_caller`] (valid
/// when `runtime.morestack` saved the context at a function's prologue).
#[inline(always)]
unsafe fn sched_start(go: &GoLayout, gp: u64, with_sp_caller: bool) -> WalkStart {
    let sched = gp + go.g_sched as u64;
    let pc: u64 = unsafe { user(sched + go.gobuf_pc as u64) }.unwrap_or(0);
    let sp: u64 = unsafe { user(sched + go.gobuf_sp as u64) }.unwrap_or(0);
    let fp: u64 = unsafe { user(sched + go.gobuf_bp as u64) }.unwrap_or(0);
    let caller = if with_sp_caller && sp != 0 {
        unsafe { morestack_caller(go, sched, sp) }
    } else {
        0
    };
    WalkStart {
        pc,
        caller,
        fp,
        stack_hi: unsafe { stack_hi_of(go, gp) },
    }
}

/// `gp.stack.hi`, 0 when unreadable.
#[inline(always)]
unsafe fn stack_hi_of(go: &GoLayout, gp: u64) -> u64 {
    unsafe { user::<u64>(gp + go.g_stack_hi as u64) }.unwrap_or(0)
}

/// The pc of the caller of the function whose prologue called `runtime.morestack`, from the
/// context morestack saved in `gp.sched`. amd64: the return address at `sched.sp` (the prologue
/// has not moved SP yet).
#[cfg(not(bpf_target_arch = "aarch64"))]
#[inline(always)]
unsafe fn morestack_caller(_go: &GoLayout, _sched: u64, sp: u64) -> u64 {
    unsafe { user::<u64>(sp) }.unwrap_or(0)
}

/// arm64: the prologue passes its LR (the caller's pc) in R3 and morestack stores it in
/// `sched.lr`; the word at `sched.sp` is the caller's own saved LR, one frame further out.
/// `gobuf.lr` directly precedes `gobuf.bp` in every Go 1.17+ layout.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
unsafe fn morestack_caller(go: &GoLayout, sched: u64, _sp: u64) -> u64 {
    unsafe { user::<u64>(sched + go.gobuf_bp as u64 - 8) }.unwrap_or(0)
}

#[inline(always)]
unsafe fn goid_of(go: &GoLayout, gp: u64) -> u64 {
    unsafe { user::<u64>(gp + go.g_goid as u64) }.unwrap_or(0)
}

/// This CPU's record, header reset for a new event.
#[inline(always)]
fn begin(kind: u32) -> Option<(u32, &'static mut EventRecord)> {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let slot = EVENT_SCRATCH.get_ptr_mut(cpu)?;
    // SAFETY: the slot belongs to this CPU; tracing programs do not nest on a CPU.
    let rec = unsafe { &mut *slot };
    let pid_tgid = bpf_get_current_pid_tgid();
    let h = &mut rec.header;
    h.time_ns = unsafe { bpf_ktime_get_ns() };
    h.goid = 0;
    h.g_addr = 0;
    h.arg0 = 0;
    h.arg1 = 0;
    h.parent_goid = 0;
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.kind = kind;
    h.flags = 0;
    h.depth = 0;
    h.n_frames = 0;
    h.message_len = 0;
    h.cpu = cpu;
    Some((cpu, rec))
}

/// Walks a goroutine stack from `start` into this CPU's record, up to `limit` frames.
#[inline(always)]
unsafe fn walk_into(rec: &mut EventRecord, start: &WalkStart, limit: u32) {
    let mut limit = limit;
    if limit > MAX_WALK {
        limit = MAX_WALK;
    }
    let mut n: u32 = 0;
    if start.pc != 0 && limit > 0 {
        rec.frames[0] = start.pc;
        n = 1;
    }
    if start.caller != 0 && n < limit {
        let i = n as usize;
        if i < EVENT_MAX_FRAMES {
            rec.frames[i] = start.caller;
        }
        n += 1;
    }
    let from = WalkFrom {
        base: n,
        fp: start.fp,
        limit,
        stop: AddressRange::NONE,
        leave: AddressRange::NONE,
        stack_hi: start.stack_hi,
        verify: 0,
        _pad: 0,
    };
    let Some(call) = walk::prepare_call(&from) else {
        return;
    };
    event_walk(call);
    // SAFETY: this CPU's slot, written by the walk.
    let walk = unsafe { (*call).out };
    rec.header.depth = walk.next_index;
    if walk.last_fp != 0 {
        rec.header.flags |= EventFlags::TRUNCATED;
    }
}

/// [`walk::walk`] into the event record, as a BPF global function (see there); returns 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn event_walk(call: *mut WalkCall) -> i32 {
    if call.is_null() {
        return 0;
    }
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // SAFETY: `call` is this CPU's WALK_CALL slot.
    unsafe { (*call).out = walk::walk::<EventFrames>(cpu, &(*call).from) };
    0
}

/// Frames of this CPU's event record: frame `pos` at `pos` for the head, in the tail ring
/// after it.
struct EventFrames;

impl Sink for EventFrames {
    // Events are rare (stack growth, goroutine creation, fatal errors): one frame per step keeps
    // each probe's verification short.
    const FRAMES_PER_STEP: u32 = 1;

    #[inline(always)]
    fn store(cpu: u32, pos: u64, ret: u64) -> bool {
        let slot_index = if pos < EVENT_HEAD_FRAMES as u64 {
            pos
        } else {
            EVENT_HEAD_FRAMES as u64
                + ((pos - EVENT_HEAD_FRAMES as u64) & (EVENT_TAIL_FRAMES as u64 - 1))
        };
        let Some(slot) = EVENT_SCRATCH.get_ptr_mut(cpu) else {
            return false;
        };
        if slot_index < EVENT_MAX_FRAMES as u64 {
            // SAFETY: bounds-checked index into this CPU's slot.
            unsafe { (*slot).frames[slot_index as usize] = ret };
        }
        true
    }
}

/// Sends this CPU's record with its first `min(depth, capacity)` frames.
#[inline(always)]
fn submit(cpu: u32) {
    let Some(slot) = EVENT_SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let rec = unsafe { &mut *slot };
    let mut n = rec.header.depth as usize;
    if n > EVENT_MAX_FRAMES {
        n = EVENT_MAX_FRAMES;
    }
    rec.header.n_frames = n as u32;
    let len = EVENT_HEADER_SIZE + n * 8;
    // SAFETY: `len` is at most the slot's size.
    let bytes = unsafe { core::slice::from_raw_parts(slot.cast::<u8>(), len) };
    match EVENTS.output::<[u8]>(bytes, 0) {
        Ok(()) => count(|c| c.delivered += 1),
        Err(_) => count(|c| c.lost_ringbuf += 1),
    }
}

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

/// `runtime.goexit1()` runs on the goroutine that ends.
#[uprobe]
pub fn go_goexit1(ctx: ProbeContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    count(|c| c.exit_hits += 1);
    let r = regs(&ctx);
    let Some((cpu, rec)) = begin(EventKind::GOROUTINE_EXIT) else {
        return 0;
    };
    // SAFETY: user memory is read through bpf_probe_read_user only.
    unsafe {
        rec.header.goid = goid_of(&cfg.go, r.g);
        rec.header.g_addr = r.g;
    }
    submit(cpu);
    0
}

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
