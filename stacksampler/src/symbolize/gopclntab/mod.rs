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

//!
//! The reader, one job per file: `locate` (finding and validating the header, `moduledata`),
//! `pcvalue` (decoding pc-value tables), `batch` (resolving many addresses in one pass over the
//! table, the symbolizer's path), `names` (function and file names as Go prints them); this file
//! holds the table's layout, the record readers and the single-address queries the unwinding
//! side asks (frame size, function id, entry).

mod batch;
mod locate;
mod names;
mod pcvalue;

use std::borrow::Cow;

use super::elf::{ElfImage, read_uint};

pub use batch::GoFrameRef;
pub use names::{name_for_print, name_for_print_cow};
use pcvalue::*;

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

impl GoPclnTab {
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

#[cfg(test)]
mod tests {
    use super::{batch::sort_keys, *};

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
