//! Wall-clock samples (`record --wall`): at `--wall-frequency`, every goroutine's stack is read
//! from the target's memory by the dump's reader ([`GoroutineReader`]: no stop, no signal), and
//! each goroutine becomes one sample of kind [`SampleKind::Wall`] that stands for the time since
//! the previous snapshot. The record run puts them through its own sink: labels, filter,
//! profile, then the one symbolization and the renderers.
//!
//! - A running goroutine's saved registers are stale: its stack is the one of its latest CPU
//!   sample when that was taken since the previous snapshot (or at most
//!   [`RECENT_CPU_PERIODS`] CPU periods ago, whichever is longer): a stack it ran during the
//!   interval the sample stands for, taken by the kernel. Else one
//!   `[running, stack not captured]` frame: its time is counted, never shown at a stale place.
//! - The runtime's own goroutines are left out, as Go's goroutine profile leaves them out.

use std::time::Duration;

use crate::{
    aggregate::FastMap,
    deep_stack::ReadBudget,
    dump::{
        DumpError, StackSource,
        read::{GoroutineReader, RawGoroutine, is_system_start},
    },
    goruntime::state::GoroutineState,
    markers::NOT_CAPTURED_MARKER,
    sample::{Gap, GoroutineInfo, LabelRef, Sample, SampleKind, SampleLabels},
    snapshots::SnapshotStates,
};

/// A CPU sample of a running goroutine stands for its stack in a snapshot when it was taken
/// since the previous snapshot, or at most this many CPU sampling periods ago.
pub const RECENT_CPU_PERIODS: u64 = 3;

/// Default `--wall-frequency`: snapshots per second.
pub const DEFAULT_WALL_FREQUENCY_HZ: u64 = 10;

/// Nanoseconds per second.
const NS_PER_S: u64 = 1_000_000_000;

/// How the wall-clock side of a run went.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallStats {
    /// Snapshots taken.
    pub snapshots: u64,
    /// Bytes read from the target by them.
    pub bytes_read: u64,
    /// Time spent reading snapshots, nanoseconds.
    pub read_ns: u64,
    /// Running goroutines whose stack came from a recent CPU sample, and those without one.
    pub running_from_cpu: u64,
    pub running_not_captured: u64,
    /// Goroutines whose stack could not be read.
    pub unreadable: u64,
    /// Deep stacks kept to their head: reading the rest was past the budget.
    pub deep_over_budget: u64,
}

/// One snapshot as samples, with the unfiltered states of its goroutines.
pub struct WallSnapshot {
    pub states: SnapshotStates,
    pub samples: Vec<Sample>,
}

/// Takes the wall-clock snapshots of one run.
pub struct WallSampler {
    reader: GoroutineReader,
    period: Duration,
    /// Monotonic time of the previous snapshot.
    previous_ns: Option<u64>,
    /// Whether a goroutine started at this pc is one of the runtime's (named once per pc).
    system_starts: FastMap<u64, bool>,
    /// Where each resume pc and creation pc is looked up (found once per pc).
    lookups: FastMap<u64, u64>,
    /// The latest CPU sample of each goroutine seen running.
    recent: FastMap<u64, Sample>,
    /// Age up to which a CPU sample is recent.
    recent_ns: u64,
    pub stats: WallStats,
}

impl WallSampler {
    /// Opens `pid` for snapshots at `frequency_hz`, next to CPU sampling at `cpu_hz`.
    pub fn open(pid: u32, frequency_hz: u64, cpu_hz: u64) -> Result<Self, DumpError> {
        let mut reader = GoroutineReader::open(pid)?;
        reader.limit_deep_reads(ReadBudget::SAMPLING);
        Ok(Self {
            reader,
            period: Duration::from_nanos(NS_PER_S / frequency_hz.max(1)),
            previous_ns: None,
            system_starts: FastMap::default(),
            lookups: FastMap::default(),
            recent: FastMap::default(),
            recent_ns: RECENT_CPU_PERIODS * NS_PER_S / cpu_hz.max(1),
            stats: WallStats::default(),
        })
    }

