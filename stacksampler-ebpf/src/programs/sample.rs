//! The perf-event sampling program: for each CPU-clock tick on a thread of the target process,
//! the user stack (frame-pointer walk, up to 16384 frames), the goroutine the thread was
//! running, and on request the kernel stack, sent to user space through the `SAMPLES` ring.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_get_stack},
    },
    macros::perf_event,
    programs::PerfEventContext,
};
use aya_log_ebpf::warn;
use stacksampler_common::{
    ConfigFlags, MAX_KERNEL_FRAMES, MAX_STACK_FRAMES, NativeKind, NativeTrailer,
    SAMPLE_HEADER_SIZE, SampleFlags, SamplerConfig, StackSample,
};

use crate::{
    goroutine,
    maps::{self, CONFIG, SAMPLES, SCRATCH, bump},
    native,
    regs::user_regs,
    walk::{self, AddressRange, Sink, Walk, WalkCall, WalkFrom},
};

#[perf_event]
pub fn sample_stack(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(cfg) = CONFIG.get(stacksampler_common::CONFIG_KEY) else {
        return 0;
    };
    if tgid != cfg.target_tgid || tgid == 0 {
        return 0;
    }
    bump(|c| c.target_hits += 1);
    // SAFETY: helpers called with the arguments the kernel documents; memory reads go through
    // bpf_probe_read_*.
    unsafe { take_sample(&ctx, cfg) };
    0
}

