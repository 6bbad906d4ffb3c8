//! Decoded samples: what one kernel record says, in user-space types.

use stacksampler_common::{
    NATIVE_TRAILER_SIZE, NativeKind, NativeTrailer, SAMPLE_HEADER_SIZE, SampleFlags, SampleHeader,
};

use bytes::Buf as _;

use crate::{
    deep_stack::{Continuation, CutWalk},
    goruntime::state::GoroutineState,
};

/// The goroutine a sample is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineInfo {
    /// Goroutine id (`g.goid`).
    pub goid: u64,
    /// Decoded `g.atomicstatus`.
    pub state: GoroutineState,
    /// Raw `g.waitreason` (meaningful when `state` is `Waiting`).
    pub waitreason: u8,
    /// Address of the `runtime.g`.
    pub g_addr: u64,
}

/// Where a sample comes from: the two kinds stay apart in every output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    /// A CPU-clock tick on a thread of the target, walked by the kernel: where CPU time goes.
    #[default]
    Cpu,
    /// One goroutine in a wall-clock snapshot of every goroutine (`record --wall`), on a CPU
    /// or not: where goroutines spend their time, waiting included.
    Wall,
}

impl SampleKind {
    /// The name outputs use (`cpu`, `wall`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wall => "wall",
        }
    }
}

/// One decoded sample.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// CPU tick or wall-clock snapshot.
    pub kind: SampleKind,
    /// For a wall sample: the wall-clock time it stands for (the time since the previous
    /// snapshot), nanoseconds. 0 for CPU samples.
    pub wall_ns: u64,
    /// For a wall sample: the call site of the `go` statement that created the goroutine
    /// (from `g.gopc`; the kernel does not read it for CPU samples).
    pub creator: Option<u64>,
    /// Kernel monotonic time of the sample in nanoseconds.
    pub time_ns: u64,
    /// Thread id.
    pub tid: u32,
    /// CPU the sample was taken on.
    pub cpu: u32,
    /// The thread's exec generation (`task_struct.self_exec_id`): it changes when the process
    /// `exec`s, so samples of different program images are told apart.
    pub exec_id: u32,
    /// The goroutine, when the Go runtime layout is known and could be read.
    pub goroutine: Option<GoroutineInfo>,
    /// Goroutine stack bytes in use (`g.stack.hi - sp`), when known.
    pub stack_bytes: Option<u64>,
    /// User stack, innermost first: `frames[0]` is the interrupted pc, every other entry the
    /// call-site address (return address - 1) of a caller.
    pub frames: Vec<u64>,
    /// The walk stopped at the frame limit: the stack is deeper than `frames`.
    pub truncated: bool,
    /// The tick hit kernel mode (for instance inside a system call).
    pub kernel_mode: bool,
    /// Index in `frames` where the walk switched from a system stack to the goroutine's stack.
    pub switch_index: Option<usize>,
    /// Where a walk cut at the frame limit would continue (set while `truncated`).
    pub cut: Option<CutWalk>,
    /// Frames counted but not kept: `frames[..gap.at]` is the head (innermost) and
    /// `frames[gap.at..]` the tail (outermost) of a stack with `gap.frames` more in between.
    pub gap: Option<Gap>,
    /// The goroutine's pprof labels (`pprof.Do`, `pprof.SetGoroutineLabels`).
    pub labels: SampleLabels,
    /// With `switch_index`: the word at `curg.sched.sp`, the caller's return address when the
    /// goroutine stopped at a function entry (see [`Sample::complete_morestack_switch`]).
    pub sched_ret: Option<u64>,
    /// The return address of the interrupted function if it has no frame record at `frames[0]`
    /// (word at the stack pointer on amd64, the link register on arm64); see
    /// [`Sample::complete_frameless_leaf`].
    pub leaf_ret: Option<u64>,
    /// With `--kernel`, for a sample that hit kernel mode: the kernel stack, innermost first.
    /// It sits on top of the user stack (`frames`); depth and filters count user frames only.
    pub kernel_frames: Vec<u64>,
    /// The native (C) part the kernel could not walk: registers and a stack copy, unwound in
    /// user space (`crate::native`) into frames inserted at [`NativeStack::at`].
    pub native: Option<NativeStack>,
    /// Index in `frames` after the native frames of a native part whose unwind was cut (the
    /// stack copy ended, or a frame had no unwind information): a marker goes there.
    pub native_cut: Option<usize>,
}

