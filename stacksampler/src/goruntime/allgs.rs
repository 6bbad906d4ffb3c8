//! Finding and reading `runtime.allgs`, the runtime's list of every goroutine ever created
//! (dead ones are kept for reuse).
//!
//! The variables are in `.symtab` when the binary has one. Stripped binaries (`-ldflags=-s -w`)
//! keep `.gopclntab`, which locates `runtime.allgadd`, the function that appends to the list:
//! its machine code addresses `allgs` and `allglen` PC-relatively: RIP-relative operands on
//! amd64, `ADRP` + `ADD`/`LDR`/`STR` pairs on arm64. Every address so formed that lands in the
//! binary's data is a candidate, and the live memory of the target decides: `allgs` is the
//! `[]*g` whose first element is goroutine 1, `allglen` the word holding its length. Nothing is
//! guessed: a candidate that does not read as such is dropped.
//!
//! Reads follow the runtime's own lock-free reader (`atomicAllG`): the length first, then the
//! array; entries are only ever appended, so the first `allglen` entries are valid.

use crate::symbolize::{elf::ElfImage, gopclntab::GoPclnTab};

use super::{GoArch, GoBinary, labels::ReadMemory};

/// The function whose code addresses `allgs` and `allglen` in every Go release.
const ALLGADD: &str = "runtime.allgadd";
/// More entries than this in `runtime.allgs` is treated as a misread.
pub const MAX_ALLGS: u64 = 10_000_000;
/// Size of a Go slice header (pointer, length, capacity).
const SLICE_HEADER: usize = 24;
/// Bytes of a RIP-relative displacement (`disp32`).
const DISP32: usize = 4;
/// ModRM bits selecting `[rip + disp32]` (mod = 00, r/m = 101).
const MODRM_RIP_MASK: u8 = 0xC7;
const MODRM_RIP: u8 = 0x05;
/// arm64 instructions are 4 bytes.
const ARM64_INSN: usize = 4;
/// How many instructions after an `ADRP` its page is looked for in a use (Go's linker emits the
/// pair adjacent; the compiler may schedule one instruction between).
const ARM64_PAIR_WINDOW: usize = 3;
/// `ADRP Xd, label`: mask and value of the opcode bits.
const ARM64_ADRP_MASK: u32 = 0x9F00_0000;
const ARM64_ADRP: u32 = 0x9000_0000;
/// `ADD Xd, Xn, #imm{, lsl #12}` (64-bit, immediate).
const ARM64_ADD_IMM_MASK: u32 = 0xFF80_0000;
const ARM64_ADD_IMM: u32 = 0x9100_0000;
/// `LDR`/`STR` (immediate, unsigned offset), any size: bits 29-27 = 111, bits 25-24 = 01.
const ARM64_LDST_UIMM_MASK: u32 = 0x3B00_0000;
const ARM64_LDST_UIMM: u32 = 0x3900_0000;
/// The main goroutine's id: always `allgs[0]`.
const MAIN_GOID: u64 = 1;

/// Where `runtime.allgs` and `runtime.allglen` are in the running target (load bias applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllGs {
    /// `runtime.allgs` (`[]*g` header).
    pub allgs: u64,
    /// `runtime.allglen`, when found (otherwise the slice's own length is used).
    pub allglen: Option<u64>,
    /// How they were found.
    pub source: AllGsSource,
}

/// How [`AllGs`] was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllGsSource {
    /// From `.symtab`.
    SymbolTable,
    /// From the machine code of `runtime.allgadd` (stripped binaries).
    Code,
}

