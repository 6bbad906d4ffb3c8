//! ELF images: where each virtual address lives in the file, relocated pointers, and the
//! `.symtab` / `.dynsym` symbol tables used for native code (libc, cgo, the vdso).
//!
//! The image owns the file's bytes, so symbolization keeps working after the target exits or the
//! file is replaced on disk: either a copy in memory ([`ElfImage::parse`]) or a private read-only
//! mapping of the file ([`ElfImage::map_file`], what opening a file does). A mapping costs no
//! read at open time and only the pages lookups touch (a Go lookup touches `.gopclntab`, about a
//! third of the binary); it pins the inode, so deleting or renaming over the file (how builds,
//! package managers and container layers replace files) does not affect it. What it does not
//! survive is the file being truncated in place while mapped (`SIGBUS` on the next access to a
//! page past the new end): the kernel refuses writes to a running executable (`ETXTBSY`), and a
//! library overwritten in place crashes its own users as well.

use std::{
    borrow::Cow, collections::HashMap, fs::File, os::fd::AsRawFd, sync::Arc, sync::OnceLock,
};

use bytes::Bytes;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, RelocationFlags, SectionKind};

use super::FormatError;

/// `R_X86_64_RELATIVE`: the word at the site holds `load bias + addend`.
const R_X86_64_RELATIVE: u32 = 8;
/// `R_AARCH64_RELATIVE`.
const R_AARCH64_RELATIVE: u32 = 1027;
/// `PF_X`: the segment is executable.
const PF_X: u32 = 1;

/// Largest size a compressed section may declare for its decompressed bytes: the size comes
/// from the file, and `object` allocates it before decompressing.
pub const MAX_DECOMPRESSED_SECTION: u64 = 1 << 30;
/// Largest ratio of decompressed to compressed bytes believed: deflate cannot exceed 1032:1, and
/// zstd-compressed DWARF stays far below it.
const MAX_COMPRESSION_RATIO: u64 = 1032;

/// Why a section's bytes could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SectionDataError {
    /// The compression header or the compressed stream is malformed.
    #[error("{0}")]
    Object(#[from] object::Error),
    /// The compression header declares more bytes than the file can plausibly hold.
    #[error(
        "declares {declared} decompressed bytes from {compressed} compressed (at most {limit})"
    )]
    TooLarge {
        /// Decompressed size the header declares.
        declared: u64,
        /// Compressed bytes in the file.
        compressed: u64,
        /// The bound it exceeds.
        limit: u64,
    },
}

/// A section's bytes, decompressed when the section is compressed (`SHF_COMPRESSED` or
/// `.zdebug_*`), refusing a declared size past [`MAX_DECOMPRESSED_SECTION`] or
/// [`MAX_COMPRESSION_RATIO`] times the compressed bytes.
pub fn section_bytes<'data, S: ObjectSection<'data>>(
    section: &S,
) -> Result<Cow<'data, [u8]>, SectionDataError> {
    let compressed = section.compressed_data()?;
    if compressed.format != object::CompressionFormat::None {
        let stored = compressed.data.len() as u64;
        let limit = MAX_DECOMPRESSED_SECTION.min(stored.saturating_mul(MAX_COMPRESSION_RATIO));
        if compressed.uncompressed_size > limit {
            return Err(SectionDataError::TooLarge {
                declared: compressed.uncompressed_size,
                compressed: stored,
                limit,
            });
        }
    }
    Ok(compressed.decompress()?)
}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Virtual address (`p_vaddr`).
    pub vaddr: u64,
    /// Size in memory (`p_memsz`).
    pub mem_size: u64,
    /// File offset (`p_offset`).
    pub offset: u64,
    /// Size in the file (`p_filesz`).
    pub file_size: u64,
    /// The segment is executable.
    pub executable: bool,
}

/// One section header, kept by value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// Section name (`.text`, `.gopclntab`...).
    pub name: String,
    /// Virtual address (0 when not allocated).
    pub addr: u64,
    /// Size in memory.
    pub size: u64,
    /// Byte range in the file, absent for `SHT_NOBITS`.
    pub file_range: Option<(u64, u64)>,
    /// Code section.
    pub is_text: bool,
}