    /// Go's name of wait reason `raw` in the target's release.
    pub fn reason_name(&self, raw: u8) -> Option<&'static str> {
        self.reader.binary().waitreason_name(raw)
    }

    /// Time between snapshots.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Remembers a completed CPU sample of a running goroutine as its live stack.
    pub fn remember_cpu(&mut self, sample: &Sample) {
        if let Some(g) = sample.goroutine
            && g.state == GoroutineState::Running
        {
            self.recent.insert(g.goid, sample.clone());
        }
    }

    /// Reads every goroutine now (`now_ns`, monotonic) as wall samples.
    pub fn snapshot(&mut self, now_ns: u64) -> Result<WallSnapshot, DumpError> {
        let started = std::time::Instant::now();
        let bytes_before = self.reader.bytes_read();
        let snapshot = self.reader.snapshot()?;
        let wall_ns = self
            .previous_ns
            .map_or(self.period.as_nanos() as u64, |p| now_ns.saturating_sub(p));
        self.previous_ns = Some(now_ns);
        let mut states = SnapshotStates {
            time_ns: now_ns,
            ..Default::default()
        };
        let mut reasons: FastMap<u8, u32> = FastMap::default();
        let mut samples = Vec::with_capacity(snapshot.goroutines.len());
        for raw in &snapshot.goroutines {
            if self.is_system(raw.g.startpc) {
                continue;
            }
            let state = raw.g.state();
            states.goroutines += 1;
            if state == GoroutineState::Waiting {
                states.blocked += 1;
                *reasons.entry(raw.g.waitreason).or_default() += 1;
            }
            if let Some(sample) = self.sample(raw, now_ns, wall_ns) {
                samples.push(sample);
            }
        }
        states.reasons = reasons.into_iter().collect();
        states
            .reasons
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // Goroutines gone since are forgotten (their ids are not reused).
        self.recent
            .retain(|_, s| now_ns.saturating_sub(s.time_ns) <= self.recent_ns);
        self.stats.snapshots += 1;
        self.stats.bytes_read += self.reader.bytes_read() - bytes_before;
        self.stats.read_ns += started.elapsed().as_nanos() as u64;
        self.stats.deep_over_budget = self.reader.deep_stats().over_budget;
        Ok(WallSnapshot { states, samples })
    }

    /// [`GoroutineReader::lookup_pc`], remembered per pc.
    fn lookup_pc(&mut self, pc: u64) -> u64 {
        let reader = &self.reader;
        *self
            .lookups
            .entry(pc)
            .or_insert_with(|| reader.lookup_pc(pc))
    }

    fn is_system(&mut self, startpc: u64) -> bool {
        if startpc == 0 {
            return false;
        }
        if let Some(&known) = self.system_starts.get(&startpc) {
            return known;
        }
        let system = self
            .reader
            .start_function(startpc)
            .is_some_and(|f| is_system_start(&f));
        self.system_starts.insert(startpc, system);
        system
    }

    /// The wall sample of one goroutine, `None` when its stack could not be read.
    fn sample(&mut self, raw: &RawGoroutine, now_ns: u64, wall_ns: u64) -> Option<Sample> {
        let g = &raw.g;
        let state = g.state();
        let goroutine = GoroutineInfo {
            goid: g.goid,
            state,
            waitreason: g.waitreason,
            g_addr: raw.addr,
        };
        let labels = SampleLabels {
            raw: (g.labels != 0)
                .then(|| {
                    self.reader.label_word(g.labels).map(|word| LabelRef {
                        ptr: g.labels,
                        word,
                    })
                })
                .flatten(),
            set: None,
        };
        let creator = (g.gopc != 0).then(|| self.lookup_pc(g.gopc));
        let base = Sample {
            kind: SampleKind::Wall,
            wall_ns,
            creator,
            time_ns: now_ns,
            goroutine: Some(goroutine),
            labels,
            ..Default::default()
        };
        let stack = &raw.stack;
        match stack.source {
            StackSource::NotCaptured => {
                let oldest = now_ns.saturating_sub(self.recent_ns.max(wall_ns));
                let live = self.recent.get(&g.goid).filter(|s| s.time_ns >= oldest);
                let Some(live) = live else {
                    self.stats.running_not_captured += 1;
                    return Some(Sample {
                        frames: vec![NOT_CAPTURED_MARKER],
                        ..base
                    });
                };
                self.stats.running_from_cpu += 1;
                Some(Sample {
                    frames: live.frames.clone(),
                    kernel_frames: live.kernel_frames.clone(),
                    switch_index: live.switch_index,
                    gap: live.gap,
                    truncated: live.truncated,
                    stack_bytes: live.stack_bytes,
                    ..base
                })
            }
            StackSource::Unreadable => {
                self.stats.unreadable += 1;
                None
            }
            StackSource::Sched | StackSource::Syscall => {
                let (&resume, callers) = stack.pcs.split_first()?;
                // Callers and the deep tail as call sites (return address - 1), as the kernel
                // gives CPU samples; the resume pc as Go's traceback looks it up.
                let mut frames = Vec::with_capacity(stack.pcs.len() + stack.tail.len());
                frames.push(self.lookup_pc(resume));
                frames.extend(callers.iter().map(|r| r.saturating_sub(1)));
                let gap = (stack.elided > 0).then_some(Gap {
                    at: frames.len(),
                    frames: stack.elided,
                });
                frames.extend(stack.tail.iter().map(|r| r.saturating_sub(1)));
                Some(Sample {
                    frames,
                    gap,
                    truncated: stack.truncated,
                    stack_bytes: (stack.sp != 0 && g.stack_hi > stack.sp)
                        .then(|| g.stack_hi - stack.sp),
                    ..base
                })
            }
        }
    }
}
