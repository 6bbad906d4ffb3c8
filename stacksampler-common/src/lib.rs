//! Types shared by the kernel program (`stacksampler-ebpf`) and user space (`stacksampler`).
//!
//! Everything here is `#[repr(C)]`, free of implicit padding (explicit `_pad` fields, `u32` flags
//! instead of `bool`) and plain old data, so both sides agree byte for byte. The layouts are
//! checked by `const` assertions at the bottom of this file.
#![no_std]

/// Capacity of the per-sample frame buffer: the most user frames one sample can carry.
///
/// The kernel walk stops here and flags the sample [`SampleFlags::TRUNCATED`]; `--max-frames`
/// may lower the walk, never raise it past this capacity. 16384 frames is 128 KiB per buffer.
pub const MAX_STACK_FRAMES: usize = 16384;

/// Most kernel frames recorded per sample with `--kernel` (`bpf_get_stack`; the kernel's own
/// `perf_event_max_stack` default is 127).
pub const MAX_KERNEL_FRAMES: usize = 127;

/// Default number of frames walked per sample (`--max-frames`).
pub const DEFAULT_MAX_FRAMES: u32 = 8192;

/// Index of the single entry of the [`SamplerConfig`] array map.
pub const CONFIG_KEY: u32 = 0;

/// Names of the maps and programs in the eBPF object, used by the loader.
pub mod names {
    /// The `perf_event` program that takes one sample.
    pub const SAMPLE_PROGRAM: &str = "sample_stack";
    /// Array map (one entry) holding the [`crate::SamplerConfig`].
    pub const CONFIG_MAP: &str = "CONFIG";
    /// Ring buffer carrying [`crate::StackSample`] records to user space.
    pub const SAMPLES_MAP: &str = "SAMPLES";
    /// Per-CPU array of [`crate::Counters`].
    pub const COUNTERS_MAP: &str = "COUNTERS";
    /// Array map with one [`crate::StackSample`] scratch slot per CPU.
    pub const SCRATCH_MAP: &str = "SCRATCH";
}

/// Bits of [`SamplerConfig::flags`].
pub struct ConfigFlags;
impl ConfigFlags {
    /// The Go runtime layout in [`SamplerConfig::go`] is valid: read goroutine fields.
    pub const GO_LAYOUT_KNOWN: u32 = 1 << 0;
    /// Emit aya-log diagnostics (set by `--verbose`).
    pub const VERBOSE: u32 = 1 << 1;
    /// Record the kernel stack of samples that hit kernel mode (`--kernel`).
    pub const KERNEL_STACKS: u32 = 1 << 2;
    /// [`SamplerConfig::pidns`] names the target's PID namespace: thread ids compared with
    /// `m.procid` are taken in it (`bpf_get_ns_current_pid_tgid`), as the target itself sees them.
    pub const PIDNS_KNOWN: u32 = 1 << 3;
    /// [`SamplerConfig::native`] is valid: samples in C code reached from Go (a cgo call, or C
    /// code between a cgo callback and the cgo call below it) carry a copy of the native stack.
    pub const NATIVE_STACKS: u32 = 1 << 4;
    /// Walk every sample's stack twice, from bulk copies and record by record, and count the
    /// samples whose walks differ ([`Counters::walk_mismatches`]): a debug switch for tests.
    pub const VERIFY_WALK: u32 = 1 << 5;
}

/// Most bytes of native (C) stack copied with one sample, from the native part's stack pointer
/// up (the C frames are unwound from this copy in user space, as `perf --call-graph dwarf` does).
pub const NATIVE_STACK_BYTES: usize = 8192;

