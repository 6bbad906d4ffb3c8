//! The frame-pointer walk of a user stack, shared by the sampler and the runtime-event probes.
//!
//! Each frame of the chain is a 16-byte record `[saved frame pointer, return address]`. Reading
//! each record with its own `bpf_probe_read_user` cost about 37.5 ns a frame, most of it the
//! helper's fixed cost. The walk instead copies the stack into a per-CPU [`Chunk`] of up to
//! [`CHUNK_BYTES`], starting at the record it needs, and follows frame pointers inside the copy
//! while they stay in it; a record outside the copy starts the next chunk. A chunk ends at the
//! stack's top when the caller knows it (`g.stack.hi`: nothing past it is read); one that cannot
//! be read whole (it runs into an unmapped or not-present page) is read again up to the end of
//! the record's page, then as the record alone, so the walk stops exactly where a record-by-record
//! walk stops and returns the same frames (`ConfigFlags::VERIFY_WALK` checks this on every
//! sample, see [`walk`]).
//!
//! The walk runs in `bpf_loop`: a plain bounded loop of a few thousand iterations takes the
//! verifier seconds and is rejected past ~4096; `bpf_loop` verifies its callback once, so a
//! walk can go to 16384 frames (events: far more, into a ring). Where the frames go is the
//! [`Sink`]'s business.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_user, generated::bpf_loop, generated::bpf_probe_read_user as read_user_raw,
};

use crate::maps::{CHUNK, WALK_CALL};

/// Bytes of stack copied at once. Large enough that the helper's fixed cost is spread over
/// hundreds of frames of a deep recursion, within the 32 KiB cap of a per-CPU array value.
pub const CHUNK_BYTES: usize = 16384;
const CHUNK_WORDS: usize = CHUNK_BYTES / 8;
/// A frame record: saved frame pointer and return address.
const RECORD_BYTES: u64 = 16;
/// The smallest page size of the supported kernels: a block that does not cross a multiple of
/// it lies in one page of any page size.
const PAGE_BYTES: u64 = 4096;

/// This CPU's copy of part of the stack being walked.
///
/// Where the copy is lives here, in map memory, not in the loop's state on the BPF stack: the
/// verifier tracks stack values across `bpf_loop` iterations (each new bound a new state to
/// verify), and does not track map values.
#[repr(C)]
pub struct Chunk {
    /// User address of the copy's first byte, and how many bytes of it are valid (0: none).
    at: u64,
    len: u64,
    /// The running walk's [`WalkFrom::stop`], [`WalkFrom::leave`] and [`WalkFrom::stack_hi`]:
    /// kept here, not in the loop's state, so the walk's own stack frame stays small (the 6.1
    /// verifier counts it in the 512 bytes of the sampling program's call chain).
    stop_lo: u64,
    stop_len: u64,
    leave_lo: u64,
    leave_len: u64,
    stack_hi: u64,
    /// 1 once the walk met a frame pointer in `leave` (read with a `None` record).
    left_stack: u64,
    words: [u64; CHUNK_WORDS],
}

/// User addresses `lo..lo + len` at which a walk ends ([`WalkFrom::stop`], [`WalkFrom::leave`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AddressRange {
    pub lo: u64,
    /// Length of the range (0: empty, the walk never ends on it).
    pub len: u64,
}

impl AddressRange {
    pub const NONE: Self = Self { lo: 0, len: 0 };

    /// The stack `lo..hi` (`g.stack`); empty when either end is unknown.
    pub const fn stack(lo: u64, hi: u64) -> Self {
        if lo == 0 || hi <= lo {
            Self::NONE
        } else {
            Self { lo, len: hi - lo }
        }
    }

    #[inline(always)]
    fn contains(lo: u64, len: u64, address: u64) -> bool {
        address.wrapping_sub(lo) < len
    }
}

/// Where a walk's frames go.
pub trait Sink {
    /// Frames walked per `bpf_loop` iteration (unrolled): the callback's call and its loads of
    /// the loop state are paid once for this many frames, and its code is this many times
    /// larger to verify (4 frames: 10% less time per frame of a deep sample, 40 ms more to
    /// verify).
    const FRAMES_PER_STEP: u32;

