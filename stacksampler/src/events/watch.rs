//! `stacksampler --watch --pid P`: the runtime-event probes without CPU sampling, a live status
//! line on stderr, `--stack-alert` alerts as they happen, and a report at the end.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use aya::sys::{Stats, enable_stats};
use tokio::signal::unix::SignalKind;

use crate::{
    config::Config,
    goruntime,
    report::OutputFormat,
    symbolize::ProcessSymbolizer,
    target::{self, Process},
    target::{ExitWatch, sleep_or_forever},
};

use super::{
    WatchError,
    decode::RuntimeEvent,
    probes::{DEFAULT_CREATE_WALK_LIMIT, EventOptions, EventProbes, load_object},
    report::{self, AlertOut, EventStats, ReportContext, human_bytes},
    tracker::Tracker,
};

/// Status line period.
const STATUS_PERIOD: Duration = Duration::from_secs(1);
/// Period of the live goroutine count points.
const TIMELINE_PERIOD: Duration = Duration::from_secs(1);

/// Monotonic clock in nanoseconds (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs the watch mode for `config` and writes its report to stdout.
pub async fn watch(config: &Config) -> Result<(), WatchError> {
    target::check_privileges()?;
    let process = Process::open(config.pid)?;
    let binary = goruntime::inspect(&process.exe_link)?;
    let layout = binary.layout.ok_or_else(|| {
        WatchError::NoLayout(format!(
            "{}: {}",
            process.exe.display(),
            binary.warnings.join("; ")
        ))
    })?;
    let json = config.format == OutputFormat::Json;
    let stats_fd = if config.verbose {
        Some(enable_stats(Stats::RunTime).map_err(super::probes::EventsError::Stats)?)
    } else {
        None
    };
    let mut symbolizer = ProcessSymbolizer::new(config.pid)?;
    let mut ebpf = load_object()?;
    let options = EventOptions {
        pid: config.pid,
        layout,
        deep_walk_limit: super::probes::DEFAULT_DEEP_WALK_LIMIT,
        create_walk_limit: DEFAULT_CREATE_WALK_LIMIT,
        goroutines: true,
    };
    let mut probes = EventProbes::attach(&mut ebpf, &options, &process.exe_link)?;
    let at_attach = count_live_goroutines(config.pid, &process.exe, &binary, &layout);
    let start_ns = monotonic_ns();
    // The timeline's first point comes from the interval's immediate first tick.
    let mut tracker = Tracker::new(start_ns, config.stack_alert, at_attach);
    eprintln!(
        "stacksampler: watching pid {} ({} probes attached{})",
        config.pid,
        probes.attached.len(),
        at_attach.map_or(String::new(), |n| format!(", {n} goroutines"))
    );

    let started = Instant::now();
    let exit = ExitWatch::new(config.pid);
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = config.duration.map(Duration::from_secs_f64);
    let mut status_tick = tokio::time::interval(STATUS_PERIOD);
    let mut timeline_tick = tokio::time::interval(TIMELINE_PERIOD);
    let status = Status::new(config.verbose);
    let mut alerts: Vec<AlertOut> = Vec::new();
    let threshold = config.stack_alert.unwrap_or(0);
    let mut last_events = 0u64;

    let ended_by = loop {
        let remaining = deadline.map(|d| d.saturating_sub(started.elapsed()));
        if remaining == Some(Duration::ZERO) {
            break "duration";
        }
        let mut pending = Vec::new();
        let mut collect = |e: RuntimeEvent| pending.push(e);
        tokio::select! {
            r = probes.next_batch(&mut collect) => r?,
            _ = sleep_or_forever(remaining) => break "duration",
            _ = sigint.recv() => break "interrupt",
            _ = sigterm.recv() => break "interrupt",
            _ = exit.exited() => break "target exited",
            _ = timeline_tick.tick() => tracker.tick(monotonic_ns()),
            _ = status_tick.tick() => {
                let rate = tracker.events - last_events;
                last_events = tracker.events;
                status.show(&tracker, rate, started.elapsed());
                if !exit.has_pidfd() && !target::process::is_alive(config.pid) {
                    break "target exited";
                }
            }
        }
        for e in pending {
            if let Some(a) = tracker.add(e) {
                let out = report::alert_out(&mut symbolizer, &a, threshold, start_ns);
                announce(&out, json, &status);
                alerts.push(out);
            }
        }
    };
    let mut rest = Vec::new();
    probes.drain(&mut |e| rest.push(e));
    for e in rest {
        if let Some(a) = tracker.add(e) {
            let out = report::alert_out(&mut symbolizer, &a, threshold, start_ns);
            announce(&out, json, &status);
            alerts.push(out);
        }
    }
    tracker.tick(monotonic_ns());
    status.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let counters = probes.counters()?;
    let costs = probes.costs();
    let events = EventStats {
        received: probes.received,
        lost: counters.lost_ringbuf + probes.decode_errors,
        decode_errors: probes.decode_errors,
        read_errors: counters.read_errors,
        by_kind: tracker.counts,
    };
    if events.lost > 0 {
        eprintln!(
            "stacksampler: warning: {} events were lost (ring buffer full or undecodable)",
            events.lost
        );
    }
    let ctx = ReportContext {
        pid: config.pid,
        binary: process.exe.display().to_string(),
        go_version: binary.version.map(|v| v.to_string()),
        duration_s: elapsed,
        ended_by: ended_by.into(),
        alerts,
        events,
        probes: probes.attached.clone(),
        probe_cost: costs,
        creation_goids_known: probes.creation_goids_known,
    };
    drop(probes);
    drop(ebpf);
    drop(stats_fd);
    let report = report::build(&tracker, &mut symbolizer, ctx);
    if config.verbose {
        for c in &report.probe_cost {
            eprintln!(
                "stacksampler: probe {}: {} hits, {:.0} ns per hit in the kernel",
                c.program,
                c.run_count,
                c.mean_ns().unwrap_or(0.0)
            );
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::render_text(&report, config.verbose))?;
    }
    out.flush()?;
    Ok(())
}