/// Where Go code is and how to cross the cgo boundary, for the kernel program (runtime
/// addresses of the target, computed in user space from `.gopclntab`).
///
/// A sample whose pc is outside `[go_text_lo, go_text_hi)` on `g0` while `m.curg` is in
/// `_Gsyscall` is in a cgo call: its native part is copied, and its Go part walked from
/// `curg.sched` (saved by `runtime.asmcgocall`). A walk on a goroutine's stack that meets a
/// return address inside `[cgocallback_lo, cgocallback_hi)` is inside a cgo callback: the C
/// frames between the callback and its cgo call are on `g0`, the Go frames below the cgo call
/// continue at `curg`'s own stack (see `docs/native-unwinding.md`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NativeConfig {
    /// Go's text (`.gopclntab`'s range): the Go functions, without the C code linked beside them.
    pub go_text_lo: u64,
    pub go_text_hi: u64,
    /// `runtime.cgocallback` (0, 0 in a binary without cgo).
    pub cgocallback_lo: u64,
    pub cgocallback_hi: u64,
    /// From the frame record of `runtime.cgocallbackg` (whose return address is in
    /// `runtime.cgocallback`) to the goroutine's `sched.sp` saved at its cgo call: the record's
    /// 16 bytes, plus the frame `cgocallback` opened on the goroutine stack (its frame size
    /// and return address).
    pub callback_sched_offset: u32,
    /// Stack frame of `runtime.cgocall` (bytes it pushed, return address excluded) at its call
    /// of `asmcgocall`: its frame record is at `sched.sp + cgocall_frame`.
    pub cgocall_frame: u32,
    /// Bytes of native stack copied per native sample, at most [`NATIVE_STACK_BYTES`].
    pub stack_bytes: u32,
    pub _pad: u32,
}

/// Values of [`NativeTrailer::kind`].
pub struct NativeKind;
impl NativeKind {
    /// The thread was in C code called from Go: `frames[0]` is the interrupted pc (= `pc`), the
    /// native callers of it go at `at` (= 1), before the goroutine's Go frames.
    pub const CGO_CALL: u32 = 1;
    /// The walk met a cgo callback: `pc` is the return address into the C side (`crosscall2`),
    /// and the native frames from it go at `at`, after `runtime.cgocallback`.
    pub const CGO_CALLBACK: u32 = 2;
}

/// With [`SampleFlags::NATIVE`]: what follows the frames of a record: the registers the native
/// part starts with and `len` bytes of its stack copied from `sp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NativeTrailer {
    /// Program counter, stack pointer and frame pointer where the native unwind starts.
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    /// arm64: the link register (the return address of a leaf); 0 on amd64.
    pub lr: u64,
    /// [`NativeKind`] value.
    pub kind: u32,
    /// Index in the sample's frames where the native frames go.
    pub at: u32,
    /// Stack bytes that follow (copied from `sp`).
    pub len: u32,
    pub _pad: u32,
}

/// Size of [`NativeTrailer`] in bytes.
pub const NATIVE_TRAILER_SIZE: usize = core::mem::size_of::<NativeTrailer>();

/// Frame slots of the scratch buffer a native sample reserves for its trailer and stack copy.
pub const NATIVE_RESERVED_FRAMES: usize = (NATIVE_TRAILER_SIZE + NATIVE_STACK_BYTES) / 8;

/// A PID namespace as `stat(2)` of `/proc/PID/ns/pid` names it: the nsfs device and inode.
///
/// Go records a thread's id as the thread sees it (`gettid` in `m.procid`), which inside a
/// container's PID namespace is not the id the kernel's `bpf_get_current_pid_tgid` returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidNamespace {
    /// `st_dev` of the namespace file.
    pub dev: u64,
    /// `st_ino` of the namespace file.
    pub ino: u64,
}

/// Byte offsets of the Go runtime structure members the kernel program reads.
///
/// Filled in user space from the target binary's DWARF (or a per-version table), so the kernel
/// program never hard-codes a Go release's layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoLayout {
    /// `runtime.g.stack.lo`.
    pub g_stack_lo: u32,
    /// `runtime.g.stack.hi`.
    pub g_stack_hi: u32,
    /// `runtime.g.m`.
    pub g_m: u32,
    /// `runtime.g.sched` (a `runtime.gobuf`).
    pub g_sched: u32,
    /// `runtime.g.atomicstatus`.
    pub g_atomicstatus: u32,
    /// `runtime.g.waitreason`.
    pub g_waitreason: u32,
    /// `runtime.g.goid`.
    pub g_goid: u32,
    /// `runtime.g.labels` (pointer to the pprof label map).
    pub g_labels: u32,
    /// `runtime.m.g0`.
    pub m_g0: u32,
    /// `runtime.m.curg`.
    pub m_curg: u32,
    /// `runtime.m.gsignal`.
    pub m_gsignal: u32,
    /// `runtime.gobuf.sp`.
    pub gobuf_sp: u32,
    /// `runtime.gobuf.pc`.
    pub gobuf_pc: u32,
    /// `runtime.gobuf.bp`.
    pub gobuf_bp: u32,
    /// Offset of the `g` pointer from the thread pointer (`fs_base` on amd64), as a signed value.
    pub tls_g_offset: i32,
    /// `runtime.g.syscallsp` (sp when the goroutine entered a system call).
    pub g_syscallsp: u32,
    /// `runtime.g.syscallpc`.
    pub g_syscallpc: u32,
    /// `runtime.m.procid` (the thread's kernel tid): a `g` whose `m.procid` is not the sampled
    /// thread is not trusted (a non-Go thread's TLS, or a thread still being set up).
    pub m_procid: u32,
    /// How `g.labels` is represented ([`LabelFormat`]); [`LabelFormat::NONE`] skips labels.
    pub label_format: u32,
    pub _pad: u32,
}

