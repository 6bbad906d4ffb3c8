//! The samples of a `record` run, completed: each ring buffer record is decoded in place into
//! one reused [`Sample`], then finished in user space (the program image it belongs to after an
//! `exec`, goroutine labels, native frames, the caller a `runtime.morestack` switch or a
//! frameless leaf skipped, the frames of a stack deeper than the kernel walk), so the run reads
//! `while let Some(sample) = source.next_sample() { ... }`.

use std::{collections::HashMap, path::PathBuf, time::Instant};

use stacksampler_common::GoLayout;

use crate::{
    bpf::RecordStream,
    deep_stack::{ContinuationStats, DeepStackReader, ReadBudget},
    images::{self, ExeIdentity, ExecInfo, ImageLookup, Images},
    native::{NativeStats, NativeUnwinder},
    record::{
        image::{ImageFacts, PreparedImage},
        labels::LabelResolver,
    },
    sample::{Sample, SampleKind},
    symbolize::{ProcessSymbolizer, Symbolize},
};

/// CPU samples of images whose goroutines the kernel reads (a Go binary of known layout), and
/// those of them that came without goroutine fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoroutineCoverage {
    pub go_samples: u64,
    pub unknown: u64,
}

/// Finishes decoded samples; holds every image's symbolizer and the readers of the target's
/// memory that completion needs.
pub struct Completion {
    pid: u32,
    /// The executable's name at start, for an image whose `/proc/PID/exe` is gone.
    exe: PathBuf,
    started: Instant,
    /// The program images seen, each with its symbolizer.
    pub images: Images,
    /// Decodes goroutine labels from the target's memory, for the current image.
    pub labels: Option<LabelResolver>,
    /// Unwinds the native (C) part of mixed stacks (first image only).
    pub native: Option<NativeUnwinder>,
    /// Finishes stacks deeper than the kernel walk, for the current image.
    pub deep: Option<DeepStackReader>,
    morestack: MorestackFrames,
    frameless: FramelessPcs,
    /// Per image: whether the kernel reads its goroutines.
    reads_goroutines: Vec<bool>,
    pub coverage: GoroutineCoverage,
    /// The `exec`s seen, in order.
    pub execs: Vec<ExecInfo>,
    /// Where the current image keeps its stack limit (`runtime.maxstacksize`).
    pub maxstacksize_addr: Option<u64>,
    /// A new image's layout, for the kernel program, until the run applies it.
    pending_layout: Option<Option<GoLayout>>,
    /// The executable the target runs, checked every tick (see [`Completion::check_exec`]).
    exe_seen: Option<ExeIdentity>,
    prepared: Option<PreparedImage>,
}

impl Completion {
    /// Completion for `pid`, which runs `exe` as `start` describes it; `symbolizer` is opened on
    /// it and `native` unwinds its mixed stacks.
    pub(super) fn new(
        pid: u32,
        exe: PathBuf,
        started: Instant,
        start: &ImageFacts,
        labels: Option<LabelResolver>,
        symbolizer: ProcessSymbolizer,
        native: Option<NativeUnwinder>,
    ) -> Self {
        Self {
            pid,
            exe,
            started,
            images: Images::new(pid, symbolizer),
            labels,
            native,
            deep: start.layout.and_then(|layout| {
                DeepStackReader::open(pid, layout, Some(ReadBudget::SAMPLING)).ok()
            }),
            morestack: MorestackFrames::default(),
            frameless: FramelessPcs::default(),
            reads_goroutines: vec![start.is_go && start.layout.is_some()],
            coverage: GoroutineCoverage::default(),
            execs: Vec::new(),
            maxstacksize_addr: start.maxstacksize_addr,
            pending_layout: None,
            exe_seen: ExeIdentity::of(pid),
            prepared: None,
        }
    }

    /// Finishes `sample` in place: a CPU sample as the kernel recorded it, or a wall sample
    /// of a snapshot (which reads the image the run started with).
    pub fn complete(&mut self, sample: &mut Sample) {
        let cpu = sample.kind == SampleKind::Cpu;
        let image = if cpu {
            self.image_of(sample.exec_id)
        } else {
            0
        };
        if cpu && self.reads_goroutines.get(image).copied().unwrap_or(false) {
            self.coverage.go_samples += 1;
            if sample.goroutine.is_none() {
                self.coverage.unknown += 1;
            }
        }
        if let Some(resolver) = self.labels.as_mut() {
            resolver.resolve(sample);
        }
        let symbolizer = &mut self.images.get_mut(image).symbolizer;
        // The native part belongs to the first image (the kernel stops copying it after an exec).
        match self.native.as_mut() {
            Some(unwinder) if image == 0 => unwinder.complete(sample, symbolizer),
            _ => sample.native = None,
        }
        if let Some(at) = sample.switch_index {
            let system_side = &sample.frames[..at.min(sample.frames.len())];
            if let Some(last) = system_side
                .iter()
                .position(|&pc| self.morestack.contains(image, pc, symbolizer))
                && sample.end_system_side_at(last)
            {
                sample.complete_morestack_switch();
            }
        }
        if let Some(&pc) = sample.frames.first()
            && self.frameless.at(image, pc, symbolizer)
        {
            sample.complete_frameless_leaf();
        }
        if let (Some(reader), Some(cut)) = (self.deep.as_mut(), sample.cut)
            && let Ok(rest) = reader.continue_walk(cut)
        {
            sample.extend(rest);
        }
        if image > 0 {
            for frame in &mut sample.frames {
                *frame = images::tag_address(*frame, image);
            }
        }
    }