/// Where a sample's native part sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeStart {
    /// The thread was in C code called from Go: `frames[0]` is the interrupted pc, the
    /// native unwind starts there.
    CgoCall,
    /// A cgo callback: the native unwind starts at the return address into the C code that
    /// called back (`pc`), after the frame in `runtime.cgocallback`.
    CgoCallback,
}

/// The registers and stack bytes of a sample's native part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeStack {
    pub start: NativeStart,
    /// Index in `frames` where the native frames go.
    pub at: usize,
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    /// arm64: the link register; 0 on amd64.
    pub lr: u64,
    /// The stack copied from `sp` up.
    pub stack: Vec<u8>,
}

impl NativeStack {
    /// Decodes a [`NativeTrailer`] and the stack bytes after it; `None` when malformed.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let head = bytes.get(..NATIVE_TRAILER_SIZE)?;
        // SAFETY: NativeTrailer is repr(C) plain old data, valid for any bit pattern.
        let t: NativeTrailer = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
        let stack = bytes.get(NATIVE_TRAILER_SIZE..NATIVE_TRAILER_SIZE + t.len as usize)?;
        let start = match t.kind {
            NativeKind::CGO_CALL => NativeStart::CgoCall,
            NativeKind::CGO_CALLBACK => NativeStart::CgoCallback,
            _ => return None,
        };
        Some(Self {
            start,
            at: t.at as usize,
            pc: t.pc,
            sp: t.sp,
            fp: t.fp,
            lr: t.lr,
            stack: stack.to_vec(),
        })
    }
}

/// A goroutine label set: (key, value) pairs sorted by key, shared between samples.
pub type LabelSet = std::sync::Arc<[(String, String)]>;

/// Formats a label set as `key=value,key=value` (the form `--label` takes).
pub fn format_labels(set: &[(String, String)]) -> String {
    set.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One `--label key=value` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for LabelFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Self {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!("{s:?} is not key=value")),
        }
    }
}

/// What the kernel read of `g.labels` at the sample: the pointer and the word it pointed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LabelRef {
    /// `g.labels` (never 0 here).
    pub ptr: u64,
    /// `*g.labels` at the sample (slice data pointer or `*hmap`).
    pub word: u64,
}

/// The labels of one sample: the kernel's reference, and the set once user space decoded it
/// (`crate::record::labels::LabelResolver`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleLabels {
    /// `None` when the goroutine had no labels or they were not read.
    pub raw: Option<LabelRef>,
    /// The decoded set; `None` until resolved, or when it could not be read.
    pub set: Option<LabelSet>,
}

impl SampleLabels {
    /// The value of label `key`, when the set is known and has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.set
            .as_deref()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Uncaptured frames in the middle of a deep stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Index in `frames` of the first tail frame.
    pub at: usize,
    /// Number of frames between head and tail.
    pub frames: u64,
}

#[cfg(test)]
impl Sample {
    /// A test sample of goroutine `goid` in `state` (its time is `goid`).
    pub(crate) fn of_goroutine(frames: &[u64], goid: u64, state: GoroutineState) -> Self {
        Self {
            time_ns: goid,
            goroutine: Some(GoroutineInfo {
                goid,
                state,
                waitreason: 0,
                g_addr: 0,
            }),
            frames: frames.to_vec(),
            ..Default::default()
        }
    }
}

impl Sample {
    /// The goroutine state, `Unknown` when the goroutine could not be read.
    pub fn state(&self) -> GoroutineState {
        self.goroutine.map_or(GoroutineState::Unknown, |g| g.state)
    }

    /// Number of user frames on the stack: those kept plus the gap.
    pub fn depth(&self) -> usize {
        self.frames.len() + self.gap.map_or(0, |g| g.frames as usize)
    }

