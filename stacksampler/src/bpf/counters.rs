//! Per-CPU counters summed in one place, and what the kernel says a program cost.

use std::borrow::Borrow;

use aya::maps::{MapData, PerCpuArray};
use stacksampler_common::{Counters, EventCounters};

use super::BpfError;

/// A counter block the kernel keeps per CPU; [`sum`] adds the CPUs' blocks.
pub trait PerCpuCounters: aya::Pod + Default {
    /// Adds `other` into `self`, field by field.
    fn add(&mut self, other: &Self);
}

impl PerCpuCounters for Counters {
    fn add(&mut self, c: &Self) {
        self.target_hits += c.target_hits;
        self.delivered += c.delivered;
        self.lost_ringbuf += c.lost_ringbuf;
        self.kernel_mode += c.kernel_mode;
        self.truncated += c.truncated;
        self.goroutine_read_errors += c.goroutine_read_errors;
        self.goroutine_tid_mismatch += c.goroutine_tid_mismatch;
        self.native_samples += c.native_samples;
        self.walk_checks += c.walk_checks;
        self.walk_mismatches += c.walk_mismatches;
    }
}

impl PerCpuCounters for EventCounters {
    fn add(&mut self, c: &Self) {
        self.copystack_hits += c.copystack_hits;
        self.create_hits += c.create_hits;
        self.exit_hits += c.exit_hits;
        self.fatal_hits += c.fatal_hits;
        self.delivered += c.delivered;
        self.lost_ringbuf += c.lost_ringbuf;
        self.read_errors += c.read_errors;
        self.foreign_hits += c.foreign_hits;
    }
}

/// The sum over CPUs of the one entry of a per-CPU counter map.
pub fn sum<M: Borrow<MapData>, T: PerCpuCounters>(map: &PerCpuArray<M, T>) -> Result<T, BpfError> {
    let mut total = T::default();
    for c in map.get(&0, 0)?.iter() {
        total.add(c);
    }
    Ok(total)
}

/// Kernel run-time statistics of one program (`bpf_stats`; zero unless they were enabled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCost {
    /// Times the program ran.
    pub run_count: u64,
    /// Total nanoseconds spent in it.
    pub run_time_ns: u64,
}

impl KernelCost {
    /// Mean nanoseconds per run.
    pub fn mean_ns(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }

    /// What the kernel reports for a loaded program.
    pub fn of(info: &aya::programs::ProgramInfo) -> Self {
        Self {
            run_count: info.run_count(),
            run_time_ns: info.run_time().as_nanos() as u64,
        }
    }
}

/// The cost of one named program (a probe).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProbeCost {
    /// eBPF program name.
    pub program: String,
    #[serde(flatten)]
    pub cost: KernelCost,
}
