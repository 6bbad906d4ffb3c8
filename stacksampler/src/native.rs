//! Native (C/C++) frames of mixed Go and C stacks, unwound in user space.
//!
//! The kernel walks Go frames by frame pointers; C code built without them (cgo's `-O2`,
//! Debian's libc) is sent as registers and a bounded copy of its stack
//! ([`NativeStack`]), as `perf --call-graph dwarf` does. This module unwinds that copy with the
//! mapped objects' call-frame information (`.eh_frame` through `.eh_frame_hdr`, else
//! `.debug_frame`; gimli's unwinder), steps over the Go assembly frames of the cgo glue
//! (`crosscall2`) with `.gopclntab`'s stack-pointer deltas, and stops where the C code returns
//! into Go (`runtime.asmcgocall`): the kernel walked the Go frames from there on. The result
//! is one stack: Go frames, C frames, Go frames (see docs/native-unwinding.md).

use std::{collections::HashMap, sync::Arc};

use gimli::{
    BaseAddresses, CfaRule, DebugFrame, EhFrame, EhFrameHdr, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use stacksampler_common::{NATIVE_STACK_BYTES, NativeConfig};

use crate::{
    sample::{NativeStack, NativeStart, Sample},
    symbolize::{ModuleSymbolizer, ProcessSymbolizer},
};

/// Most native frames unwound per sample; a deeper native part is cut and marked.
pub const MAX_NATIVE_FRAMES: usize = 512;

/// The Go runtime's cgo crossing points, by their `.gopclntab` names.
const CGOCALLBACK: &str = "runtime.cgocallback";
const CGOCALL: &str = "runtime.cgocall";
/// Linked only into binaries that use cgo (package runtime/cgo).
const CROSSCALL2: &str = "crosscall2";

/// A frame record of `runtime.cgocallbackg` is 16 bytes (saved frame pointer, return address);
/// `cgocallback` pushed its caller's return address on the goroutine stack above the frame it
/// opened there (8 bytes).
const CALLBACK_RECORD_BYTES: u32 = 16 + 8;

/// The kernel program's view of the target's Go text and cgo crossings, from `.gopclntab`;
/// `None` for a binary without cgo (its samples are walked as before, at no extra cost) or on
/// an architecture whose native unwinding is not implemented (arm64).
pub fn kernel_config(symbolizer: &ProcessSymbolizer) -> Option<NativeConfig> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let ranges = symbolizer.go_ranges(&[CROSSCALL2, CGOCALLBACK, CGOCALL])?;
    let [Some(_), callback, cgocall] = ranges.functions[..] else {
        return None;
    };
    let mut config = NativeConfig {
        go_text_lo: ranges.text.0,
        go_text_hi: ranges.text.1,
        stack_bytes: NATIVE_STACK_BYTES as u32,
        ..NativeConfig::default()
    };
    // Crossing a callback needs both frame sizes; without them only cgo calls are crossed.
    if let (Some(cb), Some(call)) = (callback, cgocall)
        && let (Some(cb_frame), Some(call_frame)) = (
            symbolizer.go_max_frame_size(cb.0),
            symbolizer.go_max_frame_size(call.0),
        )
    {
        config.cgocallback_lo = cb.0;
        config.cgocallback_hi = cb.1;
        config.callback_sched_offset = cb_frame.saturating_add(CALLBACK_RECORD_BYTES);
        config.cgocall_frame = call_frame;
    }
    Some(config)
}

/// How one frame is left: where its canonical frame address (CFA, the caller's stack pointer)
/// is, and where the return address and the caller's frame pointer were saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameRule {
    cfa: Cfa,
    /// Offset from the CFA of the saved return address.
    ra: i64,
    /// Offset from the CFA of the saved frame pointer (`None`: unchanged).
    fp: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cfa {
    /// Stack pointer + offset.
    Sp(i64),
    /// Frame pointer + offset.
    Fp(i64),
}

/// Registers of one frame during the unwind.
#[derive(Clone, Copy, Debug)]
struct Regs {
    pc: u64,
    sp: u64,
    fp: u64,
}

