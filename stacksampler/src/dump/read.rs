//! Reading every goroutine of a live target from `/proc/PID/mem`.
//!
//! Per goroutine: one read of its `runtime.g`, one read of the used part of its stack (from the
//! resume sp up, at most [`STACK_READ_BYTES`]), a frame-pointer walk in that copy, and one more
//! read of the `g` to check nothing moved meanwhile. Where the walk starts:
//! - waiting, runnable, preempted: `g.sched` (pc, sp, bp), saved when it left its thread;
//! - in a system call: `g.syscallpc/syscallsp` and `g.syscallbp` (Go 1.23+); before 1.23 the
//!   frame pointer is derived from the frame size Go's table gives at `syscallpc`;
//! - running: nothing. Its saved registers are from an earlier moment, so its stack is reported
//!   as not captured rather than shown stale.
//!
//! The target keeps running: a goroutine whose status, saved registers or stack bounds differ
//! between the two reads of its `g` is read again (up to [`MAX_REREADS`] times), then marked
//! inconsistent. Stacks deeper than [`HEAD_FRAMES`] calls continue with the deep-stack reader
//! ([`crate::deep_stack`]): exact depth, the outermost frames kept.

use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    fs::File,
    os::unix::fs::FileExt,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    deep_stack::{ContinuationStats, CutWalk, DeepStackReader, ReadBudget},
    goruntime::{
        self, GoArch, GoBinary, RuntimeLayout,
        allgs::{self, AllGs},
        labels::{ReadMemory, read_labels},
        state::{GSCAN_BIT, GoroutineState},
    },
    symbolize::{ProcessSymbolizer, Symbolize, elf::ElfImage},
    target::{self, Process, monotonic_ns},
    warning::Warning,
};

use super::{CreatedBy, Dump, DumpError, DumpFrame, Goroutine, Stack, StackSource};

/// Calls walked in the head of a stack (Go's own tracebacks print at most 100).
pub const HEAD_FRAMES: usize = 100;
/// Most stack bytes read in one go from the resume sp; frames above it are read one by one.
const STACK_READ_BYTES: u64 = 64 * 1024;
/// Times a goroutine that changed during its read is read again.
const MAX_REREADS: u32 = 3;
/// Most iovecs one `process_vm_readv` takes (`UIO_MAXIOV`).
const IOV_MAX: usize = 1024;
/// Size of a frame record: saved frame pointer, return address.
const RECORD_BYTES: u64 = 16;
/// On arm64 a Go function's frame record (saved frame pointer, then its return address) sits
/// this far below its sp (`MOVD R29, -8(RSP)` in every prologue).
const ARM64_RECORD_BELOW_SP: u64 = 8;
/// Functions of package `runtime` that Go does not count as system goroutines.
const USER_RUNTIME_STARTS: [&str; 3] = [
    "runtime.main",
    "runtime.handleAsyncEvent",
    "runtime.corostart",
];
/// Go release from which `created by` names the innermost inlined function at `gopc`.
const CREATED_BY_INLINED_FROM: (u32, u32) = (1, 21);

/// What to dump.
#[derive(Clone, Copy, Debug)]
pub struct DumpOptions {
    /// The target process.
    pub pid: u32,
}

/// CPU time of the calling thread (user and system), seconds.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The target's memory, counting the bytes read.
struct TargetMem {
    pid: u32,
    file: File,
    bytes: Cell<u64>,
}

impl ReadMemory for TargetMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        self.file.read_exact_at(buf, addr).ok()?;
        self.bytes.set(self.bytes.get() + buf.len() as u64);
        Some(())
    }
}

