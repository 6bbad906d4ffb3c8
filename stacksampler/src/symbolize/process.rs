//! [`ProcessSymbolizer`]: names the addresses of one process.
//!
//! At creation it reads `/proc/PID/maps` and opens and indexes every mapped file (through
//! `/proc/PID/map_files` or `/proc/PID/root`, so containers and deleted executables work) and
//! copies the vdso out of `/proc/PID/mem`; afterwards it needs nothing from the process, so it keeps
//! working after the target exits.
//!
//! Normalization: a runtime address `a` in a mapping `[start, end)` of file offset `off` is the
//! file offset `a - start + off`, which the file's `PT_LOAD` headers turn into the ELF virtual
//! address the symbol tables use. This is the load bias computation for PIE and non-PIE alike
//! (non-PIE segments map at their own virtual address, so the bias is zero).

use std::{collections::HashMap, os::unix::fs::FileExt, path::Path, sync::Arc};

use super::{
    Frame, Symbolize, SymbolizeError, Symbols, cache,
    dwarf::debug_file_candidates,
    kallsyms,
    maps::{MapsEntry, open_mapped_file, parse_maps},
    module::ModuleSymbolizer,
};

/// Lowest kernel address on 64-bit Linux.
const KERNEL_SPACE_START: u64 = 0xffff_8000_0000_0000;
/// Calls with more new addresses than this are not memoized (see [`ProcessSymbolizer::symbolize`]).
const MEMO_MAX_BATCH: usize = 4096;
/// Largest vdso copied out of the target.
const MAX_VDSO_SIZE: u64 = 1 << 20;

/// One mapping and what backs it.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    /// Path as the target sees it (or `[vdso]`).
    name: Arc<str>,
    /// The indexed file; `None` when it could not be opened or parsed.
    module: Option<Arc<ModuleSymbolizer>>,
}

/// Runtime address ranges `[lo, hi)` of a process's Go code (see
/// [`ProcessSymbolizer::go_ranges`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRanges {
    /// All Go functions.
    pub text: (u64, u64),
    /// The functions asked for, in order (`None`: not in the binary).
    pub functions: Vec<Option<(u64, u64)>>,
}

/// A file that could not be used, kept for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleProblem {
    /// Path of the mapped file.
    pub path: String,
    /// What went wrong.
    pub error: String,
}

/// Symbolizer for a live process (see the module documentation).
pub struct ProcessSymbolizer {
    pid: u32,
    mappings: Vec<Mapping>,
    problems: Vec<ModuleProblem>,
    memo: HashMap<u64, Vec<Frame>>,
}

