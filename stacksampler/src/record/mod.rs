//! The `record` verb: one sampling run, stage by stage: check the target -> load and attach -> stream samples
//! through the filter into the profile until the run ends -> detach -> symbolize the profile's
//! unique addresses once -> diagnose -> [`Report`].

pub mod filter;
mod image;
pub mod labels;
mod probes;
pub mod source;
pub mod wall;

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use stacksampler_common::{Counters, GoLayout, NativeConfig};

use crate::{
    aggregate::Profile,
    bpf::runtime_event::RuntimeEvent,
    bpf::{
        self, BpfError, EventProbes, KernelCost, LoadOptions, LoadedSampler, RecordStream,
        ring::SAMPLES_POLL_INTERVAL,
    },
    deep_stack::{ContinuationStats, ReadBudget},
    diagnose,
    events::{Tracker, tracker::KindCounts},
    native::{self, NativeStats, NativeUnwinder},
    record::filter::Filter,
    record::image::ImageFacts,
    record::source::{Completion, SampleSource},
    record::wall::{WallSampler, WallStats},
    report::{EndReason, Report, RunInfo},
    sample::{Sample, SampleKind},
    session::{LiveTick, Notice, Observer, Session, Step},
    snapshots::SnapshotHistory,
    symbolize::{ProcessSymbolizer, SymbolizeError},
    target::{self, KernelError, Process, TargetError},
    warning::{UnknownGoroutineCause, Warning},
};

/// Period of the run's housekeeping: kernel logs, the exec check, the progress line.
const TICK_PERIOD: Duration = Duration::from_millis(250);

/// Errors that end a run before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("preparing symbolization: {0}")]
    Symbolize(#[from] SymbolizeError),
    #[error("waiting for samples: {0}")]
    Io(#[from] std::io::Error),
    #[error("wall-clock snapshots")]
    Wall(#[from] crate::dump::DumpError),
}

/// Extra facts about a run for tests, benchmarks and `--verbose`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// perf events that fired on the target's threads (kernel count).
    pub target_hits: u64,
    /// Samples the kernel delivered.
    pub delivered: u64,
    /// Samples lost to a full ring buffer.
    pub lost_ringbuf: u64,
    /// Records that could not be decoded.
    pub decode_errors: u64,
    /// CPUs sampled.
    pub cpus: usize,
    /// The program's kernel cost, when `bpf_stats` was on.
    pub kernel_cost: KernelCost,
    /// User-space completion of deep stacks.
    pub continuation: ContinuationStats,
    /// The wall-clock snapshots (`--wall`).
    pub wall: WallStats,
    /// User-space unwinding of native (C) frames.
    pub native: NativeStats,
    /// With the walk check on (`STACKSAMPLER_VERIFY_WALK=1`): samples checked, and those whose
    /// bulk walk differed from the record-by-record walk.
    pub walk_checks: u64,
    pub walk_mismatches: u64,
}

/// A finished run: the report and how it went.
pub struct Finished {
    pub report: Report,
    pub stats: RunStats,
}

/// What one sampling run does.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Process (tgid) to sample.
    pub pid: u32,
    /// How long to sample; `None`: until interrupted or the target exits.
    pub duration: Option<Duration>,
    /// Samples per second per CPU.
    pub frequency_hz: u64,
    /// Frames walked per sample in the kernel.
    pub max_frames: u32,
    /// Also record kernel stacks of samples taken in kernel mode.
    pub kernel_stacks: bool,
    /// Also follow stack growth and goroutine creation/exit (fatal errors always are).
    pub events: bool,
    /// With `events`: the kernel walks and sends the stacks of growth and creation events and
    /// the run keeps each goroutine's history (the runtime-events report); without, the events
    /// are headers only and only counted, so a run of any length keeps nothing per event (the
    /// agent's counters).
    pub event_details: bool,
    /// Which samples are kept.
    pub filter: Filter,
    /// Kernel-side diagnostics and kernel run-time statistics.
    pub verbose: bool,
    /// Size of the sample ring buffer; `None`: [`bpf::object::SAMPLES_RING_BYTES`].
    pub samples_ring: Option<bpf::RingBytes>,
    /// Also snapshot every goroutine this many times a second (`--wall`): wall-clock samples.
    pub wall_frequency_hz: Option<u64>,
}