    /// Stores return address `ret` as frame `pos` of this CPU's record; false stops the walk
    /// before that frame (no room, or for a check: not the frame expected).
    fn store(cpu: u32, pos: u64, ret: u64) -> bool;
}

/// Where a walk starts and how far it may go.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkFrom {
    /// Index of the first frame this walk writes.
    pub base: u32,
    /// Index at which the walk stops (exclusive).
    pub limit: u32,
    /// Frame pointer of the first record (0: nothing to walk).
    pub fp: u64,
    /// Return addresses that end the walk, after the frame they are in: those inside
    /// `runtime.cgocallback`, where a cgo callback's Go frames end and the C frames that called
    /// back are on another stack.
    pub stop: AddressRange,
    /// Frame pointers that end the walk before their record: the goroutine's stack, when the
    /// walk is on the system stack (with `stack_hi` the system stack's top, which keeps every
    /// chunk off the goroutine's stack). `runtime.morestack` makes no frame of its own, so
    /// `runtime.newstack`'s record links to the goroutine's frames; whether the chain went on
    /// into them depended on where the two stacks happen to lie (only upwards is followed), and
    /// the goroutine's side is walked from `g.sched` anyway.
    pub leave: AddressRange,
    /// Top of the stack the records are on (0: unknown): no chunk is read past it.
    pub stack_hi: u64,
    /// 1: also read every record on its own and compare (see [`walk`]).
    pub verify: u32,
    pub _pad: u32,
}

/// The argument and result of a walk's BPF global function, in map memory ([`WALK_CALL`]): the
/// 6.1 verifier counts a global function's stack in the 512 bytes of its caller's chain, and
/// the sampling program's own frame leaves no room for them there.
#[repr(C)]
pub struct WalkCall {
    pub from: WalkFrom,
    pub out: Walk,
}

/// This CPU's [`WalkCall`], `from` written; `None` when the map has no slot.
#[inline(always)]
pub fn prepare_call(from: &WalkFrom) -> Option<*mut WalkCall> {
    let call = WALK_CALL.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; a walk does not run while another one does on its CPU.
    unsafe {
        (*call).from = *from;
        (*call).out = Walk {
            next_index: from.base,
            ..Walk::default()
        };
    }
    Some(call)
}

/// Result of one walk.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Walk {
    /// Index after the last frame written.
    pub next_index: u32,
    /// With `verify`: 1 when a record read on its own differed from its bulk copy.
    pub differs: u32,
    /// The frame pointer where the walk stopped at the limit (0 when the chain ended).
    pub last_fp: u64,
    /// The frame record whose return address is in [`WalkFrom::stop`] (0: none met); that
    /// return address is the last frame written.
    pub stopped_at: u64,
}

#[repr(C)]
struct WalkState {
    cpu: u32,
    /// Index of the first frame this walk writes, and the index it stops at.
    base: u32,
    limit: u32,
    _pad: u32,
    /// Index after the last frame written. Derived from bpf_loop's index argument, never
    /// incremented: a counter the verifier can track exactly makes it verify every iteration
    /// as a new state ("sequence of 8193 jumps is too complex").
    next: u32,
    /// 1 once the chain ended by itself.
    ended: u32,
    /// 1: also read each record on its own and compare; `differs` 1 once one differed.
    verify: u32,
    differs: u32,
    fp: u64,
    stopped_at: u64,
}

