//! The eBPF object embedded in the binary, loaded once per run with every map sized for the
//! mode that runs.
//!
//! aya creates every map of the object at load, and array maps are preallocated: a map left at
//! its compiled size costs its full size in locked kernel memory whether the run uses it or not.
//! So each [`Mode`] sizes all of them: the per-CPU scratch arrays to the machine's possible
//! CPUs (or one slot when the mode never writes them) and each ring buffer to what the mode
//! sends through it (or one page). docs/design.md lists the resulting figures.

use aya::{Ebpf, EbpfLoader, util::nr_cpus};
use stacksampler_common::{event_names, names};

use super::BpfError;

/// The eBPF object built by `build.rs` (aya-build) and embedded in this binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/stacksampler"));

/// Sample ring of a `record` run: room for 128 samples of the largest kind (16384 frames) or
/// thousands of ordinary ones between two user-space polls (the object's compiled size).
pub const SAMPLES_RING_BYTES: u32 = 16 << 20;
/// Event ring when stack growth and goroutine creation/exit are followed: a few dozen
/// full-depth events or tens of thousands of creation/exit events between two polls.
pub const EVENTS_RING_BYTES: u32 = 8 << 20;
/// Event ring when only fatal errors are followed: a fatal error sends one record of at most
/// 128 KiB (from `runtime.throw` or `runtime.fatal`), with room for a few more.
pub const FATAL_EVENTS_RING_BYTES: u32 = 1 << 20;
/// A ring buffer the mode never writes: one page (the smallest the kernel takes).
pub const IDLE_RING_BYTES: u32 = 4096;
/// A scratch array the mode never writes: one slot.
const IDLE_SLOTS: u32 = 1;
/// Largest sample ring a run may ask for.
pub const MAX_SAMPLES_RING_BYTES: u32 = 1 << 30;

/// What a run attaches, which decides every map's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// CPU sampling, with the fatal-error probes; `events` adds stack growth and goroutine
    /// creation/exit. `samples_ring` overrides [`SAMPLES_RING_BYTES`].
    Record {
        events: bool,
        samples_ring: Option<RingBytes>,
    },
    /// Runtime events only, no CPU sampling.
    Watch,
}

/// A ring buffer's size as the kernel takes it: a power-of-two number of pages, at most
/// [`MAX_SAMPLES_RING_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingBytes(u32);

/// A ring size the kernel would refuse.
#[derive(Debug, thiserror::Error)]
#[error("a ring buffer must be a power of two between 4 KiB and 1 GiB, not {0} bytes")]
pub struct BadRingSize(pub u64);

impl RingBytes {
    /// `bytes` if the kernel takes it as a ring buffer's size.
    pub fn new(bytes: u64) -> Result<Self, BadRingSize> {
        if bytes.is_power_of_two()
            && bytes >= u64::from(IDLE_RING_BYTES)
            && bytes <= u64::from(MAX_SAMPLES_RING_BYTES)
        {
            Ok(Self(bytes as u32))
        } else {
            Err(BadRingSize(bytes))
        }
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Sizes of the maps that depend on the mode (the others are one entry each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// `SCRATCH` slots (one sample buffer per CPU).
    pub sample_scratch_slots: u32,
    /// `SAMPLES` ring bytes.
    pub samples_ring_bytes: u32,
    /// `EVENT_SCRATCH` slots (one event buffer per CPU).
    pub event_scratch_slots: u32,
    /// `EVENTS` ring bytes.
    pub events_ring_bytes: u32,
}

impl Mode {
    /// The map sizes of this mode on a machine with `possible_cpus`.
    pub fn map_sizes(self, possible_cpus: u32) -> MapSizes {
        match self {
            Self::Record {
                events,
                samples_ring,
            } => MapSizes {
                sample_scratch_slots: possible_cpus,
                samples_ring_bytes: samples_ring.map_or(SAMPLES_RING_BYTES, RingBytes::get),
                event_scratch_slots: possible_cpus,
                events_ring_bytes: if events {
                    EVENTS_RING_BYTES
                } else {
                    FATAL_EVENTS_RING_BYTES
                },
            },
            Self::Watch => MapSizes {
                sample_scratch_slots: IDLE_SLOTS,
                samples_ring_bytes: IDLE_RING_BYTES,
                event_scratch_slots: possible_cpus,
                events_ring_bytes: EVENTS_RING_BYTES,
            },
        }
    }
}

/// Loads the object with every map sized for `mode`; no program is loaded or attached yet.
pub fn load(mode: Mode) -> Result<Ebpf, BpfError> {
    if EBPF_OBJECT.is_empty() {
        return Err(BpfError::NoObject);
    }
    let possible = nr_cpus().map_err(|(what, e)| BpfError::Cpus(what, e))? as u32;
    let sizes = mode.map_sizes(possible);
    Ok(EbpfLoader::new()
        .map_max_entries(names::SCRATCH_MAP, sizes.sample_scratch_slots)
        .map_max_entries(names::SAMPLES_MAP, sizes.samples_ring_bytes)
        .map_max_entries(event_names::SCRATCH_MAP, sizes.event_scratch_slots)
        .map_max_entries(event_names::EVENTS_MAP, sizes.events_ring_bytes)
        .load(EBPF_OBJECT)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_sizes_only_what_it_uses() {
        let record = Mode::Record {
            events: false,
            samples_ring: None,
        }
        .map_sizes(8);
        assert_eq!(record.sample_scratch_slots, 8);
        assert_eq!(record.event_scratch_slots, 8);
        assert_eq!(record.events_ring_bytes, FATAL_EVENTS_RING_BYTES);
        let with_events = Mode::Record {
            events: true,
            samples_ring: RingBytes::new(8192).ok(),
        }
        .map_sizes(8);
        assert_eq!(with_events.events_ring_bytes, EVENTS_RING_BYTES);
        assert_eq!(with_events.samples_ring_bytes, 8192);
        let watch = Mode::Watch.map_sizes(8);
        assert_eq!(watch.sample_scratch_slots, IDLE_SLOTS);
        assert_eq!(watch.samples_ring_bytes, IDLE_RING_BYTES);
        assert_eq!(watch.events_ring_bytes, EVENTS_RING_BYTES);
        // Ring buffers must be a power-of-two number of pages.
        for bytes in [
            SAMPLES_RING_BYTES,
            EVENTS_RING_BYTES,
            FATAL_EVENTS_RING_BYTES,
            IDLE_RING_BYTES,
        ] {
            assert!(RingBytes::new(bytes.into()).is_ok(), "{bytes}");
        }
        for bad in [0, 4095, 12288, 2 << 30] {
            assert!(RingBytes::new(bad).is_err(), "{bad}");
        }
    }
}