unsafe fn take_sample(ctx: &PerfEventContext, cfg: &SamplerConfig) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(slot) = SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    // SAFETY: the scratch slot belongs to this CPU, and perf_event programs do not nest on a CPU.
    let sample = unsafe { &mut *slot };
    let pid_tgid = bpf_get_current_pid_tgid();
    let h = &mut sample.header;
    h.time_ns = unsafe { bpf_ktime_get_ns() };
    h.tgid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    h.cpu = cpu;
    h.flags = 0;
    h.g_addr = 0;
    h.goid = 0;
    h.stack_lo = 0;
    h.stack_hi = 0;
    h.status = 0;
    h.waitreason = 0;
    h.last_fp = 0;
    h.switch_index = 0;
    h.n_frames = 0;
    h.labels_ptr = 0;
    h.labels_word = 0;
    h.sched_ret = 0;
    h.leaf_ret = 0;
    h.n_kernel_frames = 0;
    h.exec_id = unsafe { exec_id(cfg) };

    let Some((regs, kernel_mode)) = (unsafe { user_regs(ctx) }) else {
        h.flags |= SampleFlags::NO_USER_REGS;
        submit(cpu, 0, 0);
        return;
    };
    if kernel_mode {
        h.flags |= SampleFlags::KERNEL_MODE;
        bump(|c| c.kernel_mode += 1);
    }
    h.sp = regs.sp;
    h.leaf_ret = regs.leaf_ret;

    let mut limit = cfg.max_frames;
    if limit as usize > MAX_STACK_FRAMES || limit == 0 {
        limit = MAX_STACK_FRAMES as u32;
    }

    let g = if cfg.flags & ConfigFlags::GO_LAYOUT_KNOWN != 0 {
        match unsafe { goroutine::read(cfg) } {
            Ok(g) => Some(g),
            Err(failure) => {
                let mismatch = matches!(failure, goroutine::ReadFailure::TidMismatch);
                bump(|c| {
                    c.goroutine_read_errors += 1;
                    if mismatch {
                        c.goroutine_tid_mismatch += 1;
                    }
                });
                if cfg.flags & ConfigFlags::VERBOSE != 0 {
                    warn!(ctx, "tid {}: could not read the current goroutine", h.tid);
                }
                None
            }
        }
    } else {
        None
    };

    let mut check = WalkCheck {
        enabled: cfg.flags & ConfigFlags::VERIFY_WALK != 0,
        differs: false,
    };
    // Tops of the stacks the walks read: the goroutine's, and the one the thread was on.
    let goroutine_stack_hi = g.as_ref().map_or(0, |g| g.stack_hi);
    let interrupted_stack_hi = match &g {
        Some(g) if g.on_system_stack => g.system_stack_hi,
        Some(g) => g.stack_hi,
        None => 0,
    };
    // On g0 with a goroutine attached, the goroutine's frames are walked from its `g.sched`
    // after the switch: the walk of the system stack ends where its chain leads into them.
    let goroutine_frames = match &g {
        Some(g) if g.curg_sched.is_some() => AddressRange::stack(g.stack_lo, g.stack_hi),
        _ => AddressRange::NONE,
    };

    let native_on = cfg.flags & ConfigFlags::NATIVE_STACKS != 0;
    let callbacks = if native_on {
        native::callback_range(&cfg.native)
    } else {
        walk::AddressRange::NONE
    };
    // Bytes after the frames: a native trailer and stack copy (0 for a pure-Go sample).
    let mut native_bytes = 0u32;
    let mut has_native = false;

    // The interrupted instruction is frame 0; the walk adds the return addresses.
    sample.frames[0] = regs.ip;
    let mut n_frames;
    let mut last_fp;
    // In a cgo call: the thread runs C code on g0 while its goroutine is in _Gsyscall; the C
    // frames have no frame records, so the Go part is walked from curg.sched (saved by
    // asmcgocall) and the native part goes to user space as a stack copy.
    let cgo_call = match &g {
        Some(g)
            if native_on
                && !native::in_go_text(&cfg.native, regs.ip)
                && native::in_syscall(g.status) =>
        {
            g.curg_sched
                .as_ref()
                .map(|sched| (sched.sp, sched.fp, g.system_stack_hi))
        }
        _ => None,
    };
    if let Some((sched_sp, sched_fp, stack_hi)) = cgo_call {
        let h = &mut sample.header;
        h.flags |= SampleFlags::SYSTEM_STACK;
        h.sp = sched_sp;
        has_native = native::set_pending(
            NativeTrailer {
                pc: regs.ip,
                sp: regs.sp,
                fp: regs.fp,
                lr: regs.leaf_ret,
                kind: NativeKind::CGO_CALL,
                at: 1,
                len: 0,
                _pad: 0,
            },
            stack_hi,
        );
        // Where asmcgocall saved sched, it either has a frame record (Go 1.21+: sched.bp is
        // sched.sp, the record's address) or none (Go 1.19: sched.bp is cgocall's frame and the
        // word at sched.sp is asmcgocall's return address into cgocall).
        let mut base = 1;
        if sched_fp != sched_sp {
            sample.frames[1] = unsafe { goroutine::user_word(sched_sp) };
            base = 2;
        }
        if limit > native::NATIVE_FRAME_LIMIT {
            limit = native::NATIVE_FRAME_LIMIT;
        }
        let walk = unsafe {
            walk_sample(
                &WalkFrom {
                    base,
                    fp: sched_fp,
                    limit,
                    stop: callbacks,
                    leave: AddressRange::NONE,
                    stack_hi: goroutine_stack_hi,
                    verify: 0,
                    _pad: 0,
                },
                &mut check,
            )
        };
        n_frames = walk.next_index;
        last_fp = walk.last_fp;
    } else {
        let walk = unsafe {
            walk_sample(
                &WalkFrom {
                    base: 1,
                    fp: regs.fp,
                    limit,
                    stop: callbacks,
                    leave: goroutine_frames,
                    stack_hi: interrupted_stack_hi,
                    verify: 0,
                    _pad: 0,
                },
                &mut check,
            )
        };
        n_frames = walk.next_index;
        last_fp = walk.last_fp;
        if walk.stopped_at != 0
            && let Some(g) = &g
            && !g.on_system_stack
        {
            // A cgo callback: the walk met runtime.cgocallback's frame on the goroutine stack.
            let crossing = unsafe {
                cross_callback(cfg, cpu, g, walk.stopped_at, n_frames, limit, &mut check)
            };
            if let Some(c) = crossing {
                has_native = true;
                n_frames = c.next_index;
                last_fp = c.last_fp;
            }
        }
    }

    if let Some(g) = g {
        let h = &mut sample.header;
        h.flags |= SampleFlags::GOROUTINE_KNOWN;
        h.g_addr = g.g_addr;
        h.goid = g.goid;
        h.status = g.status;
        h.waitreason = g.waitreason;
        h.stack_lo = g.stack_lo;
        h.stack_hi = g.stack_hi;
        h.labels_ptr = g.labels_ptr;
        h.labels_word = g.labels_word;
        if g.on_system_stack && !has_native {
            h.flags |= SampleFlags::SYSTEM_STACK;
            // Continue on the user goroutine's stack from where it switched away (curg.sched):
            // a sample taken in runtime.newstack then still shows the recursion that grew it.
            if let Some(sched) = g.curg_sched
                && last_fp == 0
                && (n_frames as usize) < MAX_STACK_FRAMES
                && n_frames < limit
            {
                h.flags |= SampleFlags::SWITCHED_TO_CURG;
                h.switch_index = n_frames;
                h.sp = sched.sp;
                h.sched_ret = unsafe { goroutine::user_word(sched.sp) };
                store_frame(cpu, n_frames as u64, sched.pc);
                let cont = unsafe {
                    walk_sample(
                        &WalkFrom {
                            base: n_frames + 1,
                            fp: sched.fp,
                            limit,
                            stop: callbacks,
                            leave: AddressRange::NONE,
                            stack_hi: g.stack_hi,
                            verify: 0,
                            _pad: 0,
                        },
                        &mut check,
                    )
                };
                n_frames = cont.next_index;
                last_fp = cont.last_fp;
            }
        }
    }
    if last_fp != 0 {
        sample.header.flags |= SampleFlags::TRUNCATED;
        bump(|c| c.truncated += 1);
    }
    sample.header.last_fp = last_fp;
    if kernel_mode && cfg.flags & ConfigFlags::KERNEL_STACKS != 0 {
        let kernel = unsafe { kernel_stack(ctx, cpu, n_frames) };
        sample.header.n_kernel_frames = kernel;
        n_frames += kernel;
    }
    sample.header.n_frames = n_frames;
    if check.enabled {
        bump(|c| {
            c.walk_checks += 1;
            if check.differs {
                c.walk_mismatches += 1;
            }
        });
    }
    if has_native {
        native_bytes = unsafe { native::write_trailer(&cfg.native, cpu, n_frames) };
        if native_bytes != 0 {
            if let Some(slot) = SCRATCH.get_ptr_mut(cpu) {
                // SAFETY: this CPU's slot.
                unsafe { (*slot).header.flags |= SampleFlags::NATIVE };
            }
            bump(|c| c.native_samples += 1);
        }
    }
    submit(cpu, n_frames, native_bytes);
}