    /// The image of a CPU sample's `exec_id`; a new one after an `exec`, when everything read
    /// from the executable is read again (the tick may have opened it already, while the
    /// process surely lived).
    fn image_of(&mut self, exec_id: u32) -> usize {
        match self.images.image_of(exec_id) {
            ImageLookup::Known(i) => i,
            ImageLookup::New => {
                let next = self
                    .prepared
                    .take()
                    .unwrap_or_else(|| PreparedImage::open(self.pid, &self.exe));
                let facts = next.facts;
                let i = self.images.add(exec_id, next.symbolizer);
                self.labels = facts.label_resolver(self.pid).ok().flatten();
                let deep_stats = self.continuation_stats();
                self.deep = facts.layout.and_then(|layout| {
                    DeepStackReader::open(self.pid, layout, Some(ReadBudget::SAMPLING)).ok()
                });
                if let Some(deep) = self.deep.as_mut() {
                    // One run's figures across the exec.
                    deep.stats = deep_stats;
                }
                self.maxstacksize_addr = facts.maxstacksize_addr;
                self.reads_goroutines
                    .push(facts.is_go && facts.layout.is_some());
                self.pending_layout = Some(facts.layout);
                self.execs.push(ExecInfo {
                    after_secs: self.started.elapsed().as_secs_f64(),
                    binary: next.exe,
                    go_version: facts.version.as_ref().map(|v| v.to_string()),
                    build_id: facts.build_id,
                });
                i
            }
        }
    }

    /// Checks which executable the target runs: after an `exec` the new one is opened at once,
    /// before the target can exit with it, for its samples still in the ring.
    pub fn check_exec(&mut self) {
        let exe_now = ExeIdentity::of(self.pid);
        if exe_now.is_some() && exe_now != self.exe_seen {
            self.exe_seen = exe_now;
            self.prepared = Some(PreparedImage::open(self.pid, &self.exe));
        }
    }

    /// A new image's Go layout (`None` inside: not Go) once, for the kernel program.
    pub fn take_pending_layout(&mut self) -> Option<Option<GoLayout>> {
        self.pending_layout.take()
    }

    /// What deep-stack completion did.
    pub fn continuation_stats(&self) -> ContinuationStats {
        self.deep.as_ref().map(|d| d.stats).unwrap_or_default()
    }

    /// What native unwinding did.
    pub fn native_stats(&self) -> NativeStats {
        self.native.as_ref().map(|u| u.stats).unwrap_or_default()
    }
}

/// Completed samples from the sample ring buffer.
pub struct SampleSource {
    stream: RecordStream<Sample>,
    /// The sample decoded last, reused for the next one.
    current: Sample,
    pub completion: Completion,
}

impl SampleSource {
    pub fn new(stream: RecordStream<Sample>, completion: Completion) -> Self {
        Self {
            stream,
            current: Sample::default(),
            completion,
        }
    }

    /// Waits until samples are ready (or the ring's poll interval passed).
    pub async fn ready(&mut self) -> std::io::Result<()> {
        self.stream.ready().await
    }

    /// The next completed sample already in the ring buffer, `None` when it is empty.
    pub fn next_sample(&mut self) -> Option<&Sample> {
        if !self.stream.next_into(&mut self.current) {
            return None;
        }
        self.completion.complete(&mut self.current);
        Some(&self.current)
    }

    /// Records received so far.
    pub fn received(&self) -> u64 {
        self.stream.received
    }

    /// Records that could not be decoded (counted as lost).
    pub fn decode_errors(&self) -> u64 {
        self.stream.decode_errors
    }

    /// Closes the ring buffer (the kernel side detaches with it) and keeps the completion.
    pub fn into_completion(self) -> Completion {
        self.completion
    }
}

/// Which return addresses are in `runtime.morestack` (where a stack-growth switch starts),
/// symbolized once per address while samples arrive.
#[derive(Default)]
struct MorestackFrames {
    known: HashMap<(usize, u64), bool>,
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
    known: HashMap<(usize, u64), bool>,
}

impl FramelessPcs {
    fn at(&mut self, image: usize, pc: u64, symbolizer: &ProcessSymbolizer) -> bool {
        *self
            .known
            .entry((image, pc))
            .or_insert_with(|| symbolizer.go_frame_size_at(pc) == Some(0))
    }
}
