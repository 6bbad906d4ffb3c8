//! The runtime-event probes of a `record` run: the fatal-error probes always, stack growth and
//! goroutine creation/exit with `--events`, attached to the sampler's own object.

use std::path::Path;

use aya::Ebpf;
use stacksampler_common::GoLayout;

use crate::{
    bpf::{
        AttachedProbe, BpfError, EventOptions, EventProbes, ProbeCost,
        uprobes::{DEFAULT_CREATE_WALK_LIMIT, DEFAULT_DEEP_WALK_LIMIT},
    },
    events::tracker::KindCounts,
    report::{
        EndReason,
        events::{EventStats, ReportContext},
    },
    warning::Warning,
};

/// Which runtime events a run follows.
#[derive(Clone, Copy, Debug)]
pub(super) struct Follow {
    /// Stack growth and goroutine creation/exit too (`--events`), not only fatal errors.
    pub all: bool,
    /// The stacks of growth and creation events (without: headers only, for counting).
    pub stacks: bool,
}

/// Attaches the probes to `exe` of `pid` on `ebpf`, all of them when `follow.all` (`--events`),
/// else the fatal-error ones. They need goroutine ids: without a `layout`, none. A failure is a
/// warning (the run samples anyway), pushed to `warnings`.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    pid: u32,
    layout: Option<GoLayout>,
    exe: &Path,
    follow: Follow,
    warnings: &mut Vec<Warning>,
) -> Option<EventProbes> {
    let all = follow.all;
    // A walk limit of 0 sends the event's header only; a fatal error's stack is always walked.
    let walk = |limit: u32| if follow.stacks { limit } else { 0 };
    let options = EventOptions {
        pid,
        layout: layout?,
        deep_walk_limit: DEFAULT_DEEP_WALK_LIMIT,
        growth_walk_limit: walk(DEFAULT_DEEP_WALK_LIMIT),
        create_walk_limit: walk(DEFAULT_CREATE_WALK_LIMIT),
        growth: all,
        goroutines: all,
    };
    match EventProbes::attach(ebpf, &options, exe) {
        Ok(probes) => Some(probes),
        Err(e) => {
            let what = if all {
                "runtime events"
            } else {
                "fatal errors"
            };
            warnings.push(Warning::ProbesNotAttached {
                what,
                error: e.to_string(),
            });
            None
        }
    }
}

/// What the probes counted, read before they are detached.
pub(super) struct ProbeFacts {
    stats: EventStats,
    probes: Vec<AttachedProbe>,
    probe_cost: Vec<ProbeCost>,
    creation_goids_known: bool,
}

impl ProbeFacts {
    /// Reads the counters of `probes`; `counts` are the tracker's per-kind counts.
    pub(super) fn read(probes: &EventProbes, counts: KindCounts) -> Result<Self, BpfError> {
        let counters = probes.counters()?;
        Ok(Self {
            stats: EventStats {
                received: probes.stream.received,
                lost: counters.lost_ringbuf + probes.stream.decode_errors,
                decode_errors: probes.stream.decode_errors,
                read_errors: counters.read_errors,
                by_kind: counts,
            },
            probes: probes.attached.clone(),
            probe_cost: probes.costs(),
            creation_goids_known: probes.creation_goids_known,
        })
    }

    /// The context of the runtime-events part of the report.
    pub(super) fn context(self, run: RunFacts) -> ReportContext {
        ReportContext {
            pid: run.pid,
            binary: run.binary,
            go_version: run.go_version,
            duration_s: run.duration_s,
            ended_by: run.ended_by,
            alerts: Vec::new(),
            events: self.stats,
            probes: self.probes,
            probe_cost: self.probe_cost,
            creation_goids_known: self.creation_goids_known,
        }
    }
}

/// The run's own facts the runtime-events report repeats.
pub(super) struct RunFacts {
    pub pid: u32,
    pub binary: String,
    pub go_version: Option<String>,
    pub duration_s: f64,
    pub ended_by: EndReason,
}