impl TargetMem {
    /// Reads every `(address, buffer)` of `reqs`, [`IOV_MAX`] per `process_vm_readv` call (one
    /// system call instead of one `pread` each); returns which were read. A request the batch
    /// call could not read is retried alone, so one bad address costs only itself.
    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<bool> {
        let mut done = vec![false; reqs.len()];
        let mut at = 0;
        while at < reqs.len() {
            let end = (at + IOV_MAX).min(reqs.len());
            let batch = &mut reqs[at..end];
            let local: Vec<libc::iovec> = batch
                .iter_mut()
                .map(|(_, buf)| libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                })
                .collect();
            let remote: Vec<libc::iovec> = batch
                .iter()
                .map(|(addr, buf)| libc::iovec {
                    iov_base: *addr as usize as *mut libc::c_void,
                    iov_len: buf.len(),
                })
                .collect();
            // SAFETY: every local iovec points into a live, exclusively borrowed buffer of
            // exactly its length; the remote ones are only read by the kernel.
            let n = unsafe {
                libc::process_vm_readv(
                    self.pid as libc::pid_t,
                    local.as_ptr(),
                    local.len() as libc::c_ulong,
                    remote.as_ptr(),
                    remote.len() as libc::c_ulong,
                    0,
                )
            };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
                // The target is gone: nothing more can be read.
                break;
            }
            let mut left = usize::try_from(n).unwrap_or(0);
            self.bytes.set(self.bytes.get() + left as u64);
            let mut i = at;
            while i < end && left >= reqs[i].1.len() {
                left -= reqs[i].1.len();
                done[i] = true;
                i += 1;
            }
            if i < end {
                // The first request the call could not read completely: alone, then go on.
                let (addr, buf) = &mut reqs[i];
                done[i] = self.read(*addr, buf).is_some();
                i += 1;
            }
            at = i;
        }
        done
    }

    fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Some(u64::from_le_bytes(b))
    }
}

/// The fields of one `runtime.g`, decoded from one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawG {
    status: u32,
    pub goid: u64,
    pub waitreason: u8,
    waitsince: i64,
    lockedm: u64,
    /// The return address of the `go` statement that created it.
    pub gopc: u64,
    /// The function it was started with.
    pub startpc: u64,
    parent_goid: Option<u64>,
    /// `g.labels`.
    pub labels: u64,
    stack_lo: u64,
    pub stack_hi: u64,
    sched: Regs,
    syscall: Regs,
}

/// Where a walk starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Regs {
    pc: u64,
    sp: u64,
    bp: u64,
}

impl RawG {
    pub fn state(&self) -> GoroutineState {
        GoroutineState::from_raw(self.status)
    }

    /// What must not change while the stack is read.
    fn resume_point(&self) -> (u32, u64, u64, Regs, Regs) {
        (
            self.status & !GSCAN_BIT,
            self.stack_lo,
            self.stack_hi,
            self.sched,
            self.syscall,
        )
    }
}

/// Reads `runtime.g` fields at the offsets of one layout.
struct GReader {
    layout: RuntimeLayout,
    len: usize,
}

