//! Go's `.gopclntab`: function names, files, lines and inlined frames for every PC of a Go
//! binary, stripped or not (Go 1.18 through 1.27: header magic `0xfffffff0` / `0xfffffff1`).
//!
//! Why hand-written: no well-kept Rust crate parses the modern pclntab layout (1.18+ offsets,
//! the 1.20 inline-tree format, Go 1.27's `.go.module`), and the format is small. The code follows
//! the runtime's own reader (`runtime/symtab.go`, `runtime/symtabinl.go`) so its answers match
//! `runtime.CallersFrames` exactly; it was written from the format, not copied.
//!
//! Layout (all integers in the file's byte order):
//! - `pcHeader`: magic, two zero pads, instruction quantum, pointer size, then pointer-sized
//!   `nfunc`, `nfiles`, `textStart` (unused from 1.27 on) and the offsets (from the header) of
//!   `funcnametab`, `cutab`, `filetab`, `pctab` and `pclntab`.
//! - `pclntab` starts with `nfunc + 1` pairs `{entryoff u32, funcoff u32}` sorted by entry; `funcoff`
//!   points (from the start of `pclntab`) at a `_func` record followed by `npcdata` u32 offsets into
//!   `pctab` and `nfuncdata` u32 offsets from `moduledata.gofunc`.
//! - pc-value tables: pairs of (zig-zag varint value delta, varint pc delta * quantum), from
//!   value -1 at the function entry; a zero value delta after the first pair ends the table.
//! - Inlining: `PCDATA_InlTreeIndex` gives, per PC, an index into the function's inline tree
//!   (`FUNCDATA_InlTree`); each node names the inlined function and the `parentPc` whose
//!   position is the call site in the caller, which is looked up in turn.
//!
//! Where the table is: the `.gopclntab` section; else (external linking puts it inside
//! `.data.rel.ro`, PIE) Go 1.27's `.go.module` / `runtime.firstmoduledata`, or a scan for the
//! header magic validated by its offsets and function table. `moduledata` (found through its
//! pointer to the header) gives `text` (the base of every entry offset) and `gofunc` (the base of
//! funcdata, so the inline trees).

use std::borrow::Cow;

use super::elf::{ElfImage, read_uint};

/// Magic of Go 1.18-1.19 tables.
pub const MAGIC_GO118: u32 = 0xffff_fff0;
/// Magic of Go 1.20 and later tables.
pub const MAGIC_GO120: u32 = 0xffff_fff1;

/// Byte offset of `nfunc` in `pcHeader`; the pointer-sized fields follow it.
const HEADER_WORDS_START: usize = 8;
/// Word index (after the fixed 8 bytes) of each pointer-sized header field.
const HDR_NFUNC: usize = 0;
const HDR_TEXT_START: usize = 2;
const HDR_FUNCNAME_OFFSET: usize = 3;
const HDR_CU_OFFSET: usize = 4;
const HDR_FILETAB_OFFSET: usize = 5;
const HDR_PCTAB_OFFSET: usize = 6;
const HDR_PCLN_OFFSET: usize = 7;
/// Number of pointer-sized header fields.
const HDR_WORDS: usize = 8;

/// Size of one function table entry (`entryoff u32`, `funcoff u32`).
const FUNCTAB_ENTRY_SIZE: usize = 8;

/// Byte offsets of `_func` fields (Go 1.18+).
const FUNC_NAME_OFF: usize = 4;
/// `_func.pcsp`: the pc-to-stack-pointer-delta table.
const FUNC_PCSP: usize = 16;
const FUNC_PCFILE: usize = 20;
const FUNC_PCLN: usize = 24;
const FUNC_NPCDATA: usize = 28;
const FUNC_CU_OFFSET: usize = 32;
/// Size of `_func` before its variable arrays: Go 1.18-1.19 (no `startLine`) and 1.20+.
const FUNC_SIZE_GO118: usize = 40;
const FUNC_SIZE_GO120: usize = 44;
/// `_func.funcID` sits this many bytes before the end of the fixed record (then `flag`, a pad
/// byte and `nfuncdata`).
const FUNC_ID_FROM_END: usize = 4;

/// `PCDATA_InlTreeIndex` and `FUNCDATA_InlTree` (same in every supported version).
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// A funcdata offset meaning "none".
const FUNCDATA_NONE: u32 = u32::MAX;

/// `inlinedCall` records: size, offset of the name offset and of `parentPc`.
const INL_SIZE_GO118: usize = 20;
const INL_NAME_GO118: usize = 12;
const INL_PARENT_PC_GO118: usize = 16;
const INL_SIZE_GO120: usize = 16;
const INL_NAME_GO120: usize = 4;
const INL_PARENT_PC_GO120: usize = 8;

/// Word indexes in `runtime.moduledata` (same from 1.18 to 1.27).
const MD_FUNCNAMETAB: u64 = 1;
const MD_MINPC: u64 = 20;
const MD_TEXT: u64 = 22;
/// Candidate word indexes of `moduledata.gofunc`: 1.18-1.19, 1.20-1.26, 1.27 (typedesclen and
/// the itab fields were added before `rodata`). Each candidate is validated.
const MD_GOFUNC_GO118: &[u64] = &[38];
const MD_GOFUNC_GO120: &[u64] = &[40, 43];

/// Text bytes per bucket of the function search index.
const BUCKET_SIZE: u32 = 4096;
/// A pc-value table longer than this is treated as corrupt.
const MAX_PCVALUE_RUNS: usize = 1 << 22;
/// How many functions ahead of the one being read a batch prefetches `_func` records, then the
/// tables they point at.
const PREFETCH_RECORDS_AHEAD: usize = 16;
const PREFETCH_TABLES_AHEAD: usize = 8;
/// Inline tree nesting deeper than this is treated as corrupt.
const MAX_INLINE_DEPTH: usize = 256;

/// Table format generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PclnVersion {
    /// Go 1.18-1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

/// Why a pclntab could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclnError {
    /// No table in this file (not a Go binary, or an unsupported Go version).
    #[error("no Go 1.18+ pclntab found")]
    NotFound,
    /// The header is present but inconsistent.
    #[error("malformed pclntab header: {0}")]
    BadHeader(&'static str),
    /// The text start address could not be determined.
    #[error("cannot determine the text start of the Go module")]
    NoTextStart,
}

