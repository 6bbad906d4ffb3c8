//! Frame-pointer walk of the user stack with the `bpf_loop` helper.
//!
//! A plain bounded loop of a few thousand iterations takes the verifier seconds and is rejected
//! past ~4096; `bpf_loop` verifies its callback once, so the walk can go to 16384 frames. Each step
//! reads the 16-byte frame record `[saved frame pointer, return address]` with one probe read.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_user, generated::bpf_loop};
use stacksampler_common::MAX_STACK_FRAMES;

use crate::maps::SCRATCH;

/// Return addresses at which the walk stops: those inside `runtime.cgocallback`, where a cgo
/// callback's Go frames end and the C frames that called back are on another stack.
#[derive(Clone, Copy)]
pub struct StopRange {
    pub lo: u64,
    /// Length of the range (0: never stop).
    pub len: u64,
}

impl StopRange {
    pub const NONE: Self = Self { lo: 0, len: 0 };
}

/// Result of one walk.
pub struct Walk {
    /// Index after the last frame written.
    pub next_index: u32,
    /// The frame pointer where the walk stopped at the limit (0 when the chain ended).
    pub last_fp: u64,
    /// The frame record whose return address is in the [`StopRange`] (0: none met); that
    /// return address is the last frame written.
    pub stopped_at: u64,
}

#[repr(C)]
struct WalkState {
    cpu: u32,
    /// Index of the first frame this walk writes.
    base: u32,
    /// Index after the last frame written. Derived from bpf_loop's index argument, never
    /// incremented: a counter the verifier can track exactly makes it verify every iteration
    /// as a new state ("sequence of 8193 jumps is too complex").
    next: u32,
    /// 1 once the chain ended by itself.
    ended: u32,
    fp: u64,
    stop_lo: u64,
    stop_len: u64,
    stopped_at: u64,
}

/// Walks from frame pointer `fp`, writing return addresses into this CPU's scratch frames from
/// index `base` up to (not including) index `limit`.
#[inline(always)]
pub unsafe fn walk(cpu: u32, base: u32, fp: u64, limit: u32, stop: StopRange) -> Walk {
    let mut state = WalkState {
        cpu,
        base,
        next: base,
        ended: 0,
        fp,
        stop_lo: stop.lo,
        stop_len: stop.len,
        stopped_at: 0,
    };
    if fp == 0 {
        return Walk {
            next_index: base,
            last_fp: 0,
            stopped_at: 0,
        };
    }
    let steps = limit.saturating_sub(base);
    if steps > 0 {
        unsafe {
            bpf_loop(
                steps,
                step as *mut c_void,
                (&raw mut state).cast::<c_void>(),
                0,
            )
        };
    }
    let ended = state.ended != 0 || state.fp == 0;
    Walk {
        next_index: state.next,
        last_fp: if ended { 0 } else { state.fp },
        stopped_at: state.stopped_at,
    }
}

/// One step of the walk; returns 1 to stop the loop.
extern "C" fn step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `WalkState` passed to bpf_loop above.
    let state = unsafe { &mut *ctx.cast::<WalkState>() };
    let fp = state.fp;
    if fp == 0 {
        state.ended = 1;
        return 1;
    }
    let pos = state.base as u64 + index;
    if pos >= MAX_STACK_FRAMES as u64 {
        return 1;
    }
    let Ok(record) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
        state.ended = 1;
        state.fp = 0;
        return 1;
    };
    let [next_fp, ret] = record;
    if ret == 0 {
        state.ended = 1;
        state.fp = 0;
        return 1;
    }
    let Some(slot) = SCRATCH.get_ptr_mut(state.cpu) else {
        return 1;
    };
    // SAFETY: `pos` is bounds-checked above; the slot is this CPU's.
    unsafe { (*slot).frames[pos as usize] = ret };
    state.next = (pos + 1) as u32;
    if ret.wrapping_sub(state.stop_lo) < state.stop_len {
        state.stopped_at = fp;
        state.ended = 1;
        state.fp = 0;
        return 1;
    }
    // Callers live at higher addresses; anything else is the end of the chain (or garbage).
    if next_fp <= fp {
        state.ended = 1;
        state.fp = 0;
        return 1;
    }
    state.fp = next_fp;
    0
}