/// The native frames of one sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NativeFrames {
    /// Call-site addresses (return address - 1), innermost first; with
    /// [`NativeStart::CgoCallback`] the first is the call site of the start pc itself.
    pub frames: Vec<u64>,
    /// The unwind stopped before reaching Go code or the thread's first frame.
    pub cut: bool,
}

/// What the native unwinding of a run did (`--verbose`, the benchmark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NativeStats {
    /// Samples that had a native part.
    pub samples: u64,
    /// Native frames found.
    pub frames: u64,
    /// Native parts cut before they reached Go code again.
    pub cut: u64,
    /// Time spent unwinding, in nanoseconds.
    pub unwind_ns: u64,
}

/// Unwinds native stacks, caching the frame rule of each address.
#[derive(Default)]
pub struct NativeUnwinder {
    pub stats: NativeStats,
    /// Rules by (module identity, ELF virtual address); `None`: no unwind information.
    rules: HashMap<(usize, u64), Option<FrameRule>>,
    context: Option<Box<UnwindContext<usize>>>,
    /// Go text of the image, as the kernel was told.
    go_text: (u64, u64),
}

impl NativeUnwinder {
    /// An unwinder for the image whose Go text is `[lo, hi)`.
    pub fn new(config: &NativeConfig) -> Self {
        Self {
            go_text: (config.go_text_lo, config.go_text_hi),
            ..Self::default()
        }
    }

    fn in_go(&self, pc: u64) -> bool {
        pc >= self.go_text.0 && pc < self.go_text.1
    }

    /// Inserts the native frames of `sample` (when it has a native part) at their place.
    pub fn complete(&mut self, sample: &mut Sample, symbolizer: &ProcessSymbolizer) {
        let Some(native) = sample.native.take() else {
            return;
        };
        let started = std::time::Instant::now();
        let at = native.at.min(sample.frames.len());
        let found = self.unwind(&native, symbolizer);
        let n = found.frames.len();
        self.stats.samples += 1;
        self.stats.frames += n as u64;
        self.stats.cut += u64::from(found.cut);
        sample.frames.splice(at..at, found.frames);
        if let Some(gap) = sample.gap.as_mut()
            && gap.at >= at
        {
            gap.at += n;
        }
        if found.cut {
            sample.native_cut = Some(at + n);
        }
        self.stats.unwind_ns += started.elapsed().as_nanos() as u64;
    }

    /// The native frames of `stack`.
    pub fn unwind(&mut self, stack: &NativeStack, symbolizer: &ProcessSymbolizer) -> NativeFrames {
        let mut out = NativeFrames::default();
        let mut regs = Regs {
            pc: stack.pc,
            sp: stack.sp,
            fp: stack.fp,
        };
        // The interrupted pc is looked up as it is, a return address at its call instruction.
        let mut is_return = match stack.start {
            NativeStart::CgoCall => false,
            NativeStart::CgoCallback => {
                out.frames.push(stack.pc.saturating_sub(1));
                true
            }
        };
        let read = |addr: u64| -> Option<u64> {
            let off = usize::try_from(addr.checked_sub(stack.sp)?).ok()?;
            let bytes = stack.stack.get(off..off.checked_add(8)?)?;
            Some(u64::from_ne_bytes(bytes.try_into().ok()?))
        };
        loop {
            if out.frames.len() >= MAX_NATIVE_FRAMES {
                out.cut = true;
                return out;
            }
            let lookup = if is_return {
                regs.pc.saturating_sub(1)
            } else {
                regs.pc
            };
            let Some(next) = self.step(regs, lookup, symbolizer, &read) else {
                out.cut = true;
                return out;
            };
            // The thread's first frame (`clone`, `_start`) has no caller.
            if next.pc == 0 {
                return out;
            }
            // Back in Go (asmcgocall): the kernel walked the Go frames from here on. (The Go
            // assembly the C side calls, crosscall2, is only ever a start frame: it calls Go.)
            if self.in_go(next.pc) {
                return out;
            }
            out.frames.push(next.pc - 1);
            regs = next;
            is_return = true;
        }
    }