/// A parsed `.gopclntab` (offsets into the file's bytes, checked on every read).
pub struct GoPclnTab {
    data: bytes::Bytes,
    little_endian: bool,
    version: PclnVersion,
    ptr_size: usize,
    quantum: u64,
    nfunc: usize,
    text_start: u64,
    /// File offsets of the sub-tables.
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    pclntab: usize,
    /// File offset of `moduledata.gofunc` (base of funcdata), when found.
    gofunc: Option<usize>,
    /// Entry offsets (from `text_start`) of the `nfunc + 1` function table entries, copied out
    /// of the file for the binary search.
    entries: Box<[u32]>,
    /// Function index of the first function starting in each `BUCKET_SIZE` bytes of text.
    buckets: Vec<u32>,
    /// [`GoPclnTab::wrapper_func_id`], computed on first use.
    wrapper_id: std::sync::OnceLock<Option<u8>>,
}

/// One run of a pc-value table: `value` holds up to `end` (offset from the function entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PcValueRun {
    end: u32,
    value: i32,
}

/// "No value here" (the table ended, or is absent). Every use of a value treats `i32::MIN`
/// exactly like an absent one (no file index, no line, no inline index), so the sentinel loses
/// nothing.
const NO_VALUE: i32 = i32::MIN;

/// Reads the unsigned varint at `*p` of `data`, advancing `*p` (at most 5 bytes; bits past 32
/// are dropped, as the runtime's `readvarint` does).
#[inline(always)]
fn read_uvarint(data: &[u8], p: &mut usize) -> Option<u32> {
    let b = *data.get(*p)?;
    if b < 0x80 {
        *p += 1;
        return Some(u32::from(b));
    }
    let mut v = u32::from(b & 0x7f);
    let mut shift = 7u32;
    for i in 1..5 {
        let b = *data.get(*p + i)?;
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            *p += i + 1;
            return Some(v);
        }
        shift += 7;
    }
    None
}

/// A streaming reader of one pc-value table: yields its runs in order, without storing them.
struct PcValueReader<'a> {
    /// `pctab` and everything after it; the table starts at `p`.
    data: &'a [u8],
    p: usize,
    quantum: u64,
    value: i32,
    pc_off: u64,
    func_len: u32,
    /// Pairs left before the table is treated as corrupt.
    budget: usize,
    first: bool,
    done: bool,
}

impl<'a> PcValueReader<'a> {
    /// The table at `table` (offset into `pctab`; 0 means absent) of a function of `func_len`
    /// bytes.
    fn new(tab: &'a GoPclnTab, table: u32, func_len: u32) -> Self {
        let data = tab.data.get(tab.pctab..).unwrap_or_default();
        let p = table as usize;
        Self {
            data,
            p,
            quantum: tab.quantum,
            value: -1,
            pc_off: 0,
            func_len,
            // Pairs that do not advance are rare; bound them so garbage cannot spin.
            budget: (func_len as usize)
                .saturating_add(1024)
                .min(MAX_PCVALUE_RUNS),
            first: true,
            done: table == 0 || p >= data.len(),
        }
    }

    /// The next run of positive length, up to the one covering the last byte of the function
    /// (lookups never go past it). Zero-length runs are skipped: no offset ever selects them.
    #[inline]
    fn next_run(&mut self) -> Option<PcValueRun> {
        while !self.done {
            if self.budget == 0 {
                self.done = true;
                break;
            }
            self.budget -= 1;
            let mut p = self.p;
            let Some(uvdelta) = read_uvarint(self.data, &mut p) else {
                self.done = true;
                break;
            };
            if uvdelta == 0 && !self.first {
                self.done = true;
                break;
            }
            self.first = false;
            let Some(pcdelta) = read_uvarint(self.data, &mut p) else {
                self.done = true;
                break;
            };
            self.p = p;
            let delta = ((uvdelta >> 1) as i32) ^ -((uvdelta & 1) as i32);
            self.value = self.value.wrapping_add(delta);
            let prev = self.pc_off;
            self.pc_off = self
                .pc_off
                .saturating_add(u64::from(pcdelta) * self.quantum);
            let Ok(end) = u32::try_from(self.pc_off) else {
                self.done = true;
                break;
            };
            if end >= self.func_len {
                self.done = true;
            }
            if self.pc_off > prev {
                return Some(PcValueRun {
                    end,
                    value: self.value,
                });
            }
        }
        None
    }

    /// The value at `off`, decoding no further than its run; `NO_VALUE` past the table's end.
    fn value_at(mut self, off: u32) -> i32 {
        while let Some(run) = self.next_run() {
            if off < run.end {
                return run.value;
            }
        }
        NO_VALUE
    }
}

/// Decodes the pc-value table at `table` (offset into `pctab`; 0 means absent) of a function of
/// `func_len` bytes into `runs` (cleared first): runs of positive length, up to the one covering
/// the last byte of the function.
fn decode_pcvalue_into(tab: &GoPclnTab, table: u32, func_len: u32, runs: &mut Vec<PcValueRun>) {
    runs.clear();
    if table == 0 {
        return;
    }
    let Some(data) = tab
        .pctab
        .checked_add(table as usize)
        .and_then(|at| tab.data.get(at..))
    else {
        return;
    };
    let quantum = tab.quantum;
    let mut p = 0usize;
    let mut value: i32 = -1;
    let mut pc_off: u64 = 0;
    // Pairs that do not advance are rare; bound them so garbage cannot spin.
    let max_pairs = (func_len as usize)
        .saturating_add(1024)
        .min(MAX_PCVALUE_RUNS);
    for n in 0..max_pairs {
        let Some(uvdelta) = read_uvarint(data, &mut p) else {
            break;
        };
        if uvdelta == 0 && n != 0 {
            break;
        }
        let Some(pcdelta) = read_uvarint(data, &mut p) else {
            break;
        };
        value = value.wrapping_add(((uvdelta >> 1) as i32) ^ -((uvdelta & 1) as i32));
        let prev = pc_off;
        pc_off += u64::from(pcdelta) * quantum;
        let Ok(end) = u32::try_from(pc_off) else {
            break;
        };
        if pc_off > prev {
            runs.push(PcValueRun { end, value });
        }
        if end >= func_len {
            break;
        }
    }
}

#[cfg(test)]
fn decode_pcvalue(tab: &GoPclnTab, table: u32, func_len: u32) -> Vec<PcValueRun> {
    let mut runs = Vec::new();
    decode_pcvalue_into(tab, table, func_len, &mut runs);
    runs
}

/// The value of decoded `runs` at `off`, `NO_VALUE` past their end or without an offset.
#[inline]
fn value_at(runs: &[PcValueRun], off: Option<u32>) -> i32 {
    let Some(off) = off else {
        return NO_VALUE;
    };
    let i = runs.partition_point(|r| r.end <= off);
    runs.get(i).map_or(NO_VALUE, |r| r.value)
}