impl GReader {
    fn new(layout: RuntimeLayout) -> Self {
        let l = &layout;
        let last = [
            l.g_stack_hi,
            l.g_sched + l.gobuf_bp.max(l.gobuf_pc).max(l.gobuf_sp),
            l.g_syscallpc,
            l.g_syscallsp,
            l.g_syscallbp.unwrap_or(0),
            l.g_atomicstatus,
            l.g_goid,
            l.g_waitreason,
            l.g_waitsince.unwrap_or(0),
            l.g_lockedm.unwrap_or(0),
            l.g_gopc.unwrap_or(0),
            l.g_startpc.unwrap_or(0),
            l.g_parent_goid.unwrap_or(0),
            l.g_labels,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        Self {
            layout,
            len: last as usize + 8,
        }
    }

    /// Bytes of a `g` that hold what [`RawG::resume_point`] compares.
    fn resume_len(&self) -> usize {
        let l = &self.layout;
        [
            l.g_stack_lo,
            l.g_stack_hi,
            l.g_sched + l.gobuf_bp.max(l.gobuf_pc).max(l.gobuf_sp),
            l.g_syscallpc,
            l.g_syscallsp,
            l.g_syscallbp.unwrap_or(0),
            l.g_atomicstatus,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
            + 8
    }

    fn read(&self, mem: &TargetMem, g: u64) -> Option<RawG> {
        let mut b = vec![0u8; self.len];
        mem.read(g, &mut b)?;
        Some(self.decode(&b))
    }

    /// Decodes the `len` bytes of a `g`; fields past a shorter `b` (a read of the first
    /// [`GReader::resume_len`] bytes) decode as 0.
    fn decode(&self, b: &[u8]) -> RawG {
        let word = |off: u32| {
            let at = off as usize;
            b.get(at..at + 8)
                .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        };
        let l = &self.layout;
        RawG {
            status: word(l.g_atomicstatus) as u32,
            goid: word(l.g_goid),
            waitreason: b.get(l.g_waitreason as usize).copied().unwrap_or(0),
            waitsince: l.g_waitsince.map_or(0, word) as i64,
            lockedm: l.g_lockedm.map_or(0, word),
            gopc: l.g_gopc.map_or(0, word),
            startpc: l.g_startpc.map_or(0, word),
            parent_goid: l.g_parent_goid.map(word),
            labels: word(l.g_labels),
            stack_lo: word(l.g_stack_lo),
            stack_hi: word(l.g_stack_hi),
            sched: Regs {
                pc: word(l.g_sched + l.gobuf_pc),
                sp: word(l.g_sched + l.gobuf_sp),
                bp: word(l.g_sched + l.gobuf_bp),
            },
            syscall: Regs {
                pc: word(l.g_syscallpc),
                sp: word(l.g_syscallsp),
                bp: l.g_syscallbp.map_or(0, word),
            },
        }
    }
}

/// A stack as resume addresses, before symbolization.
pub struct RawStack {
    pub source: StackSource,
    /// Innermost first: the goroutine's resume pc, then return addresses.
    pub pcs: Vec<u64>,
    /// Calls between `pcs` and `tail` counted, not kept.
    pub elided: u64,
    /// The outermost return addresses of a stack deeper than `pcs`.
    pub tail: Vec<u64>,
    pub truncated: bool,
    /// The stack pointer the walk started from (0 without a walk).
    pub sp: u64,
}

impl RawStack {
    fn empty(source: StackSource) -> Self {
        Self {
            source,
            pcs: Vec::new(),
            elided: 0,
            tail: Vec::new(),
            truncated: false,
            sp: 0,
        }
    }
}

/// One goroutine read, before symbolization.
pub struct RawGoroutine {
    /// Address of its `runtime.g`.
    pub addr: u64,
    pub g: RawG,
    pub stack: RawStack,
    pub inconsistent: bool,
}

/// A target opened for reading its goroutines, as often as asked: the dump reads them once, a
/// `record --wall` run at every wall-clock tick. Everything found once (the binary, the
/// goroutine list, the layout, the target's memory) is kept between reads.
pub struct GoroutineReader {
    pid: u32,
    binary: GoBinary,
    binary_name: String,
    mem: TargetMem,
    at: AllGs,
    g: GReader,
    symbolizer: ProcessSymbolizer,
    deep: DeepStackReader,
    /// Goroutines read again because they changed under the read, over every read.
    reread: u64,
}

/// Every goroutine of the list at one moment, before symbolization.
pub struct Snapshot {
    /// Live goroutines (not dead, not idle), in list order.
    pub goroutines: Vec<RawGoroutine>,
    /// Dead goroutines in the list.
    pub dead: u64,
    /// The target went away during the read: `goroutines` is what was read.
    pub incomplete: bool,
}

impl GoroutineReader {
    /// Opens `pid`: its binary, layout and goroutine list.
    pub fn open(pid: u32) -> Result<Self, DumpError> {
        let process = Process::open(pid)?;
        let binary = goruntime::inspect(&process.exe_link)?;
        let binary_name = process.exe.display().to_string();
        if !binary.is_go {
            return Err(DumpError::NotGo(binary_name));
        }
        let (Some(layout), Some(go_layout)) = (binary.runtime_layout, binary.layout) else {
            return Err(DumpError::NoLayout(format!(
                "{binary_name}: {}",
                crate::warning::joined(&binary.warnings)
            )));
        };
        let mem = TargetMem {
            pid,
            file: File::open(format!("/proc/{pid}/mem")).map_err(|source| DumpError::Io {
                what: format!("/proc/{pid}/mem"),
                source,
            })?,
            bytes: Cell::new(0),
        };
        let bias = binary.load_bias(pid, &process.exe).unwrap_or(0);
        let image = if binary.symbols.allgs.is_none() {
            let mut file = File::open(&process.exe_link).map_err(|source| DumpError::Io {
                what: process.exe_link.display().to_string(),
                source,
            })?;
            ElfImage::map_file(&mut file)
                .map_err(|source| DumpError::Io {
                    what: process.exe_link.display().to_string(),
                    source,
                })?
                .ok()
        } else {
            None
        };
        let at = allgs::locate(&binary, image.as_ref(), bias, layout.g_goid, &mem).map_err(
            |source| DumpError::AllGs {
                binary: binary_name.clone(),
                source,
            },
        )?;
        let symbolizer = ProcessSymbolizer::new(pid)?;
        let deep = DeepStackReader::open(pid, go_layout, None).map_err(|source| DumpError::Io {
            what: format!("/proc/{pid}/mem"),
            source,
        })?;
        Ok(Self {
            pid,
            binary,
            binary_name,
            mem,
            at,
            g: GReader::new(layout),
            symbolizer,
            deep,
            reread: 0,
        })
    }

    /// The target's binary as inspected at open.
    pub fn binary(&self) -> &GoBinary {
        &self.binary
    }

    /// From now on, deep stacks are continued within `budget` (a series of snapshots); a
    /// one-off read continues every one.
    pub fn limit_deep_reads(&mut self, budget: ReadBudget) {
        self.deep.set_budget(budget);
    }

    /// What the deep-stack continuation did so far.
    pub fn deep_stats(&self) -> ContinuationStats {
        self.deep.stats
    }

    /// Bytes read from the target so far (goroutines, stacks, deep-stack continuations).
    pub fn bytes_read(&self) -> u64 {
        self.mem.bytes.get() + self.deep.stats.bytes_read
    }

    /// Reads every goroutine now.
    pub fn snapshot(&mut self) -> Result<Snapshot, DumpError> {
        let (goroutines, dead, incomplete) =
            self.read_all().map_err(|source| DumpError::AllGs {
                binary: self.binary_name.clone(),
                source,
            })?;
        Ok(Snapshot {
            goroutines,
            dead,
            incomplete,
        })
    }

    /// The address at which to look a resume pc up (see [`lookup_pc`]).
    pub fn lookup_pc(&self, pc: u64) -> u64 {
        lookup_pc(&self.symbolizer, pc)
    }

    /// The function a goroutine was started with, named from `g.startpc`.
    pub fn start_function(&mut self, startpc: u64) -> Option<Arc<str>> {
        let at = lookup_pc(&self.symbolizer, startpc);
        let symbols = self.symbolizer.symbolize(&[at]);
        symbols.frames(at).last().map(|f| f.function.clone())
    }

    /// The goroutine label set at `g.labels` (`ptr`), with the word it points at now (the
    /// reference a sample carries, see [`crate::sample::LabelRef`]).
    pub fn label_word(&self, ptr: u64) -> Option<u64> {
        self.mem.u64(ptr)
    }
}

/// Whether a goroutine started with `function` is one of the runtime's own (Go's dumps and
/// goroutine profiles leave them out).
pub fn is_system_start(function: &str) -> bool {
    function.starts_with("runtime.") && !USER_RUNTIME_STARTS.contains(&function)
}

/// Dumps every goroutine of `options.pid`.
pub fn dump(options: DumpOptions) -> Result<Dump, DumpError> {
    let started = Instant::now();
    let cpu_started = thread_cpu_s();
    let time_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let pid = options.pid;
    let mut reader = GoroutineReader::open(pid)?;
    let Snapshot {
        goroutines: raw,
        dead,
        incomplete,
    } = reader.snapshot()?;
    let (reread, inconsistent) = (
        reader.reread,
        raw.iter().filter(|g| g.inconsistent).count() as u64,
    );
    let now_ns = monotonic_ns();
    let mut warnings = reader.binary.warnings.clone();
    if incomplete {
        warnings.push(Warning::ExitedDuringDump {
            pid,
            listed: raw.len(),
            read: raw.iter().filter(|g| !g.stack.pcs.is_empty()).count(),
        });
    }
    let bytes_read = reader.bytes_read();
    let GoroutineReader {
        binary,
        binary_name,
        mem,
        at,
        symbolizer,
        ..
    } = reader;
    let goroutines = resolve(raw, &binary, &mem, symbolizer, now_ns);
    let mut dump = Dump {
        pid,
        binary: binary_name,
        go_version: binary.version.as_ref().map(ToString::to_string),
        allgs_source: at.source,
        time_unix_s,
        elapsed_s: started.elapsed().as_secs_f64(),
        cpu_s: thread_cpu_s() - cpu_started,
        bytes_read,
        reread,
        inconsistent,
        incomplete,
        dead,
        goroutines,
        warnings,
        findings: Vec::new(),
    };
    dump.findings = super::pileup::find(&dump, &crate::diagnose::DiagnoseOptions::default());
    Ok(dump)
}

impl GoroutineReader {
    /// Every live goroutine of the list, the number of dead ones, and whether the target went
    /// away midway.
    ///
    /// In three batched passes: every `g`, then every stack, then every `g` again; goroutines
    /// that changed between their two reads are then read again one by one.
    fn read_all(&mut self) -> Result<(Vec<RawGoroutine>, u64, bool), allgs::AllGsError> {
        let pid = self.pid;
        let addrs = allgs::read_g_pointers(&self.mem, &self.at)?;
        let first = self.read_gs(&addrs, self.g.len);
        let mut dead = 0;
        let mut live: Vec<(u64, RawG)> = Vec::with_capacity(addrs.len());
        let mut unread = 0;
        for (&addr, g) in addrs.iter().zip(first) {
            let Some(g) = g else {
                unread += 1;
                continue;
            };
            match g.state() {
                GoroutineState::Dead => dead += 1,
                GoroutineState::Idle => {}
                _ => live.push((addr, g)),
            }
        }
        // A target gone midway: what was read is kept (the dump says it is incomplete).
        let mut gone = unread > 0 && !target::process::is_alive(pid);
        // Stacks: where each walk starts and the bytes above it.
        let starts: Vec<Result<Regs, StackSource>> =
            live.iter().map(|(_, g)| self.start(g)).collect();
        let mut copies: Vec<Vec<u8>> = live
            .iter()
            .zip(&starts)
            .map(|((_, g), start)| match start {
                Ok(regs) if regs.pc != 0 && regs.sp >= g.stack_lo && regs.sp < g.stack_hi => {
                    vec![0u8; (g.stack_hi - regs.sp).min(STACK_READ_BYTES) as usize]
                }
                _ => Vec::new(),
            })
            .collect();
        let copied = {
            let mut reqs: Vec<(u64, &mut [u8])> = starts
                .iter()
                .zip(copies.iter_mut())
                .map(|(start, copy)| (start.map_or(0, |r| r.sp), copy.as_mut_slice()))
                .collect();
            self.mem.read_batch(&mut reqs)
        };
        let stacks: Vec<RawStack> = live
            .iter()
            .zip(starts)
            .zip(copies.iter().zip(copied))
            .map(|(((addr, g), start), (copy, ok))| match start {
                Err(source) => RawStack::empty(source),
                Ok(_) if copy.is_empty() || !ok => RawStack::empty(StackSource::Unreadable),
                Ok(regs) => self.walk_copy(*addr, g, regs, copy),
            })
            .collect();
        drop(copies);
        let live_addrs: Vec<u64> = live.iter().map(|(a, _)| *a).collect();
        // The second read only checks the resume point: its bytes are enough.
        let second = self.read_gs(&live_addrs, self.g.resume_len());
        let mut out = Vec::with_capacity(live.len());
        for (((addr, g), stack), after) in live.into_iter().zip(stacks).zip(second) {
            match after {
                Some(after) if after.resume_point() == g.resume_point() => out.push(RawGoroutine {
                    addr,
                    g,
                    stack,
                    inconsistent: false,
                }),
                Some(_) if !gone => {
                    self.reread += 1;
                    match self.g.read(&self.mem, addr) {
                        Some(now) => out.push(self.read_goroutine(addr, now)),
                        None => out.push(RawGoroutine {
                            addr,
                            g,
                            stack,
                            inconsistent: true,
                        }),
                    }
                }
                // Unreadable the second time (or the target is gone): as first read.
                _ => out.push(RawGoroutine {
                    addr,
                    g,
                    stack,
                    inconsistent: false,
                }),
            }
        }
        gone |= !target::process::is_alive(pid);
        Ok((out, dead, gone))
    }

    /// Reads the first `len` bytes of the `g` at each address. The runtime allocates `g`s
    /// side by side in its heap spans, so neighbours are read as one range (one iovec, each
    /// page pinned once instead of once per `g`); a range that cannot be read is read `g` by
    /// `g`.
    fn read_gs(&self, addrs: &[u64], len: usize) -> Vec<Option<RawG>> {
        let ranges = coalesce(addrs, len as u64);
        let mut buffers: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| vec![0u8; (r.end - r.start) as usize])
            .collect();
        let ok = {
            let mut reqs: Vec<(u64, &mut [u8])> = ranges
                .iter()
                .zip(buffers.iter_mut())
                .map(|(r, b)| (r.start, b.as_mut_slice()))
                .collect();
            self.mem.read_batch(&mut reqs)
        };
        let mut out: Vec<Option<RawG>> = vec![None; addrs.len()];
        let mut retry: Vec<usize> = Vec::new();
        for ((range, buffer), ok) in ranges.iter().zip(&buffers).zip(ok) {
            for &i in &range.members {
                if ok {
                    let at = (addrs[i] - range.start) as usize;
                    out[i] = Some(self.g.decode(&buffer[at..at + len]));
                } else {
                    retry.push(i);
                }
            }
        }
        if !retry.is_empty() {
            let mut bytes = vec![0u8; retry.len() * len];
            let ok = {
                let mut reqs: Vec<(u64, &mut [u8])> = retry
                    .iter()
                    .map(|&i| addrs[i])
                    .zip(bytes.chunks_exact_mut(len))
                    .collect();
                self.mem.read_batch(&mut reqs)
            };
            for ((&i, b), ok) in retry.iter().zip(bytes.chunks_exact(len)).zip(ok) {
                out[i] = ok.then(|| self.g.decode(b));
            }
        }
        out
    }

    /// Walks one goroutine's stack, re-reading it while its `g` changes under the walk.
    fn read_goroutine(&mut self, addr: u64, mut g: RawG) -> RawGoroutine {
        for attempt in 0..=MAX_REREADS {
            let stack = self.walk(addr, &g);
            match self.g.read(&self.mem, addr) {
                Some(after) if after.resume_point() == g.resume_point() => {
                    return RawGoroutine {
                        addr,
                        g,
                        stack,
                        inconsistent: false,
                    };
                }
                Some(after) if attempt < MAX_REREADS => {
                    self.reread += 1;
                    g = after;
                }
                _ => {
                    return RawGoroutine {
                        addr,
                        g,
                        stack,
                        inconsistent: true,
                    };
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Where the walk of `g` starts, or why there is none.
    fn start(&self, g: &RawG) -> Result<Regs, StackSource> {
        match g.state() {
            GoroutineState::Running => Err(StackSource::NotCaptured),
            GoroutineState::Syscall => {
                let mut regs = g.syscall;
                if regs.bp == 0 {
                    // Before Go 1.23 (and wherever the runtime does not save it): the caller of
                    // entersyscall keeps its frame record at a fixed place of its frame. amd64:
                    // at the top, `frame size - 8` above the sp it had at the call; arm64: just
                    // below that sp.
                    regs.bp = match self.binary.arch {
                        GoArch::Arm64 => regs.sp.saturating_sub(ARM64_RECORD_BELOW_SP),
                        _ => self
                            .symbolizer
                            .go_frame_size_at(regs.pc)
                            .filter(|size| *size >= 8)
                            .map_or(0, |size| regs.sp + u64::from(size) - 8),
                    };
                }
                Ok(regs)
            }
            _ => Ok(g.sched),
        }
    }

    fn walk(&mut self, addr: u64, g: &RawG) -> RawStack {
        let regs = match self.start(g) {
            Ok(r) => r,
            Err(source) => return RawStack::empty(source),
        };
        let (lo, hi) = (g.stack_lo, g.stack_hi);
        if regs.pc == 0 || regs.sp < lo || regs.sp >= hi {
            return RawStack::empty(StackSource::Unreadable);
        }
        let mut copy = vec![0u8; (hi - regs.sp).min(STACK_READ_BYTES) as usize];
        if self.mem.read(regs.sp, &mut copy).is_none() {
            return RawStack::empty(StackSource::Unreadable);
        }
        self.walk_copy(addr, g, regs, &copy)
    }

    /// Walks `g`'s frame-pointer chain from `regs` in `copy` (its stack from `regs.sp` up),
    /// reading the frames above the copy from the target.
    fn walk_copy(&mut self, addr: u64, g: &RawG, regs: Regs, copy: &[u8]) -> RawStack {
        let source = if g.state() == GoroutineState::Syscall {
            StackSource::Syscall
        } else {
            StackSource::Sched
        };
        let (lo, hi) = (g.stack_lo, g.stack_hi);
        let len = copy.len() as u64;
        let record = |fp: u64| -> Option<(u64, u64)> {
            match fp.checked_sub(regs.sp) {
                Some(off) if off + RECORD_BYTES <= len => {
                    let at = off as usize;
                    let w = |i: usize| {
                        u64::from_le_bytes(copy[i..i + 8].try_into().unwrap_or_default())
                    };
                    Some((w(at), w(at + 8)))
                }
                // Above the copy, or (arm64) the first record just below its start.
                _ => Some((self.mem.u64(fp)?, self.mem.u64(fp + 8)?)),
            }
        };
        // arm64 keeps a function's frame record just below its sp: the walk's first record may
        // sit there.
        let floor = match self.binary.arch {
            GoArch::Arm64 => regs.sp.saturating_sub(ARM64_RECORD_BELOW_SP),
            _ => regs.sp,
        };
        let mut stack = RawStack::empty(source);
        stack.sp = regs.sp;
        stack.pcs.push(regs.pc);
        let mut fp = regs.bp;
        while fp != 0 {
            if fp < floor || fp + RECORD_BYTES > hi {
                stack.truncated = true;
                break;
            }
            if stack.pcs.len() >= HEAD_FRAMES {
                match self.deep.continue_walk(CutWalk {
                    g_addr: addr,
                    stack_lo: lo,
                    stack_hi: hi,
                    fp,
                }) {
                    Ok(cont) => {
                        stack.elided = cont.elided;
                        // The continuation gives call sites (return address - 1).
                        stack.tail = cont.tail.iter().map(|a| a + 1).collect();
                    }
                    Err(_) => stack.truncated = true,
                }
                break;
            }
            let Some((next, ret)) = record(fp) else {
                stack.truncated = true;
                break;
            };
            if ret == 0 {
                break;
            }
            stack.pcs.push(ret);
            if next != 0 && next <= fp {
                stack.truncated = true;
                break;
            }
            fp = next;
        }
        stack
    }
}

/// Most bytes between two `g`s read as one range (more is read `g` by `g`).
const MAX_RANGE_GAP: u64 = 128;
/// Most bytes of one range read.
const MAX_RANGE_BYTES: u64 = 256 * 1024;

/// Memory read in one piece, and the indices of the addresses it covers.
#[derive(Debug, PartialEq, Eq)]
struct ReadRange {
    start: u64,
    end: u64,
    members: Vec<usize>,
}

/// Groups `addrs` (each read `len` bytes) into ranges of neighbours.
fn coalesce(addrs: &[u64], len: u64) -> Vec<ReadRange> {
    let mut order: Vec<usize> = (0..addrs.len()).collect();
    order.sort_unstable_by_key(|&i| addrs[i]);
    let mut ranges: Vec<ReadRange> = Vec::new();
    for i in order {
        let (start, end) = (addrs[i], addrs[i].saturating_add(len));
        match ranges.last_mut() {
            Some(r) if start <= r.end + MAX_RANGE_GAP && end - r.start <= MAX_RANGE_BYTES => {
                r.end = r.end.max(end);
                r.members.push(i);
            }
            _ => ranges.push(ReadRange {
                start,
                end,
                members: vec![i],
            }),
        }
    }
    ranges
}

/// The address to look a resume pc up at: the call instruction (pc - 1), except at a
/// function's entry (a goroutine that has not run yet), as Go's traceback does.
fn lookup_pc(symbolizer: &ProcessSymbolizer, pc: u64) -> u64 {
    if symbolizer.go_function_entry(pc) == Some(pc) {
        pc
    } else {
        pc.saturating_sub(1)
    }
}

/// Symbolizes every stack at once and builds the goroutines.
fn resolve(
    raw: Vec<RawGoroutine>,
    binary: &GoBinary,
    mem: &TargetMem,
    mut symbolizer: ProcessSymbolizer,
    now_ns: u64,
) -> Vec<Goroutine> {
    let mut lookup: HashMap<u64, u64> = HashMap::new();
    let mut wanted: HashSet<u64> = HashSet::new();
    for r in &raw {
        for &pc in r.stack.pcs.iter().chain(r.stack.tail.iter()) {
            let at = *lookup
                .entry(pc)
                .or_insert_with(|| lookup_pc(&symbolizer, pc));
            wanted.insert(at);
        }
        for pc in [r.g.gopc, r.g.startpc] {
            if pc != 0 {
                let at = *lookup
                    .entry(pc)
                    .or_insert_with(|| lookup_pc(&symbolizer, pc));
                wanted.insert(at);
            }
        }
    }
    let entries: HashMap<u64, (Option<u64>, bool)> = lookup
        .values()
        .map(|&at| {
            (
                at,
                (
                    symbolizer.go_function_entry(at),
                    symbolizer.go_is_wrapper(at),
                ),
            )
        })
        .collect();
    let addrs: Vec<u64> = wanted.into_iter().collect();
    let symbols = symbolizer.symbolize(&addrs);
    let frames_of = |pc: u64| -> Vec<DumpFrame> {
        let at = lookup.get(&pc).copied().unwrap_or(pc);
        let (entry, wrapper) = entries.get(&at).copied().unwrap_or((None, false));
        let offset = entry.map(|e| pc - e);
        symbols
            .frames(at)
            .iter()
            .map(|f| DumpFrame {
                function: f.function.clone(),
                file: f.file.clone(),
                line: f.line,
                inlined: f.inlined,
                pc,
                offset: if f.inlined { None } else { offset },
                wrapper: wrapper && !f.inlined,
            })
            .collect()
    };
    let created_by_inlined = binary
        .version
        .as_ref()
        .is_some_and(|v| v.family() >= CREATED_BY_INLINED_FROM);
    raw.into_iter()
        .map(|r| {
            let g = r.g;
            let state = g.state();
            let wait_reason = (state == GoroutineState::Waiting && g.waitreason != 0).then(|| {
                binary
                    .waitreason_name(g.waitreason)
                    .map_or_else(|| format!("wait reason {}", g.waitreason), str::to_owned)
            });
            let status_text = wait_reason
                .clone()
                .unwrap_or_else(|| state.name().to_owned());
            let waiting_ns = (matches!(state, GoroutineState::Waiting | GoroutineState::Syscall)
                && g.waitsince > 0)
                .then(|| now_ns.saturating_sub(g.waitsince as u64));
            let start_function = (g.startpc != 0)
                .then(|| frames_of(g.startpc).last().map(|f| f.function.clone()))
                .flatten();
            let system = start_function.as_deref().is_some_and(is_system_start);
            let created_by = (g.gopc != 0)
                .then(|| {
                    let frames = frames_of(g.gopc);
                    let inner = frames.first()?;
                    let named = if created_by_inlined {
                        inner
                    } else {
                        frames.last()?
                    };
                    Some(CreatedBy {
                        function: named.function.clone(),
                        file: inner.file.clone(),
                        line: inner.line,
                        offset: frames.last()?.offset,
                        parent_goid: g.parent_goid.filter(|id| *id != 0),
                    })
                })
                .flatten();
            let labels = match binary.version.as_ref() {
                Some(v) if g.labels != 0 => read_labels(v, g.labels, mem).unwrap_or_default(),
                _ => Vec::new(),
            };
            let stack = Stack {
                source: r.stack.source,
                frames: r.stack.pcs.iter().flat_map(|&pc| frames_of(pc)).collect(),
                elided: r.stack.elided,
                tail: r.stack.tail.iter().flat_map(|&pc| frames_of(pc)).collect(),
                truncated: r.stack.truncated,
            };
            Goroutine {
                goid: g.goid,
                address: r.addr,
                state,
                scan: g.status & GSCAN_BIT != 0,
                wait_reason,
                status_text,
                waiting_ns,
                locked_to_thread: g.lockedm != 0,
                system,
                labels,
                start_function: start_function.map(|f: Arc<str>| f),
                created_by,
                stack,
                inconsistent: r.inconsistent,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_gs_are_read_as_one_range() {
        // Two spans of neighbours, one far away, in any order.
        let addrs = [0x1000 + 448, 0x9000_0000, 0x1000, 0x1000 + 2 * 448];
        let ranges = coalesce(&addrs, 360);
        assert_eq!(
            ranges,
            [
                ReadRange {
                    start: 0x1000,
                    end: 0x1000 + 2 * 448 + 360,
                    members: vec![2, 0, 3],
                },
                ReadRange {
                    start: 0x9000_0000,
                    end: 0x9000_0000 + 360,
                    members: vec![1],
                },
            ]
        );
        // A range never grows past its limit.
        let many: Vec<u64> = (0..2000).map(|i| i * 448).collect();
        let ranges = coalesce(&many, 360);
        assert!(ranges.len() > 1);
        assert!(ranges.iter().all(|r| r.end - r.start <= MAX_RANGE_BYTES));
        assert_eq!(ranges.iter().map(|r| r.members.len()).sum::<usize>(), 2000);
    }
}
