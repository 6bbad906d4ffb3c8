//! `stacksampler watch --pid P`: the runtime-event probes without CPU sampling, a status and
//! `--stack-alert` alerts as they happen (to an [`Observer`]), and a report at the end.

use std::time::{Duration, Instant};

use aya::sys::{Stats, enable_stats};

mod options;

pub use options::{
    PreparedWatchOutputs, WatchError, WatchFormat, WatchOptions, WatchOutputPlan, write_report,
};

use crate::{
    bpf::{
        self, BpfError, EventOptions, EventProbes,
        runtime_event::RuntimeEvent,
        uprobes::{DEFAULT_CREATE_WALK_LIMIT, DEFAULT_DEEP_WALK_LIMIT},
    },
    events::Tracker,
    goruntime,
    report::events::{self as event_report, AlertOut, EventStats, ReportContext, WatchReport},
    session::{Notice, Observer, Session, Step, WatchStatus},
    symbolize::ProcessSymbolizer,
    target::{self, Process},
};

/// Period of the status line and of the live goroutine count points.
const TICK_PERIOD: Duration = Duration::from_secs(1);

/// Watches as `config` says, telling `observer` what happens, and returns the report.
pub async fn watch(
    config: &WatchOptions,
    observer: &mut dyn Observer,
) -> Result<WatchReport, WatchError> {
    target::check_privileges()?;
    let process = Process::open(config.pid)?;
    let binary = goruntime::inspect(&process.exe_link)?;
    let layout = binary.layout.ok_or_else(|| {
        WatchError::NoLayout(format!(
            "{}: {}",
            process.exe.display(),
            crate::warning::joined(&binary.warnings)
        ))
    })?;
    let stats_fd = if config.verbose {
        Some(enable_stats(Stats::RunTime).map_err(BpfError::Stats)?)
    } else {
        None
    };
    let mut symbolizer = ProcessSymbolizer::new(config.pid)?;
    let mut ebpf = bpf::load(bpf::Mode::Watch)?;
    let options = EventOptions {
        pid: config.pid,
        layout,
        deep_walk_limit: DEFAULT_DEEP_WALK_LIMIT,
        growth_walk_limit: DEFAULT_DEEP_WALK_LIMIT,
        create_walk_limit: DEFAULT_CREATE_WALK_LIMIT,
        growth: true,
        goroutines: true,
    };
    let mut probes = EventProbes::attach(&mut ebpf, &options, &process.exe_link)?;
    let at_attach = count_live_goroutines(config.pid, &process.exe, &binary, &layout);
    let start_ns = target::monotonic_ns();
    // The timeline's first point comes from the interval's immediate first tick.
    let mut tracker = Tracker::new(start_ns, config.stack_alert, at_attach);
    observer.notice(Notice::Watching {
        pid: config.pid,
        probes: probes.attached.len(),
        goroutines: at_attach,
    });

    let started = Instant::now();
    let mut session = Session::start(config.pid, config.duration, TICK_PERIOD)?;
    let mut alerts: Vec<AlertOut> = Vec::new();
    let threshold = config.stack_alert.unwrap_or(0);
    let mut last_events = 0u64;

    let ended_by = loop {
        let mut pending = Vec::new();
        let mut collect = |e: RuntimeEvent| pending.push(e);
        tokio::select! {
            r = probes.stream.next_batch(&mut collect) => r?,
            step = session.next() => match step {
                Step::End(reason) => break reason,
                Step::Tick => {
                    tracker.tick(target::monotonic_ns());
                    let rate = tracker.events - last_events;
                    last_events = tracker.events;
                    observer.notice(Notice::WatchStatus(WatchStatus {
                        elapsed: started.elapsed(),
                        live: tracker.live(),
                        net_change: tracker.net_change(),
                        created: tracker.created,
                        biggest: tracker.biggest,
                        events_per_s: rate,
                    }));
                }
            },
        }
        for e in pending {
            if let Some(a) = tracker.add(e) {
                let out = event_report::alert_out(&mut symbolizer, &a, threshold, start_ns);
                observer.notice(Notice::Alert(&out));
                alerts.push(out);
            }
        }
    };
    let mut rest = Vec::new();
    probes.stream.drain(&mut |e| rest.push(e));
    for e in rest {
        if let Some(a) = tracker.add(e) {
            let out = event_report::alert_out(&mut symbolizer, &a, threshold, start_ns);
            observer.notice(Notice::Alert(&out));
            alerts.push(out);
        }
    }
    tracker.tick(target::monotonic_ns());
    observer.notice(Notice::Finished);
    let elapsed = started.elapsed().as_secs_f64();
    let counters = probes.counters()?;
    let costs = probes.costs();
    let events = EventStats {
        received: probes.stream.received,
        lost: counters.lost_ringbuf + probes.stream.decode_errors,
        decode_errors: probes.stream.decode_errors,
        read_errors: counters.read_errors,
        by_kind: tracker.counts,
    };
    if events.lost > 0 {
        observer.notice(Notice::Warning(&crate::warning::Warning::EventsLost(
            events.lost,
        )));
    }
    let ctx = ReportContext {
        pid: config.pid,
        binary: process.exe.display().to_string(),
        go_version: binary.version.map(|v| v.to_string()),
        duration_s: elapsed,
        ended_by,
        alerts,
        events,
        probes: probes.attached.clone(),
        probe_cost: costs,
        creation_goids_known: probes.creation_goids_known,
    };
    drop(probes);
    drop(ebpf);
    drop(stats_fd);
    Ok(event_report::build(&tracker, &mut symbolizer, ctx))
}

/// Counts goroutines not dead in `runtime.allgs` (binaries with a symbol table; stripped ones
/// through the code of `runtime.allgadd`).
pub fn count_live_goroutines(
    pid: u32,
    exe: &std::path::Path,
    binary: &goruntime::GoBinary,
    layout: &stacksampler_common::GoLayout,
) -> Option<u64> {
    let mem = crate::record::labels::ProcMem::open(pid).ok()?;
    let bias = binary.load_bias(pid, exe)?;
    let at = goruntime::allgs::locate(binary, None, bias, layout.g_goid, &mem).ok()?;
    goruntime::allgs::count_live(&mem, &at, layout.g_atomicstatus).ok()
}