/// Index of the first run of `runs` (from `*cursor` on) covering `off`, for offsets that do not
/// decrease from call to call.
#[inline]
fn value_from(runs: &[PcValueRun], cursor: &mut usize, off: u32) -> i32 {
    if let Some(rest) = runs.get(*cursor..) {
        *cursor += rest.partition_point(|r| r.end <= off);
    }
    runs.get(*cursor).map_or(NO_VALUE, |r| r.value)
}

/// Buffers of a batch lookup, reused from function to function.
#[derive(Default)]
struct BatchScratch<'a> {
    file: Vec<PcValueRun>,
    line: Vec<PcValueRun>,
    inl: Vec<PcValueRun>,
    /// File index -> file name, for the current function.
    files: Vec<(i32, Option<&'a str>)>,
    /// Inline tree index -> (printed name, call-site offset), for the current function; `None`:
    /// the node cannot be read (the walk stops there).
    nodes: Vec<(i32, Option<InlNode<'a>>)>,
}

/// An inline tree node, resolved: the inlined function's printed name and the offset from the
/// function entry of its call site in the caller (`None`: negative).
struct InlNode<'a> {
    name: Cow<'a, str>,
    name_off: Option<u32>,
    parent_off: Option<u32>,
}

/// A frame borrowed from the table (see [`GoPclnTab::visit_frames_batch`]).
#[derive(Clone, Copy, Debug)]
pub struct GoFrameRef<'a> {
    pub function: &'a str,
    /// Where `function` is in the function name table: the same key always prints the same name
    /// (`None` for a name the table did not give).
    pub function_key: Option<u32>,
    /// Borrowed from the table's own bytes, so the string's address identifies the file for as
    /// long as the table is borrowed.
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    pub inlined: bool,
}

impl std::fmt::Debug for GoPclnTab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoPclnTab")
            .field("version", &self.version)
            .field("nfunc", &self.nfunc)
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .field("inline_trees", &self.gofunc.is_some())
            .finish_non_exhaustive()
    }
}

/// A located header: where it is, and its fields.
struct Header {
    /// Virtual address of the header.
    vaddr: u64,
    /// File offset of the header.
    offset: usize,
    version: PclnVersion,
    ptr_size: usize,
    quantum: u64,
    words: [u64; HDR_WORDS],
}