/// Walks the chain from `from.fp` with bulk copies of the stack, writing return addresses
/// through `S` from index `from.base` up to (not including) `from.limit`.
///
/// With `from.verify`, every record is also read on its own with `bpf_probe_read_user`, as the
/// record-by-record walk reads it, and [`Walk::differs`] says whether any copy differed (a
/// record, or whether it could be read at all). Everything else a step does is a function of the
/// record and the frame pointer, so equal records at every step mean the two walks are the same.
///
/// Callers wrap it in a BPF global function (`#[no_mangle]`, not inlined, taking a
/// [`WalkCall`]) per [`Sink`]: the verifier checks a global function once, on its own, instead
/// of once for every call site and every state the calling program reaches it in (with the bulk
/// copies, the sampling program took 0.5 s to verify that way).
#[inline(always)]
pub unsafe fn walk<S: Sink>(cpu: u32, from: &WalkFrom) -> Walk {
    let mut state = WalkState {
        cpu,
        base: from.base,
        limit: from.limit,
        _pad: 0,
        next: from.base,
        ended: 0,
        verify: from.verify,
        differs: 0,
        fp: from.fp,
        stopped_at: 0,
    };
    let Some(chunk) = CHUNK.get_ptr_mut(0) else {
        return Walk {
            next_index: from.base,
            ..Walk::default()
        };
    };
    // SAFETY: this CPU's chunk; nothing else uses it during the walk.
    unsafe {
        (*chunk).len = 0;
        (*chunk).stop_lo = from.stop.lo;
        (*chunk).stop_len = from.stop.len;
        (*chunk).leave_lo = from.leave.lo;
        (*chunk).leave_len = from.leave.len;
        (*chunk).left_stack = 0;
        (*chunk).stack_hi = from.stack_hi;
    }
    if from.fp == 0 {
        return Walk {
            next_index: from.base,
            ..Walk::default()
        };
    }
    let steps = from
        .limit
        .saturating_sub(from.base)
        .div_ceil(S::FRAMES_PER_STEP);
    if steps > 0 {
        unsafe {
            bpf_loop(
                steps,
                step::<S> as *mut c_void,
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
        differs: state.differs,
    }
}

/// One iteration of the walk: up to [`Sink::FRAMES_PER_STEP`] frames; returns 1 to stop the loop.
extern "C" fn step<S: Sink>(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `WalkState` passed to bpf_loop above.
    let state = unsafe { &mut *ctx.cast::<WalkState>() };
    let first = state.base as u64 + index * S::FRAMES_PER_STEP as u64;
    for j in 0..S::FRAMES_PER_STEP as u64 {
        if !frame::<S>(state, first + j) {
            return 1;
        }
    }
    0
}

/// Walks frame `pos` (the record at `state.fp`); false when the walk ends there.
#[inline(always)]
fn frame<S: Sink>(state: &mut WalkState, pos: u64) -> bool {
    let fp = state.fp;
    if fp == 0 {
        state.ended = 1;
        return false;
    }
    if pos >= state.limit as u64 {
        return false;
    }
    let Some(chunk) = CHUNK.get_ptr_mut(0) else {
        return false;
    };
    let record = read_chunked(chunk, fp);
    // SAFETY: this CPU's chunk.
    if record.is_none() && unsafe { (*chunk).left_stack } != 0 {
        // Not a frame of this stack: the end of the chain, for both ways of walking it.
        state.ended = 1;
        state.fp = 0;
        return false;
    }
    if state.verify != 0 {
        // SAFETY: a user-memory read through bpf_probe_read_user.
        let own = unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }.ok();
        if own != record {
            state.differs = 1;
        }
    }
    let Some([next_fp, ret]) = record else {
        state.ended = 1;
        state.fp = 0;
        return false;
    };
    if ret == 0 {
        state.ended = 1;
        state.fp = 0;
        return false;
    }
    if !S::store(state.cpu, pos, ret) {
        return false;
    }
    state.next = (pos + 1) as u32;
    // SAFETY: this CPU's chunk.
    let (stop_lo, stop_len) = unsafe { ((*chunk).stop_lo, (*chunk).stop_len) };
    if AddressRange::contains(stop_lo, stop_len, ret) {
        state.stopped_at = fp;
        state.ended = 1;
        state.fp = 0;
        return false;
    }
    // Callers live at higher addresses; anything else is the end of the chain (or garbage).
    if next_fp <= fp {
        state.ended = 1;
        state.fp = 0;
        return false;
    }
    state.fp = next_fp;
    true
}

/// The record at `fp`, from this CPU's chunk (copying the next chunk when `fp` is outside it).
#[inline(always)]
///
/// `None` when it cannot be read, or when `fp` is in [`WalkFrom::leave`]: then the chunk's
/// `left_stack` is 1. (A `Read` enum saying which was rejected by the verifier: LLVM compared
/// the undefined payload of its empty variants, "R6 !read_ok".)
fn read_chunked(chunk: *mut Chunk, fp: u64) -> Option<[u64; 2]> {
    if fp & 7 != 0 {
        // Not a Go or C frame pointer; read as the record-by-record walk does.
        // SAFETY: a user-memory read through bpf_probe_read_user.
        return unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }.ok();
    }
    // SAFETY: this CPU's chunk.
    let (at, len, hi) = unsafe { ((*chunk).at, (*chunk).len, (*chunk).stack_hi) };
    let mut off = fp.wrapping_sub(at);
    if off > (CHUNK_BYTES as u64 - RECORD_BYTES) || off + RECORD_BYTES > len {
        // [`WalkFrom::leave`] is checked here only: a chunk never reaches past `stack_hi`, so
        // a record on another stack is never inside the current one, and the frames walked
        // inside a chunk pay nothing for the check.
        // SAFETY: this CPU's chunk.
        let (leave_lo, leave_len) = unsafe { ((*chunk).leave_lo, (*chunk).leave_len) };
        if AddressRange::contains(leave_lo, leave_len, fp) {
            // SAFETY: this CPU's chunk.
            unsafe { (*chunk).left_stack = 1 };
            return None;
        }
        if !load_chunk(hi, chunk, fp) {
            return None;
        }
        off = 0;
    }
    let i = (off >> 3) as usize;
    if i + 1 >= CHUNK_WORDS {
        return None;
    }
    // SAFETY: `i + 1` is within the chunk (checked above); the chunk is this CPU's.
    unsafe { Some([(*chunk).words[i], (*chunk).words[i + 1]]) }
}