/// With `ConfigFlags::VERIFY_WALK`: whether a walk of this sample read a record from its bulk
/// copy that differs from the record read on its own (the record-by-record walk).
struct WalkCheck {
    enabled: bool,
    differs: bool,
}

/// Frames of this CPU's sample ([`SCRATCH`]).
struct SampleFrames;

impl Sink for SampleFrames {
    const FRAMES_PER_STEP: u32 = 4;

    #[inline(always)]
    fn store(cpu: u32, pos: u64, ret: u64) -> bool {
        if pos >= MAX_STACK_FRAMES as u64 {
            return false;
        }
        let Some(slot) = SCRATCH.get_ptr_mut(cpu) else {
            return false;
        };
        // The mask repeats the bound on the very register that indexes (MAX_STACK_FRAMES is a
        // power of two), on a value the compiler cannot see through: it would drop a mask it
        // proved redundant and index with a copy the check above did not bound.
        let i = core::hint::black_box(pos) as usize & (MAX_STACK_FRAMES - 1);
        // SAFETY: `i` is within the frame array; the slot is this CPU's.
        unsafe { (*slot).frames[i] = ret };
        true
    }
}

/// Walks into this CPU's sample; when `check` is enabled, each record is also read on its own
/// and a difference from its bulk copy is noted.
#[inline(always)]
unsafe fn walk_sample(from: &WalkFrom, check: &mut WalkCheck) -> Walk {
    let Some(call) = walk::prepare_call(&WalkFrom {
        verify: check.enabled as u32,
        ..*from
    }) else {
        return Walk {
            next_index: from.base,
            ..Walk::default()
        };
    };
    sample_walk(call);
    // SAFETY: this CPU's slot, written by the walk.
    let out = unsafe { (*call).out };
    if out.differs != 0 {
        check.differs = true;
    }
    out
}