/// A function symbol from `.symtab` or `.dynsym`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ElfSymbol {
    addr: u64,
    size: u64,
    name: Box<str>,
    /// Lower ranks win among aliases at one address (global < weak < local).
    rank: u8,
}

/// Function symbols sorted by address.
#[derive(Debug, Default)]
pub struct SymbolTable {
    symbols: Vec<ElfSymbol>,
    /// Address ranges of code sections, bounding zero-sized symbols.
    text_ranges: Vec<(u64, u64)>,
}

/// A symbol that covers an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolHit<'a> {
    /// Symbol name as stored (versions such as `@@GLIBC_2.2.5` are not part of it).
    pub name: &'a str,
    /// Symbol start address.
    pub addr: u64,
}

impl SymbolTable {
    /// The function symbol covering `vaddr`.
    pub fn lookup(&self, vaddr: u64) -> Option<SymbolHit<'_>> {
        let idx = self.symbols.partition_point(|s| s.addr <= vaddr);
        let sym = self.symbols.get(idx.checked_sub(1)?)?;
        let covers = if sym.size > 0 {
            vaddr < sym.addr.saturating_add(sym.size)
        } else {
            // Zero-sized (assembly) symbols run to the next symbol in the same code section.
            let next = self.symbols.get(idx).map_or(u64::MAX, |s| s.addr);
            vaddr < next
                && self
                    .text_ranges
                    .iter()
                    .any(|&(lo, hi)| (lo..hi).contains(&sym.addr) && (lo..hi).contains(&vaddr))
        };
        covers.then_some(SymbolHit {
            name: &sym.name,
            addr: sym.addr,
        })
    }

    /// Number of function symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// No symbols at all.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

/// A parsed ELF file held in memory.
pub struct ElfImage {
    data: Bytes,
    segments: Vec<LoadSegment>,
    sections: Vec<SectionInfo>,
    build_id: Option<Vec<u8>>,
    debuglink: Option<String>,
    little_endian: bool,
    is_64: bool,
    has_dwarf: bool,
    /// `RELATIVE` relocation sites and their addends (PIE pointers), built on first use.
    relative_relocs: OnceLock<HashMap<u64, u64>>,
    symbols: OnceLock<SymbolTable>,
}

impl std::fmt::Debug for ElfImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfImage")
            .field("len", &self.data.len())
            .field("segments", &self.segments)
            .field("build_id", &self.build_id)
            .finish_non_exhaustive()
    }
}

impl ElfImage {
    /// Parses the headers of an ELF file held in memory.
    pub fn parse(data: Arc<[u8]>) -> Result<Self, FormatError> {
        Self::parse_bytes(Bytes::from_owner(data))
    }