impl GoPclnTab {
    /// Finds and parses the pclntab of a Go binary.
    pub fn locate(image: &ElfImage) -> Result<Self, PclnError> {
        let header = find_header(image)?;
        let moduledata = find_moduledata(image, &header);
        let ps = header.ptr_size as u64;
        let pcln_offset = header.words[HDR_PCLN_OFFSET];
        let table_at = |field: usize| -> Result<usize, PclnError> {
            usize::try_from(header.words[field])
                .ok()
                .and_then(|o| header.offset.checked_add(o))
                .filter(|o| *o < image.data().len())
                .ok_or(PclnError::BadHeader(
                    "sub-table offset past the end of the file",
                ))
        };
        let nfunc = usize::try_from(header.words[HDR_NFUNC])
            .map_err(|_| PclnError::BadHeader("function count"))?;
        let mut tab = Self {
            data: image.data().clone(),
            little_endian: image.is_little_endian(),
            version: header.version,
            ptr_size: header.ptr_size,
            quantum: header.quantum,
            nfunc,
            text_start: 0,
            funcnametab: table_at(HDR_FUNCNAME_OFFSET)?,
            cutab: table_at(HDR_CU_OFFSET)?,
            filetab: table_at(HDR_FILETAB_OFFSET)?,
            pctab: table_at(HDR_PCTAB_OFFSET)?,
            pclntab: table_at(HDR_PCLN_OFFSET)?,
            gofunc: None,
            entries: Box::default(),
            buckets: Vec::new(),
            wrapper_id: std::sync::OnceLock::new(),
        };
        let functab_len = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(FUNCTAB_ENTRY_SIZE))
            .ok_or(PclnError::BadHeader("function count"))?;
        if tab
            .pclntab
            .checked_add(functab_len)
            .is_none_or(|end| end > tab.data.len())
        {
            return Err(PclnError::BadHeader(
                "function table past the end of the file",
            ));
        }
        let _ = pcln_offset;
        // Text start: moduledata.text (validated against minpc), else the header field (1.18-1.26,
        // when not left to a relocation), else the `.text` section.
        let first_entry = u64::from(
            tab.functab_entry(0)
                .ok_or(PclnError::BadHeader("functab"))?,
        );
        let md_text = moduledata.and_then(|md| {
            let text = image.read_pointer(md + MD_TEXT * ps)?;
            let minpc = image.read_pointer(md + MD_MINPC * ps)?;
            (text != 0 && minpc == text.wrapping_add(first_entry)).then_some(text)
        });
        let header_text = header.words[HDR_TEXT_START];
        let text_start = md_text
            .or((header_text != 0).then_some(header_text))
            .or_else(|| image.section(".text").map(|s| s.addr))
            .ok_or(PclnError::NoTextStart)?;
        tab.text_start = text_start;
        tab.entries = (0..=nfunc)
            .map(|i| tab.functab_entry(i))
            .collect::<Option<_>>()
            .ok_or(PclnError::BadHeader("functab"))?;
        tab.buckets = tab.build_buckets();
        tab.gofunc = moduledata
            .and_then(|md| find_gofunc(image, md, header.version))
            .and_then(|v| image.vaddr_to_offset(v))
            .and_then(|o| usize::try_from(o).ok());
        Ok(tab)
    }

    /// Table format generation.
    pub fn version(&self) -> PclnVersion {
        self.version
    }

    /// Number of functions.
    pub fn function_count(&self) -> usize {
        self.nfunc
    }

    /// Inline trees are readable (`moduledata.gofunc` was found).
    pub fn has_inline_info(&self) -> bool {
        self.gofunc.is_some()
    }

    /// The address range the table covers (`[first entry, end)`).
    pub fn pc_range(&self) -> Option<(u64, u64)> {
        let first = self.functab_entry(0)?;
        let end = self.functab_entry(self.nfunc)?;
        Some((
            self.text_start + u64::from(first),
            self.text_start + u64::from(end),
        ))
    }

    /// Calls `visit(i, frame)` with each frame of each `pcs[i]` that is in a Go function: the
    /// frames of one address come together, innermost first; addresses outside Go code get no
    /// call. Names borrow the file's bytes (printed names of generic functions are built once
    /// per function of the batch).
    ///
    /// The addresses are sorted and grouped by function, and each function's pc-value tables
    /// (file, line, inline tree index) are decoded once for all its addresses, into buffers
    /// reused from function to function: nothing is kept between calls, so memory does not grow
    /// with the functions seen, and a batch costs one pass over the tables it touches.
    pub fn visit_frames_batch(&self, pcs: &[u64], mut visit: impl FnMut(usize, GoFrameRef<'_>)) {
        let Some(&end) = self.entries.get(self.nfunc) else {
            return;
        };
        if self.nfunc == 0 {
            return;
        }
        // Chunks keep the original index in the low 32 bits of a sort key.
        for (chunk_no, chunk) in pcs.chunks(u32::MAX as usize).enumerate() {
            let base = chunk_no * u32::MAX as usize;
            // (offset from the text start << 32) | index: sorting these groups the addresses by
            // function, in address order.
            let mut keys: Vec<u64> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, pc)| {
                    let rel = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
                    (rel < end).then_some((u64::from(rel) << 32) | i as u64)
                })
                .collect();
            sort_keys(&mut keys);
            // Groups of keys by function: (function index, range of the group in `keys`).
            let mut groups: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
            let mut g = 0;
            while g < keys.len() {
                let rel = (keys[g] >> 32) as u32;
                let Some((index, _)) = self.find_index(self.text_start + u64::from(rel)) else {
                    g += 1;
                    continue;
                };
                let next = self.entries.get(index + 1).copied().unwrap_or(end);
                let mut group_end = g + 1;
                while group_end < keys.len() && ((keys[group_end] >> 32) as u32) < next {
                    group_end += 1;
                }
                groups.push((index, g..group_end));
                g = group_end;
            }
            let mut scratch = BatchScratch::default();
            for (j, (index, range)) in groups.iter().enumerate() {
                // The functions ahead are known: ask for their records, then for their tables,
                // so the memory reads of several functions overlap instead of queuing up.
                if let Some((ahead, _)) = groups.get(j + PREFETCH_RECORDS_AHEAD) {
                    self.prefetch_record(*ahead);
                }
                if let Some((ahead, _)) = groups.get(j + PREFETCH_TABLES_AHEAD) {
                    self.prefetch_tables(*ahead);
                }
                let Some(group) = keys.get(range.clone()) else {
                    continue;
                };
                self.visit_function(*index, group, &mut scratch, &mut |i, f| visit(base + i, f));
            }
        }
    }

    /// Brings the `_func` record of function `index` into the CPU cache (a hint: no effect on
    /// results).
    fn prefetch_record(&self, index: usize) {
        if let Some(funcoff) = self.u32_at(self.pclntab + index * FUNCTAB_ENTRY_SIZE + 4) {
            self.prefetch(self.pclntab.saturating_add(funcoff as usize));
        }
    }

    /// Brings the start of function `index`'s line, file and inline tables and its name into the
    /// CPU cache (a hint: no effect on results).
    fn prefetch_tables(&self, index: usize) {
        let Some(func) = self.func_record(index) else {
            return;
        };
        for table in [func.pcfile, func.pcln] {
            self.prefetch(self.pctab.saturating_add(table as usize));
        }
        if let Some(inl) = func.pcdata(self, PCDATA_INL_TREE_INDEX) {
            self.prefetch(self.pctab.saturating_add(inl as usize));
        }
        self.prefetch(self.funcnametab.saturating_add(func.name_off as usize));
        self.prefetch(self.cutab.saturating_add(func.cu_offset as usize * 4));
    }

    #[inline(always)]
    fn prefetch(&self, at: usize) {
        if at >= self.data.len() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `at` is inside the table's bytes, and a prefetch never faults nor changes
        // memory.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(self.data.as_ptr().add(at).cast());
        }
    }

    /// Visits the frames of `keys` (sort keys of addresses in function `index`, increasing).
    fn visit_function<'a>(
        &'a self,
        index: usize,
        keys: &[u64],
        s: &mut BatchScratch<'a>,
        visit: &mut impl FnMut(usize, GoFrameRef<'_>),
    ) -> Option<()> {
        let func = self.func_record(index)?;
        let next = *self.entries.get(index + 1)?;
        let func_len = next.saturating_sub(*self.entries.get(index)?);
        decode_pcvalue_into(self, func.pcfile, func_len, &mut s.file);
        decode_pcvalue_into(self, func.pcln, func_len, &mut s.line);
        let tree = self.inline_tree(&func);
        let inl_table = match tree {
            Some(_) => func.pcdata(self, PCDATA_INL_TREE_INDEX).unwrap_or(0),
            None => 0,
        };
        decode_pcvalue_into(self, inl_table, func_len, &mut s.inl);
        s.files.clear();
        s.nodes.clear();
        let printed = self.printed_name(func.name_off);
        let name_key = printed.is_some().then_some(func.name_off);
        let name = printed.unwrap_or_else(|| Cow::Owned(format!("go.func@{:#x}", func.entry)));
        let entry_off = func.entry.wrapping_sub(self.text_start);
        // Cursors into the runs for the (increasing) offsets of the addresses themselves.
        let (mut cf, mut cl, mut ci) = (0, 0, 0);
        for key in keys {
            let i = (key & u64::from(u32::MAX)) as usize;
            let rel = key >> 32;
            // Offset of the PC whose position is reported (the call site, after each inlined
            // frame).
            let mut off = rel
                .checked_sub(entry_off)
                .and_then(|o| u32::try_from(o).ok());
            let (mut file, mut line, mut inl) = match off {
                Some(o) => (
                    value_from(&s.file, &mut cf, o),
                    value_from(&s.line, &mut cl, o),
                    value_from(&s.inl, &mut ci, o),
                ),
                None => (NO_VALUE, NO_VALUE, NO_VALUE),
            };
            let mut depth = 0;
            while inl >= 0 && depth < MAX_INLINE_DEPTH {
                let node = match s.nodes.iter().position(|(ix, _)| *ix == inl) {
                    Some(at) => at,
                    None => {
                        let node =
                            tree.and_then(|t| self.inlined_call(t, inl as usize))
                                .map(|call| {
                                    let name = self.printed_name(call.name_off);
                                    InlNode {
                                        name_off: name.is_some().then_some(call.name_off),
                                        name: name.unwrap_or(Cow::Borrowed("?")),
                                        parent_off: u32::try_from(call.parent_pc).ok(),
                                    }
                                });
                        s.nodes.push((inl, node));
                        s.nodes.len() - 1
                    }
                };
                let Some(InlNode {
                    name: node_name,
                    name_off: node_name_off,
                    parent_off,
                }) = &s.nodes[node].1
                else {
                    break;
                };
                let file_name = self.file_cached(&func, &mut s.files, file);
                visit(
                    i,
                    GoFrameRef {
                        function: node_name,
                        function_key: *node_name_off,
                        file: file_name,
                        line: u32::try_from(line).ok(),
                        inlined: true,
                    },
                );
                depth += 1;
                off = *parent_off;
                file = value_at(&s.file, off);
                line = value_at(&s.line, off);
                inl = value_at(&s.inl, off);
            }
            let file_name = self.file_cached(&func, &mut s.files, file);
            visit(
                i,
                GoFrameRef {
                    function: &name,
                    function_key: name_key,
                    file: file_name,
                    line: u32::try_from(line).ok(),
                    inlined: false,
                },
            );
        }
        Some(())
    }

    /// The name of file index `value` of `func`, through the function's small cache.
    #[inline]
    fn file_cached<'a>(
        &'a self,
        func: &FuncRecord,
        files: &mut Vec<(i32, Option<&'a str>)>,
        value: i32,
    ) -> Option<&'a str> {
        if value < 0 {
            return None;
        }
        if let Some((_, name)) = files.iter().find(|(v, _)| *v == value) {
            return *name;
        }
        let name = self.file_name(func, value);
        files.push((value, name));
        name
    }

    /// The printed name at `name_off` (borrowed from the file unless it is a generic
    /// instantiation, printed as `[...]`).
    fn printed_name(&self, name_off: u32) -> Option<Cow<'_, str>> {
        let (raw, bracket) = self.cstr_scan(self.funcnametab.checked_add(name_off as usize)?)?;
        Some(if bracket {
            name_for_print_cow(raw)
        } else {
            Cow::Borrowed(raw)
        })
    }

    /// The file of file index `value` in `func`'s compilation unit.
    fn file_name(&self, func: &FuncRecord, value: i32) -> Option<&str> {
        self.cstr(
            self.filetab
                .checked_add(self.file_offset(func, value)? as usize)?,
        )
    }

    /// For each `BUCKET_SIZE` bytes of text, the index of the function covering its start.
    fn build_buckets(&self) -> Vec<u32> {
        let Some(end) = self.functab_entry(self.nfunc) else {
            return Vec::new();
        };
        let mut buckets = Vec::with_capacity((end / BUCKET_SIZE) as usize + 1);
        let mut func = 0usize;
        for b in 0..=end / BUCKET_SIZE {
            let start = b * BUCKET_SIZE;
            while func + 1 < self.nfunc && self.functab_entry(func + 1).is_some_and(|e| e <= start)
            {
                func += 1;
            }
            buckets.push(func as u32);
        }
        buckets
    }

    /// Bytes the function containing `pc` has pushed on the stack at `pc` (its `pcsp` table):
    /// 0 at its entry and everywhere in a frameless function, where the return address is still
    /// at the stack pointer (amd64) or in the link register (arm64). `None` outside Go code.
    pub fn frame_size_at(&self, pc: u64) -> Option<u32> {
        let (reader, entry) = self.pcsp_reader(pc)?;
        let off = u32::try_from(pc - entry).ok()?;
        u32::try_from(reader.value_at(off)).ok()
    }

    /// A reader of the `pcsp` table of the function containing `pc`, and the function's entry.
    fn pcsp_reader(&self, pc: u64) -> Option<(PcValueReader<'_>, u64)> {
        let (index, entry) = self.find_index(pc)?;
        let func = self.func_record(index)?;
        let pcsp = self.u32_at(func.at + FUNC_PCSP)?;
        let next = self
            .entries
            .get(index + 1)
            .map(|e| self.text_start + u64::from(*e))?;
        let func_len = u32::try_from(next.checked_sub(entry)?).ok()?;
        Some((PcValueReader::new(self, pcsp, func_len), entry))
    }

    /// The largest stack frame the function containing `pc` pushes anywhere in its body (the
    /// maximum of its `pcsp` table): the frame size at every call it makes. `None` outside Go
    /// code.
    pub fn max_frame_size(&self, pc: u64) -> Option<u32> {
        let (mut reader, _) = self.pcsp_reader(pc)?;
        let mut max = None;
        while let Some(run) = reader.next_run() {
            if let Ok(v) = u32::try_from(run.value) {
                max = Some(max.map_or(v, |m: u32| m.max(v)));
            }
        }
        max
    }

    /// The `funcID` of the (outermost, real) function containing `pc` (the byte 4 before the
    /// end of the fixed `_func` record, in every table generation).
    pub fn func_id_at(&self, pc: u64) -> Option<u8> {
        let (_, func) = self.find_func(pc)?;
        self.data
            .get(func.at + func.fixed_size - FUNC_ID_FROM_END)
            .copied()
    }

    /// The `funcID` of compiler-generated wrappers: the last value of the runtime's enum, so
    /// the largest any function of a Go binary has (every binary has wrappers). Read from the
    /// table because the enum grew between releases.
    pub fn wrapper_func_id(&self) -> Option<u8> {
        *self.wrapper_id.get_or_init(|| {
            (0..self.nfunc)
                .filter_map(|i| {
                    let func = self.func_record(i)?;
                    self.data
                        .get(func.at + func.fixed_size - FUNC_ID_FROM_END)
                        .copied()
                })
                .max()
                .filter(|id| *id > 0)
        })
    }

    /// Entry address of the (outermost, real) function containing `pc`.
    pub fn function_entry(&self, pc: u64) -> Option<u64> {
        self.find_index(pc).map(|(_, entry)| entry)
    }

    /// The name of the (outermost, real) function containing `pc`.
    pub fn function_name_at(&self, pc: u64) -> Option<String> {
        let (_, func) = self.find_func(pc)?;
        self.function_name(func.name_off)
    }

    /// The address range `[entry, end)` of the function named `name` exactly as the table
    /// spells it (`runtime.allgadd`): a linear scan of the function table, for the few lookups by
    /// name a run needs.
    pub fn function_range(&self, name: &str) -> Option<(u64, u64)> {
        (0..self.nfunc).find_map(|index| {
            let func = self.func_record(index)?;
            let raw = self.cstr(self.funcnametab.checked_add(func.name_off as usize)?)?;
            if raw != name {
                return None;
            }
            let end = self.text_start + u64::from(*self.entries.get(index + 1)?);
            Some((func.entry, end))
        })
    }

    fn functab_entry(&self, index: usize) -> Option<u32> {
        self.u32_at(
            self.pclntab
                .checked_add(index.checked_mul(FUNCTAB_ENTRY_SIZE)?)?,
        )
    }

    fn find_func(&self, pc: u64) -> Option<(usize, FuncRecord)> {
        let (index, _) = self.find_index(pc)?;
        Some((index, self.func_record(index)?))
    }

    /// The index of the function containing `pc` and its entry address (from the function table).
    fn find_index(&self, pc: u64) -> Option<(usize, u64)> {
        let rel = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let end = *self.entries.get(self.nfunc)?;
        if rel >= end || self.nfunc == 0 {
            return None;
        }
        // Largest index whose entry offset is <= rel, searched between two bucket starts.
        let bucket = (rel / BUCKET_SIZE) as usize;
        let lo = self.buckets.get(bucket).map_or(0, |b| *b as usize);
        let hi = self
            .buckets
            .get(bucket + 1)
            .map_or(self.nfunc, |b| (*b as usize + 1).min(self.nfunc));
        let window = self.entries.get(lo..hi.max(lo))?;
        let index = (lo + window.partition_point(|e| *e <= rel)).checked_sub(1)?;
        Some((
            index,
            self.text_start + u64::from(*self.entries.get(index)?),
        ))
    }

    /// The `_func` record of function `index`.
    fn func_record(&self, index: usize) -> Option<FuncRecord> {
        let funcoff = self.u32_at(self.pclntab + index * FUNCTAB_ENTRY_SIZE + 4)?;
        let at = self.pclntab.checked_add(funcoff as usize)?;
        let entry_off = self.u32_at(at)?;
        let fixed = match self.version {
            PclnVersion::Go118 => FUNC_SIZE_GO118,
            PclnVersion::Go120 => FUNC_SIZE_GO120,
        };
        Some(FuncRecord {
            at,
            entry: self.text_start + u64::from(entry_off),
            name_off: self.u32_at(at + FUNC_NAME_OFF)?,
            pcfile: self.u32_at(at + FUNC_PCFILE)?,
            pcln: self.u32_at(at + FUNC_PCLN)?,
            npcdata: self.u32_at(at + FUNC_NPCDATA)?,
            cu_offset: self.u32_at(at + FUNC_CU_OFFSET)?,
            nfuncdata: *self.data.get(at + fixed - 1)?,
            fixed_size: fixed,
        })
    }

    fn inline_tree(&self, func: &FuncRecord) -> Option<usize> {
        let gofunc = self.gofunc?;
        if u32::from(func.nfuncdata) <= FUNCDATA_INL_TREE {
            return None;
        }
        let slot = func.at
            + func.fixed_size
            + (func.npcdata as usize).checked_mul(4)?
            + FUNCDATA_INL_TREE as usize * 4;
        let off = self.u32_at(slot)?;
        (off != FUNCDATA_NONE)
            .then(|| gofunc.checked_add(off as usize))
            .flatten()
    }

    fn inlined_call(&self, tree: usize, index: usize) -> Option<InlinedCall> {
        let (size, name, parent) = match self.version {
            PclnVersion::Go118 => (INL_SIZE_GO118, INL_NAME_GO118, INL_PARENT_PC_GO118),
            PclnVersion::Go120 => (INL_SIZE_GO120, INL_NAME_GO120, INL_PARENT_PC_GO120),
        };
        let at = tree.checked_add(index.checked_mul(size)?)?;
        Some(InlinedCall {
            name_off: self.u32_at(at + name)?,
            parent_pc: self.u32_at(at + parent)? as i32,
        })
    }

    fn function_name(&self, name_off: u32) -> Option<String> {
        let raw = self.cstr(self.funcnametab.checked_add(name_off as usize)?)?;
        Some(name_for_print(raw))
    }

    /// The `filetab` offset of file index `index` in `func`'s compilation unit.
    fn file_offset(&self, func: &FuncRecord, index: i32) -> Option<u32> {
        let index = u32::try_from(index).ok()?;
        let slot = self
            .cutab
            .checked_add((func.cu_offset.checked_add(index)? as usize).checked_mul(4)?)?;
        let file_off = self.u32_at(slot)?;
        (file_off != u32::MAX).then_some(file_off)
    }

    #[inline]
    fn u32_at(&self, at: usize) -> Option<u32> {
        let bytes: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.little_endian {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    }

    fn cstr(&self, at: usize) -> Option<&str> {
        self.cstr_scan(at).map(|(s, _)| s)
    }

    /// The NUL-terminated UTF-8 string at `at`, and whether it holds a `[` (one pass over the
    /// bytes; strings of ASCII, the norm, are validated by that same pass).
    #[inline]
    fn cstr_scan(&self, at: usize) -> Option<(&str, bool)> {
        let rest = self.data.get(at..)?;
        let mut high = 0u8;
        let mut bracket = false;
        let len = rest.iter().position(|&b| {
            high |= b;
            bracket |= b == b'[';
            b == 0
        })?;
        let bytes = &rest[..len];
        let text = if high < 0x80 {
            // SAFETY: every byte is below 0x80, so the bytes are ASCII, which is valid UTF-8.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        } else {
            std::str::from_utf8(bytes).ok()?
        };
        Some((text, bracket))
    }

    /// Pointer size of the target.
    pub fn pointer_size(&self) -> usize {
        self.ptr_size
    }
}

