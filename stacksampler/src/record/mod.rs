//! The `record` verb: one sampling run, stage by stage: check the target -> load and attach -> stream samples
//! through the filter into the profile until the run ends -> detach -> symbolize the profile's
//! unique addresses once -> diagnose -> [`Report`].

pub mod deep_stack;
pub mod filter;
pub mod labels;
mod probes;
pub mod wall;

use std::{
    cell::{Cell, RefCell},
    path::Path,
    time::{Duration, Instant},
};

use stacksampler_common::{Counters, GoLayout, LabelFormat};

use crate::{
    aggregate::Profile,
    bpf::{
        self, BpfError, EventProbes, KernelCost, LoadOptions, LoadedSampler, RecordStream,
        ring::SAMPLES_POLL_INTERVAL,
    },
    diagnose,
    events::{Tracker, decode::RuntimeEvent, tracker::KindCounts, watch::monotonic_ns},
    goruntime::{self, GoVersion},
    images::{self, ExeIdentity, ExecInfo, ImageLookup, Images},
    native::{self, NativeStats, NativeUnwinder},
    record::deep_stack::{ContinuationStats, DeepStackReader},
    record::filter::Filter,
    record::labels::{LabelResolver, ProcMem},
    record::wall::{WallSampler, WallStats},
    report::{EndReason, Report, RunInfo},
    sample::SampleKind,
    session::{LiveTick, Notice, Observer, Session, Step},
    snapshots::SnapshotHistory,
    symbolize::{ProcessSymbolizer, Symbolize, SymbolizeError},
    target::{self, KernelError, Process, TargetError},
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
}

/// A finished run: the report and how it went.
pub struct Finished {
    pub report: Report,
    pub stats: RunStats,
}

/// What stacksampler learns of the executable a target runs (at start, and after an `exec`).
struct ImageFacts {
    version: Option<GoVersion>,
    layout: Option<GoLayout>,
    build_id: Option<String>,
    is_go: bool,
    /// Where the stack limit lives (`runtime.maxstacksize`, set by debug.SetMaxStack).
    maxstacksize_addr: Option<u64>,
    warnings: Vec<String>,
}

impl ImageFacts {
    /// Inspects the executable `pid` runs now, through `/proc/PID/exe` (the file the target
    /// runs, whatever its mount namespace calls it); `exe` is its name for messages.
    fn inspect(pid: u32, exe: &Path) -> Self {
        let mut warnings = Vec::new();
        match goruntime::inspect(Path::new(&format!("/proc/{pid}/exe"))) {
            Ok(binary) => {
                let maxstacksize_addr = binary.symbols.maxstacksize.and_then(|addr| {
                    if binary.is_pie {
                        target::process::pie_base(pid, exe).map(|base| base + addr)
                    } else {
                        Some(addr)
                    }
                });
                warnings.extend(binary.warnings.iter().cloned());
                if !binary.is_go {
                    warnings.push(format!(
                        "{} is not a Go binary: sampling native stacks, goroutine fields unknown",
                        exe.display()
                    ));
                }
                Self {
                    build_id: binary.gnu_build_id.clone().or(binary.go_build_id.clone()),
                    is_go: binary.is_go,
                    version: binary.version,
                    layout: binary.layout,
                    maxstacksize_addr,
                    warnings,
                }
            }
            Err(e) => {
                warnings.push(format!(
                    "could not read the Go runtime layout of {}: {e}; goroutine fields unknown",
                    exe.display()
                ));
                Self {
                    version: None,
                    layout: None,
                    build_id: None,
                    is_go: false,
                    maxstacksize_addr: None,
                    warnings,
                }
            }
        }
    }

    /// The label decoder for this image (labels are decoded in user space from what the
    /// kernel recorded, see labels.rs), or why there is none.
    fn label_resolver(&self, pid: u32) -> Result<Option<LabelResolver>, String> {
        match (&self.version, self.layout) {
            (Some(version), Some(layout)) if layout.label_format != LabelFormat::NONE => {
                match ProcMem::open(pid) {
                    Ok(mem) => Ok(Some(LabelResolver::new(version.clone(), Box::new(mem)))),
                    Err(e) => Err(format!(
                        "cannot read goroutine labels: /proc/{pid}/mem: {e}"
                    )),
                }
            }
            _ => Ok(None),
        }
    }
}