/// Why the goroutine list could not be found or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllGsError {
    /// Stripped and neither amd64 nor arm64: the code scan reads their addressing only.
    #[error(
        "runtime.allgs is not in the symbol table and finding it from code needs amd64 or arm64"
    )]
    UnsupportedArch,
    /// Stripped, and the Go table has no `runtime.allgadd`.
    #[error("runtime.allgs is not in the symbol table and the Go function table has no {ALLGADD}")]
    NoAllgadd,
    /// No candidate of the code read as the goroutine list.
    #[error("no address referenced by {ALLGADD} reads as runtime.allgs")]
    NotFound,
    /// A read of the target failed (it exited, or the address is wrong).
    #[error("cannot read the target's memory at {0:#x}")]
    Unreadable(u64),
    /// The list read is implausible.
    #[error("runtime.allgs reads as {0} entries (more than {MAX_ALLGS}): a misread")]
    TooLong(u64),
}

fn read_u64(mem: &dyn ReadMemory, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read(addr, &mut b)?;
    Some(u64::from_le_bytes(b))
}

/// Finds the goroutine list of `binary` running with load bias `bias` (0 unless PIE).
/// `image` is the binary's file, needed only when it has no symbol table.
pub fn locate(
    binary: &GoBinary,
    image: Option<&ElfImage>,
    bias: u64,
    goid_offset: u32,
    mem: &dyn ReadMemory,
) -> Result<AllGs, AllGsError> {
    if let Some(allgs) = binary.symbols.allgs {
        return Ok(AllGs {
            allgs: allgs + bias,
            allglen: binary.symbols.allglen.map(|a| a + bias),
            source: AllGsSource::SymbolTable,
        });
    }
    let image = image.ok_or(AllGsError::NoAllgadd)?;
    let scan = AllgaddScan::of(image, binary.arch)?;
    find_in_code(&scan.code, &scan.data_ranges, bias, goid_offset, mem)
}

/// What a stripped binary offers to find the goroutine list: the code of `runtime.allgadd`
/// (located through `.gopclntab`) and the binary's data segments.
#[derive(Clone, Debug)]
pub struct AllgaddScan<'a> {
    /// The function's machine code.
    pub code: MachineCode<'a>,
    /// Link-time `[start, end)` of every non-executable loaded segment.
    pub data_ranges: Vec<(u64, u64)>,
}

impl<'a> AllgaddScan<'a> {
    /// Locates `runtime.allgadd` in `image`, a Go binary built for `arch`.
    pub fn of(image: &'a ElfImage, arch: GoArch) -> Result<Self, AllGsError> {
        if !matches!(arch, GoArch::Amd64 | GoArch::Arm64) {
            return Err(AllGsError::UnsupportedArch);
        }
        let table = GoPclnTab::locate(image).map_err(|_| AllGsError::NoAllgadd)?;
        let (start, end) = table.function_range(ALLGADD).ok_or(AllGsError::NoAllgadd)?;
        let len = usize::try_from(end.saturating_sub(start)).map_err(|_| AllGsError::NoAllgadd)?;
        let bytes = image.read_vaddr(start, len).ok_or(AllGsError::NoAllgadd)?;
        let data_ranges = image
            .segments()
            .iter()
            .filter(|s| !s.executable)
            .map(|s| (s.vaddr, s.vaddr.saturating_add(s.mem_size)))
            .collect();
        Ok(Self {
            code: MachineCode {
                arch,
                bytes,
                vaddr: start,
            },
            data_ranges,
        })
    }

    /// The candidate addresses of `allgs` and `allglen` (link-time), first referenced first.
    pub fn candidates(&self) -> Vec<u64> {
        self.code.referenced_data(&self.data_ranges)
    }
}

/// A function's machine code.
#[derive(Clone, Copy, Debug)]
pub struct MachineCode<'a> {
    /// Its instruction set.
    pub arch: GoArch,
    /// The bytes.
    pub bytes: &'a [u8],
    /// Link-time address of the first byte.
    pub vaddr: u64,
}

