//! Maps shared with user space. Names match `stacksampler_common::names`.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use stacksampler_common::{Counters, SamplerConfig, StackSample};

/// Ring buffer size: room for 128 samples of the largest kind (16384 frames) or thousands of
/// ordinary ones between two user-space polls.
const SAMPLES_RING_BYTES: u32 = 16 << 20;

/// Upper bound of CPUs in the object; the loader resizes [`SCRATCH`] to the machine's count.
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

/// Applies `f` to this CPU's counters.
#[inline(always)]
pub fn bump(f: impl FnOnce(&mut Counters)) {
    if let Some(c) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        f(unsafe { &mut *c });
    }
}
