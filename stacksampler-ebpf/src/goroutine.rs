//! Reading the current goroutine (`runtime.g`) and its thread (`runtime.m`) from user memory.
//!
//! Offsets come from user space ([`GoLayout`]); nothing here knows a Go release.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_get_ns_current_pid_tgid},
    },
};
use stacksampler_common::{ConfigFlags, GoLayout, LabelFormat, SamplerConfig};

/// Why the current goroutine could not be read.
pub enum ReadFailure {
    /// The thread's TLS or the `g`/`m` it points at could not be read.
    Unreadable,
    /// `m.procid` is not this thread: not a Go thread, or the id was taken in the wrong PID
    /// namespace.
    TidMismatch,
}

/// Saved scheduling registers of a goroutine (`g.sched`).
pub struct Sched {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
}

/// The goroutine a sample is attributed to.
pub struct Goroutine {
    pub g_addr: u64,
    pub goid: u64,
    pub status: u32,
    pub waitreason: u32,
    pub stack_lo: u64,
    pub stack_hi: u64,
    /// The thread was running on `m.g0` or `m.gsignal`; the fields above are `m.curg`'s.
    pub on_system_stack: bool,
    /// `m.curg.sched` when the thread was on `g0` with a user goroutine attached.
    pub curg_sched: Option<Sched>,
    /// `g0.stack.hi` of the thread when it was on `g0` (0 otherwise): where a copy of the
    /// native stack of a cgo call ends.
    pub system_stack_hi: u64,
    /// `g.labels` and the word it points at (both 0 without labels or when not read).
    pub labels_ptr: u64,
    pub labels_word: u64,
}

#[inline(always)]
unsafe fn user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T) }.ok()
}

/// The user-memory word at `addr`, 0 when unreadable.
#[inline(always)]
pub unsafe fn user_word(addr: u64) -> u64 {
    if addr == 0 {
        return 0;
    }
    unsafe { user::<u64>(addr) }.unwrap_or(0)
}

#[inline(always)]
unsafe fn field<T>(base: u64, offset: u32) -> Option<T> {
    unsafe { user::<T>(base + offset as u64) }
}

/// The thread pointer of the current task (`fs_base` on amd64).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
unsafe fn current_g(cfg: &SamplerConfig) -> Option<u64> {
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let fsbase: u64 =
        unsafe { bpf_probe_read_kernel((task + cfg.task_fsbase_offset as u64) as *const u64) }
            .ok()?;
    if fsbase == 0 {
        return None;
    }
    let slot = (fsbase as i64 + cfg.go.tls_g_offset as i64) as u64;
    unsafe { user::<u64>(slot) }
}

/// arm64 Go keeps `g` in X28 while in Go code.
#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
unsafe fn current_g(_cfg: &SamplerConfig) -> Option<u64> {
    use aya_ebpf::{bindings::pt_regs, helpers::generated::bpf_task_pt_regs};
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = unsafe { bpf_task_pt_regs(task) } as *const pt_regs;
    // SAFETY: the address of X28 in the task's pt_regs, read with bpf_probe_read_kernel (one
    // member: the whole pt_regs would take most of the BPF stack).
    unsafe { bpf_probe_read_kernel(&raw const (*regs).regs[28]) }.ok()
}

