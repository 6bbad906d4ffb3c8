//! The `agent` verb: continuous profiling of several processes until stopped.
//!
//! Each target is one [`record::run`] (the same engine, attach and report as `record`) observed
//! by an [`IntervalCutter`](interval::IntervalCutter), which cuts one profile per interval
//! and queues it (bounded: a slow exporter drops profiles, counted, and never delays
//! sampling). One task drains the queue into the exporters ([`files`]); [`metrics`] serves
//! what the intervals measured. A target that exits is dropped with an
//! [`AgentNotice::Dropped`]; the agent goes on until SIGINT or SIGTERM, then every run ends at
//! its next tick, detaches and cuts its last interval.

pub mod discover;
pub mod files;
pub mod interval;
pub mod metrics;
pub mod otlp;
pub mod push;
pub mod pyroscope;

use std::{
    cell::Cell, collections::HashSet, net::SocketAddr, path::PathBuf, rc::Rc, time::Duration,
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::{JoinSet, LocalSet},
};

use crate::{
    bpf::RingBytes,
    record::{self, RecordOptions},
    report::EndReason,
    target,
};
use discover::{Discovery, GoProcesses};
use files::{FileError, OutputDir};
use interval::{IntervalCutter, IntervalProfile, TargetFacts};
use metrics::{BindError, Metrics};
use otlp::OtlpOptions;
use push::Backend;
use pyroscope::PyroscopeOptions;

/// Interval profiles waiting for the exporters, at most; past that they are dropped.
pub const PROFILE_QUEUE: usize = 64;
/// How long a stopping agent waits for its last profiles to be pushed.
pub const PUSH_FLUSH_LIMIT: Duration = Duration::from_secs(10);
/// Sample ring of each target when `--ring-size` is not given: a quarter of `record`'s. The
/// ring's pages are mapped into the agent (twice: the kernel maps a ring's data pages twice for
/// wrap-around), so they are most of its resident memory per target; at the agent's rates the
/// reader drains it in milliseconds, and what finds it full is counted in the lost samples.
pub const SAMPLES_RING_BYTES: u64 = 4 << 20;
/// Shortest interval (file names have millisecond times; the run ticks every 250 ms).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What the agent does.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Processes to sample.
    pub pids: Vec<u32>,
    /// `--all-go`: also every Go process found by a scan of `/proc` each interval.
    pub all_go: Option<Discovery>,
    /// Length of each profile.
    pub interval: Duration,
    /// How each target is sampled; its `pid` and `duration` are set per target.
    pub record: RecordOptions,
    /// `--output-dir`: rotating pprof files.
    pub output_dir: Option<OutputDir>,
    /// `--metrics-addr`: the Prometheus endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// `--pyroscope`: push each profile to a Pyroscope server.
    pub pyroscope: Option<PyroscopeOptions>,
    /// `--otlp`: push each profile to an OTLP/HTTP profiles receiver.
    pub otlp: Option<OtlpOptions>,
}

/// What the agent has to say while it runs (the binary prints it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentNotice {
    /// `pid` is sampled.
    Attached { pid: u32, service: String },
    /// `pid` ended (exited, or died of a fatal error) and is no longer sampled.
    Dropped {
        pid: u32,
        service: String,
        reason: EndReason,
    },
    /// Sampling `pid` failed (it is no longer sampled).
    Failed { pid: u32, error: String },
    /// A profile file was written.
    Wrote(PathBuf),
    /// The metrics endpoint listens.
    Serving(SocketAddr),
    /// Something the operator should know.
    Warning(String),
}

