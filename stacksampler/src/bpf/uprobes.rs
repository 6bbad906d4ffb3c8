//! The runtime-event uprobes: attached to one process on an object loaded by [`super::load`]
//! (the same object as the sampler's in a `record` run), their events read as a
//! [`RecordStream`] of [`RuntimeEvent`]s.

use std::{num::NonZeroU32, path::Path, sync::Arc};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{UProbe, uprobe::UProbeScope},
};
use stacksampler_common::{
    EVENT_CONFIG_KEY, EventConfig, EventConfigFlags, EventCounters, GoLayout, event_names,
};

use super::{
    BpfError, KernelCost, ProbeCost, RecordStream, counters,
    runtime_event::RuntimeEvent,
    sites::{ProbeSites, functions},
};

/// What to watch.
#[derive(Clone, Debug)]
pub struct EventOptions {
    /// Process (tgid).
    pub pid: u32,
    /// Go runtime layout (required: events need goroutine ids).
    pub layout: GoLayout,
    /// Frames walked at a fatal error.
    pub deep_walk_limit: u32,
    /// Frames walked at a stack growth (0: the event's header only).
    pub growth_walk_limit: u32,
    /// Frames walked at a goroutine creation.
    pub create_walk_limit: u32,
    /// Follow stack growth (`runtime.copystack`).
    pub growth: bool,
    /// Track goroutine creation and exit (two probes hit once per goroutine).
    pub goroutines: bool,
}

/// Default frames walked at a growth or fatal error: deep enough for a 1 GB stack of small
/// frames' head, tail and exact depth (the kernel keeps 16384 of them).
pub const DEFAULT_DEEP_WALK_LIMIT: u32 = 1 << 20;
/// Default frames walked at a goroutine creation (the creator's stack).
pub const DEFAULT_CREATE_WALK_LIMIT: u32 = 64;

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

/// Attached runtime-event probes on one process; dropping it (with the [`Ebpf`]) detaches.
pub struct EventProbes {
    /// The events, decoded.
    pub stream: RecordStream<RuntimeEvent>,
    counters: PerCpuArray<MapData, EventCounters>,
    /// What was attached.
    pub attached: Vec<AttachedProbe>,
    /// Sites in the executable.
    pub sites: ProbeSites,
    /// Goroutine ids of new goroutines are known (the call-site probe is attached).
    pub creation_goids_known: bool,
}

impl EventProbes {
    /// Finds the runtime functions in `exe` (the target's executable: `/proc/PID/exe` works for
    /// PIE binaries and containers), configures and attaches the probes for `options.pid`
    /// only, and takes the event ring buffer out of `ebpf`. Needs a tokio runtime with IO.
    pub fn attach(ebpf: &mut Ebpf, options: &EventOptions, exe: &Path) -> Result<Self, BpfError> {
        let pid = NonZeroU32::new(options.pid).ok_or(BpfError::BadPid)?;
        let data: Arc<[u8]> = std::fs::read(exe)
            .map_err(|source| BpfError::Io {
                path: exe.display().to_string(),
                source,
            })?
            .into();
        let sites = ProbeSites::find(data)?;

        let config = EventConfig {
            target_tgid: options.pid,
            flags: EventConfigFlags::GO_LAYOUT_KNOWN,
            growth_walk_limit: options.growth_walk_limit,
            create_walk_limit: options.create_walk_limit,
            fatal_walk_limit: options.deep_walk_limit,
            _pad: 0,
            go: options.layout,
        };
        let mut config_map: Array<_, EventConfig> = Array::try_from(
            ebpf.map_mut(event_names::CONFIG_MAP)
                .ok_or(BpfError::Missing(event_names::CONFIG_MAP))?,
        )?;
        config_map.set(EVENT_CONFIG_KEY, config, 0)?;

        let mut plan: Vec<(&'static str, String, u64)> = Vec::new();
        let need = |plan: &mut Vec<(&'static str, String, u64)>,
                    program: &'static str,
                    function: &'static str|
         -> Result<(), BpfError> {
            let s = sites.get(function).ok_or(BpfError::NoFunction(function))?;
            plan.push((program, function.to_owned(), s.file_offset));
            Ok(())
        };
        if options.growth {
            need(
                &mut plan,
                event_names::COPYSTACK_PROGRAM,
                functions::COPYSTACK,
            )?;
        }
        // Every fatal error passes `runtime.throw` or `runtime.fatal` (the only callers of
        // `runtime.fatalthrow`, Go 1.19 to 1.27), which carry the message. Each uprobe costs
        // a kernel grace period (0.1-0.2 s) when it is detached, so no third probe is added.
        need(&mut plan, event_names::THROW_PROGRAM, functions::THROW)?;
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
                .ok_or(BpfError::Missing(program))?
                .try_into()
                .map_err(BpfError::program(program))?;
            if prog.fd().is_err() {
                prog.load().map_err(BpfError::program(program))?;
            }
            prog.attach(offset, exe, UProbeScope::OneProcess(pid))
                .map_err(BpfError::program(program))?;
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
                .ok_or(BpfError::Missing(event_names::EVENTS_MAP))?,
        )?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map(event_names::COUNTERS_MAP)
                .ok_or(BpfError::Missing(event_names::COUNTERS_MAP))?,
        )?;
        Ok(Self {
            // Every event wakes the reader: no poll interval.
            stream: RecordStream::new(ring, None).map_err(|source| BpfError::Io {
                path: event_names::EVENTS_MAP.into(),
                source,
            })?,
            counters,
            attached,
            sites,
            creation_goids_known,
        })
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<EventCounters, BpfError> {
        counters::sum(&self.counters)
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
                    cost: KernelCost::of(&info),
                });
            }
        }
        out
    }
}