    /// Ends the system side of a switch after `frames[last]`, the return address into
    /// `runtime.morestack`: its frame-pointer chain goes on into the goroutine's frames
    /// (`morestack` makes no frame), which the goroutine side after the switch has already. The
    /// kernel stops there by itself unless the goroutine's stack moved under the sample (during
    /// `copystack`, `g.stack` is the new stack while the chain is on the old one). Frames past
    /// `last` are dropped. True when the system side now ends at `last`; false (nothing changed)
    /// without a switch, with `last` past it, or with a gap.
    pub fn end_system_side_at(&mut self, last: usize) -> bool {
        let Some(at) = self.switch_index else {
            return false;
        };
        if last >= at || at > self.frames.len() || self.gap.is_some() {
            return false;
        }
        self.frames.drain(last + 1..at);
        self.switch_index = Some(last + 1);
        true
    }

    /// Inserts the caller skipped at a `runtime.morestack` switch: `runtime.morestack` saves
    /// `g.sched` at the growing function's entry, before it pushed its frame pointer, so the walk
    /// from `sched.bp` starts at the caller's caller. The caller's return address is the word
    /// at `sched.sp` ([`Sample::sched_ret`]). Call only when the system side ends in
    /// `runtime.morestack` ([`Sample::end_system_side_at`]; `mcall` and `systemstack` save a
    /// complete frame).
    pub fn complete_morestack_switch(&mut self) {
        let (Some(at), Some(ret)) = (self.switch_index, self.sched_ret.take()) else {
            return;
        };
        if ret == 0 || at >= self.frames.len() {
            return;
        }
        // After frames[at] (the saved pc), as a call site like every caller frame.
        self.frames.insert(at + 1, ret.saturating_sub(1));
        if let Some(gap) = self.gap.as_mut()
            && gap.at > at
        {
            gap.at += 1;
        }
    }

    /// Inserts the caller that the frame-pointer walk skipped because the interrupted function
    /// had no frame record at `frames[0]` (a frameless leaf, or a function interrupted at its
    /// entry): the walk's first record is then the caller's, whose return address leads to the
    /// caller's caller. Call only when the function's stack frame is empty at `frames[0]`
    /// (`.gopclntab`'s pc-to-sp-delta table says 0).
    pub fn complete_frameless_leaf(&mut self) {
        let Some(ret) = self.leaf_ret.take() else {
            return;
        };
        let call_site = ret.saturating_sub(1);
        if ret == 0 || self.frames.is_empty() || self.frames.get(1) == Some(&call_site) {
            return;
        }
        self.frames.insert(1, call_site);
        if let Some(at) = self.switch_index.as_mut() {
            *at += 1;
        }
        if let Some(gap) = self.gap.as_mut() {
            gap.at += 1;
        }
    }

    /// Completes a cut walk with what user space read past the kernel's limit.
    pub fn extend(&mut self, continuation: Continuation) {
        let at = self.frames.len();
        if continuation.elided > 0 {
            self.gap = Some(Gap {
                at,
                frames: continuation.elided,
            });
        }
        self.frames.extend_from_slice(&continuation.tail);
        self.truncated = false;
        self.cut = None;
    }
}

/// Replaces `out` with the frame words of one walk (`words`, machine byte order). Every frame
/// but the interrupted one holds a return address: the call is the instruction before it, and
/// symbolizing `ret - 1` names the caller's line, as Go's own tracebacks do.
fn call_sites(mut words: &[u8], out: &mut Vec<u64>) {
    out.clear();
    out.reserve(words.len() / 8);
    let mut first = true;
    // `bytes::Buf` reads the words in the machine's byte order; the caller bounds-checked them.
    while words.len() >= 8 {
        let addr = words.get_u64_ne();
        out.push(if first { addr } else { addr.saturating_sub(1) });
        first = false;
    }
}

/// Error decoding a ring buffer record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("sample record of {0} bytes is shorter than its {SAMPLE_HEADER_SIZE}-byte header")]
    Short(usize),
    #[error("sample record says {claimed} frames but carries {present}")]
    FrameCount { claimed: usize, present: usize },
    #[error("sample record's native stack trailer is malformed")]
    NativeTrailer,
}