impl std::fmt::Debug for ProcessSymbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSymbolizer")
            .field("pid", &self.pid)
            .field("mappings", &self.mappings.len())
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl ProcessSymbolizer {
    /// Reads the maps of `pid` and opens and indexes every mapped file now.
    pub fn new(pid: u32) -> Result<Self, SymbolizeError> {
        let mut this = Self {
            pid,
            mappings: Vec::new(),
            problems: Vec::new(),
            memo: HashMap::new(),
        };
        this.refresh()?;
        Ok(this)
    }

    /// A symbolizer that knows no mapping (every user address stays unnamed), for a process
    /// whose maps could not be read.
    pub fn empty(pid: u32) -> Self {
        Self {
            pid,
            mappings: Vec::new(),
            problems: Vec::new(),
            memo: HashMap::new(),
        }
    }

    /// The process this symbolizer serves.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Files that could not be opened or parsed (their addresses print as `module+0xoffset`).
    pub fn problems(&self) -> &[ModuleProblem] {
        &self.problems
    }

    /// Re-reads the maps while the process lives (libraries loaded by `dlopen`). Files already
    /// indexed are reused; mappings that vanished are kept, so older addresses still resolve.
    pub fn refresh(&mut self) -> Result<(), SymbolizeError> {
        let maps_path = format!("/proc/{}/maps", self.pid);
        let text = std::fs::read_to_string(&maps_path).map_err(|source| SymbolizeError::Io {
            path: maps_path.clone(),
            source,
        })?;
        let entries = parse_maps(&text).map_err(|e| SymbolizeError::Maps {
            path: maps_path,
            source: e,
        })?;
        let root = format!("/proc/{}/root", self.pid);
        // One open per file: entries of the same inode share the module.
        let mut by_inode: HashMap<(String, u64), Option<Arc<ModuleSymbolizer>>> = HashMap::new();
        let mut fresh = Vec::new();
        for entry in &entries {
            let name: Arc<str> = match &entry.path {
                Some(p) => Arc::from(p.as_str()),
                None => continue,
            };
            let module = if entry.is_file() {
                let id = (entry.device.clone(), entry.inode);
                match by_inode.get(&id) {
                    Some(m) => m.clone(),
                    None => {
                        let m = match self.open_file(entry, Path::new(&root)) {
                            Ok(m) => Some(m),
                            Err(e) => {
                                self.problems.push(ModuleProblem {
                                    path: name.to_string(),
                                    error: e.to_string(),
                                });
                                None
                            }
                        };
                        by_inode.insert(id, m.clone());
                        m
                    }
                }
            } else if entry.is_vdso() {
                self.read_vdso(entry)
            } else {
                continue;
            };
            fresh.push(Mapping {
                start: entry.start,
                end: entry.end,
                offset: entry.offset,
                name,
                module,
            });
        }
        // Keep old mappings that no longer exist (unmapped libraries) behind the fresh ones.
        for old in std::mem::take(&mut self.mappings) {
            if !fresh.iter().any(|m| m.start < old.end && old.start < m.end) {
                fresh.push(old);
            }
        }
        fresh.sort_by_key(|m| m.start);
        self.mappings = fresh;
        self.memo.clear();
        Ok(())
    }

    fn open_file(
        &self,
        entry: &MapsEntry,
        root: &Path,
    ) -> Result<Arc<ModuleSymbolizer>, SymbolizeError> {
        let path = entry.path.as_deref().unwrap_or("");
        let (mut file, key, opened) =
            open_mapped_file(self.pid, entry).map_err(|source| SymbolizeError::Io {
                path: path.to_owned(),
                source,
            })?;
        cache::get_or_insert(key, || {
            let mut module =
                ModuleSymbolizer::from_file(&mut file, &opened).map_err(|e| match e {
                    SymbolizeError::Format { source, .. } => SymbolizeError::Format {
                        path: path.to_owned(),
                        source,
                    },
                    other => other,
                })?;
            let candidates = debug_file_candidates(module.image(), path, Some(root));
            module.set_debug_candidates(candidates);
            Ok(module)
        })
    }

    fn read_vdso(&self, entry: &MapsEntry) -> Option<Arc<ModuleSymbolizer>> {
        let len = entry.end.checked_sub(entry.start)?;
        if len > MAX_VDSO_SIZE {
            return None;
        }
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid)).ok()?;
        let mut buf = vec![0u8; usize::try_from(len).ok()?];
        mem.read_exact_at(&mut buf, entry.start).ok()?;
        ModuleSymbolizer::from_bytes(buf.into()).ok().map(Arc::new)
    }

    /// Stack bytes the Go function at `addr` has pushed at that instruction (see
    /// [`GoPclnTab::frame_size_at`](super::gopclntab::GoPclnTab::frame_size_at)); `None` for
    /// addresses outside Go code.
    pub fn go_frame_size_at(&self, addr: u64) -> Option<u32> {
        let (table, vaddr) = self.go_table_at(addr)?;
        table.frame_size_at(vaddr)
    }

    /// Runtime address of the entry of the Go function containing `addr`; `None` outside Go
    /// code.
    pub fn go_function_entry(&self, addr: u64) -> Option<u64> {
        let (table, vaddr) = self.go_table_at(addr)?;
        let entry = table.function_entry(vaddr)?;
        Some(addr - (vaddr - entry))
    }

    /// Whether `addr` is in a compiler-generated Go wrapper (which Go's tracebacks hide).
    pub fn go_is_wrapper(&self, addr: u64) -> bool {
        self.go_table_at(addr).is_some_and(|(table, vaddr)| {
            let wrapper = table.wrapper_func_id();
            wrapper.is_some() && table.func_id_at(vaddr) == wrapper
        })
    }

    /// The indexed file mapped at `addr` and `addr` as an ELF virtual address of it (what the
    /// native unwinder looks call-frame information up with).
    pub fn module_at(&self, addr: u64) -> Option<(&Arc<ModuleSymbolizer>, u64)> {
        let idx = self.mappings.partition_point(|m| m.start <= addr);
        let map = idx
            .checked_sub(1)
            .and_then(|i| self.mappings.get(i))
            .filter(|m| addr < m.end)?;
        let module = map.module.as_ref()?;
        let vaddr = module
            .image()
            .offset_to_vaddr(addr - map.start + map.offset)?;
        Some((module, vaddr))
    }

    /// Largest stack frame of the Go function containing `addr` (see
    /// [`GoPclnTab::max_frame_size`](super::gopclntab::GoPclnTab::max_frame_size)).
    pub fn go_max_frame_size(&self, addr: u64) -> Option<u32> {
        let (table, vaddr) = self.go_table_at(addr)?;
        table.max_frame_size(vaddr)
    }

    /// Runtime address ranges of the Go text (the functions `.gopclntab` covers) and of the Go
    /// function `name` in it, from the first mapping with a Go table.
    pub fn go_ranges(&self, names: &[&str]) -> Option<GoRanges> {
        self.mappings.iter().find_map(|map| {
            let module = map.module.as_ref()?;
            let table = module.go_table()?;
            let image = module.image();
            let to_runtime = |vaddr: u64| {
                let off = image.vaddr_to_offset(vaddr)?;
                let addr = off.checked_sub(map.offset)? + map.start;
                (addr < map.end).then_some(addr)
            };
            let (lo, hi) = table.pc_range()?;
            let text = (to_runtime(lo)?, to_runtime(hi - 1)? + 1);
            let functions = names
                .iter()
                .map(|name| {
                    let (lo, hi) = table.function_range(name)?;
                    Some((to_runtime(lo)?, to_runtime(hi - 1)? + 1))
                })
                .collect();
            Some(GoRanges { text, functions })
        })
    }

    /// The Go table of the mapping holding `addr`, and `addr` as an ELF virtual address of it.
    fn go_table_at(&self, addr: u64) -> Option<(&super::gopclntab::GoPclnTab, u64)> {
        let (module, vaddr) = self.module_at(addr)?;
        Some((module.go_table()?, vaddr))
    }

    /// Where `addr` is: a mapping of an indexed file and the ELF virtual address in it, or
    /// frames right away (kernel, unmapped, unreadable file).
    fn locate(&self, addr: u64) -> Result<(usize, u64), Vec<Frame>> {
        if addr >= KERNEL_SPACE_START {
            return Err(vec![kallsyms::frame(addr)]);
        }
        let idx = self.mappings.partition_point(|m| m.start <= addr);
        let Some((map_idx, map)) = idx
            .checked_sub(1)
            .and_then(|i| Some((i, self.mappings.get(i)?)))
            .filter(|(_, m)| addr < m.end)
        else {
            return Err(vec![Frame::unknown(None, addr)]);
        };
        let file_offset = addr - map.start + map.offset;
        let unknown = || vec![Frame::unknown(Some((map.name.clone(), file_offset)), addr)];
        let Some(module) = &map.module else {
            return Err(unknown());
        };
        match module.image().offset_to_vaddr(file_offset) {
            Some(vaddr) => Ok((map_idx, vaddr)),
            None => Err(unknown()),
        }
    }

    /// The file mappings that hold any of `addrs`, in address order.
    fn mappings_of(&self, addrs: &[u64]) -> Vec<super::ModuleMapping> {
        let mut used = vec![false; self.mappings.len()];
        for &addr in addrs {
            let idx = self.mappings.partition_point(|m| m.start <= addr);
            if let Some(i) = idx.checked_sub(1)
                && self.mappings[i].end > addr
            {
                used[i] = true;
            }
        }
        self.mappings
            .iter()
            .zip(used)
            .filter(|(m, used)| *used && m.module.is_some())
            .map(|(m, _)| super::ModuleMapping {
                image: 0,
                start: m.start,
                limit: m.end,
                file_offset: m.offset,
                path: m.name.clone(),
                build_id: m
                    .module
                    .as_ref()
                    .and_then(|module| module.image().build_id())
                    .map(|id| id.iter().map(|b| format!("{b:02x}")).collect()),
            })
            .collect()
    }

    /// Symbolizes the addresses of `batch` in the file of its mapping.
    fn flush_batch(
        &mut self,
        batch: MappingBatch,
        memoize: bool,
        by_addr: &mut HashMap<u64, Vec<Frame>>,
    ) {
        let map = &self.mappings[batch.map_idx];
        let Some(module) = &map.module else {
            return;
        };
        let frames = module.frames_batch(&batch.vaddrs, &map.name);
        for (a, f) in batch.addrs.into_iter().zip(frames) {
            if memoize {
                self.memo.insert(a, f.clone());
            }
            by_addr.insert(a, f);
        }
    }
}

