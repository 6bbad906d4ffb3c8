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
    pub _pad: u32,
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
}

const _: () = assert!(core::mem::size_of::<GoLayout>() == 16 * 4);
const _: () = assert!(core::mem::size_of::<SamplerConfig>() == 16 + 16 * 4);
const _: () = assert!(SAMPLE_HEADER_SIZE == 7 * 8 + 8 * 4);
const _: () = assert!(SAMPLE_HEADER_SIZE % 8 == 0);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), padding free (asserted above) and valid for any bit pattern.
    unsafe impl aya::Pod for super::SamplerConfig {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::GoLayout {}
}