/// Errors that stop the agent before it samples.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no such process: {0}")]
    NoSuchProcess(u32),
    #[error("--interval must be at least {}s", MIN_INTERVAL.as_secs())]
    IntervalTooShort,
    #[error("nothing to sample: give --pid or --all-go")]
    NoTargets,
    #[error(transparent)]
    OutputDir(#[from] FileError),
    #[error(transparent)]
    Metrics(#[from] BindError),
    #[error("listening for signals: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Target(#[from] target::TargetError),
}

/// How the agent's run went.
#[derive(Clone, Debug, Default)]
pub struct AgentSummary {
    /// Profile files written (`--output-dir`).
    pub exported: u64,
    /// Targets that ended while sampled.
    pub dropped: u64,
}

/// Runs the agent until SIGINT or SIGTERM. Needs a current-thread tokio runtime with IO and
/// time (the targets run as local tasks).
pub async fn run(
    opts: &AgentOptions,
    notices: mpsc::UnboundedSender<AgentNotice>,
) -> Result<AgentSummary, AgentError> {
    if opts.pids.is_empty() && opts.all_go.is_none() {
        return Err(AgentError::NoTargets);
    }
    if opts.interval < MIN_INTERVAL {
        return Err(AgentError::IntervalTooShort);
    }
    target::check_privileges()?;
    for &pid in &opts.pids {
        if !target::process::is_alive(pid) {
            return Err(AgentError::NoSuchProcess(pid));
        }
    }
    if let Some(dir) = &opts.output_dir {
        dir.prepare()?;
    }
    let metrics = Metrics::default();
    let listener = match opts.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    // Listened for before any run starts: a signal while a run loads must stop it too.
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;

    let local = LocalSet::new();
    local
        .run_until(async move {
            let server = listener.map(|l| {
                if let Ok(addr) = l.local_addr() {
                    let _ = notices.send(AgentNotice::Serving(addr));
                }
                tokio::task::spawn_local(metrics::serve(l, metrics.clone()))
            });
            let (profiles, queue) = mpsc::channel(PROFILE_QUEUE);
            let stopping = Rc::new(Cell::new(false));
            let mut pushers = Pushers::default();
            if let Some(p) = opts.pyroscope.clone() {
                pushers.start(p, &metrics, &notices, &stopping);
            }
            if let Some(o) = opts.otlp.clone() {
                pushers.start(o, &metrics, &notices, &stopping);
            }
            let exporter = tokio::task::spawn_local(export(
                queue,
                Exporters {
                    output_dir: opts.output_dir.clone(),
                    pushes: std::mem::take(&mut pushers.queues),
                    metrics: metrics.clone(),
                },
                notices.clone(),
            ));
            let ctx = |metrics: &Metrics| TargetContext {
                profiles: profiles.clone(),
                notices: notices.clone(),
                metrics: opts.metrics_addr.is_some().then(|| metrics.clone()),
                stopping: stopping.clone(),
            };
            let mut targets = JoinSet::new();
            // Processes sampled now, and those whose run failed (not tried again).
            let mut sampled: HashSet<u32> = HashSet::new();
            let mut failed: HashSet<u32> = HashSet::new();
            for &pid in &opts.pids {
                sampled.insert(pid);
                targets.spawn_local(sample_target(pid, opts.clone(), ctx(&metrics)));
            }
            let mut discovery = opts.all_go.clone().map(GoProcesses::new);
            let mut scan = tokio::time::interval(opts.interval);
            let mut summary = AgentSummary::default();
            loop {
                tokio::select! {
                    _ = sigint.recv() => break,
                    _ = sigterm.recv() => break,
                    Some(ended) = targets.join_next() => {
                        if let Ok((pid, end)) = ended {
                            sampled.remove(&pid);
                            match end {
                                TargetEnd::Ended => summary.dropped += 1,
                                TargetEnd::Failed => { failed.insert(pid); }
                                TargetEnd::Stopped => {}
                            }
                        }
                    }
                    _ = scan.tick(), if discovery.is_some() => {
                        let Some(found) = discovery.as_mut() else { continue };
                        for pid in found.scan() {
                            if !sampled.contains(&pid) && !failed.contains(&pid) {
                                sampled.insert(pid);
                                targets.spawn_local(sample_target(pid, opts.clone(), ctx(&metrics)));
                            }
                        }
                    }
                }
            }
            drop(profiles);
            stopping.set(true);
            while let Some(ended) = targets.join_next().await {
                if let Ok((_, TargetEnd::Ended)) = ended {
                    summary.dropped += 1;
                }
            }
            // Every run has cut its last interval: the exporter drains the queue and ends.
            summary.exported = exporter.await.unwrap_or(0);
            // The pushers have the last profiles; each ends once they are pushed (or dropped),
            // all within one limit.
            let flushed_by = tokio::time::Instant::now() + PUSH_FLUSH_LIMIT;
            for (exporter, task) in pushers.tasks {
                if tokio::time::timeout_at(flushed_by, task).await.is_err() {
                    let _ = notices.send(AgentNotice::Warning(format!(
                        "{exporter}: the last profiles were not pushed in time; dropped"
                    )));
                }
            }
            if let Some(server) = server {
                server.abort();
            }
            Ok(summary)
        })
        .await
}

/// What a target's task shares with the agent.
struct TargetContext {
    profiles: mpsc::Sender<IntervalProfile>,
    notices: mpsc::UnboundedSender<AgentNotice>,
    metrics: Option<Metrics>,
    stopping: Rc<Cell<bool>>,
}

/// How a target's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetEnd {
    /// The target exited (or died).
    Ended,
    /// The agent stopped.
    Stopped,
    /// The run could not start or broke.
    Failed,
}