/// Values of [`GoLayout::label_format`]: the representation of the pprof label set `g.labels`
/// points at. The kernel program reads the same two words for both (the pointer, and the first
/// word it points at); user space decodes the set.
pub struct LabelFormat;
impl LabelFormat {
    /// Labels are not read.
    pub const NONE: u32 = 0;
    /// Go 1.19-1.23: `*labelMap` is a word holding a `map[string]string` (`*hmap`).
    pub const MAP: u32 = 1;
    /// Go 1.24+: `*labelMap` points at a slice header of `{key, value string}` pairs.
    pub const SLICE: u32 = 2;
}

/// Configuration written by user space before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerConfig {
    /// Only threads of this process (tgid) are sampled.
    pub target_tgid: u32,
    /// Frames to walk per sample, at most [`MAX_STACK_FRAMES`].
    pub max_frames: u32,
    /// Offset of `task_struct.thread.fsbase` (amd64), from the kernel's BTF.
    pub task_fsbase_offset: u32,
    /// [`ConfigFlags`] bits.
    pub flags: u32,
    /// Go runtime member offsets.
    pub go: GoLayout,
    /// The target's own (innermost) PID namespace, valid with [`ConfigFlags::PIDNS_KNOWN`].
    pub pidns: PidNamespace,
    /// Offset of `task_struct.self_exec_id` (incremented by every `execve`, inherited by the
    /// threads created after it), from the kernel's BTF; 0: not read.
    pub task_exec_id_offset: u32,
    pub _pad: u32,
    /// Go text and the cgo crossings, valid with [`ConfigFlags::NATIVE_STACKS`].
    pub native: NativeConfig,
}

/// Bits of [`SampleHeader::flags`].
pub struct SampleFlags;
impl SampleFlags {
    /// The walk stopped at the frame limit while the frame-pointer chain went on.
    pub const TRUNCATED: u32 = 1 << 0;
    /// The goroutine fields (`goid`, `status`, `waitreason`, stack bounds) were read.
    pub const GOROUTINE_KNOWN: u32 = 1 << 1;
    /// The thread was on a system stack (`g0` or `gsignal`); the goroutine is `m.curg`.
    pub const SYSTEM_STACK: u32 = 1 << 2;
    /// The interrupt hit kernel mode; the user registers come from the task's saved `pt_regs`.
    pub const KERNEL_MODE: u32 = 1 << 3;
    /// Reading the user registers failed: no user frames.
    pub const NO_USER_REGS: u32 = 1 << 4;
    /// The walk left the system stack and continued on `m.curg`'s stack from `curg.sched`;
    /// [`SampleHeader::switch_index`] is the first frame on the goroutine's stack.
    pub const SWITCHED_TO_CURG: u32 = 1 << 5;
    /// The record carries a [`NativeTrailer`] and a native stack copy after its frames.
    pub const NATIVE: u32 = 1 << 6;
}