/// Samples the process `opts.pid` as `opts` say and returns its report.
/// Progress, warnings and details go to `observer` while it runs.
pub async fn run(opts: &RecordOptions, observer: &mut dyn Observer) -> Result<Finished, RunError> {
    target::check_privileges()?;
    let process = Process::open(opts.pid)?;
    let start_image = ImageFacts::inspect(opts.pid, &process.exe);
    let mut warnings = start_image.warnings.clone();
    let labels = start_image.label_resolver(opts.pid).unwrap_or_else(|w| {
        warnings.push(w);
        None
    });
    let go_layout = start_image.layout;
    for w in &warnings {
        observer.notice(Notice::Warning(w));
    }
    let warned_at_start = warnings.len();
    // The limit at the end is the one reported (the program may change it, debug.SetMaxStack);
    // this one when it cannot be read then and the target did not exec.
    let limit_at_start = read_limit(opts.pid, start_image.maxstacksize_addr);
    // Open the target's files now: it may exit before the report is symbolized.
    let symbolizer = ProcessSymbolizer::new(opts.pid)?;
    // Mixed Go and C stacks: where Go's text is and how to cross the cgo boundary.
    let native_config = go_layout.and_then(|_| native::kernel_config(&symbolizer));
    let native_unwinder = native_config.as_ref().map(NativeUnwinder::new);
    let options = load_options(opts, go_layout, native_config)?;
    let mut ebpf = bpf::load(bpf::Mode::Record {
        events: opts.events,
        samples_ring: opts.samples_ring,
    })?;
    // The fatal-error probes cost nothing until the target dies (`--events` adds growth and
    // goroutine creation/exit); they need goroutine ids.
    let mut event_probes = probes::attach(
        &mut ebpf,
        opts.pid,
        go_layout,
        &process.exe_link,
        probes::Follow {
            all: opts.events,
            stacks: opts.event_details,
        },
        &mut warnings,
    );
    // Opened before attaching: a target the snapshots cannot read fails the run at once.
    let wall = match opts.wall_frequency_hz {
        Some(hz) => Some(WallSampler::open(opts.pid, hz, opts.frequency_hz)?),
        None => None,
    };
    let mut wall_ticks = wall.as_ref().map(|w| {
        let mut t = tokio::time::interval(w.period());
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut loaded = LoadedSampler::attach(ebpf, &options)?;
    let mut tracker = Tracker::new(target::monotonic_ns(), None, None);
    // The tracker's counts as of the last event, for the observer's ticks.
    let event_counts = Cell::new(KindCounts::default());
    let mut on_event = |e| {
        if opts.event_details {
            tracker.add(e);
        } else {
            tracker.count(e);
        }
        event_counts.set(tracker.counts);
    };
    let started = Instant::now();
    let completion = Completion::new(
        opts.pid,
        process.exe.clone(),
        started,
        &start_image,
        labels,
        symbolizer,
        native_unwinder,
    );
    let stream = RecordStream::new(loaded.take_samples()?, Some(SAMPLES_POLL_INTERVAL))?;
    let mut source = SampleSource::new(stream, completion);
    let mut collector = Collector::new(&opts.filter, wall);
    let mut session = Session::start(opts.pid, opts.duration, TICK_PERIOD)?;

    let ended_by = loop {
        tokio::select! {
            r = source.ready() => {
                r?;
                while let Some(sample) = source.next_sample() {
                    collector.add(sample);
                }
            }
            r = next_events(event_probes.as_mut(), &mut on_event) => r?,
            _ = next_tick(wall_ticks.as_mut()) => {
                // The latest CPU samples first: they hold the live stacks of running goroutines.
                collector.drain(&mut source);
                if !collector.snapshot(&mut source.completion, opts.pid, &mut warnings) {
                    wall_ticks = None;
                }
            }
            step = session.next() => match step {
                Step::End(reason) => break reason,
                Step::Tick => {
                    loaded.flush_logs();
                    source.completion.check_exec();
                    observer.notice(Notice::Sampling {
                        elapsed: started.elapsed(),
                        samples: source.received(),
                    });
                    let live = LiveTick {
                        elapsed: started.elapsed(),
                        profile: &mut collector.profile,
                        lost: loaded.counters().map_or(0, |c| c.lost_ringbuf)
                            + source.decode_errors(),
                        max_stack_bytes: read_limit(opts.pid, source.completion.maxstacksize_addr),
                        symbolizer: &mut source.completion.images,
                        runtime_events: (opts.events && event_probes.is_some())
                            .then(|| event_counts.get()),
                    };
                    if let Some(reason) = observer.live(live) {
                        break reason;
                    }
                }
            },
        }
        if let Some(layout) = source.completion.take_pending_layout() {
            loaded.set_go_layout(layout)?;
        }
    };
    let elapsed = started.elapsed();
    collector.drain(&mut source);
    // What `--events` adds to the report, known once the probes are drained.
    let mut probe_facts = None;
    if let Some(attached) = event_probes.as_mut() {
        attached.stream.drain(&mut on_event);
        if opts.events {
            probe_facts = Some(probes::ProbeFacts::read(attached, tracker.counts)?);
        }
    }
    drop(event_probes);
    observer.notice(Notice::Finished);
    let ended_by = if ended_by == EndReason::TargetExited && !tracker.fatal.is_empty() {
        EndReason::TargetDied
    } else {
        ended_by
    };

    let decode_errors = source.decode_errors();
    let counters = loaded.counters()?;
    let kernel_cost = loaded.kernel_cost().unwrap_or_default();
    let cpus = loaded.attached_cpus();
    loaded.flush_logs();
    // Detach before the (possibly long) symbolization.
    let mut completion = source.into_completion();
    drop(loaded);
    let max_stack_bytes = read_limit(opts.pid, completion.maxstacksize_addr)
        .or(limit_at_start.filter(|_| completion.execs.is_empty()));
    let (mut profile, history, wall_stats) = collector.finish();
    profile.counts.lost = counters.lost_ringbuf + decode_errors;
    warnings.extend(end_warnings(
        &completion,
        &wall_stats,
        &counters,
        go_layout,
        observer,
    ));
    for w in &warnings[warned_at_start..] {
        observer.notice(Notice::Warning(w));
    }

    let mut addresses = profile.table.unique_addresses();
    addresses.extend(history.addresses());
    let symbols = completion.images.symbolize(&addresses);
    let diagnose_options = diagnose::DiagnoseOptions {
        max_stack_bytes,
        ..Default::default()
    };
    let diagnosis = diagnose::diagnose_run(
        &profile,
        opts.wall_frequency_hz.map(|_| &history),
        &symbols,
        &diagnose_options,
    );
    // The probes are in the executable the target ran at start (image 0).
    let first_image = &mut completion.images.get_mut(0).symbolizer;
    let fatal = crate::report::events::fatal_report(first_image, &tracker.fatal);
    tracker.tick(target::monotonic_ns());
    let go_version = start_image.version.as_ref().map(|v| v.to_string());
    let runtime_events = probe_facts.map(|facts| {
        let ctx = facts.context(probes::RunFacts {
            pid: opts.pid,
            binary: process.exe.display().to_string(),
            go_version: go_version.clone(),
            duration_s: elapsed.as_secs_f64(),
            ended_by,
        });
        let mut report = crate::report::events::build(&tracker, first_image, ctx);
        // The fatal error is the report's own, first.
        report.fatal = None;
        report
    });

    let stats = RunStats {
        target_hits: counters.target_hits,
        delivered: counters.delivered,
        lost_ringbuf: counters.lost_ringbuf,
        decode_errors,
        cpus,
        kernel_cost,
        continuation: completion.continuation_stats(),
        wall: wall_stats,
        native: completion.native_stats(),
        walk_checks: counters.walk_checks,
        walk_mismatches: counters.walk_mismatches,
    };
    let report = Report {
        run: RunInfo {
            pid: opts.pid,
            binary: process.exe.clone(),
            build_id: start_image.build_id.clone(),
            go_version,
            execs: completion.execs,
            duration_secs: elapsed.as_secs_f64(),
            frequency_hz: opts.frequency_hz,
            wall_frequency_hz: opts.wall_frequency_hz,
            max_frames: opts.max_frames,
            ended_by,
        },
        profile,
        symbols,
        diagnosis,
        warnings,
        fatal,
        runtime_events,
    };
    Ok(Finished { report, stats })
}

/// What the kernel program is loaded with for `opts`.
fn load_options(
    opts: &RecordOptions,
    go_layout: Option<GoLayout>,
    native: Option<NativeConfig>,
) -> Result<LoadOptions, RunError> {
    let task = target::task_offsets()?;
    Ok(LoadOptions {
        pid: opts.pid,
        frequency_hz: opts.frequency_hz,
        max_frames: opts.max_frames,
        task_fsbase_offset: task.fsbase,
        task_exec_id_offset: task.exec_id,
        go_layout,
        pidns: Some(target::process::pid_namespace(opts.pid)?),
        verbose: opts.verbose,
        kernel_stacks: opts.kernel_stacks,
        kernel_stats: opts.verbose,
        native,
    })
}

/// The target's stack limit (`runtime.maxstacksize` at `addr`), when readable.
fn read_limit(pid: u32, addr: Option<u64>) -> Option<u64> {
    addr.and_then(|a| target::process::read_u64(pid, a))
}

/// Where completed samples go: the profile (those the filter keeps), the wall sampler's live
/// stacks of running goroutines, and the history of the wall-clock snapshots.
struct Collector<'a> {
    filter: &'a Filter,
    profile: Profile,
    wall: Option<WallSampler>,
    history: SnapshotHistory,
}

impl<'a> Collector<'a> {
    fn new(filter: &'a Filter, wall: Option<WallSampler>) -> Self {
        Self {
            filter,
            profile: Profile::default(),
            wall,
            history: SnapshotHistory::default(),
        }
    }

    fn add(&mut self, sample: &Sample) {
        let cpu = sample.kind == SampleKind::Cpu;
        if cpu {
            self.profile.counts.total += 1;
            if let Some(w) = self.wall.as_mut() {
                w.remember_cpu(sample);
            }
        }
        if self.filter.keep(sample) {
            if !cpu {
                self.history.add_kept(sample);
            }
            self.profile.add(sample);
        }
    }

    /// Every sample already in the ring.
    fn drain(&mut self, source: &mut SampleSource) {
        while let Some(sample) = source.next_sample() {
            self.add(sample);
        }
    }

    /// Takes a wall-clock snapshot and adds its samples, completed by `completion`; `false`
    /// when the snapshots stop (the target exec'd, exits, or its memory became unreadable),
    /// with a warning when that is news.
    fn snapshot(
        &mut self,
        completion: &mut Completion,
        pid: u32,
        warnings: &mut Vec<Warning>,
    ) -> bool {
        let Some(wall) = self.wall.as_mut() else {
            return false;
        };
        if completion.images.len() > 1 {
            warnings.push(Warning::WallStoppedByExec);
            return false;
        }
        match wall.snapshot(target::monotonic_ns()) {
            Ok(snapshot) => {
                for &(raw, _) in &snapshot.states.reasons {
                    if let Some(name) = wall.reason_name(raw) {
                        self.history
                            .reason_names
                            .entry(raw)
                            .or_insert_with(|| name.to_owned());
                    }
                }
                self.history.begin(snapshot.states);
                self.profile.counts.wall_snapshots += 1;
                self.profile.counts.wall_total += snapshot.samples.len() as u64;
                for mut sample in snapshot.samples {
                    completion.complete(&mut sample);
                    self.add(&sample);
                }
                true
            }
            Err(e) => {
                // The target is going away (the session sees its exit) or its memory became
                // unreadable: the snapshots taken so far stay in the profile.
                if target::process::is_alive(pid) {
                    warnings.push(Warning::WallStopped(e.to_string()));
                }
                false
            }
        }
    }

    fn finish(self) -> (Profile, SnapshotHistory, WallStats) {
        let wall = self.wall.map(|w| w.stats).unwrap_or_default();
        (self.profile, self.history, wall)
    }
}

/// The warnings known once sampling stopped; details go to `observer`.
fn end_warnings(
    completion: &Completion,
    wall: &WallStats,
    counters: &Counters,
    go_layout: Option<GoLayout>,
    observer: &mut dyn Observer,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if let Some(resolver) = &completion.labels {
        let st = resolver.stats;
        if let Some(e) = &resolver.last_error {
            warnings.push(Warning::LabelsUnreadable {
                failed: st.failed,
                referenced: st.referenced,
                error: e.to_string(),
            });
        }
        observer.notice(Notice::Detail(format!(
            "labels: {} labelled samples, {} sets decoded, {} changed before they could be \
             read, {} unreadable",
            st.referenced, st.decoded, st.stale, st.failed
        )));
    }
    if counters.lost_ringbuf > 0 {
        warnings.push(Warning::SamplesLost(counters.lost_ringbuf));
    }
    if counters.walk_mismatches > 0 {
        warnings.push(Warning::WalkMismatch {
            differed: counters.walk_mismatches,
            checked: counters.walk_checks,
        });
    }
    let deep = completion.continuation_stats();
    let over_budget = deep.over_budget + wall.deep_over_budget;
    if over_budget > 0 {
        warnings.push(Warning::DeepStacksOverBudget {
            samples: over_budget,
            mib_per_second: ReadBudget::SAMPLING.mib_per_second(),
        });
    }
    if deep.walks > 0 {
        observer.notice(Notice::Detail(format!(
            "deep stacks: {} of {} continuations walked to the root ({} frames, {} read), {} \
             past the budget",
            deep.completed,
            deep.walks,
            deep.frames_walked,
            crate::units::human_bytes(deep.bytes_read),
            deep.over_budget
        )));
    }
    let coverage = completion.coverage;
    if let Some(w) = unknown_goroutines_warning(coverage.go_samples, coverage.unknown, counters) {
        warnings.push(w);
    }
    if go_layout.is_some() && counters.goroutine_read_errors > 0 {
        observer.notice(Notice::Detail(format!(
            "{} samples had no readable goroutine",
            counters.goroutine_read_errors
        )));
    }
    warnings
}

/// Share of a Go target's samples without goroutine fields above which the report says so:
/// a few are normal (threads the Go runtime is still setting up, C threads of a cgo program).
const UNKNOWN_GOROUTINE_WARN_PERCENT: u64 = 10;
/// Fewest samples for that share to mean anything.
const UNKNOWN_GOROUTINE_MIN_SAMPLES: u64 = 20;

/// The warning for a Go target whose samples mostly came back without their goroutine, with
/// the cause the kernel counted; `None` when the share is small.
fn unknown_goroutines_warning(total: u64, unknown: u64, counters: &Counters) -> Option<Warning> {
    if total < UNKNOWN_GOROUTINE_MIN_SAMPLES
        || unknown * 100 <= total * UNKNOWN_GOROUTINE_WARN_PERCENT
    {
        return None;
    }
    let cause = if counters.goroutine_tid_mismatch * 2 >= counters.goroutine_read_errors.max(1) {
        UnknownGoroutineCause::ThreadMismatch
    } else {
        UnknownGoroutineCause::Unreadable
    };
    Some(Warning::UnknownGoroutines {
        unknown,
        total,
        cause,
    })
}

/// The next tick of `ticks`, or never without one.
async fn next_tick(ticks: Option<&mut tokio::time::Interval>) {
    match ticks {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next batch of runtime events, or never when no probes are attached.
async fn next_events(
    probes: Option<&mut EventProbes>,
    sink: &mut impl FnMut(RuntimeEvent),
) -> std::io::Result<()> {
    match probes {
        Some(p) => p.stream.next_batch(sink).await,
        None => std::future::pending().await,
    }
}