impl crate::bpf::Record for Sample {
    type Error = DecodeError;
    const WHAT: &'static str = "sample";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(bytes)
    }

    fn decode_into(bytes: &[u8], into: &mut Self) -> Result<(), DecodeError> {
        Self::decode_into(bytes, into)
    }
}

impl Sample {
    /// Decodes one ring buffer record: a [`SampleHeader`] followed by `n_frames` u64 addresses.
    pub fn decode(record: &[u8]) -> Result<Self, DecodeError> {
        let mut sample = Self::default();
        Self::decode_into(record, &mut sample)?;
        Ok(sample)
    }

    /// Decodes one ring buffer record into `into`, read in place from `record` (the ring's
    /// memory) and reusing `into`'s frame buffers: a stream of samples allocates nothing per
    /// sample once the buffers have grown to the deepest stack. Every field of `into` is
    /// replaced; the header's fields are mapped in [`Sample::from_parts`].
    pub fn decode_into(record: &[u8], into: &mut Self) -> Result<(), DecodeError> {
        if record.len() < SAMPLE_HEADER_SIZE {
            return Err(DecodeError::Short(record.len()));
        }
        // SAFETY: SampleHeader is repr(C) plain old data, valid for any bit pattern; the read is
        // unaligned-safe.
        let header: SampleHeader =
            unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<SampleHeader>()) };
        let body = &record[SAMPLE_HEADER_SIZE..];
        let claimed = header.n_frames as usize;
        let present = body.len() / 8;
        if claimed > present {
            return Err(DecodeError::FrameCount { claimed, present });
        }
        let kernel = (header.n_kernel_frames as usize).min(claimed);
        let user = claimed - kernel;
        let (user_words, kernel_words) = body[..claimed * 8].split_at(user * 8);
        let mut frames = std::mem::take(&mut into.frames);
        let mut kernel_frames = std::mem::take(&mut into.kernel_frames);
        call_sites(user_words, &mut frames);
        call_sites(kernel_words, &mut kernel_frames);
        *into = Self::from_parts(&header, frames);
        into.kernel_frames = kernel_frames;
        if header.flags & SampleFlags::NATIVE != 0 {
            let native =
                NativeStack::decode(&body[claimed * 8..]).ok_or(DecodeError::NativeTrailer)?;
            if native.at > into.frames.len() {
                return Err(DecodeError::NativeTrailer);
            }
            into.native = Some(native);
        }
        Ok(())
    }

    /// Builds a sample from a header and its frames (already call-site adjusted).
    pub fn from_parts(header: &SampleHeader, frames: Vec<u64>) -> Self {
        let flags = header.flags;
        let known = flags & SampleFlags::GOROUTINE_KNOWN != 0;
        let goroutine = known.then(|| GoroutineInfo {
            goid: header.goid,
            state: GoroutineState::from_raw(header.status),
            waitreason: header.waitreason as u8,
            g_addr: header.g_addr,
        });
        let stack_bytes = (known && header.stack_hi > header.sp && header.sp >= header.stack_lo)
            .then(|| header.stack_hi - header.sp);
        let truncated = flags & SampleFlags::TRUNCATED != 0;
        let cut = (truncated && known && header.last_fp != 0).then_some(CutWalk {
            g_addr: header.g_addr,
            stack_lo: header.stack_lo,
            stack_hi: header.stack_hi,
            fp: header.last_fp,
        });
        Self {
            kind: SampleKind::Cpu,
            wall_ns: 0,
            creator: None,
            time_ns: header.time_ns,
            tid: header.tid,
            cpu: header.cpu,
            exec_id: header.exec_id,
            goroutine,
            stack_bytes,
            frames,
            truncated,
            kernel_mode: flags & SampleFlags::KERNEL_MODE != 0,
            switch_index: (flags & SampleFlags::SWITCHED_TO_CURG != 0)
                .then_some(header.switch_index as usize),
            cut,
            gap: None,
            labels: SampleLabels {
                raw: (known && header.labels_ptr != 0).then_some(LabelRef {
                    ptr: header.labels_ptr,
                    word: header.labels_word,
                }),
                set: None,
            },
            sched_ret: (flags & SampleFlags::SWITCHED_TO_CURG != 0).then_some(header.sched_ret),
            leaf_ret: (header.leaf_ret != 0).then_some(header.leaf_ret),
            kernel_frames: Vec::new(),
            native: None,
            native_cut: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(header: &SampleHeader, frames: &[u64]) -> Vec<u8> {
        let mut bytes = vec![0u8; SAMPLE_HEADER_SIZE];
        // SAFETY: header is plain old data of SAMPLE_HEADER_SIZE bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (header as *const SampleHeader).cast::<u8>(),
                bytes.as_mut_ptr(),
                SAMPLE_HEADER_SIZE,
            )
        };
        for f in frames {
            bytes.extend_from_slice(&f.to_ne_bytes());
        }
        bytes
    }

    #[test]
    fn decodes_header_and_frames() {
        let header = SampleHeader {
            goid: 7,
            status: 3,
            flags: SampleFlags::GOROUTINE_KNOWN | SampleFlags::TRUNCATED,
            n_frames: 3,
            stack_lo: 0x1000,
            stack_hi: 0x3000,
            sp: 0x2000,
            ..Default::default()
        };
        let s = Sample::decode(&record(&header, &[0x100, 0x201, 0x301])).unwrap();
        assert_eq!(s.frames, [0x100, 0x200, 0x300]);
        assert_eq!(s.state(), GoroutineState::Syscall);
        assert_eq!(s.goroutine.unwrap().goid, 7);
        assert_eq!(s.stack_bytes, Some(0x1000));
        assert!(s.truncated);
    }

    #[test]
    fn decoding_into_a_sample_reuses_its_buffers_and_replaces_every_field() {
        let deep = SampleHeader {
            goid: 7,
            flags: SampleFlags::GOROUTINE_KNOWN | SampleFlags::TRUNCATED,
            n_frames: 4,
            ..Default::default()
        };
        let mut s = Sample::default();
        Sample::decode_into(&record(&deep, &[0x100, 0x201, 0x301, 0x401]), &mut s).unwrap();
        s.labels.set = Some(std::sync::Arc::from(vec![("k".into(), "v".into())]));
        let buffer = s.frames.as_ptr();
        let shallow = SampleHeader {
            n_frames: 2,
            ..Default::default()
        };
        Sample::decode_into(&record(&shallow, &[0x500, 0x601]), &mut s).unwrap();
        assert_eq!(s.frames, [0x500, 0x600]);
        assert_eq!(s.frames.as_ptr(), buffer, "the frame buffer is reused");
        assert_eq!(s.goroutine, None);
        assert!(!s.truncated);
        assert_eq!(s.labels, SampleLabels::default());
        // A record that does not decode leaves nothing half-read behind for the next one.
        assert!(Sample::decode_into(&[0; 8], &mut s).is_err());
        Sample::decode_into(&record(&deep, &[1, 3, 5, 7]), &mut s).unwrap();
        assert_eq!(s.frames, [1, 2, 4, 6]);
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert_eq!(Sample::decode(&[0; 8]).unwrap_err(), DecodeError::Short(8));
        let header = SampleHeader {
            n_frames: 5,
            ..Default::default()
        };
        assert_eq!(
            Sample::decode(&record(&header, &[1])).unwrap_err(),
            DecodeError::FrameCount {
                claimed: 5,
                present: 1
            }
        );
    }

    #[test]
    fn decodes_native_trailer_and_stack_copy() {
        let header = SampleHeader {
            flags: SampleFlags::NATIVE,
            n_frames: 2,
            ..Default::default()
        };
        let mut bytes = record(&header, &[0x100, 0x201]);
        let trailer = NativeTrailer {
            pc: 0x100,
            sp: 0x7000,
            fp: 0x7100,
            lr: 0,
            kind: NativeKind::CGO_CALL,
            at: 1,
            len: 16,
            _pad: 0,
        };
        // SAFETY: the trailer is plain old data of NATIVE_TRAILER_SIZE bytes.
        bytes.extend_from_slice(unsafe {
            std::slice::from_raw_parts(
                (&trailer as *const NativeTrailer).cast::<u8>(),
                NATIVE_TRAILER_SIZE,
            )
        });
        bytes.extend_from_slice(&[7; 16]);
        let s = Sample::decode(&bytes).unwrap();
        assert_eq!(s.frames, [0x100, 0x200]);
        let native = s.native.unwrap();
        assert_eq!(native.start, NativeStart::CgoCall);
        assert_eq!((native.at, native.sp, native.fp), (1, 0x7000, 0x7100));
        assert_eq!(native.stack, [7; 16]);
        // A stack shorter than the trailer says is rejected.
        let short = &bytes[..bytes.len() - 1];
        assert_eq!(
            Sample::decode(short).unwrap_err(),
            DecodeError::NativeTrailer
        );
    }

    #[test]
    fn unknown_goroutine_without_flag() {
        let header = SampleHeader {
            goid: 9,
            status: 2,
            n_frames: 0,
            ..Default::default()
        };
        let s = Sample::decode(&record(&header, &[])).unwrap();
        assert_eq!(s.goroutine, None);
        assert_eq!(s.state(), GoroutineState::Unknown);
    }
}