impl Symbolize for ProcessSymbolizer {
    /// Addresses seen before come from the memo; the others are symbolized in one batch per
    /// mapping (see [`ModuleSymbolizer::frames_batch`]).
    ///
    /// The memo serves the many small calls of `--watch` (alerts, stacks of events); a large
    /// call (a whole profile's unique addresses, symbolized once) is not memoized, as copying
    /// all its frames would double its cost.
    fn symbolize(&mut self, addrs: &[u64]) -> Symbols {
        let mut by_addr = HashMap::with_capacity(addrs.len());
        let mut misses = Vec::new();
        for &addr in addrs {
            match self.memo.get(&addr) {
                Some(f) => {
                    by_addr.insert(addr, f.clone());
                }
                None => misses.push(addr),
            }
        }
        misses.sort_unstable();
        misses.dedup();
        let memoize = misses.len() <= MEMO_MAX_BATCH;
        // Sorted addresses of one mapping are consecutive.
        let mut batch: Option<MappingBatch> = None;
        for &addr in &misses {
            match self.locate(addr) {
                Ok((map_idx, vaddr)) => {
                    if batch.as_ref().is_some_and(|b| b.map_idx != map_idx)
                        && let Some(done) = batch.take()
                    {
                        self.flush_batch(done, memoize, &mut by_addr);
                    }
                    let b = batch.get_or_insert_with(|| MappingBatch {
                        map_idx,
                        addrs: Vec::new(),
                        vaddrs: Vec::new(),
                    });
                    b.addrs.push(addr);
                    b.vaddrs.push(vaddr);
                }
                Err(frames) => {
                    if memoize {
                        self.memo.insert(addr, frames.clone());
                    }
                    by_addr.insert(addr, frames);
                }
            }
        }
        if let Some(done) = batch.take() {
            self.flush_batch(done, memoize, &mut by_addr);
        }
        Symbols {
            by_addr,
            mappings: self.mappings_of(addrs),
        }
    }
}

