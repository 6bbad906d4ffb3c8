//! Batch resolution: the frames of many addresses in one pass over the function table (sorted
//! by address, records and tables prefetched ahead, each function's tables decoded once).

use super::*;

/// Buffers of a batch lookup, reused from function to function.
#[derive(Default)]
pub(super) struct BatchScratch<'a> {
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
pub(super) struct InlNode<'a> {
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

impl GoPclnTab {
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
    pub(super) fn prefetch_record(&self, index: usize) {
        if let Some(funcoff) = self.u32_at(self.pclntab + index * FUNCTAB_ENTRY_SIZE + 4) {
            self.prefetch(self.pclntab.saturating_add(funcoff as usize));
        }
    }

    /// Brings the start of function `index`'s line, file and inline tables and its name into the
    /// CPU cache (a hint: no effect on results).
    pub(super) fn prefetch_tables(&self, index: usize) {
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
    pub(super) fn prefetch(&self, at: usize) {
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
    pub(super) fn visit_function<'a>(
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
    pub(super) fn file_cached<'a>(
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

    /// The file of file index `value` in `func`'s compilation unit.
    pub(super) fn file_name(&self, func: &FuncRecord, value: i32) -> Option<&str> {
        self.cstr(
            self.filetab
                .checked_add(self.file_offset(func, value)? as usize)?,
        )
    }
}

/// Sorts batch keys by their upper half (the address's offset into the text; keys of equal
/// offsets stay in their original order). Large batches use an LSD radix sort over the bits the
/// offsets actually use (two or three passes), several times faster than a comparison sort.
pub(super) fn sort_keys(keys: &mut Vec<u64>) {
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