/// The `_func` fields a lookup needs.
struct FuncRecord {
    /// File offset of the record.
    at: usize,
    entry: u64,
    name_off: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    nfuncdata: u8,
    fixed_size: usize,
}

impl FuncRecord {
    /// Offset into `pctab` of pc-data table `index`, when present.
    fn pcdata(&self, tab: &GoPclnTab, index: u32) -> Option<u32> {
        if index >= self.npcdata {
            return None;
        }
        let off = tab.u32_at(self.at + self.fixed_size + index as usize * 4)?;
        (off != 0).then_some(off)
    }
}

/// One node of an inline tree.
struct InlinedCall {
    name_off: u32,
    parent_pc: i32,
}

/// The runtime's `funcNameForPrint`: type arguments of generic instantiations print as `[...]`.
pub fn name_for_print(raw: &str) -> String {
    name_for_print_cow(raw).into_owned()
}

/// [`name_for_print`], borrowing `raw` when it prints as is.
pub fn name_for_print_cow(raw: &str) -> Cow<'_, str> {
    if let Some(open) = raw.find('[')
        && let Some(close) = raw.rfind(']')
        && open < close
    {
        return Cow::Owned(format!("{}[...]{}", &raw[..open], &raw[close + 1..]));
    }
    Cow::Borrowed(raw)
}