/// Samples `pid` until it ends or the agent stops.
async fn sample_target(pid: u32, opts: AgentOptions, ctx: TargetContext) -> (u32, TargetEnd) {
    // With metrics, the runtime-event probes count goroutine creations and stack growths
    // (event headers only: no stacks walked or sent).
    let record = RecordOptions {
        pid,
        duration: None,
        events: ctx.metrics.is_some(),
        event_details: false,
        samples_ring: opts
            .record
            .samples_ring
            .or_else(|| RingBytes::new(SAMPLES_RING_BYTES).ok()),
        ..opts.record.clone()
    };
    let facts = TargetFacts::of(pid, record.frequency_hz, record.max_frames);
    let service = facts.service.clone();
    let target_metrics = ctx.metrics.as_ref().map(|m| m.target(&facts));
    let mut cutter = IntervalCutter::new(
        facts,
        opts.interval,
        ctx.profiles,
        ctx.notices.clone(),
        target_metrics,
        ctx.stopping,
    );
    match record::run(&record, &mut cutter).await {
        Ok(mut finished) => {
            cutter.finish(&mut finished.report);
            let reason = finished.report.run.ended_by;
            if !matches!(reason, EndReason::TargetExited | EndReason::TargetDied) {
                return (pid, TargetEnd::Stopped);
            }
            let _ = ctx.notices.send(AgentNotice::Dropped {
                pid,
                service,
                reason,
            });
            (pid, TargetEnd::Ended)
        }
        Err(e) => {
            let _ = ctx.notices.send(AgentNotice::Failed {
                pid,
                error: e.to_string(),
            });
            (pid, TargetEnd::Failed)
        }
    }
}

/// The push exporters' queues and tasks.
#[derive(Default)]
struct Pushers {
    queues: Vec<(&'static str, mpsc::Sender<IntervalProfile>)>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
}

impl Pushers {
    /// Starts pushing to `backend` from a queue of its own.
    fn start<B: Backend + 'static>(
        &mut self,
        backend: B,
        metrics: &Metrics,
        notices: &mpsc::UnboundedSender<AgentNotice>,
        stopping: &Rc<Cell<bool>>,
    ) {
        let (tx, rx) = mpsc::channel(push::QUEUE);
        let task = tokio::task::spawn_local(push::push_all(
            backend,
            rx,
            metrics.clone(),
            notices.clone(),
            stopping.clone(),
        ));
        self.queues.push((B::EXPORTER, tx));
        self.tasks.push((B::EXPORTER, task));
    }
}

/// Where the profiles go.
struct Exporters {
    output_dir: Option<OutputDir>,
    /// Each push exporter's own queue, by exporter name.
    pushes: Vec<(&'static str, mpsc::Sender<IntervalProfile>)>,
    metrics: Metrics,
}

/// Hands every queued profile to the exporters until the queue closes; returns how many
/// files were written.
async fn export(
    mut queue: mpsc::Receiver<IntervalProfile>,
    exporters: Exporters,
    notices: mpsc::UnboundedSender<AgentNotice>,
) -> u64 {
    let mut written = 0;
    while let Some(profile) = queue.recv().await {
        if let Some(dir) = &exporters.output_dir {
            match dir.write(&profile) {
                Ok(path) => {
                    written += 1;
                    exporters.metrics.exported(files::EXPORTER);
                    let _ = notices.send(AgentNotice::Wrote(path));
                }
                Err(e) => {
                    exporters.metrics.export_failed(files::EXPORTER);
                    let _ = notices.send(AgentNotice::Warning(e.to_string()));
                }
            }
        }
        // Never waits: a full queue (a slow server) drops the profile.
        for (exporter, push) in &exporters.pushes {
            if push.try_send(profile.clone()).is_err() {
                exporters.metrics.export_dropped(exporter);
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_sample_ring_is_one_the_kernel_takes() {
        assert_eq!(
            RingBytes::new(SAMPLES_RING_BYTES).map(RingBytes::get).ok(),
            Some(4 << 20)
        );
    }
}