/// Fixed-size part of one sample, followed in the ring buffer by `n_frames` return addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleHeader {
    /// `bpf_ktime_get_ns()` at the sample.
    pub time_ns: u64,
    /// Address of the goroutine the sample is attributed to (`runtime.g`), 0 when unknown.
    pub g_addr: u64,
    /// Goroutine id.
    pub goid: u64,
    /// Goroutine stack bounds (`g.stack.lo`, `g.stack.hi`).
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// User stack pointer at the innermost frame on the goroutine's own stack.
    pub sp: u64,
    /// Frame pointer at which the walk stopped (0 when the chain ended).
    pub last_fp: u64,
    /// Process id (tgid) and thread id.
    pub tgid: u32,
    pub tid: u32,
    /// CPU the sample was taken on.
    pub cpu: u32,
    /// [`SampleFlags`] bits.
    pub flags: u32,
    /// Raw `g.atomicstatus`.
    pub status: u32,
    /// Raw `g.waitreason`.
    pub waitreason: u32,
    /// Number of frames that follow the header.
    pub n_frames: u32,
    /// Index of the first frame on the goroutine's own stack after a system-stack switch.
    pub switch_index: u32,
    /// Value of `g.labels` at the sample (0: no labels, or labels not read).
    pub labels_ptr: u64,
    /// The word `g.labels` pointed at, at the sample (slice data or `*hmap`): user space decodes
    /// the set later and checks this word is unchanged, so a freed and reused set is detected.
    pub labels_word: u64,
    /// With [`SampleFlags::SWITCHED_TO_CURG`]: the word at `curg.sched.sp`. When the goroutine
    /// stopped at a function's entry (`runtime.morestack`: the frame pointer is still the
    /// caller's) this is the return address into the caller, which the frame-pointer walk from
    /// `sched.bp` skips; user space inserts it when the system-stack part ends in
    /// `runtime.morestack`.
    pub sched_ret: u64,
    /// Where the interrupted function's return address is while it has no frame record (a
    /// frameless leaf, or a function at its entry before its prologue ran): the word at the user
    /// stack pointer on amd64, the link register (X30) on arm64. The frame-pointer walk skips
    /// the caller in that case; user space inserts this address when `.gopclntab` says the
    /// function's stack frame is empty at the interrupted pc.
    pub leaf_ret: u64,
    /// With `--kernel`: the last `n_kernel_frames` of the `n_frames` frames that follow are the
    /// kernel stack (innermost first), after the user frames.
    pub n_kernel_frames: u32,
    /// Low 32 bits of the thread's `task_struct.self_exec_id`: it changes when the process
    /// `exec`s another program, so user space knows which program image a sample belongs to.
    pub exec_id: u32,
}

/// One sample as built in the per-CPU scratch slot; only the header and the first `n_frames`
/// entries of `frames` are sent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackSample {
    pub header: SampleHeader,
    /// Return addresses, innermost first; `frames[0]` is the interrupted instruction pointer.
    pub frames: [u64; MAX_STACK_FRAMES],
}

/// Size of [`SampleHeader`] in bytes.
pub const SAMPLE_HEADER_SIZE: usize = core::mem::size_of::<SampleHeader>();

/// Event counters kept per CPU by the kernel program; user space sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// perf events that fired on a thread of the target.
    pub target_hits: u64,
    /// Samples written to the ring buffer.
    pub delivered: u64,
    /// Samples dropped because the ring buffer was full.
    pub lost_ringbuf: u64,
    /// Samples that hit kernel mode (user registers taken from `pt_regs`).
    pub kernel_mode: u64,
    /// Samples whose walk was cut at the frame limit.
    pub truncated: u64,
    /// Samples where reading the goroutine failed although the layout was known.
    pub goroutine_read_errors: u64,
    /// Of those, samples whose thread was not the one `m.procid` names (a thread Go did not
    /// create, or thread ids taken in the wrong PID namespace).
    pub goroutine_tid_mismatch: u64,
    /// Samples sent with a native stack copy ([`SampleFlags::NATIVE`]).
    pub native_samples: u64,
    /// With [`ConfigFlags::VERIFY_WALK`]: samples whose walk was checked against a
    /// record-by-record walk, and those where the two differed.
    pub walk_checks: u64,
    pub walk_mismatches: u64,
}

const _: () = assert!(core::mem::size_of::<GoLayout>() == 20 * 4);
const _: () = assert!(core::mem::size_of::<NativeConfig>() == 4 * 8 + 4 * 4);
const _: () = assert!(
    core::mem::size_of::<SamplerConfig>()
        == 16 + 20 * 4 + 16 + 8 + core::mem::size_of::<NativeConfig>()
);
const _: () = assert!(NATIVE_TRAILER_SIZE == 4 * 8 + 4 * 4);
const _: () = assert!(NATIVE_STACK_BYTES.is_multiple_of(8));
const _: () = assert!(SAMPLE_HEADER_SIZE == 11 * 8 + 10 * 4);
const _: () = assert!(SAMPLE_HEADER_SIZE.is_multiple_of(8));

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), padding free (asserted above) and valid for any bit pattern.
    unsafe impl aya::Pod for super::SamplerConfig {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::GoLayout {}
    unsafe impl aya::Pod for super::PidNamespace {}
    unsafe impl aya::Pod for super::NativeConfig {}
}