/// The current thread's id as the target sees it: in its own PID namespace when user space
/// named one (a container), else the kernel's global id.
#[inline(always)]
unsafe fn thread_id(cfg: &SamplerConfig) -> Option<u32> {
    if cfg.flags & ConfigFlags::PIDNS_KNOWN == 0 {
        return Some(bpf_get_current_pid_tgid() as u32);
    }
    let mut ids = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `ids` is a valid, writable bpf_pidns_info of the size passed.
    let rc = unsafe {
        bpf_get_ns_current_pid_tgid(
            cfg.pidns.dev,
            cfg.pidns.ino,
            &mut ids,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    };
    // The helper's `pid` is the thread id (the kernel's naming).
    (rc == 0).then_some(ids.pid)
}

/// Reads the goroutine running on the current thread, resolving system stacks to `m.curg`.
///
/// A `g` whose `m.procid` is not this thread's id is rejected: a thread not created by the Go
/// runtime (a C thread of a cgo program) has no `g` in its TLS, only unrelated bytes.
#[inline(always)]
pub unsafe fn read(cfg: &SamplerConfig) -> Result<Goroutine, ReadFailure> {
    let go: &GoLayout = &cfg.go;
    let g = unsafe { current_g(cfg) }.ok_or(ReadFailure::Unreadable)?;
    if g == 0 {
        return Err(ReadFailure::Unreadable);
    }
    let m: u64 = unsafe { field(g, go.g_m) }.ok_or(ReadFailure::Unreadable)?;
    if m != 0 {
        let procid: u64 = unsafe { field(m, go.m_procid) }.ok_or(ReadFailure::Unreadable)?;
        let tid = unsafe { thread_id(cfg) }.ok_or(ReadFailure::TidMismatch)?;
        if procid != tid as u64 {
            return Err(ReadFailure::TidMismatch);
        }
    }
    let mut target = g;
    let mut on_system_stack = false;
    let mut curg_sched = None;
    let mut system_stack_hi = 0;
    if m != 0 {
        let g0: u64 = unsafe { field(m, go.m_g0) }.unwrap_or(0);
        let gsignal: u64 = unsafe { field(m, go.m_gsignal) }.unwrap_or(0);
        if g == g0 || g == gsignal {
            on_system_stack = true;
            let curg: u64 = unsafe { field(m, go.m_curg) }.unwrap_or(0);
            if curg != 0 {
                target = curg;
                // A signal handler interrupts the goroutine asynchronously: its sched is stale.
                if g == g0 {
                    system_stack_hi = unsafe { field(g, go.g_stack_hi) }.unwrap_or(0);
                    let sched = curg + go.g_sched as u64;
                    curg_sched = Some(Sched {
                        pc: unsafe { field(sched, go.gobuf_pc) }.unwrap_or(0),
                        sp: unsafe { field(sched, go.gobuf_sp) }.unwrap_or(0),
                        fp: unsafe { field(sched, go.gobuf_bp) }.unwrap_or(0),
                    });
                }
            } else {
                // The scheduler itself (no user goroutine): report g0.
                target = g;
            }
        }
    }
    let (labels_ptr, labels_word) = if go.label_format != LabelFormat::NONE {
        let ptr: u64 = unsafe { field(target, go.g_labels) }.unwrap_or(0);
        let word: u64 = if ptr != 0 {
            unsafe { user(ptr) }.unwrap_or(0)
        } else {
            0
        };
        (ptr, word)
    } else {
        (0, 0)
    };
    Ok(Goroutine {
        labels_ptr,
        labels_word,
        g_addr: target,
        goid: unsafe { field(target, go.g_goid) }.ok_or(ReadFailure::Unreadable)?,
        status: unsafe { field::<u32>(target, go.g_atomicstatus) }
            .ok_or(ReadFailure::Unreadable)?,
        waitreason: unsafe { field::<u8>(target, go.g_waitreason) }.unwrap_or(0) as u32,
        stack_lo: unsafe { field(target, go.g_stack_lo) }.unwrap_or(0),
        stack_hi: unsafe { field(target, go.g_stack_hi) }.unwrap_or(0),
        on_system_stack,
        curg_sched,
        system_stack_hi,
    })
}

/// `g0.stack.hi` of the thread running goroutine `g` (0 when unreadable).
#[inline(always)]
pub unsafe fn g0_stack_hi(go: &GoLayout, g: u64) -> u64 {
    let m: u64 = unsafe { field(g, go.g_m) }.unwrap_or(0);
    if m == 0 {
        return 0;
    }
    let g0: u64 = unsafe { field(m, go.m_g0) }.unwrap_or(0);
    if g0 == 0 {
        return 0;
    }
    unsafe { field(g0, go.g_stack_hi) }.unwrap_or(0)
}
