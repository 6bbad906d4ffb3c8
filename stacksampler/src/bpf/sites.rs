//! Where the runtime-event uprobes go: file offsets of Go runtime functions in the target's
//! executable, from `.symtab` when present, else from `.gopclntab` (stripped binaries).

use std::{collections::HashMap, sync::Arc};

use object::{Object, ObjectSymbol};

use crate::symbolize::{FormatError, elf::ElfImage, gopclntab::GoPclnTab};

/// Runtime functions the probes use.
pub mod functions {
    /// `runtime.copystack(gp *g, newsize uintptr)`.
    pub const COPYSTACK: &str = "runtime.copystack";
    /// `runtime.newproc1(fn *funcval, callergp *g, callerpc uintptr, ...) *g`.
    pub const NEWPROC1: &str = "runtime.newproc1";
    /// The closure `newproc` runs on the system stack; it calls `newproc1`.
    pub const NEWPROC_FUNC1: &str = "runtime.newproc.func1";
    /// `runtime.goexit1()`: the end of every goroutine.
    pub const GOEXIT1: &str = "runtime.goexit1";
    /// `runtime.throw(s string)`.
    pub const THROW: &str = "runtime.throw";
    /// `runtime.fatal(s string)` (user-caused fatal errors: deadlock, concurrent map writes).
    pub const FATAL: &str = "runtime.fatal";
    /// `runtime.newstack`: a fatal error thrown from it is a stack overflow.
    pub const NEWSTACK: &str = "runtime.newstack";

    /// Every function looked up.
    pub const ALL: [&str; 7] = [
        COPYSTACK,
        NEWPROC1,
        NEWPROC_FUNC1,
        GOEXIT1,
        THROW,
        FATAL,
        NEWSTACK,
    ];
}

/// x86-64 `CALL rel32` opcode and instruction length.
const CALL_REL32: u8 = 0xe8;
const CALL_REL32_LEN: usize = 5;

/// Where a function's names came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteSource {
    /// The ELF symbol table.
    Symtab,
    /// Go's function table (`.gopclntab`), for stripped binaries.
    Pclntab,
}

/// One function of the executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionSite {
    /// Link-time address of the entry.
    pub vaddr: u64,
    /// End of the function's code (exclusive), when known.
    pub end: Option<u64>,
    /// File offset of the entry (what a uprobe is attached at).
    pub file_offset: u64,
}

/// The probe sites found in one executable.
#[derive(Clone, Debug)]
pub struct ProbeSites {
    /// Found functions by name (see [`functions`]).
    pub functions: HashMap<&'static str, FunctionSite>,
    /// File offset of the instruction after `CALL runtime.newproc1` in `runtime.newproc.func1`
    /// (AX holds the new `g` there), when found.
    pub newproc_return: Option<FunctionSite>,
    /// Where names came from.
    pub source: SiteSource,
}

/// Errors finding probe sites.
#[derive(Debug, thiserror::Error)]
pub enum SitesError {
    /// The executable is not a usable ELF file.
    #[error("parsing the executable: {0}")]
    Format(#[from] FormatError),
    /// No symbol table and no Go function table.
    #[error("the executable has neither a symbol table nor a Go function table (.gopclntab): {0}")]
    NoNames(String),
}

impl ProbeSites {
    /// Finds the runtime functions in the executable `data`.
    pub fn find(data: Arc<[u8]>) -> Result<Self, SitesError> {
        let image = ElfImage::parse(data)?;
        let mut found = HashMap::new();
        let mut source = SiteSource::Symtab;
        from_symtab(&image, &mut found);
        if !found.contains_key(functions::COPYSTACK) {
            let table =
                GoPclnTab::locate(&image).map_err(|e| SitesError::NoNames(e.to_string()))?;
            from_pclntab(&image, &table, &mut found);
            source = SiteSource::Pclntab;
        }
        let newproc_return = find_newproc_return(&image, &found);
        Ok(Self {
            functions: found,
            newproc_return,
            source,
        })
    }

    /// The site of `name`, when found.
    pub fn get(&self, name: &str) -> Option<FunctionSite> {
        self.functions.get(name).copied()
    }
}

fn site(image: &ElfImage, vaddr: u64, end: Option<u64>) -> Option<FunctionSite> {
    Some(FunctionSite {
        vaddr,
        end,
        file_offset: image.vaddr_to_offset(vaddr)?,
    })
}

fn from_symtab(image: &ElfImage, found: &mut HashMap<&'static str, FunctionSite>) {
    let Ok(file) = object::File::parse(&**image.data()) else {
        return;
    };
    for sym in file.symbols() {
        let Ok(name) = sym.name() else { continue };
        if let Some(wanted) = functions::ALL.iter().find(|w| **w == name)
            && sym.address() != 0
        {
            let end = (sym.size() > 0).then(|| sym.address() + sym.size());
            if let Some(s) = site(image, sym.address(), end) {
                found.insert(wanted, s);
            }
        }
    }
}

/// Enumerates function entries through [`GoPclnTab::function_name_at`]: the name is constant
/// over a function's code, so each boundary is found by a galloping then binary search.
fn from_pclntab(
    image: &ElfImage,
    table: &GoPclnTab,
    found: &mut HashMap<&'static str, FunctionSite>,
) {
    let Some((start, end)) = table.pc_range() else {
        return;
    };
    let mut pc = start;
    while pc < end && found.len() < functions::ALL.len() {
        let Some(name) = table.function_name_at(pc) else {
            break;
        };
        let next = next_boundary(table, &name, pc, end);
        if let Some(wanted) = functions::ALL.iter().find(|w| **w == name)
            && let Some(s) = site(image, pc, Some(next))
        {
            found.insert(wanted, s);
        }
        pc = next;
    }
}

/// The first pc after `pc` (at most `end`) whose function is not `name`.
fn next_boundary(table: &GoPclnTab, name: &str, pc: u64, end: u64) -> u64 {
    let same = |p: u64| p < end && table.function_name_at(p).as_deref() == Some(name);
    // Gallop: [lo] is `name`, [hi] is not (or is the end).
    let mut lo = pc;
    let mut step = 1u64;
    let mut hi = loop {
        let probe = lo.saturating_add(step).min(end);
        if !same(probe) {
            break probe;
        }
        lo = probe;
        step = step.saturating_mul(2);
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if same(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi = hi.max(pc + 1);
    hi
}

/// The instruction after `CALL runtime.newproc1` inside `runtime.newproc.func1` (amd64 only).
fn find_newproc_return(
    image: &ElfImage,
    found: &HashMap<&'static str, FunctionSite>,
) -> Option<FunctionSite> {
    let closure = found.get(functions::NEWPROC_FUNC1)?;
    let target = found.get(functions::NEWPROC1)?.vaddr;
    let end = closure.end?;
    let len = usize::try_from(end.checked_sub(closure.vaddr)?).ok()?;
    let code = image.read_vaddr(closure.vaddr, len)?;
    if !image.is_little_endian() {
        return None;
    }
    let mut hits = (0..code.len().saturating_sub(CALL_REL32_LEN - 1)).filter_map(|i| {
        if code[i] != CALL_REL32 {
            return None;
        }
        let rel = i32::from_le_bytes(code[i + 1..i + CALL_REL32_LEN].try_into().ok()?);
        let next = closure.vaddr + (i + CALL_REL32_LEN) as u64;
        (next.wrapping_add(rel as i64 as u64) == target).then_some(next)
    });
    let next = hits.next()?;
    // Two candidates would make the choice a guess: attach nothing then.
    if hits.next().is_some() {
        return None;
    }
    site(image, next, None)
}
