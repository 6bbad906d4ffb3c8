//! Maps shared with user space. Names match `stacksampler_common::names`.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use stacksampler_common::{
    Counters, EventConfig, EventCounters, EventRecord, SamplerConfig, StackSample,
};

/// Ring buffer size: room for 128 samples of the largest kind (16384 frames) or thousands of
/// ordinary ones between two user-space polls.
const SAMPLES_RING_BYTES: u32 = 16 << 20;

/// Unread bytes in [`SAMPLES`] from which a sample wakes the reader up. Below it samples are
/// written without a wake-up: each wake-up is an irq_work self-interrupt, which in a virtual
/// machine costs more than a shallow sample's whole walk (measured: 12.9 -> 9.5 µs per sample).
/// User space polls the ring on a timer (`SAMPLES_POLL_INTERVAL`, 100 ms); at the highest rates
/// the ring reaches this mark first.
const WAKEUP_AT_BYTES: u64 = (SAMPLES_RING_BYTES / 4) as u64;

/// The ring buffer flag for the next sample. `urgent` samples (user space must read the
/// target's memory for them while it still holds: a deep stack's rest, goroutine labels) wake
/// the reader as the ring buffer's default does; the others only when the ring fills up.
#[inline(always)]
pub fn wakeup_flag(urgent: bool) -> u64 {
    if urgent {
        0
    } else if SAMPLES.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_AT_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Upper bound of CPUs in the object; the loader resizes [`SCRATCH`] and [`EVENT_SCRATCH`] to the
/// machine's count.
const MAX_CPUS: u32 = 512;

#[map]
pub static CONFIG: Array<SamplerConfig> = Array::with_max_entries(1, 0);

#[map]
pub static SAMPLES: RingBuf = RingBuf::with_byte_size(SAMPLES_RING_BYTES, 0);

#[map]
pub static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// One sample buffer per CPU. Not a per-CPU array: its values are capped at 32 KiB, and a
/// 16384-frame sample is 128 KiB. Indexed by `bpf_get_smp_processor_id()`.
#[map]
pub static SCRATCH: Array<StackSample> = Array::with_max_entries(MAX_CPUS, 0);

/// The part of the stack the walk on this CPU is reading (`walk`). Shared by the sampler and
/// the probes: a BPF program does not run while another tracing program runs on its CPU (the
/// kernel's per-CPU `bpf_prog_active` guard), so two walks never use it at once.
#[map]
pub static CHUNK: PerCpuArray<crate::walk::Chunk> = PerCpuArray::with_max_entries(1, 0);

/// The argument and result of the walk running on this CPU (`walk::WalkCall`).
#[map]
pub static WALK_CALL: PerCpuArray<crate::walk::WalkCall> = PerCpuArray::with_max_entries(1, 0);

/// The native part of the sample being built on this CPU (kept off the 512-byte BPF stack).
#[map]
pub static NATIVE_PENDING: PerCpuArray<crate::native::PendingNative> =
    PerCpuArray::with_max_entries(1, 0);

/// Applies `f` to this CPU's counters.
#[inline(always)]
pub fn bump(f: impl FnOnce(&mut Counters)) {
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        f(unsafe { &mut *c });
    }
}

/// Ring buffer size: room for a few dozen full-depth events, or tens of thousands of
/// creation/exit events, between two user-space polls.
const EVENTS_RING_BYTES: u32 = 8 << 20;

#[map]
pub static EVENT_CONFIG: Array<EventConfig> = Array::with_max_entries(1, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
pub static EVENT_COUNTERS: PerCpuArray<EventCounters> = PerCpuArray::with_max_entries(1, 0);

/// One event buffer per CPU (a per-CPU array value is capped at 32 KiB; a record is 128 KiB).
#[map]
pub static EVENT_SCRATCH: Array<EventRecord> = Array::with_max_entries(MAX_CPUS, 0);

/// Applies `f` to this CPU's event counters.
#[inline(always)]
pub fn count(f: impl FnOnce(&mut EventCounters)) {
    if let Some(c) = EVENT_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        f(unsafe { &mut *c });
    }
}
