//! One sampling run, stage by stage: check the target -> load and attach -> stream samples
//! through the filter into the profile until the run ends -> detach -> symbolize the profile's
//! unique addresses once -> diagnose -> [`Report`].

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use stacksampler_common::{Counters, LabelFormat};
use tokio::signal::unix::SignalKind;

use crate::{
    aggregate::Profile,
    config::Config,
    diagnose,
    filter::Filter,
    goruntime,
    labels::{LabelResolver, ProcMem},
    loader::{KernelCost, LoadOptions, LoadedSampler, LoaderError},
    report::{EndReason, Report, RunInfo},
    sampler::SampleStream,
    symbolize::{ProcessSymbolizer, Symbolize, SymbolizeError},
    target::{self, ExitWatch, KernelError, Process, TargetError, sleep_or_forever},
    unwind::{ContinuationStats, DeepStackReader},
};

/// Errors that end a run before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("preparing symbolization: {0}")]
    Symbolize(#[from] SymbolizeError),
    #[error("waiting for samples: {0}")]
    Io(#[from] std::io::Error),
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
}

/// A finished run: the report and how it went.
pub struct Finished {
    pub report: Report,
    pub stats: RunStats,
}

/// Samples the process `config.pid` as `config` says and returns its report.
pub async fn run(config: &Config) -> Result<Finished, RunError> {
    target::check_privileges()?;
    let process = Process::open(config.pid)?;
    let mut warnings = Vec::new();

    let go = goruntime::inspect(&process.exe_link);
    // Where the target's stack limit lives (`runtime.maxstacksize`, set by debug.SetMaxStack).
    let mut maxstacksize_addr = None;
    let mut build_id = None;
    let mut is_go = false;
    let (go_version, go_layout) = match go {
        Ok(binary) => {
            build_id = binary.gnu_build_id.clone().or(binary.go_build_id.clone());
            is_go = binary.is_go;
            maxstacksize_addr = binary.symbols.maxstacksize.and_then(|addr| {
                if binary.is_pie {
                    target::process::pie_base(config.pid, &process.exe).map(|base| base + addr)
                } else {
                    Some(addr)
                }
            });
            warnings.extend(binary.warnings.iter().cloned());
            if !binary.is_go {
                warnings.push(format!(
                    "{} is not a Go binary: sampling native stacks, goroutine fields unknown",
                    process.exe.display()
                ));
            }
            let layout = binary.layout;
            (binary.version, layout)
        }
        Err(e) => {
            warnings.push(format!(
                "could not read the Go runtime layout of {}: {e}; goroutine fields unknown",
                process.exe.display()
            ));
            (None, None)
        }
    };
    // Goroutine labels are decoded in user space from what the kernel recorded (see labels.rs).
    let mut label_resolver = match (&go_version, go_layout) {
        (Some(version), Some(layout)) if layout.label_format != LabelFormat::NONE => {
            match ProcMem::open(config.pid) {
                Ok(mem) => Some(LabelResolver::new(version.clone(), Box::new(mem))),
                Err(e) => {
                    warnings.push(format!(
                        "cannot read goroutine labels: /proc/{}/mem: {e}",
                        config.pid
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    let go_version = go_version.map(|v| v.to_string());
    for w in &warnings {
        eprintln!("stacksampler: warning: {w}");
    }

    let task_fsbase_offset = target::task_fsbase_offset()?;
    let read_limit = || maxstacksize_addr.and_then(|a| target::process::read_u64(config.pid, a));
    let mut max_stack_bytes = read_limit();
    // Open the target's files now: it may exit before the report is symbolized.
    let mut symbolizer = ProcessSymbolizer::new(config.pid)?;

    let options = LoadOptions {
        pid: config.pid,
        frequency_hz: config.frequency,
        max_frames: config.max_frames,
        task_fsbase_offset,
        go_layout,
        pidns: Some(target::process::pid_namespace(config.pid)?),
        verbose: config.verbose,
        kernel_stacks: config.kernel,
        kernel_stats: config.verbose,
    };
    let mut loaded = LoadedSampler::load(&options)?;
    let mut stream = SampleStream::new(loaded.take_samples()?)?;
    let filter = Filter::from_config(config);
    let mut profile = Profile::default();
    // Stacks deeper than the kernel walk are finished from the target's memory.
    let mut deep = go_layout.and_then(|layout| DeepStackReader::open(config.pid, layout).ok());
    let mut morestack = MorestackFrames::default();
    let mut frameless = FramelessPcs::default();
    let mut no_goroutine = 0u64;
    let mut sink = |mut sample: crate::sample::Sample| {
        profile.counts.total += 1;
        if sample.goroutine.is_none() {
            no_goroutine += 1;
        }
        if let Some(resolver) = label_resolver.as_mut() {
            resolver.resolve(&mut sample);
        }
        if let Some(origin) = sample.switch_origin()
            && morestack.contains(origin, &mut symbolizer)
        {
            sample.complete_morestack_switch();
        }
        if let Some(&pc) = sample.frames.first()
            && frameless.at(pc, &symbolizer)
        {
            sample.complete_frameless_leaf();
        }
        if let (Some(reader), Some(cut)) = (deep.as_mut(), sample.cut)
            && let Some(rest) = reader.continue_walk(cut)
        {
            sample.extend(rest);
        }
        if filter.keep(&sample) {
            profile.add(&sample);
        }
    };

    let started = Instant::now();
    let exit_watch = ExitWatch::new(config.pid);
    let progress = Progress::new(config.verbose);
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = config.duration.map(Duration::from_secs_f64);
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    let ended_by = loop {
        let remaining = deadline.map(|d| d.saturating_sub(started.elapsed()));
        if remaining == Some(Duration::ZERO) {
            break EndReason::Duration;
        }
        tokio::select! {
            r = stream.next_batch(&mut sink) => r?,
            _ = sleep_or_forever(remaining) => break EndReason::Duration,
            _ = sigint.recv() => break EndReason::Interrupted,
            _ = sigterm.recv() => break EndReason::Interrupted,
            _ = exit_watch.exited() => break EndReason::TargetExited,
            _ = tick.tick() => {
                loaded.flush_logs();
                progress.show(started.elapsed(), stream.received);
                // pidfd_open is unavailable on very old kernels: poll /proc then.
                if !exit_watch.has_pidfd() && !target::process::is_alive(config.pid) {
                    break EndReason::TargetExited;
                }
            }
        }
    };
    let elapsed = started.elapsed();
    stream.drain(&mut sink);
    progress.finish();

    // The program may have changed its limit while sampled (debug.SetMaxStack).
    if let Some(limit) = read_limit() {
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
        if config.verbose {
            eprintln!(
                "stacksampler: labels: {} labelled samples, {} sets decoded, {} changed before \
                 they could be read, {} unreadable",
                st.referenced, st.decoded, st.stale, st.failed
            );
        }
    }
    profile.counts.lost = counters.lost_ringbuf + decode_errors;
    if counters.lost_ringbuf > 0 {
        warnings.push(format!(
            "{} samples were lost (ring buffer full); lower --frequency or --max-frames",
            counters.lost_ringbuf
        ));
    }
    if is_go
        && go_layout.is_some()
        && let Some(w) = unknown_goroutines_warning(profile.counts.total, no_goroutine, &counters)
    {
        warnings.push(w);
    }
    if go_layout.is_some() && counters.goroutine_read_errors > 0 && config.verbose {
        eprintln!(
            "stacksampler: {} samples had no readable goroutine",
            counters.goroutine_read_errors
        );
    }
    if ended_by == EndReason::TargetExited {
        eprintln!(
            "stacksampler: process {} exited after {:.1}s; reporting what was collected",
            config.pid,
            elapsed.as_secs_f64()
        );
    }

    let addresses = profile.trie.unique_addresses();
    let symbols = symbolizer.symbolize(&addresses);
    let diagnose_options = diagnose::DiagnoseOptions {
        max_stack_bytes,
        ..Default::default()
    };
    let diagnosis = diagnose::diagnose(&profile, &symbols, &diagnose_options);

    let report = Report {
        run: RunInfo {
            pid: config.pid,
            binary: process.exe.clone(),
            build_id,
            go_version,
            duration_secs: elapsed.as_secs_f64(),
            frequency_hz: config.frequency,
            max_frames: config.max_frames,
            ended_by,
        },
        profile,
        symbols,
        diagnosis,
        warnings,
    };
    let stats = RunStats {
        target_hits: counters.target_hits,
        delivered: counters.delivered,
        lost_ringbuf: counters.lost_ringbuf,
        decode_errors,
        cpus,
        kernel_cost,
        continuation,
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
    if total < UNKNOWN_GOROUTINE_MIN_SAMPLES || unknown * 100 <= total * UNKNOWN_GOROUTINE_WARN_PERCENT
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

/// Which return addresses are in `runtime.morestack` (where a stack-growth switch starts),
/// symbolized once per address while samples arrive.
#[derive(Default)]
struct MorestackFrames {
    known: std::collections::HashMap<u64, bool>,
}

impl MorestackFrames {
    /// Function through which a goroutine enters `runtime.newstack` on the system stack.
    const FUNCTION: &'static str = "runtime.morestack";

    fn contains(&mut self, addr: u64, symbolizer: &mut ProcessSymbolizer) -> bool {
        *self.known.entry(addr).or_insert_with(|| {
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
    known: std::collections::HashMap<u64, bool>,
}

impl FramelessPcs {
    fn at(&mut self, pc: u64, symbolizer: &ProcessSymbolizer) -> bool {
        *self
            .known
            .entry(pc)
            .or_insert_with(|| symbolizer.go_frame_size_at(pc) == Some(0))
    }
}

/// A one-line progress display on stderr (only on a terminal, or with `--verbose`).
struct Progress {
    enabled: bool,
    tty: bool,
    last: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(verbose: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            enabled: tty || verbose,
            tty,
            last: std::cell::Cell::new(Instant::now()),
        }
    }

    fn show(&self, elapsed: Duration, samples: u64) {
        if !self.enabled || self.last.get().elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last.set(Instant::now());
        let line = format!(
            "stacksampler: sampling {:.0}s, {samples} samples",
            elapsed.as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
    }

    fn finish(&self) {
        if self.enabled && self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