/// The executable a target runs after an `exec`, opened while the target lives.
struct PreparedImage {
    exe: std::path::PathBuf,
    facts: ImageFacts,
    symbolizer: ProcessSymbolizer,
}

impl PreparedImage {
    /// Opens what `pid` runs now; `fallback` names it when `/proc/PID/exe` is gone.
    fn open(pid: u32, fallback: &Path) -> Self {
        let exe =
            std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|_| fallback.to_owned());
        let facts = ImageFacts::inspect(pid, &exe);
        // A target that exited right after its exec keeps its samples unnamed.
        let symbolizer =
            ProcessSymbolizer::new(pid).unwrap_or_else(|_| ProcessSymbolizer::empty(pid));
        Self {
            exe,
            facts,
            symbolizer,
        }
    }
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
    let mut label_resolver = start_image.label_resolver(opts.pid).unwrap_or_else(|w| {
        warnings.push(w);
        None
    });
    let go_layout = start_image.layout;
    let is_go = start_image.is_go;
    let go_version = start_image.version.as_ref().map(|v| v.to_string());
    for w in &warnings {
        observer.notice(Notice::Warning(w));
    }
    let warned_at_start = warnings.len();

    let task = target::task_offsets()?;
    let read_limit = |addr: Option<u64>| addr.and_then(|a| target::process::read_u64(opts.pid, a));
    // Cells: the sample sink changes them after an exec, the tick reads them.
    let maxstacksize_addr = Cell::new(start_image.maxstacksize_addr);
    let mut max_stack_bytes = read_limit(maxstacksize_addr.get());
    // Open the target's files now: it may exit before the report is symbolized.
    let symbolizer = ProcessSymbolizer::new(opts.pid)?;
    // Mixed Go and C stacks: where Go's text is and how to cross the cgo boundary.
    let native_config = go_layout.and_then(|_| native::kernel_config(&symbolizer));
    let mut native_unwinder = native_config.as_ref().map(NativeUnwinder::new);
    let images = RefCell::new(Images::new(opts.pid, symbolizer));

    let options = LoadOptions {
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
        native: native_config,
    };
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
    let wall = RefCell::new(wall);
    let history = RefCell::new(SnapshotHistory::default());
    let mut loaded = LoadedSampler::attach(ebpf, &options)?;
    let mut tracker = Tracker::new(monotonic_ns(), None, None);
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
    let mut stream: RecordStream<crate::sample::Sample> =
        RecordStream::new(loaded.take_samples()?, Some(SAMPLES_POLL_INTERVAL))?;
    let filter = &opts.filter;
    let profile = RefCell::new(Profile::default());
    // Stacks deeper than the kernel walk are finished from the target's memory.
    let mut deep = go_layout.and_then(|layout| DeepStackReader::open(opts.pid, layout).ok());
    let mut morestack = MorestackFrames::default();
    let mut frameless = FramelessPcs::default();
    // Samples of images whose goroutines the kernel reads (a Go binary of known layout; the
    // others were warned about already), and those of them without goroutine fields.
    let mut go_samples = 0u64;
    let mut go_unknown = 0u64;
    let mut reads_goroutines = vec![is_go && go_layout.is_some()];
    let mut execs: Vec<ExecInfo> = Vec::new();
    // A new image's layout, for the kernel program (applied between batches).
    let pending_layout: Cell<Option<Option<GoLayout>>> = Cell::new(None);
    // The executable the target runs, checked every tick: after an exec the new one is opened
    // at once, before the target can exit with it, for its samples still in the ring.
    let mut exe_seen = ExeIdentity::of(opts.pid);
    let prepared: RefCell<Option<PreparedImage>> = RefCell::new(None);
    let started = Instant::now();
    let mut sink = |mut sample: crate::sample::Sample| {
        let (mut profile, mut images) = (profile.borrow_mut(), images.borrow_mut());
        let cpu = sample.kind == SampleKind::Cpu;
        let lookup = if cpu {
            profile.counts.total += 1;
            images.image_of(sample.exec_id)
        } else {
            // Snapshots read the image the run started with (they stop at an exec).
            ImageLookup::Known(0)
        };
        let image = match lookup {
            ImageLookup::Known(i) => i,
            ImageLookup::New => {
                // The target exec'd: everything read from its executable is read again (the
                // tick below may have opened it already, while the process surely lived).
                let next = prepared
                    .borrow_mut()
                    .take()
                    .unwrap_or_else(|| PreparedImage::open(opts.pid, &process.exe));
                let facts = next.facts;
                let i = images.add(sample.exec_id, next.symbolizer);
                label_resolver = facts.label_resolver(opts.pid).ok().flatten();
                deep = facts
                    .layout
                    .and_then(|layout| DeepStackReader::open(opts.pid, layout).ok());
                maxstacksize_addr.set(facts.maxstacksize_addr);
                reads_goroutines.push(facts.is_go && facts.layout.is_some());
                pending_layout.set(Some(facts.layout));
                execs.push(ExecInfo {
                    after_secs: started.elapsed().as_secs_f64(),
                    binary: next.exe,
                    go_version: facts.version.as_ref().map(|v| v.to_string()),
                    build_id: facts.build_id,
                });
                i
            }
        };
        if cpu && reads_goroutines.get(image).copied().unwrap_or(false) {
            go_samples += 1;
            if sample.goroutine.is_none() {
                go_unknown += 1;
            }
        }
        if let Some(resolver) = label_resolver.as_mut() {
            resolver.resolve(&mut sample);
        }
        let symbolizer = &mut images.get_mut(image).symbolizer;
        // The native part belongs to the first image (the kernel stops copying it after an exec).
        match native_unwinder.as_mut() {
            Some(unwinder) if image == 0 => unwinder.complete(&mut sample, symbolizer),
            _ => sample.native = None,
        }
        if let Some(origin) = sample.switch_origin()
            && morestack.contains(image, origin, symbolizer)
        {
            sample.complete_morestack_switch();
        }
        if let Some(&pc) = sample.frames.first()
            && frameless.at(image, pc, symbolizer)
        {
            sample.complete_frameless_leaf();
        }
        if let (Some(reader), Some(cut)) = (deep.as_mut(), sample.cut)
            && let Some(rest) = reader.continue_walk(cut)
        {
            sample.extend(rest);
        }
        if image > 0 {
            for frame in &mut sample.frames {
                *frame = images::tag_address(*frame, image);
            }
        }
        if cpu && let Some(w) = wall.borrow_mut().as_mut() {
            w.remember_cpu(&sample);
        }
        if filter.keep(&sample) {
            if !cpu {
                history.borrow_mut().add_kept(&sample);
            }
            profile.add(&sample);
        }
    };

    let mut session = Session::start(opts.pid, opts.duration, TICK_PERIOD)?;

    let ended_by = loop {
        tokio::select! {
            r = stream.next_batch(&mut sink) => { r?; }
            r = next_events(event_probes.as_mut(), &mut on_event) => r?,
            _ = next_tick(wall_ticks.as_mut()) => {
                // The latest CPU samples first: they hold the live stacks of running goroutines.
                stream.drain(&mut sink);
                let taken = if images.borrow().len() == 1 {
                    wall.borrow_mut().as_mut().map(|w| {
                        let snapshot = w.snapshot(monotonic_ns());
                        if let Ok(snapshot) = &snapshot {
                            let mut history = history.borrow_mut();
                            for &(raw, _) in &snapshot.states.reasons {
                                if let Some(name) = w.reason_name(raw) {
                                    history.reason_names.entry(raw).or_insert_with(|| name.to_owned());
                                }
                            }
                        }
                        snapshot
                    })
                } else {
                    warnings.push(
                        "the target exec'd: wall-clock snapshots stopped (they read the program \
                         it ran at start)"
                            .to_owned(),
                    );
                    None
                };
                match taken {
                    Some(Ok(snapshot)) => {
                        history.borrow_mut().begin(snapshot.states);
                        profile.borrow_mut().counts.wall_snapshots += 1;
                        profile.borrow_mut().counts.wall_total += snapshot.samples.len() as u64;
                        for sample in snapshot.samples {
                            sink(sample);
                        }
                    }
                    Some(Err(e)) => {
                        // The target is going away (the session sees its exit) or its memory
                        // became unreadable: the snapshots taken so far stay in the profile.
                        if target::process::is_alive(opts.pid) {
                            warnings.push(format!("wall-clock snapshots stopped: {e}"));
                        }
                        wall_ticks = None;
                    }
                    None => wall_ticks = None,
                }
            }
            step = session.next() => match step {
                Step::End(reason) => break reason,
                Step::Tick => {
                    loaded.flush_logs();
                    let exe_now = ExeIdentity::of(opts.pid);
                    if exe_now.is_some() && exe_now != exe_seen {
                        exe_seen = exe_now;
                        *prepared.borrow_mut() = Some(PreparedImage::open(opts.pid, &process.exe));
                    }
                    observer.notice(Notice::Sampling {
                        elapsed: started.elapsed(),
                        samples: stream.received,
                    });
                    let live = LiveTick {
                        elapsed: started.elapsed(),
                        profile: &mut profile.borrow_mut(),
                        symbolizer: &mut *images.borrow_mut(),
                        lost: loaded.counters().map_or(0, |c| c.lost_ringbuf)
                            + stream.decode_errors,
                        max_stack_bytes: read_limit(maxstacksize_addr.get()),
                        runtime_events: (opts.events && event_probes.is_some())
                            .then(|| event_counts.get()),
                    };
                    if let Some(reason) = observer.live(live) {
                        break reason;
                    }
                }
            },
        }
        if let Some(layout) = pending_layout.take() {
            loaded.set_go_layout(layout)?;
        }
    };
    let elapsed = started.elapsed();
    stream.drain(&mut sink);
    let wall_stats = wall.into_inner().map(|w| w.stats).unwrap_or_default();
    let history = history.into_inner();
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

    // The program may have changed its limit while sampled (debug.SetMaxStack).
    if !execs.is_empty() {
        max_stack_bytes = None;
    }
    let (mut profile, mut images) = (profile.into_inner(), images.into_inner());
    if let Some(limit) = read_limit(maxstacksize_addr.get()) {
        max_stack_bytes = Some(limit);
    }
    let decode_errors = stream.decode_errors;
    let continuation = deep.as_ref().map(|d| d.stats).unwrap_or_default();
    let counters = loaded.counters()?;
    let kernel_cost = loaded.kernel_cost().unwrap_or_default();
    let cpus = loaded.attached_cpus();
    loaded.flush_logs();
    // Detach before the (possibly long) symbolization.
    drop(stream);
    drop(loaded);

    if let Some(resolver) = &label_resolver {
        let st = resolver.stats;
        if let Some(e) = &resolver.last_error {
            warnings.push(format!(
                "goroutine labels of {} of {} labelled samples could not be read: {e}",
                st.failed, st.referenced
            ));
        }
        observer.notice(Notice::Detail(format!(
            "labels: {} labelled samples, {} sets decoded, {} changed before they could be \
             read, {} unreadable",
            st.referenced, st.decoded, st.stale, st.failed
        )));
    }
    profile.counts.lost = counters.lost_ringbuf + decode_errors;
    if counters.lost_ringbuf > 0 {
        warnings.push(format!(
            "{} samples were lost (ring buffer full); lower --frequency or --max-frames, or raise --ring-size",
            counters.lost_ringbuf
        ));
    }
    if let Some(w) = unknown_goroutines_warning(go_samples, go_unknown, &counters) {
        warnings.push(w);
    }
    if go_layout.is_some() && counters.goroutine_read_errors > 0 {
        observer.notice(Notice::Detail(format!(
            "{} samples had no readable goroutine",
            counters.goroutine_read_errors
        )));
    }
    for w in &warnings[warned_at_start..] {
        observer.notice(Notice::Warning(w));
    }

    let mut addresses = profile.table.unique_addresses();
    addresses.extend(history.addresses());
    let symbols = images.symbolize(&addresses);
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
    let fatal =
        crate::events::report::fatal_report(&mut images.get_mut(0).symbolizer, &tracker.fatal);
    tracker.tick(monotonic_ns());
    let runtime_events = probe_facts.map(|facts| {
        let ctx = facts.context(probes::RunFacts {
            pid: opts.pid,
            binary: process.exe.display().to_string(),
            go_version: go_version.clone(),
            duration_s: elapsed.as_secs_f64(),
            ended_by,
        });
        let mut report =
            crate::events::report::build(&tracker, &mut images.get_mut(0).symbolizer, ctx);
        // The fatal error is the report's own, first.
        report.fatal = None;
        report
    });

    let report = Report {
        run: RunInfo {
            pid: opts.pid,
            binary: process.exe.clone(),
            build_id: start_image.build_id.clone(),
            go_version,
            execs,
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
    let stats = RunStats {
        target_hits: counters.target_hits,
        delivered: counters.delivered,
        lost_ringbuf: counters.lost_ringbuf,
        decode_errors,
        cpus,
        kernel_cost,
        continuation,
        wall: wall_stats,
        native: native_unwinder
            .as_ref()
            .map(|u| u.stats)
            .unwrap_or_default(),
    };
    Ok(Finished { report, stats })
}

/// Share of a Go target's samples without goroutine fields above which the report says so:
/// a few are normal (threads the Go runtime is still setting up, C threads of a cgo program).
const UNKNOWN_GOROUTINE_WARN_PERCENT: u64 = 10;
/// Fewest samples for that share to mean anything.
const UNKNOWN_GOROUTINE_MIN_SAMPLES: u64 = 20;

/// The warning for a Go target whose samples mostly came back without their goroutine, with
/// the reason the kernel counted; `None` when the share is small.
fn unknown_goroutines_warning(total: u64, unknown: u64, counters: &Counters) -> Option<String> {
    if total < UNKNOWN_GOROUTINE_MIN_SAMPLES
        || unknown * 100 <= total * UNKNOWN_GOROUTINE_WARN_PERCENT
    {
        return None;
    }
    let reason = if counters.goroutine_tid_mismatch * 2 >= counters.goroutine_read_errors.max(1) {
        "the thread was not the one the goroutine's m.procid names (threads not created by Go, \
         thread ids of another PID namespace, or a wrong runtime layout)"
    } else {
        "the goroutine could not be read from the thread (a wrong runtime layout or TLS slot)"
    };
    Some(format!(
        "goroutine fields are unknown in {unknown} of {total} samples ({:.0}%): {reason}; \
         states, goroutine ids and labels of those samples are missing",
        unknown as f64 * 100.0 / total as f64
    ))
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

/// Which return addresses are in `runtime.morestack` (where a stack-growth switch starts),
/// symbolized once per address while samples arrive.
#[derive(Default)]
struct MorestackFrames {
    known: std::collections::HashMap<(usize, u64), bool>,
}

impl MorestackFrames {
    /// Function through which a goroutine enters `runtime.newstack` on the system stack.
    const FUNCTION: &'static str = "runtime.morestack";

    fn contains(&mut self, image: usize, addr: u64, symbolizer: &mut ProcessSymbolizer) -> bool {
        *self.known.entry((image, addr)).or_insert_with(|| {
            let symbols = symbolizer.symbolize(&[addr]);
            symbols
                .frames(addr)
                .iter()
                .any(|f| &*f.function == Self::FUNCTION || &*f.function == "runtime.morestack.abi0")
        })
    }
}

/// Interrupted pcs at which the Go function has no frame record yet (stack frame of 0 bytes:
/// at its entry, or a frameless leaf), looked up once per pc in `.gopclntab`.
#[derive(Default)]
struct FramelessPcs {
    known: std::collections::HashMap<(usize, u64), bool>,
}

impl FramelessPcs {
    fn at(&mut self, image: usize, pc: u64, symbolizer: &ProcessSymbolizer) -> bool {
        *self
            .known
            .entry((image, pc))
            .or_insert_with(|| symbolizer.go_frame_size_at(pc) == Some(0))
    }
}
