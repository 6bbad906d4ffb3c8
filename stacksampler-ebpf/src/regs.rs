//! User registers per architecture: the interrupted thread's saved user registers for the
//! sampler (`user_regs`: `bpf_task_pt_regs`, whatever mode the tick hit) and the probed thread's
//! registers at a uprobe (`regs`: Go's register ABI), with the caller's pc at a function entry.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    programs::{PerfEventContext, ProbeContext},
};

/// Bits of the code segment selector that hold the privilege level (0 = kernel).
#[cfg(bpf_target_arch = "x86_64")]
const SEGMENT_RPL_MASK: u64 = 3;

/// User registers of the interrupted thread, whatever mode the tick hit.
pub(crate) struct UserRegs {
    pub(crate) ip: u64,
    pub(crate) sp: u64,
    pub(crate) fp: u64,
    /// The return address if the interrupted function has no frame record yet (see
    /// `SampleHeader::leaf_ret`).
    pub(crate) leaf_ret: u64,
}

/// Reads the saved user registers: `bpf_task_pt_regs` holds the user state whether the tick hit
/// user or kernel mode (the perf context's own registers are the kernel's in the latter case).
#[cfg(bpf_target_arch = "x86_64")]
pub(crate) unsafe fn user_regs(ctx: &PerfEventContext) -> Option<(UserRegs, bool)> {
    let interrupted_cs = unsafe { (*ctx.ctx).regs.cs };
    let kernel_mode = interrupted_cs & SEGMENT_RPL_MASK == 0;
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = unsafe { bpf_task_pt_regs(task) } as *const pt_regs;
    let saved = unsafe { bpf_probe_read_kernel(regs) }.ok()?;
    Some((
        UserRegs {
            ip: saved.rip,
            sp: saved.rsp,
            fp: saved.rbp,
            // SAFETY: a user-memory read through bpf_probe_read_user.
            leaf_ret: unsafe { crate::goroutine::user_word(saved.rsp) },
        },
        kernel_mode,
    ))
}

/// arm64: pc, sp and the frame pointer X29 from the saved user `pt_regs`, read member by member
/// (the whole `pt_regs` would take most of the 512-byte BPF stack).
#[cfg(bpf_target_arch = "aarch64")]
pub(crate) unsafe fn user_regs(ctx: &PerfEventContext) -> Option<(UserRegs, bool)> {
    // PSR mode bits: EL0 (user) is 0.
    const PSR_MODE_MASK: u64 = 0xf;
    let pstate = unsafe { (*ctx.ctx).regs.pstate };
    let kernel_mode = pstate & PSR_MODE_MASK != 0;
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = unsafe { bpf_task_pt_regs(task) } as *const pt_regs;
    // SAFETY: field addresses inside the task's pt_regs, read with bpf_probe_read_kernel.
    unsafe {
        Some((
            UserRegs {
                ip: bpf_probe_read_kernel(&raw const (*regs).pc).ok()?,
                sp: bpf_probe_read_kernel(&raw const (*regs).sp).ok()?,
                fp: bpf_probe_read_kernel(&raw const (*regs).regs[29]).ok()?,
                leaf_ret: bpf_probe_read_kernel(&raw const (*regs).regs[30]).ok()?,
            },
            kernel_mode,
        ))
    }
}

/// Registers of the probed thread at the probe (user registers).
pub(crate) struct Regs {
    /// Go ABI integer arguments 0..3.
    pub(crate) args: [u64; 3],
    /// The current `g` (R14 / X28).
    pub(crate) g: u64,
    pub(crate) ip: u64,
    /// Read on amd64 only: a function entry's return address is at the stack top there (arm64
    /// has it in LR).
    #[cfg_attr(bpf_target_arch = "aarch64", allow(dead_code))]
    pub(crate) sp: u64,
    pub(crate) fp: u64,
}

#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn regs(ctx: &ProbeContext) -> Regs {
    // SAFETY: a uprobe's context is the user `pt_regs`; fields are read at constant offsets.
    let r: &pt_regs = unsafe { &*ctx.regs };
    Regs {
        args: [r.rax, r.rbx, r.rcx],
        g: r.r14,
        ip: r.rip,
        sp: r.rsp,
        fp: r.rbp,
    }
}

#[cfg(bpf_target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn regs(ctx: &ProbeContext) -> Regs {
    // SAFETY: as above.
    let r: &pt_regs = unsafe { &*ctx.regs };
    Regs {
        args: [r.regs[0], r.regs[1], r.regs[2]],
        g: r.regs[28],
        ip: r.pc,
        sp: r.sp,
        fp: r.regs[29],
    }
}

/// The caller's pc at a function entry (return address: top of stack on amd64, LR on arm64).
#[inline(always)]
pub(crate) unsafe fn entry_return_address(ctx: &ProbeContext, r: &Regs) -> u64 {
    #[cfg(bpf_target_arch = "aarch64")]
    {
        let _ = r;
        // SAFETY: constant-offset context read.
        return unsafe { (*ctx.regs).regs[30] };
    }
    #[cfg(not(bpf_target_arch = "aarch64"))]
    {
        let _ = ctx;
        unsafe { crate::programs::event_record::user::<u64>(r.sp) }.unwrap_or(0)
    }
}