/// Sorts batch keys by their upper half (the address's offset into the text; keys of equal
/// offsets stay in their original order). Large batches use an LSD radix sort over the bits the
/// offsets actually use (two or three passes), several times faster than a comparison sort.
fn sort_keys(keys: &mut Vec<u64>) {
    const RADIX_FROM: usize = 2048;
    if keys.len() < RADIX_FROM {
        keys.sort_unstable();
        return;
    }
    let max = keys.iter().map(|k| k >> 32).max().unwrap_or(0);
    let bits = 64 - max.leading_zeros();
    if bits == 0 {
        return;
    }
    let passes = bits.div_ceil(12);
    let digit = bits.div_ceil(passes);
    let mask = (1u64 << digit) - 1;
    let mut buf = vec![0u64; keys.len()];
    let mut counts = vec![0usize; 1 << digit];
    for pass in 0..passes {
        let shift = 32 + pass * digit;
        counts.fill(0);
        for k in keys.iter() {
            counts[((k >> shift) & mask) as usize] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for k in keys.iter() {
            let d = ((k >> shift) & mask) as usize;
            buf[counts[d]] = *k;
            counts[d] += 1;
        }
        std::mem::swap(keys, &mut buf);
    }
}

/// Parses and validates a header at file offset `offset` (virtual address `vaddr`).
fn parse_header(image: &ElfImage, offset: usize, vaddr: u64) -> Option<Header> {
    let data = image.data();
    let le = image.is_little_endian();
    let head = data.get(offset..offset.checked_add(HEADER_WORDS_START)?)?;
    let magic = read_uint(&head[..4], le) as u32;
    let version = match magic {
        MAGIC_GO118 => PclnVersion::Go118,
        MAGIC_GO120 => PclnVersion::Go120,
        _ => return None,
    };
    let (pad1, pad2, quantum, ptr_size) = (head[4], head[5], head[6], head[7]);
    if pad1 != 0 || pad2 != 0 || !matches!(quantum, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
        return None;
    }
    let ps = usize::from(ptr_size);
    let mut words = [0u64; HDR_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        let at = offset + HEADER_WORDS_START + i * ps;
        *w = read_uint(data.get(at..at + ps)?, le);
    }
    // Sub-tables follow the header in a fixed order.
    let order = [
        HDR_FUNCNAME_OFFSET,
        HDR_CU_OFFSET,
        HDR_FILETAB_OFFSET,
        HDR_PCTAB_OFFSET,
        HDR_PCLN_OFFSET,
    ];
    let header_len = (HEADER_WORDS_START + HDR_WORDS * ps) as u64;
    if words[HDR_FUNCNAME_OFFSET] < header_len {
        return None;
    }
    if order.windows(2).any(|w| words[w[0]] > words[w[1]]) {
        return None;
    }
    let nfunc = words[HDR_NFUNC];
    let functab_end = (offset as u64)
        .checked_add(words[HDR_PCLN_OFFSET])?
        .checked_add(
            nfunc
                .checked_add(1)?
                .checked_mul(FUNCTAB_ENTRY_SIZE as u64)?,
        )?;
    if nfunc == 0 || functab_end > data.len() as u64 {
        return None;
    }
    // The function table must be sorted: check its ends and a few entries between.
    let functab = offset + usize::try_from(words[HDR_PCLN_OFFSET]).ok()?;
    let entry = |i: u64| -> Option<u32> {
        let at = functab + usize::try_from(i).ok()? * FUNCTAB_ENTRY_SIZE;
        Some(read_uint(data.get(at..at + 4)?, le) as u32)
    };
    let probes = [0, nfunc / 4, nfunc / 2, nfunc * 3 / 4, nfunc];
    let mut last = 0u32;
    for i in probes {
        let e = entry(i)?;
        if e < last {
            return None;
        }
        last = e;
    }
    Some(Header {
        vaddr,
        offset,
        version,
        ptr_size: ps,
        quantum: u64::from(quantum),
        words,
    })
}

/// Finds the header: `.gopclntab`, then `.go.module`'s first word, then a scan of read-only data.
fn find_header(image: &ElfImage) -> Result<Header, PclnError> {
    if let Some(sec) = image.section(".gopclntab")
        && let Some((off, _)) = sec.file_range
    {
        let off = usize::try_from(off).map_err(|_| PclnError::BadHeader("offset"))?;
        return parse_header(image, off, sec.addr).ok_or(PclnError::BadHeader(
            "the .gopclntab section holds no valid Go 1.18+ header",
        ));
    }
    if let Some(sec) = image.section(".go.module")
        && let Some(ptr) = image.read_pointer(sec.addr)
        && let Some(off) = image.vaddr_to_offset(ptr)
        && let Some(h) = usize::try_from(off)
            .ok()
            .and_then(|off| parse_header(image, off, ptr))
    {
        return Ok(h);
    }
    // Scan allocated, non-executable sections (or segments when there are no section headers)
    // for the magic at pointer-aligned offsets.
    let mut ranges: Vec<(u64, u64, u64)> = image
        .sections()
        .iter()
        .filter(|s| s.addr != 0 && !s.is_text)
        .filter_map(|s| s.file_range.map(|(off, len)| (s.addr, off, len)))
        .collect();
    if ranges.is_empty() {
        ranges = image
            .segments()
            .iter()
            .filter(|s| !s.executable)
            .map(|s| (s.vaddr, s.offset, s.file_size))
            .collect();
    }
    let le = image.is_little_endian();
    for (addr, off, len) in ranges {
        let (Ok(start), Ok(len)) = (usize::try_from(off), usize::try_from(len)) else {
            continue;
        };
        let Some(bytes) = image.data().get(start..start.saturating_add(len)) else {
            continue;
        };
        // Align the scan to 8 bytes of virtual address.
        let skew = ((8 - (addr % 8)) % 8) as usize;
        let mut i = skew;
        while i + 8 <= bytes.len() {
            let magic = read_uint(&bytes[i..i + 4], le) as u32;
            if (magic == MAGIC_GO118 || magic == MAGIC_GO120)
                && let Some(h) = parse_header(image, start + i, addr + i as u64)
            {
                return Ok(h);
            }
            i += 8;
        }
    }
    Err(PclnError::NotFound)
}

/// Finds `runtime.firstmoduledata`: `.go.module`, else a word pointing at the header whose next
/// word points at `funcnametab`.
fn find_moduledata(image: &ElfImage, header: &Header) -> Option<u64> {
    let ps = header.ptr_size as u64;
    let funcnametab = header.vaddr + header.words[HDR_FUNCNAME_OFFSET];
    let valid = |md: u64| {
        image.read_pointer(md) == Some(header.vaddr)
            && image.read_pointer(md + MD_FUNCNAMETAB * ps) == Some(funcnametab)
    };
    if let Some(sec) = image.section(".go.module")
        && valid(sec.addr)
    {
        return Some(sec.addr);
    }
    // PIE: the pointer is a relocation addend.
    if let Some(md) = image
        .relocated_pointers_to(header.vaddr)
        .into_iter()
        .find(|site| valid(*site))
    {
        return Some(md);
    }
    // Non-PIE: the pointer is stored as is, in a writable data section.
    let le = image.is_little_endian();
    for sec in image.sections() {
        if !matches!(
            sec.name.as_str(),
            ".noptrdata" | ".data" | ".data.rel.ro" | ".go.module"
        ) {
            continue;
        }
        let Some(bytes) = image.section_data(sec) else {
            continue;
        };
        let mut i = ((ps - sec.addr % ps) % ps) as usize;
        while i + ps as usize <= bytes.len() {
            if read_uint(&bytes[i..i + ps as usize], le) == header.vaddr
                && valid(sec.addr + i as u64)
            {
                return Some(sec.addr + i as u64);
            }
            i += ps as usize;
        }
    }
    None
}

/// Reads `moduledata.gofunc`, trying each layout and keeping the one pointing into read-only data
/// at or after `moduledata.rodata`.
fn find_gofunc(image: &ElfImage, md: u64, version: PclnVersion) -> Option<u64> {
    let ps = image.pointer_size() as u64;
    let candidates = match version {
        PclnVersion::Go118 => MD_GOFUNC_GO118,
        PclnVersion::Go120 => MD_GOFUNC_GO120,
    };
    candidates.iter().find_map(|&index| {
        let rodata = image.read_pointer(md + (index - 1) * ps)?;
        let gofunc = image.read_pointer(md + index * ps)?;
        let in_readonly = image
            .segments()
            .iter()
            .any(|s| !s.executable && gofunc >= s.vaddr && gofunc - s.vaddr < s.file_size);
        (rodata != 0 && gofunc >= rodata && in_readonly).then_some(gofunc)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value at offset `off` of decoded runs, `NO_VALUE` past their end.
    fn run_value(runs: &[PcValueRun], off: u32) -> i32 {
        let i = runs.partition_point(|r| r.end <= off);
        runs.get(i).map_or(NO_VALUE, |r| r.value)
    }

    #[test]
    fn generic_names_print_like_the_runtime() {
        assert_eq!(name_for_print("main.Map[go.shape.int]"), "main.Map[...]");
        assert_eq!(name_for_print("main.(*T).M"), "main.(*T).M");
        assert_eq!(name_for_print("main.F[...].func1"), "main.F[...].func1");
    }

    fn table_over(pctab: &[u8]) -> GoPclnTab {
        GoPclnTab {
            data: bytes::Bytes::copy_from_slice(pctab),
            little_endian: true,
            version: PclnVersion::Go120,
            ptr_size: 8,
            quantum: 1,
            nfunc: 0,
            text_start: 0,
            funcnametab: 0,
            cutab: 0,
            filetab: 0,
            pctab: 0,
            pclntab: 0,
            gofunc: None,
            entries: Box::default(),
            buckets: Vec::new(),
            wrapper_id: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn decodes_pc_value_tables() {
        // Offset 0 means "no table": start the table at 1. Value -1+11 = 10 for 4 bytes, then
        // +2 = 12 for 6 more bytes (zig-zag deltas 22 and 4), then the end marker.
        let tab = table_over(&[0xff, 22, 4, 4, 6, 0]);
        let runs = decode_pcvalue(&tab, 1, 10);
        assert_eq!(
            runs,
            [
                PcValueRun { end: 4, value: 10 },
                PcValueRun { end: 10, value: 12 }
            ]
        );
        assert_eq!(run_value(&runs, 0), 10);
        assert_eq!(run_value(&runs, 3), 10);
        assert_eq!(run_value(&runs, 4), 12);
        assert_eq!(run_value(&runs, 9), 12);
        assert_eq!(run_value(&runs, 10), NO_VALUE);
        // Decoding stops at the run covering the function's last byte.
        assert_eq!(decode_pcvalue(&tab, 1, 3).len(), 1);
        // Absent table.
        assert!(decode_pcvalue(&tab, 0, 10).is_empty());
        // Zero-length runs are dropped (no offset selects them): +1 for 0 bytes, then +1 for 2.
        let tab = table_over(&[0xff, 22, 4, 2, 0, 2, 2, 0]);
        assert_eq!(
            decode_pcvalue(&tab, 1, 6),
            [
                PcValueRun { end: 4, value: 10 },
                PcValueRun { end: 6, value: 12 }
            ]
        );
        // Truncated and garbage tables give some runs or none, never panic, and stay bounded.
        for cut in 0..6 {
            let tab = table_over(&[0xff, 22, 4, 4, 6, 0][..cut]);
            let _ = decode_pcvalue(&tab, 1, 8);
        }
        let tab = table_over(&[0xff; 64]);
        assert!(decode_pcvalue(&tab, 1, u32::MAX).len() <= 64);
        let mut zeros = vec![0xffu8];
        zeros.extend(std::iter::repeat_n([2u8, 0], 10_000).flatten());
        let tab = table_over(&zeros);
        assert!(decode_pcvalue(&tab, 1, 16).is_empty());
    }

    #[test]
    fn streaming_lookup_matches_decoded_runs() {
        let tables: [&[u8]; 4] = [
            &[0xff, 22, 4, 4, 6, 0],
            &[0xff, 22, 4, 2, 0, 2, 2, 0],
            &[0xff, 22, 4, 4],
            &[0xff; 16],
        ];
        for bytes in tables {
            let tab = table_over(bytes);
            for func_len in [3, 6, 10, 40] {
                let runs = decode_pcvalue(&tab, 1, func_len);
                for off in 0..func_len + 2 {
                    let streamed = PcValueReader::new(&tab, 1, func_len).value_at(off);
                    assert_eq!(
                        streamed,
                        run_value(&runs, off),
                        "{bytes:?} len {func_len} @{off}"
                    );
                }
            }
        }
    }

    #[test]
    fn batch_keys_sort_by_offset() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Below and above the radix threshold, narrow and wide offsets, with duplicates.
        for (n, modulo) in [
            (10, 7u64),
            (5_000, 1 << 24),
            (5_000, 300),
            (70_000, u64::from(u32::MAX)),
        ] {
            let mut keys: Vec<u64> = (0..n as u64)
                .map(|i| ((next() % modulo) << 32) | i)
                .collect();
            let mut expected = keys.clone();
            expected.sort_by_key(|k| k >> 32);
            sort_keys(&mut keys);
            let offsets = |v: &[u64]| v.iter().map(|k| k >> 32).collect::<Vec<_>>();
            assert_eq!(offsets(&keys), offsets(&expected));
            let mut indexes: Vec<u64> = keys.iter().map(|k| k & 0xffff_ffff).collect();
            indexes.sort_unstable();
            assert!(indexes.iter().copied().eq(0..n as u64), "every key once");
        }
        let mut same = vec![5u64 << 32; 3000];
        sort_keys(&mut same);
        assert!(same.iter().all(|k| *k == 5 << 32));
        let mut zeros: Vec<u64> = (0..3000).collect();
        sort_keys(&mut zeros);
        assert!(zeros.iter().copied().eq(0..3000));
    }
}