    /// The caller's registers of the frame at `regs` (`lookup`: its address for the tables).
    fn step(
        &mut self,
        regs: Regs,
        lookup: u64,
        symbolizer: &ProcessSymbolizer,
        read: &impl Fn(u64) -> Option<u64>,
    ) -> Option<Regs> {
        if self.in_go(lookup) {
            // Go assembly (crosscall2): its stack-pointer delta, return address above it, and
            // the frame pointer it keeps for the C caller untouched.
            let size = u64::from(symbolizer.go_frame_size_at(lookup)?);
            let ra_at = regs.sp.checked_add(size)?;
            return Some(Regs {
                pc: read(ra_at)?,
                sp: ra_at.checked_add(8)?,
                fp: regs.fp,
            });
        }
        let rule = self.rule(lookup, symbolizer)?;
        let cfa = match rule.cfa {
            Cfa::Sp(off) => regs.sp.checked_add_signed(off)?,
            Cfa::Fp(off) => regs.fp.checked_add_signed(off)?,
        };
        let pc = read(cfa.checked_add_signed(rule.ra)?)?;
        let fp = match rule.fp {
            // In an epilogue the slot can be below the stack pointer: already popped, so the
            // register holds the caller's value again.
            Some(off) => {
                let at = cfa.checked_add_signed(off)?;
                if at < regs.sp { regs.fp } else { read(at)? }
            }
            None => regs.fp,
        };
        // Callers live at higher addresses.
        if cfa <= regs.sp {
            return None;
        }
        Some(Regs { pc, sp: cfa, fp })
    }

    /// The frame rule at runtime address `addr`, from its object's call-frame information.
    fn rule(&mut self, addr: u64, symbolizer: &ProcessSymbolizer) -> Option<FrameRule> {
        let (module, vaddr) = symbolizer.module_at(addr)?;
        let key = (Arc::as_ptr(module) as usize, vaddr);
        if let Some(rule) = self.rules.get(&key) {
            return *rule;
        }
        let context = self
            .context
            .get_or_insert_with(|| Box::new(UnwindContext::new()));
        let rule = frame_rule(module, vaddr, context);
        self.rules.insert(key, rule);
        rule
    }
}

/// The frame rule at `vaddr` of `module`: `.eh_frame` (through `.eh_frame_hdr`'s table when
/// present), else `.debug_frame`.
fn frame_rule(
    module: &ModuleSymbolizer,
    vaddr: u64,
    context: &mut UnwindContext<usize>,
) -> Option<FrameRule> {
    let image = module.image();
    let section = |name: &str| {
        let info = image.section(name)?;
        Some((info.addr, image.section_data(info)?))
    };
    let mut bases = BaseAddresses::default();
    if let Some(text) = image.section(".text") {
        bases = bases.set_text(text.addr);
    }
    if let Some((eh_addr, eh_data)) = section(".eh_frame") {
        let eh_frame = EhFrame::new(eh_data, LittleEndian);
        let bases = bases.clone().set_eh_frame(eh_addr);
        let row = match section(".eh_frame_hdr") {
            Some((hdr_addr, hdr_data)) => {
                let bases = bases.clone().set_eh_frame_hdr(hdr_addr);
                let parsed = EhFrameHdr::new(hdr_data, LittleEndian)
                    .parse(&bases, 8)
                    .ok()?;
                match parsed.table() {
                    Some(table) => table
                        .unwind_info_for_address(
                            &eh_frame,
                            &bases,
                            context,
                            vaddr,
                            EhFrame::cie_from_offset,
                        )
                        .ok()
                        .and_then(to_rule),
                    None => eh_frame
                        .unwind_info_for_address(&bases, context, vaddr, EhFrame::cie_from_offset)
                        .ok()
                        .and_then(to_rule),
                }
            }
            None => eh_frame
                .unwind_info_for_address(&bases, context, vaddr, EhFrame::cie_from_offset)
                .ok()
                .and_then(to_rule),
        };
        if row.is_some() {
            return row;
        }
    }
    if let Some((_, data)) = section(".debug_frame") {
        let debug_frame = DebugFrame::new(data, LittleEndian);
        let row = debug_frame
            .unwind_info_for_address(&bases, context, vaddr, DebugFrame::cie_from_offset)
            .ok()
            .and_then(to_rule);
        if row.is_some() {
            return row;
        }
    }
    // PLT stubs (`.plt`, `.plt.sec`, `.plt.got`) often have no FDE; they jump without touching
    // the stack, so the return address is at the stack pointer.
    let in_plt = image.sections().iter().any(|s| {
        s.name.starts_with(".plt") && vaddr >= s.addr && vaddr < s.addr.saturating_add(s.size)
    });
    in_plt.then_some(PLT_RULE)
}