/// Addresses of one mapping symbolized together.
struct MappingBatch {
    /// Index in `ProcessSymbolizer::mappings`.
    map_idx: usize,
    /// The runtime addresses.
    addrs: Vec<u64>,
    /// The same, as ELF virtual addresses of the mapped file.
    vaddrs: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::FrameKind;

    #[inline(never)]
    fn a_marked_function() -> u64 {
        a_marked_function as *const () as usize as u64
    }

    #[test]
    fn symbolizes_own_function_and_libc() {
        let mut s = ProcessSymbolizer::new(std::process::id()).expect("symbolizer");
        let own = a_marked_function() + 1;
        let libc_fn = libc::getpid as *const () as usize as u64 + 1;
        let syms = s.symbolize(&[own, libc_fn, 8]);
        let f = &syms.frames(own)[0];
        assert!(f.function.contains("a_marked_function"), "{f:?}");
        let g = &syms.frames(libc_fn)[0];
        assert!(g.function.contains("getpid"), "{g:?}");
        assert_eq!(syms.frames(8)[0].kind, FrameKind::Unknown);
    }

    #[test]
    fn large_calls_are_not_memoized_and_answer_the_same() {
        let mut s = ProcessSymbolizer::new(std::process::id()).expect("symbolizer");
        let base = a_marked_function();
        // Addresses in this executable's text, plus ones in no mapping and in the kernel.
        let mut addrs: Vec<u64> = (0..MEMO_MAX_BATCH as u64 + 100).map(|i| base + i).collect();
        addrs.extend([8, KERNEL_SPACE_START + 0x1000, u64::MAX]);
        let first = s.symbolize(&addrs);
        assert!(s.memo.is_empty(), "a large call is not memoized");
        let small = s.symbolize(&addrs[..10]);
        assert_eq!(s.memo.len(), 10);
        let again = s.symbolize(&addrs);
        for a in &addrs {
            assert_eq!(first.frames(*a), again.frames(*a), "{a:#x}");
        }
        for a in &addrs[..10] {
            assert_eq!(first.frames(*a), small.frames(*a), "{a:#x}");
        }
        assert_eq!(first.by_addr.len(), addrs.len());
    }
}