#[cfg(test)]
mod leaf_tests {
    use super::*;

    fn sample(frames: Vec<u64>, leaf_ret: Option<u64>) -> Sample {
        let header = SampleHeader::default();
        let mut s = Sample::from_parts(&header, frames);
        s.leaf_ret = leaf_ret;
        s
    }

    #[test]
    fn frameless_leaf_gets_its_caller_back() {
        let mut s = sample(vec![0x100, 0x300, 0x400], Some(0x201));
        s.gap = Some(Gap { at: 2, frames: 10 });
        s.complete_frameless_leaf();
        assert_eq!(s.frames, [0x100, 0x200, 0x300, 0x400]);
        assert_eq!(s.gap, Some(Gap { at: 3, frames: 10 }));
        // Once only, and never a duplicate of the walk's own caller.
        s.leaf_ret = Some(0x201);
        s.complete_frameless_leaf();
        assert_eq!(s.frames.len(), 4);
        let mut s = sample(vec![0x100, 0x200], Some(0x201));
        s.complete_frameless_leaf();
        assert_eq!(s.frames, [0x100, 0x200]);
    }
}

#[cfg(test)]
mod switch_tests {
    use super::*;

    /// System side `newstack, morestack`, then (walked on into the goroutine's old stack)
    /// `grow, func1`; the switch at index 4: `grow` (sched.pc), `goexit`.
    fn overrun() -> Sample {
        let mut s = Sample::from_parts(
            &SampleHeader::default(),
            vec![0x10, 0x20, 0x31, 0x41, 0x30, 0x50],
        );
        s.switch_index = Some(4);
        s.sched_ret = Some(0x41);
        s
    }

    #[test]
    fn morestack_switch_drops_the_overrun_and_gets_the_caller_back() {
        let mut s = overrun();
        assert!(s.end_system_side_at(1));
        assert_eq!(s.frames, [0x10, 0x20, 0x30, 0x50]);
        assert_eq!(s.switch_index, Some(2));
        s.complete_morestack_switch();
        assert_eq!(s.frames, [0x10, 0x20, 0x30, 0x40, 0x50]);
        assert_eq!(s.sched_ret, None);
    }

    #[test]
    fn system_side_already_ending_at_morestack_is_kept() {
        let mut s = overrun();
        assert!(s.end_system_side_at(3));
        assert_eq!(s.frames.len(), 6);
        assert_eq!(s.switch_index, Some(4));
    }

    #[test]
    fn no_switch_a_gap_or_a_goroutine_frame_changes_nothing() {
        let mut s = overrun();
        assert!(!s.end_system_side_at(4), "a frame after the switch");
        s.gap = Some(Gap { at: 2, frames: 9 });
        assert!(!s.end_system_side_at(1), "a gap");
        s.gap = None;
        s.switch_index = None;
        assert!(!s.end_system_side_at(1), "no switch");
        assert_eq!(s.frames.len(), 6);
    }
}