impl MachineCode<'_> {
    /// The 8-byte-aligned addresses inside `data_ranges` that the code forms PC-relatively,
    /// first seen first, each once.
    pub fn referenced_data(&self, data_ranges: &[(u64, u64)]) -> Vec<u64> {
        let formed = match self.arch {
            GoArch::Amd64 => rip_relative_targets(self.bytes, self.vaddr),
            GoArch::Arm64 => adrp_targets(self.bytes, self.vaddr),
            GoArch::Other => Vec::new(),
        };
        let mut out = Vec::new();
        for target in formed {
            if target.is_multiple_of(8)
                && data_ranges
                    .iter()
                    .any(|&(lo, hi)| target >= lo && target < hi)
                && !out.contains(&target)
            {
                out.push(target);
            }
        }
        out
    }
}

/// Finds `allgs` and `allglen` among the data words that `code` (the machine code of
/// `runtime.allgadd`) addresses inside `data_ranges`, reading the candidates in `mem` at their
/// address plus `bias`.
pub fn find_in_code(
    code: &MachineCode<'_>,
    data_ranges: &[(u64, u64)],
    bias: u64,
    goid_offset: u32,
    mem: &dyn ReadMemory,
) -> Result<AllGs, AllGsError> {
    let candidates = code.referenced_data(data_ranges);
    let allgs = candidates
        .iter()
        .copied()
        .find(|&c| is_allgs(mem, c.wrapping_add(bias), goid_offset))
        .ok_or(AllGsError::NotFound)?;
    let (_, slice_len) = slice_header(mem, allgs.wrapping_add(bias)).ok_or(AllGsError::NotFound)?;
    // `allglen` is another referenced word holding the same length (outside the slice header).
    let allglen = candidates
        .iter()
        .copied()
        .filter(|&c| c < allgs || c >= allgs.saturating_add(SLICE_HEADER as u64))
        .find(|&c| read_u64(mem, c.wrapping_add(bias)) == Some(slice_len))
        .map(|c| c.wrapping_add(bias));
    Ok(AllGs {
        allgs: allgs.wrapping_add(bias),
        allglen,
        source: AllGsSource::Code,
    })
}

/// The addresses a `[rip + disp32]` operand in `code` (at virtual address `base`) can designate,
/// assuming the displacement ends the instruction (true of the loads, stores, `lea` and `xchg`
/// that address these variables). Not a disassembler: every ModRM-shaped byte is tried, and the
/// live memory rejects what is not a real operand.
fn rip_relative_targets(code: &[u8], base: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for at in 1..code.len().saturating_sub(DISP32 - 1) {
        if code[at - 1] & MODRM_RIP_MASK != MODRM_RIP {
            continue;
        }
        let Some(bytes) = code.get(at..at + DISP32) else {
            break;
        };
        let disp = i32::from_le_bytes(bytes.try_into().unwrap_or_default());
        let next = base.wrapping_add((at + DISP32) as u64);
        out.push(next.wrapping_add_signed(i64::from(disp)));
    }
    out
}

/// The addresses `code` (arm64, at virtual address `base`) forms with an `ADRP` and a following
/// `ADD` immediate or `LDR`/`STR` with an unsigned offset on the same register: the page of the
/// one plus the low 12 bits (scaled by the access size for a load or store) of the other.
fn adrp_targets(code: &[u8], base: u64) -> Vec<u64> {
    let insns: Vec<u32> = code
        .chunks_exact(ARM64_INSN)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let mut out = Vec::new();
    for (i, &insn) in insns.iter().enumerate() {
        if insn & ARM64_ADRP_MASK != ARM64_ADRP {
            continue;
        }
        let rd = insn & 0x1f;
        let immlo = u64::from((insn >> 29) & 0x3);
        let immhi = u64::from((insn >> 5) & 0x7_ffff);
        // A signed 21-bit count of 4 KiB pages.
        let pages = (((immhi << 2) | immlo) << 43) as i64 >> 43;
        let pc = base.wrapping_add((i * ARM64_INSN) as u64);
        let page = (pc & !0xfff).wrapping_add_signed(pages.wrapping_mul(4096));
        for &next in insns.iter().skip(i + 1).take(ARM64_PAIR_WINDOW) {
            let rn = (next >> 5) & 0x1f;
            let imm12 = u64::from((next >> 10) & 0xfff);
            if next & ARM64_ADD_IMM_MASK == ARM64_ADD_IMM && rn == rd {
                let shift = if (next >> 22) & 1 == 1 { 12 } else { 0 };
                out.push(page.wrapping_add(imm12 << shift));
                break;
            }
            if next & ARM64_LDST_UIMM_MASK == ARM64_LDST_UIMM && rn == rd {
                let size = next >> 30;
                out.push(page.wrapping_add(imm12 << size));
                break;
            }
        }
    }
    out
}

