//! Byte offsets of the Go runtime structure members stacksampler reads, and their conversion to
//! the kernel program's [`GoLayout`].

use serde::Serialize;
use stacksampler_common::{GoLayout, LabelFormat};

use super::labels::LabelRepr;

/// Offset of the current `g` pointer from the thread pointer (`fs_base`) on linux/amd64, for
/// static, PIE and cgo builds alike (the linker relaxes `runtime.tlsg` to -8).
pub const AMD64_TLS_G_OFFSET: i32 = -8;

/// Size of the thread control block before the TLS block on linux/arm64 (variant I TLS): the
/// first thread-local variable sits at `TPIDR_EL0 + 16`, rounded up to the TLS alignment.
pub const ARM64_TCB_SIZE: u64 = 16;

/// The CPU architecture of a Go binary, as far as the runtime layout is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GoArch {
    /// linux/amd64: `g` at `fs_base - 8` (and in R14 inside Go code).
    Amd64,
    /// linux/arm64: `g` in X28; cgo builds also keep it in TLS at `TPIDR_EL0 + runtime.tls_g`.
    Arm64,
    /// Anything else: the layout tables (64-bit) do not apply.
    Other,
}

/// Where the current goroutine pointer (`g`) is found on a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum GPointer {
    /// At this signed offset from the thread pointer (`fs_base` on amd64, `TPIDR_EL0` on arm64).
    Tls(i32),
    /// Only in a register (arm64 without cgo: X28); no TLS copy.
    Register,
}

/// Member offsets (bytes) of `runtime.g`, `runtime.m` and `runtime.gobuf` for one Go binary.
///
/// Converted to the kernel program's [`GoLayout`] by [`RuntimeLayout::to_go_layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeLayout {
    /// `g.stack.lo`.
    pub g_stack_lo: u32,
    /// `g.stack.hi`.
    pub g_stack_hi: u32,
    /// `g.m` (`*m`: the thread running the goroutine, nil when not running).
    pub g_m: u32,
    /// `g.sched` (a `gobuf`: where a descheduled goroutine resumes).
    pub g_sched: u32,
    /// `g.syscallsp` (sp of the goroutine when it entered a syscall, 0 otherwise).
    pub g_syscallsp: u32,
    /// `g.syscallpc`.
    pub g_syscallpc: u32,
    /// `g.atomicstatus` (`uint32`, an `atomic.Uint32` from Go 1.20).
    pub g_atomicstatus: u32,
    /// `g.goid` (`uint64`).
    pub g_goid: u32,
    /// `g.waitreason` (`uint8`).
    pub g_waitreason: u32,
    /// `g.labels` (`unsafe.Pointer` to the pprof label set: see `docs/go-runtime.md`).
    pub g_labels: u32,
    /// `m.g0` (the scheduling stack's goroutine).
    pub m_g0: u32,
    /// `m.gsignal` (the signal-handling goroutine).
    pub m_gsignal: u32,
    /// `m.curg` (the user goroutine the thread is running).
    pub m_curg: u32,
    /// `m.procid` (the thread's kernel tid).
    pub m_procid: u32,
    /// `gobuf.sp`.
    pub gobuf_sp: u32,
    /// `gobuf.pc`.
    pub gobuf_pc: u32,
    /// `gobuf.bp` (frame pointer).
    pub gobuf_bp: u32,
    /// `g.syscallbp` (frame pointer at the syscall; Go 1.23+, `None` before).
    pub g_syscallbp: Option<u32>,
    /// `g.waitsince` (`int64`, `nanotime()` when the goroutine started waiting; set by the GC,
    /// so approximate).
    ///
    /// This and the next members are read only by the goroutine dump: `None` when a binary's
    /// DWARF lacks them, so a renamed member costs the dump that field, not the whole layout.
    pub g_waitsince: Option<u32>,
    /// `g.lockedm` (`muintptr`: the thread the goroutine is locked to, 0 when not locked).
    pub g_lockedm: Option<u32>,
    /// `g.gopc` (pc of the `go` statement that created the goroutine).
    pub g_gopc: Option<u32>,
    /// `g.startpc` (entry of the goroutine's function).
    pub g_startpc: Option<u32>,
    /// `g.parentGoid` (`uint64`, the creator's goid; Go 1.21+, `None` before).
    pub g_parent_goid: Option<u32>,
}

impl RuntimeLayout {
    /// The kernel program's view of this layout, with the `g` pointer found as `g_pointer` says
    /// and goroutine labels read as `labels` says (`None`: labels are not read).
    ///
    /// [`GPointer::Register`] leaves `tls_g_offset` at 0: the kernel program reads X28 there.
    pub fn to_go_layout(&self, g_pointer: GPointer, labels: Option<LabelRepr>) -> GoLayout {
        GoLayout {
            g_syscallsp: self.g_syscallsp,
            g_syscallpc: self.g_syscallpc,
            m_procid: self.m_procid,
            label_format: match labels {
                None => LabelFormat::NONE,
                Some(LabelRepr::Map) => LabelFormat::MAP,
                Some(LabelRepr::Slice) => LabelFormat::SLICE,
            },
            g_stack_lo: self.g_stack_lo,
            g_stack_hi: self.g_stack_hi,
            g_m: self.g_m,
            g_sched: self.g_sched,
            g_atomicstatus: self.g_atomicstatus,
            g_waitreason: self.g_waitreason,
            g_goid: self.g_goid,
            g_labels: self.g_labels,
            m_g0: self.m_g0,
            m_curg: self.m_curg,
            m_gsignal: self.m_gsignal,
            gobuf_sp: self.gobuf_sp,
            gobuf_pc: self.gobuf_pc,
            gobuf_bp: self.gobuf_bp,
            tls_g_offset: match g_pointer {
                GPointer::Tls(offset) => offset,
                GPointer::Register => 0,
            },
            _pad: 0,
        }
    }
}