/// [`walk::walk`] into the sample, as a BPF global function (see there); returns 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sample_walk(call: *mut WalkCall) -> i32 {
    if call.is_null() {
        return 0;
    }
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // SAFETY: `call` is this CPU's WALK_CALL slot.
    unsafe { (*call).out = walk::walk::<SampleFrames>(cpu, &(*call).from) };
    0
}

/// Where a walk continues after a cgo callback (its native part is pending).
struct Crossing {
    next_index: u32,
    last_fp: u64,
}

/// Crosses a cgo callback met by the walk at frame record `record` (the record of
/// `runtime.cgocallbackg`, whose return address into `runtime.cgocallback` is the last of the
/// `n_frames` frames written).
///
/// `cgocallback` ran on g0 before it switched to the goroutine: the record's saved frame pointer
/// is its frame on g0, whose return address leads into the C code (`crosscall2`). On the
/// goroutine stack it opened a frame of its own size just below the `sched.sp` that the cgo
/// call saved: there `asmcgocall`'s return address into `runtime.cgocall`, and `cgocall`'s frame
/// record a frame size further up, from which the walk continues into the Go code below the cgo
/// call. Fields read during the callback (`g.sched`, `g.syscallsp`) are overwritten by the Go
/// code it runs; these stack words are not.
unsafe fn cross_callback(
    cfg: &SamplerConfig,
    cpu: u32,
    g: &goroutine::Goroutine,
    record: u64,
    n_frames: u32,
    limit: u32,
    check: &mut WalkCheck,
) -> Option<Crossing> {
    let native = &cfg.native;
    let (stack_lo, stack_hi) = (g.stack_lo, g.stack_hi);
    let sched_sp = record + native.callback_sched_offset as u64;
    if sched_sp < stack_lo || sched_sp >= stack_hi {
        return None;
    }
    // As at a cgo call: at sched.sp either asmcgocall's frame record (Go 1.21+) or its return
    // address into cgocall (Go 1.19), whose frame record is then a frame size further up.
    let word = unsafe { goroutine::user_word(sched_sp) };
    let record_at_sched = !native::in_go_text(native, word);
    if record_at_sched && (word <= sched_sp || word >= stack_hi) {
        return None;
    }
    let system_fp = unsafe { goroutine::user_word(record) };
    if system_fp == 0 {
        return None;
    }
    let trailer = NativeTrailer {
        pc: unsafe { goroutine::user_word(system_fp + 8) },
        sp: system_fp + 16,
        fp: unsafe { goroutine::user_word(system_fp) },
        lr: 0,
        kind: NativeKind::CGO_CALLBACK,
        at: n_frames,
        len: 0,
        _pad: 0,
    };
    if !native::set_pending(trailer, unsafe {
        goroutine::g0_stack_hi(&cfg.go, g.g_addr)
    }) {
        return None;
    }
    let (base, fp) = if record_at_sched {
        (n_frames, sched_sp)
    } else {
        store_frame(cpu, n_frames as u64, word);
        (n_frames + 1, sched_sp + native.cgocall_frame as u64)
    };
    let limit = if limit > native::NATIVE_FRAME_LIMIT {
        native::NATIVE_FRAME_LIMIT
    } else {
        limit
    };
    let cont = unsafe {
        walk_sample(
            &WalkFrom {
                base,
                fp,
                limit,
                stop: native::callback_range(native),
                leave: AddressRange::NONE,
                stack_hi,
                verify: 0,
                _pad: 0,
            },
            check,
        )
    };
    Some(Crossing {
        next_index: cont.next_index,
        last_fp: cont.last_fp,
    })
}