// ---------------------------------------------------------------------------------------------
// Runtime events: entry uprobes on the Go runtime (config, event record, counters).
// ---------------------------------------------------------------------------------------------

/// Frames kept at the innermost end of an event's stack ([`EventRecord::frames`]
/// `[..EVENT_HEAD_FRAMES]`).
pub const EVENT_HEAD_FRAMES: usize = 8192;
/// Frames kept at the outermost end of an event's stack: a ring indexed by
/// `(depth - EVENT_HEAD_FRAMES) % EVENT_TAIL_FRAMES`, so a walk deeper than the buffer still
/// returns its head, its tail and its exact depth. A power of two.
pub const EVENT_TAIL_FRAMES: usize = 8192;
/// Capacity of an event's frame buffer.
pub const EVENT_MAX_FRAMES: usize = EVENT_HEAD_FRAMES + EVENT_TAIL_FRAMES;
/// Bytes of a fatal error message carried by an event (longer messages are cut).
pub const EVENT_MESSAGE_BYTES: usize = 128;
/// Index of the single entry of the [`EventConfig`] array map.
pub const EVENT_CONFIG_KEY: u32 = 0;

/// Names of the runtime-event maps and programs in the eBPF object.
pub mod event_names {
    /// Array map (one entry) holding the [`crate::EventConfig`].
    pub const CONFIG_MAP: &str = "EVENT_CONFIG";
    /// Ring buffer carrying [`crate::EventHeader`] records (+ frames) to user space.
    pub const EVENTS_MAP: &str = "EVENTS";
    /// Per-CPU array of [`crate::EventCounters`].
    pub const COUNTERS_MAP: &str = "EVENT_COUNTERS";
    /// Array map with one [`crate::EventRecord`] scratch slot per CPU.
    pub const SCRATCH_MAP: &str = "EVENT_SCRATCH";
    /// Uprobe on `runtime.copystack(gp *g, newsize uintptr)`.
    pub const COPYSTACK_PROGRAM: &str = "go_copystack";
    /// Uprobe at the instruction after `CALL runtime.newproc1` in `runtime.newproc.func1`
    /// (not a return probe: a plain uprobe at an offset, AX holds the new `g`).
    pub const NEWPROC_RETURN_PROGRAM: &str = "go_newproc_created";
    /// Uprobe on `runtime.newproc1` entry: fallback when the call site above is not found
    /// (creation site known, new goroutine id unknown).
    pub const NEWPROC1_PROGRAM: &str = "go_newproc1";
    /// Uprobe on `runtime.goexit1` (runs on the exiting goroutine).
    pub const GOEXIT_PROGRAM: &str = "go_goexit1";
    /// Uprobe on `runtime.throw(s string)` and `runtime.fatal(s string)`.
    pub const THROW_PROGRAM: &str = "go_throw";
}

/// Bits of [`EventConfig::flags`].
pub struct EventConfigFlags;
impl EventConfigFlags {
    /// The Go layout in [`EventConfig::go`] is valid (events are dropped otherwise).
    pub const GO_LAYOUT_KNOWN: u32 = 1 << 0;
}

/// Configuration of the runtime-event programs, written by user space before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventConfig {
    /// Only this process (tgid) emits events (the uprobes are also attached for this pid only).
    pub target_tgid: u32,
    /// [`EventConfigFlags`] bits.
    pub flags: u32,
    /// Frames walked at a stack growth (deeper stacks keep head, tail and the exact depth).
    pub growth_walk_limit: u32,
    /// Frames walked at a goroutine creation (the creating goroutine's stack).
    pub create_walk_limit: u32,
    /// Frames walked at a fatal error.
    pub fatal_walk_limit: u32,
    pub _pad: u32,
    /// Go runtime member offsets.
    pub go: GoLayout,
}

