//! Frame-pointer walk of the user stack with the `bpf_loop` helper.
//!
//! A plain bounded loop of a few thousand iterations takes the verifier seconds and is rejected
//! past ~4096; `bpf_loop` verifies its callback once, so the walk can go to 16384 frames. Each step
//! reads the 16-byte frame record `[saved frame pointer, return address]` with one probe read.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_user, generated::bpf_loop};
use stacksampler_common::MAX_STACK_FRAMES;

use crate::maps::SCRATCH;

/// Result of one walk.
pub struct Walk {
    /// Index after the last frame written.
    pub next_index: u32,
    /// The frame pointer where the walk stopped at the limit (0 when the chain ended).
    pub last_fp: u64,
    /// The chain ended by itself (frame pointer 0, unreadable, or not moving up the stack).
    pub ended: bool,
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
}

/// Walks from frame pointer `fp`, writing return addresses into this CPU's scratch frames from
/// index `base` up to (not including) index `limit`.
#[inline(always)]
pub unsafe fn walk(cpu: u32, base: u32, fp: u64, limit: u32) -> Walk {
    let mut state = WalkState {
        cpu,
        base,
        next: base,
        ended: 0,
        fp,
    };
    if fp == 0 {
        return Walk {
            next_index: base,
            last_fp: 0,
            ended: true,
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
        ended,
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
    // Callers live at higher addresses; anything else is the end of the chain (or garbage).
    if next_fp <= fp {
        state.ended = 1;
        state.fp = 0;
        return 1;
    }
    state.fp = next_fp;
    0
}
