//! The one BPF layer: the embedded object, loaded once per run with every map sized for the
//! mode that runs ([`object`]), the perf-event sampler ([`perf`]) and the runtime-event uprobes
//! ([`uprobes`]) attached to it, ring buffers read as typed record streams ([`ring`]), per-CPU
//! counters summed in one place ([`counters`]), and one error type ([`BpfError`]).
//!
//! Dropping the [`aya::Ebpf`] (owned by [`perf::LoadedSampler`], or by the watch session)
//! detaches every program and closes every map: nothing stays in the kernel after a run.

pub mod counters;
pub mod object;
pub mod perf;
pub mod ring;
pub mod runtime_event;
pub mod sites;
pub mod uprobes;

pub use counters::{KernelCost, ProbeCost};
pub use object::{Mode, RingBytes, load};
pub use perf::{LoadOptions, LoadedSampler};
pub use ring::{Record, RecordStream};
pub use uprobes::{AttachedProbe, EventOptions, EventProbes};

/// Errors loading the object, attaching its programs or reading its maps.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The binary carries no eBPF object (built with AYA_BUILD_SKIP).
    #[error(
        "this stacksampler was built without its eBPF program (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    )]
    NoObject,
    /// Loading the object (creating its maps).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// Loading or attaching one program (the verifier log is in the source).
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Reading or writing a map.
    #[error("eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The object lacks a map or program.
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    /// Counting CPUs.
    #[error("listing CPUs ({0}): {1}")]
    Cpus(&'static str, std::io::Error),
    /// Turning on the kernel's run-time statistics.
    #[error("enabling bpf_stats: {0}")]
    Stats(#[from] aya::sys::SyscallError),
    /// Reading the executable the probes go into.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Finding the probed functions.
    #[error("finding runtime functions: {0}")]
    Sites(#[from] sites::SitesError),
    /// A required runtime function is absent.
    #[error("{0} not found in the executable (not a Go 1.17+ binary?)")]
    NoFunction(&'static str),
    /// The pid is 0.
    #[error("invalid pid 0")]
    BadPid,
}

impl BpfError {
    /// A [`BpfError::Program`] for `name`.
    pub(crate) fn program(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> Self {
        move |source| Self::Program { name, source }
    }
}