/// Kinds of [`EventHeader::kind`].
pub struct EventKind;
impl EventKind {
    /// `runtime.copystack` to a bigger stack: `arg0` new size, `arg1` old size.
    pub const STACK_GROWTH: u32 = 1;
    /// `runtime.copystack` to a smaller stack (GC shrinking): `arg0` new size, `arg1` old size.
    pub const STACK_SHRINK: u32 = 2;
    /// A goroutine was created: `goid` is the new goroutine (0 when unknown), `arg0` its `g`
    /// address, `arg1` the `go` statement's pc when known, `parent_goid` the creator.
    pub const GOROUTINE_CREATE: u32 = 3;
    /// A goroutine ended (`runtime.goexit1`).
    pub const GOROUTINE_EXIT: u32 = 4;
    /// `runtime.throw`/`runtime.fatal`: `message` holds the text; `arg0` its full length.
    pub const FATAL: u32 = 5;
}

/// Bits of [`EventHeader::flags`].
pub struct EventFlags;
impl EventFlags {
    /// The event fired on a system stack (`g0`): `goid` is `m.curg`'s and the stack is the user
    /// goroutine's, walked from its saved `sched`.
    pub const SYSTEM_STACK: u32 = 1 << 0;
    /// The walk stopped at its limit while the chain went on: `depth` is a lower bound.
    pub const TRUNCATED: u32 = 1 << 1;
    /// Reading the goroutine failed: `goid` is 0.
    pub const NO_GOROUTINE: u32 = 1 << 2;
}

/// Fixed-size part of one runtime event, followed in the ring buffer by `n_frames` addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()` at the event.
    pub time_ns: u64,
    /// Goroutine the event is about (the growing, created, exiting or failing one).
    pub goid: u64,
    /// Its `runtime.g` address.
    pub g_addr: u64,
    /// Kind-specific values (see [`EventKind`]).
    pub arg0: u64,
    pub arg1: u64,
    /// Goroutine running when the event fired (the creator for [`EventKind::GOROUTINE_CREATE`]).
    pub parent_goid: u64,
    /// Process id (tgid) and thread id.
    pub tgid: u32,
    pub tid: u32,
    /// [`EventKind`] value.
    pub kind: u32,
    /// [`EventFlags`] bits.
    pub flags: u32,
    /// Frames walked (the stack's depth when not truncated); may exceed `n_frames`.
    pub depth: u32,
    /// Frames that follow the header: `min(depth, EVENT_MAX_FRAMES)`. When `depth` exceeds
    /// the capacity, the last `EVENT_TAIL_FRAMES` entries are a ring (see [`EVENT_TAIL_FRAMES`]).
    pub n_frames: u32,
    /// Bytes of `message` in use.
    pub message_len: u32,
    /// CPU the event fired on.
    pub cpu: u32,
    /// Message of a fatal error (not NUL-terminated).
    pub message: [u8; EVENT_MESSAGE_BYTES],
}

/// Size of [`EventHeader`] in bytes.
pub const EVENT_HEADER_SIZE: usize = core::mem::size_of::<EventHeader>();

/// One event as built in the per-CPU scratch slot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventRecord {
    pub header: EventHeader,
    /// Return addresses, innermost first (`frames[0]` is the innermost pc of the goroutine).
    pub frames: [u64; EVENT_MAX_FRAMES],
}

/// Counters kept per CPU by the event programs; user space sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventCounters {
    /// Probe hits in the target, per program.
    pub copystack_hits: u64,
    pub create_hits: u64,
    pub exit_hits: u64,
    pub fatal_hits: u64,
    /// Events written to the ring buffer.
    pub delivered: u64,
    /// Events dropped because the ring buffer was full.
    pub lost_ringbuf: u64,
    /// Events whose goroutine could not be read.
    pub read_errors: u64,
    /// Probe hits in other processes sharing the file (filtered out).
    pub foreign_hits: u64,
}

const _: () = assert!(EVENT_HEADER_SIZE == 6 * 8 + 8 * 4 + EVENT_MESSAGE_BYTES);
const _: () = assert!(EVENT_HEADER_SIZE.is_multiple_of(8));
const _: () =
    assert!(core::mem::size_of::<EventConfig>() == 6 * 4 + core::mem::size_of::<GoLayout>());
const _: () = assert!(EVENT_TAIL_FRAMES.is_power_of_two());

#[cfg(feature = "user")]
mod event_pod {
    // SAFETY: repr(C), padding free (asserted above), valid for any bit pattern.
    unsafe impl aya::Pod for super::EventConfig {}
    unsafe impl aya::Pod for super::EventCounters {}
}