/// A Go slice header's (pointer, length) at `addr`, if plausible.
fn slice_header(mem: &dyn ReadMemory, addr: u64) -> Option<(u64, u64)> {
    let mut b = [0u8; SLICE_HEADER];
    mem.read(addr, &mut b)?;
    let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let (ptr, len, cap) = (word(0), word(1), word(2));
    (ptr != 0 && ptr.is_multiple_of(8) && len > 0 && len <= cap && cap <= MAX_ALLGS)
        .then_some((ptr, len))
}

/// Whether `addr` holds a `[]*g` whose first goroutine is the main one.
fn is_allgs(mem: &dyn ReadMemory, addr: u64, goid_offset: u32) -> bool {
    slice_header(mem, addr)
        .and_then(|(ptr, _)| read_u64(mem, ptr))
        .filter(|g| *g != 0)
        .and_then(|g| read_u64(mem, g.checked_add(u64::from(goid_offset))?))
        == Some(MAIN_GOID)
}

/// The `g` addresses of every goroutine in the list (dead ones included), read as the
/// runtime's lock-free reader does: length first, then the array.
pub fn read_g_pointers(mem: &dyn ReadMemory, at: &AllGs) -> Result<Vec<u64>, AllGsError> {
    let len_from_global = match at.allglen {
        Some(a) => Some(read_u64(mem, a).ok_or(AllGsError::Unreadable(a))?),
        None => None,
    };
    let ptr = read_u64(mem, at.allgs).ok_or(AllGsError::Unreadable(at.allgs))?;
    let len_at = at.allgs.wrapping_add(8);
    let slice_len = read_u64(mem, len_at).ok_or(AllGsError::Unreadable(len_at))?;
    let n = len_from_global.map_or(slice_len, |l| l.min(slice_len));
    if n > MAX_ALLGS {
        return Err(AllGsError::TooLong(n));
    }
    if n == 0 || ptr == 0 {
        return Ok(Vec::new());
    }
    let mut bytes = vec![0u8; n as usize * 8];
    mem.read(ptr, &mut bytes)
        .ok_or(AllGsError::Unreadable(ptr))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .filter(|&g| g != 0)
        .collect())
}