/// The frame rule of a PLT stub: the caller's return address is at the stack pointer.
const PLT_RULE: FrameRule = FrameRule {
    cfa: Cfa::Sp(8),
    ra: -8,
    fp: None,
};

fn to_rule(row: &gimli::UnwindTableRow<usize>) -> Option<FrameRule> {
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RSP => {
            Cfa::Sp(*offset)
        }
        CfaRule::RegisterAndOffset { register, offset } if *register == X86_64::RBP => {
            Cfa::Fp(*offset)
        }
        _ => return None,
    };
    let ra = match row.register(X86_64::RA) {
        RegisterRule::Offset(off) => off,
        _ => return None,
    };
    let fp = match row.register(X86_64::RBP) {
        RegisterRule::Offset(off) => Some(off),
        RegisterRule::Undefined | RegisterRule::SameValue => None,
        _ => return None,
    };
    Some(FrameRule { cfa, ra, fp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Gap;

    fn native(start: NativeStart, at: usize, stack: Vec<u8>) -> NativeStack {
        NativeStack {
            start,
            at,
            pc: 0x1000,
            sp: 0x7000,
            fp: 0,
            lr: 0,
            stack,
        }
    }

    #[test]
    fn unwind_without_unwind_information_is_cut_where_it_stopped() {
        let symbolizer = ProcessSymbolizer::empty(0);
        let mut unwinder = NativeUnwinder::default();
        let mut sample = Sample {
            frames: vec![0x1000, 0x2000, 0x3000],
            gap: Some(Gap { at: 2, frames: 7 }),
            native: Some(native(NativeStart::CgoCall, 1, vec![0; 64])),
            ..Sample::default()
        };
        unwinder.complete(&mut sample, &symbolizer);
        assert_eq!(sample.frames, [0x1000, 0x2000, 0x3000]);
        assert_eq!(sample.native_cut, Some(1));
        assert!(sample.native.is_none());
        assert_eq!(unwinder.stats.samples, 1);
        assert_eq!(unwinder.stats.cut, 1);

        // A callback's start pc is a return address into C: its call site is the first frame.
        let mut sample = Sample {
            frames: vec![0x1000, 0x2000],
            gap: Some(Gap { at: 2, frames: 7 }),
            native: Some(native(NativeStart::CgoCallback, 2, Vec::new())),
            ..Sample::default()
        };
        unwinder.complete(&mut sample, &symbolizer);
        assert_eq!(sample.frames, [0x1000, 0x2000, 0xfff]);
        assert_eq!(sample.gap, Some(Gap { at: 3, frames: 7 }));
        assert_eq!(sample.native_cut, Some(3));
    }

    #[test]
    fn go_assembly_frames_step_by_their_stack_delta() {
        // Inside Go's text (crosscall2) the unwinder uses .gopclntab: without a table for the
        // address there is no step, and the unwind is cut rather than guessed.
        let symbolizer = ProcessSymbolizer::empty(0);
        let mut unwinder = NativeUnwinder::new(&NativeConfig {
            go_text_lo: 0x800,
            go_text_hi: 0x2000,
            ..NativeConfig::default()
        });
        let found = unwinder.unwind(
            &native(NativeStart::CgoCallback, 0, vec![0; 32]),
            &symbolizer,
        );
        assert_eq!(found.frames, [0xfff]);
        assert!(found.cut);
    }
}