/// Copies the stack from `fp` into `chunk`: up to [`CHUNK_BYTES`] (and the stack's top), else to
/// the end of `fp`'s page, else the record alone. False when not even the record is readable.
#[inline(always)]
fn load_chunk(hi: u64, chunk: *mut Chunk, fp: u64) -> bool {
    // SAFETY: this CPU's chunk.
    unsafe { (*chunk).len = 0 };
    let mut want = CHUNK_BYTES as u64;
    if hi > fp && hi - fp < want {
        want = hi - fp;
    }
    if want < RECORD_BYTES {
        want = RECORD_BYTES;
    }
    let page_rest = PAGE_BYTES - (fp & (PAGE_BYTES - 1));
    let got = if copy(chunk, fp, want) {
        want
    } else if page_rest >= RECORD_BYTES && page_rest < want && copy(chunk, fp, page_rest) {
        page_rest
    } else if want > RECORD_BYTES && copy(chunk, fp, RECORD_BYTES) {
        RECORD_BYTES
    } else {
        return false;
    };
    // SAFETY: as above.
    unsafe {
        (*chunk).at = fp;
        (*chunk).len = got;
    }
    true
}

/// Copies `len` bytes of user memory at `from` into `chunk`.
///
/// Inlined (a subprogram's stack frame would count in the 6.1 verifier's 512 bytes for the
/// whole call chain); the bound check is on a value the compiler cannot see through, so it
/// stays on the very register passed to the helper (the verifier needs the size bounded by
/// the buffer).
#[inline(always)]
fn copy(chunk: *mut Chunk, from: u64, len: u64) -> bool {
    let len = core::hint::black_box(len);
    if len == 0 || len > CHUNK_BYTES as u64 {
        return false;
    }
    // SAFETY: `chunk` has room for CHUNK_BYTES bytes and `len` is at most that.
    unsafe {
        let words = (&raw mut (*chunk).words).cast::<c_void>();
        read_user_raw(words, len as u32, from as *const c_void) == 0
    }
}
