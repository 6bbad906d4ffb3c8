//! Finding and reading `runtime.allgs`, the runtime's list of every goroutine ever created
//! (dead ones are kept for reuse).
//!
//! The variables are in `.symtab` when the binary has one. Stripped binaries (`-ldflags=-s -w`)
//! keep `.gopclntab`, which locates `runtime.allgadd`, the function that appends to the list:
//! its machine code addresses `allgs` and `allglen` RIP-relative (amd64), so every 32-bit
//! displacement in it that lands in the binary's data is a candidate, and the live memory of the
//! target decides: `allgs` is the `[]*g` whose first element is goroutine 1, `allglen` the word
//! holding its length. Nothing is guessed: a candidate that does not read as such is dropped.
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
    /// Stripped and not amd64: the code scan reads amd64 addressing only.
    #[error("runtime.allgs is not in the symbol table and finding it from code needs amd64")]
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
    if binary.arch != GoArch::Amd64 {
        return Err(AllGsError::UnsupportedArch);
    }
    let image = image.ok_or(AllGsError::NoAllgadd)?;
    let table = GoPclnTab::locate(image).map_err(|_| AllGsError::NoAllgadd)?;
    let (start, end) = table.function_range(ALLGADD).ok_or(AllGsError::NoAllgadd)?;
    let len = usize::try_from(end.saturating_sub(start)).map_err(|_| AllGsError::NoAllgadd)?;
    let code = image.read_vaddr(start, len).ok_or(AllGsError::NoAllgadd)?;
    let data_ranges: Vec<(u64, u64)> = image
        .segments()
        .iter()
        .filter(|s| !s.executable)
        .map(|s| (s.vaddr, s.vaddr.saturating_add(s.mem_size)))
        .collect();
    find_in_code(code, start, &data_ranges, bias, goid_offset, mem)
}

/// Finds `allgs` and `allglen` among the data words that `code` (the machine code of
/// `runtime.allgadd` at link-time address `code_vaddr`) addresses RIP-relative inside
/// `data_ranges`, reading the candidates in `mem` at their address plus `bias`.
pub fn find_in_code(
    code: &[u8],
    code_vaddr: u64,
    data_ranges: &[(u64, u64)],
    bias: u64,
    goid_offset: u32,
    mem: &dyn ReadMemory,
) -> Result<AllGs, AllGsError> {
    let candidates = rip_relative_targets(code, code_vaddr, data_ranges);
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

/// The 8-byte-aligned addresses inside `data_ranges` that a `[rip + disp32]` operand in `code`
/// (at virtual address `base`) can designate, assuming the displacement ends the instruction
/// (true of the loads, stores, `lea` and `xchg` that address these variables), first seen first.
fn rip_relative_targets(code: &[u8], base: u64, data_ranges: &[(u64, u64)]) -> Vec<u64> {
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
        let target = next.wrapping_add_signed(i64::from(disp));
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
        let targets = rip_relative_targets(&code, 0x1000, &[(0x2000, 0x3000)]);
        assert_eq!(targets, vec![0x2008]);
        assert!(rip_relative_targets(&code, 0x1000, &[(0x5000, 0x6000)]).is_empty());
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
