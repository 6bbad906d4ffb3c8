//! Attaching the runtime-event uprobes to one process and streaming their events.
//!
//! [`EventProbes::attach`] works on any [`Ebpf`] loaded from stacksampler's object: the watch
//! mode loads its own ([`load_object`]); a sampling run can pass the sampler's.

use std::{num::NonZeroU32, path::Path, sync::Arc};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{UProbe, uprobe::UProbeScope},
    util::nr_cpus,
};
use stacksampler_common::{
    EVENT_CONFIG_KEY, EventConfig, EventConfigFlags, EventCounters, GoLayout, event_names,
    names::{SAMPLES_MAP, SCRATCH_MAP},
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::loader::EBPF_OBJECT;

use super::{
    decode::RuntimeEvent,
    sites::{ProbeSites, SitesError, functions},
};

/// Ring buffer size of the (unused) sample map when only events are loaded: one page.
const IDLE_SAMPLES_RING_BYTES: u32 = 4096;

/// What to watch.
#[derive(Clone, Debug)]
pub struct EventOptions {
    /// Process (tgid).
    pub pid: u32,
    /// Go runtime layout (required: events need goroutine ids).
    pub layout: GoLayout,
    /// Frames walked at a stack growth and at a fatal error.
    pub deep_walk_limit: u32,
    /// Frames walked at a goroutine creation.
    pub create_walk_limit: u32,
    /// Track goroutine creation and exit (two probes hit once per goroutine).
    pub goroutines: bool,
}

/// Default frames walked at a growth or fatal error: deep enough for a 1 GB stack of small
/// frames' head, tail and exact depth (the kernel keeps 16384 of them).
pub const DEFAULT_DEEP_WALK_LIMIT: u32 = 1 << 20;
/// Default frames walked at a goroutine creation (the creator's stack).
pub const DEFAULT_CREATE_WALK_LIMIT: u32 = 64;

/// Errors attaching the probes.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The binary carries no eBPF object (built with AYA_BUILD_SKIP).
    #[error("this stacksampler was built without its eBPF program (AYA_BUILD_SKIP)")]
    NoObject,
    /// Loading the object.
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// Loading or attaching a program.
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map.
    #[error("eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The object lacks a map or program.
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    /// Counting CPUs.
    #[error("listing CPUs ({0}): {1}")]
    Cpus(&'static str, std::io::Error),
    /// Reading the executable.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Finding the probed functions.
    #[error("finding runtime functions: {0}")]
    Sites(#[from] SitesError),
    /// A required runtime function is absent.
    #[error("{0} not found in the executable (not a Go 1.17+ binary?)")]
    NoFunction(&'static str),
    /// The pid is 0.
    #[error("invalid pid 0")]
    BadPid,
    /// Turning on the kernel's run-time statistics.
    #[error("enabling bpf_stats: {0}")]
    Stats(#[from] aya::sys::SyscallError),
}

/// Loads stacksampler's eBPF object sized for this machine, without loading any program.
pub fn load_object() -> Result<Ebpf, EventsError> {
    if EBPF_OBJECT.is_empty() {
        return Err(EventsError::NoObject);
    }
    let possible = nr_cpus().map_err(|(what, e)| EventsError::Cpus(what, e))? as u32;
    Ok(EbpfLoader::new()
        .map_max_entries(SCRATCH_MAP, possible)
        .map_max_entries(event_names::SCRATCH_MAP, possible)
        .map_max_entries(SAMPLES_MAP, IDLE_SAMPLES_RING_BYTES)
        .load(EBPF_OBJECT)?)
}

/// One attached probe.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachedProbe {
    /// eBPF program name.
    pub program: &'static str,
    /// Probed function (or `function+0xoffset` for an instruction probe).
    pub location: String,
    /// File offset attached at.
    pub file_offset: u64,
    /// Kernel program id (for bpf_stats).
    #[serde(skip)]
    pub program_id: Option<u32>,
}

/// Cost of one program in the kernel (bpf_stats must be enabled).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProbeCost {
    /// eBPF program name.
    pub program: String,
    /// Runs since load.
    pub run_count: u64,
    /// Nanoseconds spent in the program.
    pub run_time_ns: u64,
}

impl ProbeCost {
    /// Mean nanoseconds per hit.
    pub fn mean_ns(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

/// Attached runtime-event probes on one process; dropping it (with the [`Ebpf`]) detaches.
pub struct EventProbes {
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, EventCounters>,
    /// What was attached.
    pub attached: Vec<AttachedProbe>,
    /// Sites in the executable.
    pub sites: ProbeSites,
    /// Records received.
    pub received: u64,
    /// Records that did not decode (counted as lost).
    pub decode_errors: u64,
    /// Goroutine ids of new goroutines are known (the call-site probe is attached).
    pub creation_goids_known: bool,
}

impl EventProbes {
    /// Finds the runtime functions in `exe` (the target's executable: `/proc/PID/exe` works for
    /// PIE binaries and containers), configures and attaches the probes for `options.pid`
    /// only, and takes the event ring buffer out of `ebpf`. Needs a tokio runtime with IO.
    pub fn attach(
        ebpf: &mut Ebpf,
        options: &EventOptions,
        exe: &Path,
    ) -> Result<Self, EventsError> {
        let pid = NonZeroU32::new(options.pid).ok_or(EventsError::BadPid)?;
        let data: Arc<[u8]> = std::fs::read(exe)
            .map_err(|source| EventsError::Io {
                path: exe.display().to_string(),
                source,
            })?
            .into();
        let sites = ProbeSites::find(data)?;

        let config = EventConfig {
            target_tgid: options.pid,
            flags: EventConfigFlags::GO_LAYOUT_KNOWN,
            growth_walk_limit: options.deep_walk_limit,
            create_walk_limit: options.create_walk_limit,
            fatal_walk_limit: options.deep_walk_limit,
            _pad: 0,
            go: options.layout,
        };
        let mut config_map: Array<_, EventConfig> = Array::try_from(
            ebpf.map_mut(event_names::CONFIG_MAP)
                .ok_or(EventsError::Missing(event_names::CONFIG_MAP))?,
        )?;
        config_map.set(EVENT_CONFIG_KEY, config, 0)?;

        let mut plan: Vec<(&'static str, String, u64)> = Vec::new();
        let need = |plan: &mut Vec<(&'static str, String, u64)>,
                    program: &'static str,
                    function: &'static str|
         -> Result<(), EventsError> {
            let s = sites
                .get(function)
                .ok_or(EventsError::NoFunction(function))?;
            plan.push((program, function.to_owned(), s.file_offset));
            Ok(())
        };
        need(
            &mut plan,
            event_names::COPYSTACK_PROGRAM,
            functions::COPYSTACK,
        )?;
        need(&mut plan, event_names::THROW_PROGRAM, functions::THROW)?;
        need(
            &mut plan,
            event_names::FATALTHROW_PROGRAM,
            functions::FATALTHROW,
        )?;
        if let Some(s) = sites.get(functions::FATAL) {
            plan.push((
                event_names::THROW_PROGRAM,
                functions::FATAL.to_owned(),
                s.file_offset,
            ));
        }
        let mut creation_goids_known = false;
        if options.goroutines {
            need(&mut plan, event_names::GOEXIT_PROGRAM, functions::GOEXIT1)?;
            match (sites.newproc_return, sites.get(functions::NEWPROC_FUNC1)) {
                (Some(ret), Some(closure)) => {
                    creation_goids_known = true;
                    plan.push((
                        event_names::NEWPROC_RETURN_PROGRAM,
                        format!(
                            "{}+{:#x}",
                            functions::NEWPROC_FUNC1,
                            ret.vaddr - closure.vaddr
                        ),
                        ret.file_offset,
                    ));
                }
                _ => {
                    log::warn!(
                        "no call of newproc1 found in newproc.func1: goroutine creations are seen at newproc1 entry, without the new goroutine's id"
                    );
                    need(
                        &mut plan,
                        event_names::NEWPROC1_PROGRAM,
                        functions::NEWPROC1,
                    )?;
                }
            }
        }

        let mut attached = Vec::new();
        for (program, location, offset) in plan {
            let prog: &mut UProbe = ebpf
                .program_mut(program)
                .ok_or(EventsError::Missing(program))?
                .try_into()
                .map_err(|source| EventsError::Program {
                    name: program,
                    source,
                })?;
            if prog.fd().is_err() {
                prog.load().map_err(|source| EventsError::Program {
                    name: program,
                    source,
                })?;
            }
            prog.attach(offset, exe, UProbeScope::OneProcess(pid))
                .map_err(|source| EventsError::Program {
                    name: program,
                    source,
                })?;
            let program_id = prog.info().ok().map(|i| i.id());
            attached.push(AttachedProbe {
                program,
                location,
                file_offset: offset,
                program_id,
            });
        }

        let ring = RingBuf::try_from(
            ebpf.take_map(event_names::EVENTS_MAP)
                .ok_or(EventsError::Missing(event_names::EVENTS_MAP))?,
        )?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(event_names::COUNTERS_MAP)
                .ok_or(EventsError::Missing(event_names::COUNTERS_MAP))?,
        )?;
        Ok(Self {
            // SAFETY: the ring buffer owns its fd for as long as the AsyncFd lives.
            ring: unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(
                |e| EventsError::Io {
                    path: event_names::EVENTS_MAP.into(),
                    source: e.into(),
                },
            )?,
            counters,
            attached,
            sites,
            received: 0,
            decode_errors: 0,
            creation_goids_known,
        })
    }

    /// Waits until events are available, then hands each decoded one to `sink`.
    pub async fn next_batch(&mut self, sink: &mut impl FnMut(RuntimeEvent)) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let (received, errors) = drain_ring(guard.get_inner_mut(), sink);
        self.received += received;
        self.decode_errors += errors;
        guard.clear_ready();
        Ok(())
    }

    /// Hands every event already in the ring buffer to `sink` without waiting.
    pub fn drain(&mut self, sink: &mut impl FnMut(RuntimeEvent)) {
        let (received, errors) = drain_ring(self.ring.get_mut(), sink);
        self.received += received;
        self.decode_errors += errors;
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<EventCounters, EventsError> {
        let mut sum = EventCounters::default();
        for c in self.counters.get(&0, 0)?.iter() {
            sum.copystack_hits += c.copystack_hits;
            sum.create_hits += c.create_hits;
            sum.exit_hits += c.exit_hits;
            sum.fatal_hits += c.fatal_hits;
            sum.delivered += c.delivered;
            sum.lost_ringbuf += c.lost_ringbuf;
            sum.read_errors += c.read_errors;
            sum.foreign_hits += c.foreign_hits;
        }
        Ok(sum)
    }

    /// Kernel run counts and times of the attached programs (zero unless bpf_stats is on).
    pub fn costs(&self) -> Vec<ProbeCost> {
        let mut out: Vec<ProbeCost> = Vec::new();
        let ids: Vec<(u32, &'static str)> = self
            .attached
            .iter()
            .filter_map(|a| Some((a.program_id?, a.program)))
            .collect();
        for info in aya::programs::loaded_programs().flatten() {
            if let Some((_, name)) = ids.iter().find(|(id, _)| *id == info.id())
                && !out.iter().any(|c| c.program == *name)
            {
                out.push(ProbeCost {
                    program: (*name).to_owned(),
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                });
            }
        }
        out
    }
}

fn drain_ring(ring: &mut RingBuf<MapData>, sink: &mut impl FnMut(RuntimeEvent)) -> (u64, u64) {
    let (mut received, mut errors) = (0, 0);
    while let Some(record) = ring.next() {
        received += 1;
        match RuntimeEvent::decode(&record) {
            Ok(e) => sink(e),
            Err(e) => {
                errors += 1;
                log::debug!("dropping an event record: {e}");
            }
        }
    }
    (received, errors)
}
