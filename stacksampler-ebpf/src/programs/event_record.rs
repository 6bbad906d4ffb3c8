//! What the uprobes share: the configuration check, the goroutine behind a thread, where a
//! goroutine's stack walk starts, and this CPU's event record: begun, filled by the sampler's
//! walk (`walk`) as a head and a ring tail, and submitted to the `EVENTS` ring.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
    generated::bpf_get_smp_processor_id,
};
use stacksampler_common::{
    EVENT_CONFIG_KEY, EVENT_HEAD_FRAMES, EVENT_HEADER_SIZE, EVENT_MAX_FRAMES, EVENT_TAIL_FRAMES,
    EventConfig, EventConfigFlags, EventFlags, EventRecord, GoLayout,
};

use crate::{
    maps::{EVENT_CONFIG, EVENT_SCRATCH, EVENTS, count},
    walk::{self, AddressRange, Sink, WalkCall, WalkFrom},
};

/// Hard ceiling of frames walked for one event (bpf_loop allows 1 << 23 iterations).
pub(crate) const MAX_WALK: u32 = 1 << 20;

#[inline(always)]
pub(crate) unsafe fn user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// The configuration, when this hit is the target's and the layout is known.
#[inline(always)]
pub(crate) fn config() -> Option<&'static EventConfig> {
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
pub(crate) struct WalkStart {
    pub(crate) pc: u64,
    /// The caller's pc when known separately (a function entry, or a `morestack` save), else 0.
    pub(crate) caller: u64,
    pub(crate) fp: u64,
    /// Top of the goroutine's stack (`g.stack.hi`; 0 when unknown).
    pub(crate) stack_hi: u64,
}

/// The user goroutine running on this thread: `g` itself, or `m.curg` when `g` is `m.g0`.
/// Returns (goroutine, on system stack).
#[inline(always)]
pub(crate) unsafe fn user_goroutine(go: &GoLayout, g: u64) -> Option<(u64, bool)> {
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
pub(crate) unsafe fn sched_start(go: &GoLayout, gp: u64, with_sp_caller: bool) -> WalkStart {
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
pub(crate) unsafe fn stack_hi_of(go: &GoLayout, gp: u64) -> u64 {
    unsafe { user::<u64>(gp + go.g_stack_hi as u64) }.unwrap_or(0)
}

/// The pc of the caller of the function whose prologue called `runtime.morestack`, from the
/// context morestack saved in `gp.sched`. amd64: the return address at `sched.sp` (the prologue
/// has not moved SP yet).
#[cfg(not(bpf_target_arch = "aarch64"))]
#[inline(always)]
pub(crate) unsafe fn morestack_caller(_go: &GoLayout, _sched: u64, sp: u64) -> u64 {
    unsafe { user::<u64>(sp) }.unwrap_or(0)
}

/// arm64: the prologue passes its LR (the caller's pc) in R3 and morestack stores it in
/// `sched.lr`; the word at `sched.sp` is the caller's own saved LR, one frame further out.
/// `gobuf.lr` directly precedes `gobuf.bp` in every Go 1.17+ layout.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub(crate) unsafe fn morestack_caller(go: &GoLayout, sched: u64, _sp: u64) -> u64 {
    unsafe { user::<u64>(sched + go.gobuf_bp as u64 - 8) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) unsafe fn goid_of(go: &GoLayout, gp: u64) -> u64 {
    unsafe { user::<u64>(gp + go.g_goid as u64) }.unwrap_or(0)
}

/// This CPU's record, header reset for a new event.
#[inline(always)]
pub(crate) fn begin(kind: u32) -> Option<(u32, &'static mut EventRecord)> {
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
pub(crate) unsafe fn walk_into(rec: &mut EventRecord, start: &WalkStart, limit: u32) {
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
pub(crate) struct EventFrames;

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
pub(crate) fn submit(cpu: u32) {
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
