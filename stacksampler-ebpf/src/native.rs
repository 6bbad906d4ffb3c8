//! Native (C) parts of a Go stack: the cgo crossings and the stack copy sent with a sample.
//!
//! C code compiled without frame pointers (cgo's `-O2`, Debian's libc) cannot be walked here;
//! the sample carries the registers where its native part starts and a bounded copy of that
//! stack, which user space unwinds with the objects' call-frame information. Only samples in or
//! below C code pay: a pure-Go sample takes none of these paths and sends no extra byte.

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use stacksampler_common::{
    MAX_KERNEL_FRAMES, MAX_STACK_FRAMES, NATIVE_RESERVED_FRAMES, NATIVE_STACK_BYTES,
    NATIVE_TRAILER_SIZE, NativeConfig, NativeTrailer,
};

use crate::{
    maps::{NATIVE_PENDING, SCRATCH},
    walk::AddressRange,
};

/// The native part of a sample, from where it is found until the record is written.
#[repr(C)]
pub struct PendingNative {
    pub trailer: NativeTrailer,
    /// Top of the stack the native part is on (`g0.stack.hi`; 0 when unknown).
    pub stack_hi: u64,
}

/// Keeps `trailer` for this CPU's sample; false when the per-CPU slot is missing.
#[inline(always)]
pub fn set_pending(trailer: NativeTrailer, stack_hi: u64) -> bool {
    let Some(p) = NATIVE_PENDING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU value, no concurrent writer on this CPU.
    unsafe {
        (*p).trailer = trailer;
        (*p).stack_hi = stack_hi;
    }
    true
}

/// `_Gsyscall`: a goroutine in a system call or a cgo call (`runtime.cgocall` entered it).
const G_SYSCALL: u32 = 3;
/// `_Gscan`: the bit the garbage collector adds to a status while it scans the goroutine.
const G_SCAN: u32 = 0x1000;

/// Most user frames a native sample keeps, so that its kernel frames (`--kernel`), trailer and
/// stack copy still fit the scratch buffer after them.
pub const NATIVE_FRAME_LIMIT: u32 =
    (MAX_STACK_FRAMES - NATIVE_RESERVED_FRAMES - MAX_KERNEL_FRAMES) as u32;

/// Whether `pc` is in Go's text.
#[inline(always)]
pub fn in_go_text(cfg: &NativeConfig, pc: u64) -> bool {
    pc >= cfg.go_text_lo && pc < cfg.go_text_hi
}

/// Whether a goroutine status is `_Gsyscall` (with or without the scan bit).
#[inline(always)]
pub fn in_syscall(status: u32) -> bool {
    status & !G_SCAN == G_SYSCALL
}

/// The return addresses at which a walk of a goroutine's stack meets a cgo callback.
#[inline(always)]
pub fn callback_range(cfg: &NativeConfig) -> AddressRange {
    AddressRange {
        lo: cfg.cgocallback_lo,
        len: cfg.cgocallback_hi.saturating_sub(cfg.cgocallback_lo),
    }
}

/// Writes the pending trailer and a copy of the stack from its `sp` (up to its `stack_hi` when
/// known, at most the configured size) after the first `n_frames` frames of this CPU's scratch slot.
/// Returns the bytes written after the frames, 0 when they do not fit (the sample then goes
/// without its native part).
#[inline(always)]
pub unsafe fn write_trailer(cfg: &NativeConfig, cpu: u32, n_frames: u32) -> u32 {
    let Some(p) = NATIVE_PENDING.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU value written by `set_pending` for this sample.
    let (mut trailer, stack_hi) = unsafe { ((*p).trailer, (*p).stack_hi) };
    let at = n_frames as usize;
    if at > MAX_STACK_FRAMES - NATIVE_RESERVED_FRAMES {
        return 0;
    }
    let Some(slot) = SCRATCH.get_ptr_mut(cpu) else {
        return 0;
    };
    let mut len = cfg.stack_bytes as u64;
    if len > NATIVE_STACK_BYTES as u64 {
        len = NATIVE_STACK_BYTES as u64;
    }
    if stack_hi > trailer.sp && stack_hi - trailer.sp < len {
        len = stack_hi - trailer.sp;
    }
    // The bound again, on a value the compiler cannot see through: it would drop a check it
    // proved redundant, and the 6.1 verifier cannot derive the bound from the comparisons
    // above (they are between two registers).
    let len = core::hint::black_box(len);
    if len > NATIVE_STACK_BYTES as u64 {
        return 0;
    }
    // SAFETY: `at` frames plus the reserved trailer and stack bytes fit the frame array
    // (checked above); the slot is this CPU's.
    let dst = unsafe { (*slot).frames.as_mut_ptr().add(at) }.cast::<u8>();
    let stack = unsafe { dst.add(NATIVE_TRAILER_SIZE) };
    // SAFETY: `stack` has room for NATIVE_STACK_BYTES bytes and `len` is at most that.
    let rc = unsafe {
        bpf_probe_read_user(
            stack.cast(),
            len as u32,
            trailer.sp as *const core::ffi::c_void,
        )
    };
    trailer.len = if rc == 0 { len as u32 } else { 0 };
    // SAFETY: the trailer's bytes are within the reserved frames.
    unsafe { core::ptr::write_unaligned(dst.cast::<NativeTrailer>(), trailer) };
    (NATIVE_TRAILER_SIZE as u32) + trailer.len
}