/// Stores `value` as frame `index` of this CPU's scratch slot (nothing past the buffer).
///
/// Not inlined: as a BPF subprogram its bound check is on the very register it indexes with.
/// Inlined into the large sampling function, the compiler reloaded the index from the stack
/// after checking it, and the 6.1 verifier lost the bound ("unbounded memory access").
#[inline(never)]
fn store_frame(cpu: u32, index: u64, value: u64) {
    let Some(slot) = SCRATCH.get_ptr_mut(cpu) else {
        return;
    };
    // A 64-bit index: a u32 one is zero-extended into a second register, and the verifier
    // does not carry the check of one to the other.
    let i = index as usize;
    if i < MAX_STACK_FRAMES {
        // SAFETY: `i` is bounds-checked; the slot is this CPU's.
        unsafe { (*slot).frames[i] = value };
    }
}

/// The current thread's `task_struct.self_exec_id` (low 32 bits), 0 when not configured.
unsafe fn exec_id(cfg: &SamplerConfig) -> u32 {
    if cfg.task_exec_id_offset == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let field = (task + cfg.task_exec_id_offset as u64) as *const u64;
    unsafe { bpf_probe_read_kernel(field) }.map_or(0, |id| id as u32)
}

/// Appends the kernel stack after the `user` user frames of this CPU's scratch slot; returns
/// the number of kernel frames written.
unsafe fn kernel_stack(ctx: &PerfEventContext, cpu: u32, user: u32) -> u32 {
    let at = user as usize;
    if at + MAX_KERNEL_FRAMES > MAX_STACK_FRAMES {
        return 0;
    }
    let Some(slot) = SCRATCH.get_ptr_mut(cpu) else {
        return 0;
    };
    // SAFETY: `at + MAX_KERNEL_FRAMES` is within the frame array (checked above).
    let buf = unsafe { (*slot).frames.as_mut_ptr().add(at) };
    let written =
        unsafe { bpf_get_stack(ctx.as_ptr(), buf.cast(), (MAX_KERNEL_FRAMES * 8) as u32, 0) };
    if written <= 0 {
        return 0;
    }
    (written as u32) / 8
}

/// Copies the header, the first `n_frames` frames of this CPU's scratch slot and the
/// `extra_bytes` after them (a native trailer and stack copy) to the ring buffer.
fn submit(cpu: u32, n_frames: u32, extra_bytes: u32) {
    let Some(slot) = SCRATCH.get_ptr(cpu) else {
        return;
    };
    let mut n = n_frames as usize;
    if n > MAX_STACK_FRAMES {
        n = MAX_STACK_FRAMES;
    }
    let mut len = SAMPLE_HEADER_SIZE + n * 8 + extra_bytes as usize;
    if len > core::mem::size_of::<StackSample>() {
        len = core::mem::size_of::<StackSample>();
    }
    // SAFETY: `len` is at most the slot's size (header + MAX_STACK_FRAMES frames).
    let bytes = unsafe { core::slice::from_raw_parts(slot.cast::<u8>(), len) };
    // SAFETY: the header is at the start of the slot.
    let header = unsafe { &(*slot).header };
    let urgent = header.flags & SampleFlags::TRUNCATED != 0 || header.labels_ptr != 0;
    match SAMPLES.output::<[u8]>(bytes, maps::wakeup_flag(urgent)) {
        Ok(()) => bump(|c| c.delivered += 1),
        Err(_) => bump(|c| c.lost_ringbuf += 1),
    }
}