/// Goroutines not dead in the list (`atomicstatus` at `status_offset`).
pub fn count_live(mem: &dyn ReadMemory, at: &AllGs, status_offset: u32) -> Result<u64, AllGsError> {
    let gs = read_g_pointers(mem, at)?;
    let mut live = 0;
    for g in gs {
        let mut s = [0u8; 4];
        let Some(at) = g.checked_add(u64::from(status_offset)) else {
            continue;
        };
        if mem.read(at, &mut s).is_some() {
            let state = super::state::GoroutineState::from_raw(u32::from_le_bytes(s));
            if state != super::state::GoroutineState::Dead {
                live += 1;
            }
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rip_relative_targets_are_decoded_and_filtered() {
        // mov rax, [rip+0x10] at 0x1000 (7 bytes): target 0x1007 + 0x10 = 0x1017 (unaligned);
        // mov [rip+0xff9], rcx at 0x1007: 0x100e + 0xff9 = 0x2007 (unaligned, dropped);
        // lea rdx, [rip+0xff2] at 0x100e: 0x1015 + 0xff3 = 0x2008.
        let code = [
            0x48, 0x8b, 0x05, 0x10, 0, 0, 0, // mov
            0x48, 0x89, 0x0d, 0xf9, 0x0f, 0, 0, // mov
            0x48, 0x8d, 0x15, 0xf3, 0x0f, 0, 0, // lea
        ];
        let code = MachineCode {
            arch: GoArch::Amd64,
            bytes: &code,
            vaddr: 0x1000,
        };
        assert_eq!(code.referenced_data(&[(0x2000, 0x3000)]), vec![0x2008]);
        assert!(code.referenced_data(&[(0x5000, 0x6000)]).is_empty());
    }

    #[test]
    fn adrp_pairs_are_decoded_and_filtered() {
        // At 0x10000: adrp x1, 0x12000 (+2 pages); add x1, x1, #0x1c8 -> 0x121c8.
        // At 0x10008: adrp x2, 0xf000 (-1 page); nop; ldr x3, [x2, #0x10] (8-byte, scaled x8)
        // -> 0xf080. At 0x10014: adrp x4 with no use: nothing.
        let adrp = |rd: u32, pages: i32| {
            let imm = (pages as u32) & 0x1f_ffff;
            0x9000_0000 | ((imm & 3) << 29) | ((imm >> 2) << 5) | rd
        };
        let add = |rd: u32, rn: u32, imm: u32| 0x9100_0000 | (imm << 10) | (rn << 5) | rd;
        let ldr64 = |rt: u32, rn: u32, scaled: u32| 0xF940_0000 | (scaled << 10) | (rn << 5) | rt;
        let nop = 0xD503_201F;
        let insns = [
            adrp(1, 2),
            add(1, 1, 0x1c8),
            adrp(2, -1),
            nop,
            ldr64(3, 2, 0x10),
            adrp(4, 3),
        ];
        let bytes: Vec<u8> = insns.iter().flat_map(|i| i.to_le_bytes()).collect();
        let code = MachineCode {
            arch: GoArch::Arm64,
            bytes: &bytes,
            vaddr: 0x10000,
        };
        assert_eq!(
            code.referenced_data(&[(0xf000, 0x13000)]),
            vec![0x121c8, 0xf080]
        );
        assert_eq!(code.referenced_data(&[(0x12000, 0x13000)]), vec![0x121c8]);
    }

    struct Mem(Vec<(u64, Vec<u8>)>);
    impl ReadMemory for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
            self.0.iter().find_map(|(base, data)| {
                let off = usize::try_from(addr.checked_sub(*base)?).ok()?;
                buf.copy_from_slice(data.get(off..off + buf.len())?);
                Some(())
            })
        }
    }

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn reads_the_list_bounded_by_allglen() {
        let mem = Mem(vec![
            (0x1000, words(&[0x2000, 3, 4])), // allgs
            (0x1100, words(&[2])),            // allglen lags the slice
            (0x2000, words(&[0x3000, 0x3100, 0x3200])),
            (0x3000, words(&[0, MAIN_GOID])), // g with goid at offset 8
        ]);
        let at = AllGs {
            allgs: 0x1000,
            allglen: Some(0x1100),
            source: AllGsSource::SymbolTable,
        };
        assert_eq!(read_g_pointers(&mem, &at).unwrap(), vec![0x3000, 0x3100]);
        assert!(is_allgs(&mem, 0x1000, 8));
        assert!(!is_allgs(&mem, 0x1000, 0));
        assert!(!is_allgs(&mem, 0x1100, 8));
        let bad = AllGs {
            allgs: 0x9000,
            ..at
        };
        assert!(matches!(
            read_g_pointers(&mem, &bad),
            Err(AllGsError::Unreadable(_))
        ));
    }
}