    /// Maps `file` (private, read-only) and parses its headers; an empty or unmappable file
    /// (a pipe, `/proc` files) is read into memory instead.
    pub fn map_file(file: &mut File) -> std::io::Result<Result<Self, FormatError>> {
        let data = match Mmap::of(file) {
            Some(map) => Bytes::from_owner(map),
            None => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(file, &mut data)?;
                Bytes::from(data)
            }
        };
        Ok(Self::parse_bytes(data))
    }

    /// Parses the headers of an ELF file.
    pub fn parse_bytes(data: Bytes) -> Result<Self, FormatError> {
        let file = object::File::parse(&*data)?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(FormatError::NotElf);
        }
        let segments = file
            .segments()
            .map(|seg| {
                let (offset, file_size) = seg.file_range();
                let executable = match seg.flags() {
                    object::SegmentFlags::Elf { p_flags } => p_flags & PF_X != 0,
                    _ => false,
                };
                LoadSegment {
                    vaddr: seg.address(),
                    mem_size: seg.size(),
                    offset,
                    file_size,
                    executable,
                }
            })
            .collect();
        let sections = file
            .sections()
            .map(|s| SectionInfo {
                name: s.name().unwrap_or("").to_owned(),
                addr: s.address(),
                size: s.size(),
                file_range: s.file_range(),
                is_text: s.kind() == SectionKind::Text,
            })
            .collect::<Vec<_>>();
        let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
        let debuglink = file
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, _crc)| String::from_utf8_lossy(name).into_owned());
        let has_dwarf = sections
            .iter()
            .any(|s| s.name == ".debug_info" || s.name == ".zdebug_info");
        Ok(Self {
            little_endian: file.is_little_endian(),
            is_64: file.is_64(),
            data,
            segments,
            sections,
            build_id,
            debuglink,
            has_dwarf,
            relative_relocs: OnceLock::new(),
            symbols: OnceLock::new(),
        })
    }

    /// The whole file.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// `PT_LOAD` segments.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// Section headers (empty when the file has none).
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Bytes of a section, when it has any in the file.
    pub fn section_data(&self, section: &SectionInfo) -> Option<&[u8]> {
        let (off, len) = section.file_range?;
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(start..end)
    }

    /// GNU build id (`NT_GNU_BUILD_ID`).
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// File name from `.gnu_debuglink`.
    pub fn debuglink(&self) -> Option<&str> {
        self.debuglink.as_deref()
    }

    /// The file has DWARF debug info.
    pub fn has_dwarf(&self) -> bool {
        self.has_dwarf
    }

    /// Little-endian file.
    pub fn is_little_endian(&self) -> bool {
        self.little_endian
    }

    /// Pointer size in bytes.
    pub fn pointer_size(&self) -> usize {
        if self.is_64 { 8 } else { 4 }
    }

    /// The virtual address of file offset `offset` (through the `PT_LOAD` segment holding it).
    pub fn offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.offset && offset - s.offset < s.file_size)
            .map(|s| s.vaddr + (offset - s.offset))
    }

    /// The file offset of virtual address `vaddr`, when it is backed by the file.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size)
            .map(|s| s.offset + (vaddr - s.vaddr))
    }

    /// `len` bytes at virtual address `vaddr`.
    pub fn read_vaddr(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(self.vaddr_to_offset(vaddr)?).ok()?;
        self.data.get(start..start.checked_add(len)?)
    }

    /// The bytes from virtual address `vaddr` to the end of its segment's file data.
    pub fn read_vaddr_rest(&self, vaddr: u64) -> Option<&[u8]> {
        let seg = self
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.file_size)?;
        let start = usize::try_from(seg.offset + (vaddr - seg.vaddr)).ok()?;
        let end = usize::try_from(seg.offset + seg.file_size).ok()?;
        self.data.get(start..end.min(self.data.len()))
    }

    /// Reads a pointer-sized word at `vaddr` as the loader would leave it before adding the load
    /// bias: a `RELATIVE` relocation's addend when one targets the word (PIE), else the stored bytes.
    pub fn read_pointer(&self, vaddr: u64) -> Option<u64> {
        if let Some(addend) = self.relative_relocs().get(&vaddr) {
            return Some(*addend);
        }
        let bytes = self.read_vaddr(vaddr, self.pointer_size())?;
        Some(read_uint(bytes, self.little_endian))
    }

    /// Addresses of words that a `RELATIVE` relocation sets to `load bias + target`.
    pub fn relocated_pointers_to(&self, target: u64) -> Vec<u64> {
        let mut sites: Vec<u64> = self
            .relative_relocs()
            .iter()
            .filter(|(_, addend)| **addend == target)
            .map(|(site, _)| *site)
            .collect();
        sites.sort_unstable();
        sites
    }

    fn relative_relocs(&self) -> &HashMap<u64, u64> {
        self.relative_relocs.get_or_init(|| {
            let Ok(file) = object::File::parse(&*self.data) else {
                return HashMap::new();
            };
            let Some(relocs) = file.dynamic_relocations() else {
                return HashMap::new();
            };
            relocs
                .filter_map(|(site, rel)| match rel.flags() {
                    RelocationFlags::Elf { r_type }
                        if r_type == R_X86_64_RELATIVE || r_type == R_AARCH64_RELATIVE =>
                    {
                        Some((site, rel.addend() as u64))
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// Function symbols from `.symtab`, or `.dynsym` when there is no `.symtab` (built on first use).
    pub fn symbols(&self) -> &SymbolTable {
        self.symbols.get_or_init(|| self.build_symbols())
    }

    fn build_symbols(&self) -> SymbolTable {
        let Ok(file) = object::File::parse(&*self.data) else {
            return SymbolTable::default();
        };
        let mut symbols: Vec<ElfSymbol> = Vec::new();
        let mut add = |sym: object::Symbol<'_, '_>| {
            if sym.kind() != object::SymbolKind::Text || !sym.is_definition() || sym.address() == 0
            {
                return;
            }
            let Ok(name) = sym.name() else { return };
            if name.is_empty() {
                return;
            }
            let rank = if sym.is_weak() {
                1
            } else if sym.is_global() {
                0
            } else {
                2
            };
            symbols.push(ElfSymbol {
                addr: sym.address(),
                size: sym.size(),
                name: name.into(),
                rank,
            });
        };
        file.symbols().for_each(&mut add);
        file.dynamic_symbols().for_each(&mut add);
        // Aliases at one address: the best rank, then the name without leading underscores.
        symbols.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(a.rank.cmp(&b.rank))
                .then(a.name.starts_with('_').cmp(&b.name.starts_with('_')))
                .then(b.size.cmp(&a.size))
                .then(a.name.len().cmp(&b.name.len()))
        });
        symbols.dedup_by(|later, first| later.addr == first.addr);
        let text_ranges = self
            .sections
            .iter()
            .filter(|s| s.is_text)
            .map(|s| (s.addr, s.addr.saturating_add(s.size)))
            .collect();
        SymbolTable {
            symbols,
            text_ranges,
        }
    }
}

/// A private read-only mapping of a whole file.
struct Mmap {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; reading it from any thread is
// fine (it is only unmapped on drop).
unsafe impl Send for Mmap {}
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `file` in full; `None` when it is empty or cannot be mapped.
    fn of(file: &File) -> Option<Self> {
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // `MAP_POPULATE` maps the (page-cached) pages now, in one call, instead of one page fault
        // per page on first lookups: measured 1-6 ms at open for 17 MB, and a steadier first pass.
        // SAFETY: a fresh mapping of `len` bytes of a file we hold open; the kernel picks the
        // address. The result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            ptr: std::ptr::NonNull::new(ptr.cast())?,
            len,
        })
    }
}

impl AsRef<[u8]> for Mmap {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop` (see the module documentation for
        // the one case, truncation in place, where reading them faults).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `of`, once; no borrow outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Reads an unsigned little- or big-endian integer of `bytes.len()` (at most 8) bytes.
pub fn read_uint(bytes: &[u8], little_endian: bool) -> u64 {
    let mut v = 0u64;
    if little_endian {
        for b in bytes.iter().rev() {
            v = (v << 8) | u64::from(*b);
        }
    } else {
        for b in bytes {
            v = (v << 8) | u64::from(*b);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_image() -> ElfImage {
        let exe = std::fs::read("/proc/self/exe").expect("read own executable");
        ElfImage::parse(exe.into()).expect("parse own executable")
    }

    /// A relocatable ELF64 holding one `SHF_COMPRESSED` `.debug_info` whose compression
    /// header declares `declared` decompressed bytes over 8 bytes of stream.
    fn elf_with_compressed_section(declared: u64) -> Vec<u8> {
        const EHDR: usize = 64;
        const CHDR: usize = 24;
        const STREAM: usize = 8;
        let names = b"\0.debug_info\0.shstrtab\0";
        let names_at = EHDR + CHDR + STREAM;
        let shdrs_at = (names_at + names.len()).next_multiple_of(8);
        let mut f = vec![0u8; shdrs_at];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4..7].copy_from_slice(&[2, 1, 1]); // 64-bit, little-endian, version 1
        let put16 =
            |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put16(&mut f, 16, 1); // ET_REL
        put16(&mut f, 18, 62); // EM_X86_64
        put32(&mut f, 20, 1);
        put64(&mut f, 40, shdrs_at as u64);
        put16(&mut f, 52, EHDR as u16);
        put16(&mut f, 58, 64); // e_shentsize
        put16(&mut f, 60, 3); // e_shnum
        put16(&mut f, 62, 2); // e_shstrndx
        put32(&mut f, EHDR, 1); // ELFCOMPRESS_ZLIB
        put64(&mut f, EHDR + 8, declared);
        put64(&mut f, EHDR + 16, 1);
        f[names_at..names_at + names.len()].copy_from_slice(names);
        // Section headers: null, .debug_info, .shstrtab.
        let mut shdr = |name: u32, kind: u32, flags: u64, offset: usize, size: usize| {
            let at = f.len();
            f.resize(at + 64, 0);
            put32(&mut f, at, name);
            put32(&mut f, at + 4, kind);
            put64(&mut f, at + 8, flags);
            put64(&mut f, at + 24, offset as u64);
            put64(&mut f, at + 32, size as u64);
            put64(&mut f, at + 48, 1);
        };
        shdr(0, 0, 0, 0, 0);
        shdr(1, 1, 0x800, EHDR, CHDR + STREAM); // SHT_PROGBITS, SHF_COMPRESSED
        shdr(13, 3, 0, names_at, names.len()); // SHT_STRTAB
        f
    }

    #[test]
    fn refuses_a_compressed_section_declaring_an_implausible_size() {
        for declared in [
            0x4000_0000_0080_0000,
            MAX_DECOMPRESSED_SECTION + 1,
            32 * 1032 + 1,
        ] {
            let bytes = elf_with_compressed_section(declared);
            let file = object::File::parse(&*bytes).expect("parse");
            let section = file.section_by_name(".debug_info").expect("section");
            match section_bytes(&section) {
                Err(SectionDataError::TooLarge {
                    declared: d,
                    compressed: 8,
                    ..
                }) => {
                    assert_eq!(d, declared)
                }
                other => panic!("declared {declared}: {other:?}"),
            }
        }
        // Within the bounds, the stream itself is judged (8 bytes of zeros are not zlib).
        let bytes = elf_with_compressed_section(64);
        let file = object::File::parse(&*bytes).expect("parse");
        let section = file.section_by_name(".debug_info").expect("section");
        assert!(matches!(
            section_bytes(&section),
            Err(SectionDataError::Object(_))
        ));
    }

    #[test]
    fn parses_own_executable_and_maps_offsets() {
        let img = self_image();
        assert!(!img.segments().is_empty());
        let text = img.section(".text").expect(".text");
        let off = img.vaddr_to_offset(text.addr).expect("text offset");
        assert_eq!(img.offset_to_vaddr(off), Some(text.addr));
    }

    #[test]
    fn finds_a_function_symbol() {
        let img = self_image();
        let main_sym = {
            let file = object::File::parse(&**img.data()).expect("parse");
            file.symbols()
                .find(|s| s.kind() == object::SymbolKind::Text && s.size() > 4)
                .map(|s| (s.address(), s.name().unwrap_or("").to_owned()))
                .expect("a function")
        };
        let hit = img.symbols().lookup(main_sym.0 + 2).expect("covered");
        assert_eq!(hit.addr, main_sym.0);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(ElfImage::parse(Arc::from(&b"not an elf file at all"[..])).is_err());
        let exe = std::fs::read("/proc/self/exe").expect("read own executable");
        for len in [0, 4, 16, 63, 64, 200, 4096] {
            // Truncated files either fail to parse or parse to something that answers lookups
            // without panicking.
            if let Ok(img) = ElfImage::parse(Arc::from(&exe[..len])) {
                let _ = img.symbols().lookup(0x1000);
                let _ = img.read_pointer(0x1000);
            }
        }
        let mut corrupt = exe[..8192.min(exe.len())].to_vec();
        for (i, b) in corrupt.iter_mut().enumerate().skip(16) {
            *b ^= (i as u8).wrapping_mul(31);
        }
        if let Ok(img) = ElfImage::parse(Arc::from(corrupt)) {
            let _ = img.symbols().lookup(0x1000);
        }
    }
}