/// Prints an alert: a line for people on stderr, and its json on stdout (json format) or stderr.
fn announce(a: &AlertOut, json: bool, status: &Status) {
    status.clear();
    eprintln!(
        "stacksampler: ALERT goroutine {} stack reached {} (alert at {}), {} frames: {}",
        a.goid,
        human_bytes(a.stack_bytes),
        human_bytes(a.threshold_bytes),
        a.depth,
        a.folded
    );
    let line = serde_json::to_string(a).unwrap_or_default();
    if json {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    } else {
        eprintln!("{line}");
    }
}

/// Counts goroutines not dead in `runtime.allgs` (binaries with a symbol table).
fn count_live_goroutines(
    pid: u32,
    exe: &std::path::Path,
    binary: &goruntime::GoBinary,
    layout: &stacksampler_common::GoLayout,
) -> Option<u64> {
    let mem = crate::labels::ProcMem::open(pid).ok()?;
    let bias = binary.load_bias(pid, exe)?;
    let at = goruntime::allgs::locate(binary, None, bias, layout.g_goid, &mem).ok()?;
    goruntime::allgs::count_live(&mem, &at, layout.g_atomicstatus).ok()
}

/// The live one-line status on stderr (rewritten in place on a terminal; a line per second
/// with `--verbose` otherwise).
struct Status {
    enabled: bool,
    tty: bool,
}

impl Status {
    fn new(verbose: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            enabled: tty || verbose,
            tty,
        }
    }

    fn show(&self, t: &Tracker, events_per_s: u64, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let goroutines = match t.live() {
            Some(n) => format!("{n} goroutines"),
            None => format!("{:+} goroutines", t.net_change()),
        };
        let biggest = t.biggest.map_or("-".to_owned(), |(id, b)| {
            format!("{} (goroutine {id})", human_bytes(b))
        });
        let line = format!(
            "stacksampler: {:.0}s  {goroutines}  {} created  biggest stack {biggest}  {events_per_s} events/s",
            elapsed.as_secs_f64(),
            t.created
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    fn clear(&self) {
        if self.enabled && self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }

    fn finish(&self) {
        self.clear();
    }
}
