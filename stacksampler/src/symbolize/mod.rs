//! Symbolization: turn each unique address of a profile into source frames, once.
//!
//! [`Symbolize`] names a process's addresses; [`ProcessSymbolizer`] does it for a target, one
//! mapping at a time. Each source of names is one [`Resolve`] implementation:
//! - `gopclntab`: Go's own tables (names, files, lines, inlined frames; stripped binaries too);
//! - `dwarf`: native code with debug info (also from `/usr/lib/debug`);
//! - `elf`: `.symtab` / `.dynsym` symbols;
//! - `kallsyms`: kernel addresses.
//!
//! and the rest places them:
//! - `maps`: `/proc/PID/maps`, opening mapped files in the target's view (`process.rs` turns
//!   runtime addresses into file virtual addresses);
//! - `module`: the sources of one file, asked in that order of preference (Go's table, DWARF,
//!   ELF symbols), each for the addresses the ones before it did not name;
//! - `cache`: indexed files shared by identity (device, inode, size, mtime).
//!
//! Address convention: the profile stores *call-site* addresses (return address - 1 for every frame
//! but the innermost, see `sample.rs`), so every address is looked up as it is.

pub mod cache;
pub mod dwarf;
pub mod elf;
pub mod gopclntab;
pub mod kallsyms;
pub mod maps;
pub mod module;
mod process;

use std::{collections::HashMap, sync::Arc};

pub use module::ModuleSymbolizer;
pub use process::{ModuleProblem, ProcessSymbolizer};

use serde::Serialize;

/// What kind of code a frame belongs to (used for colouring and summaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Go code outside the runtime.
    Go,
    /// Go runtime (`runtime.*`, `internal/*`...).
    GoRuntime,
    /// Native code: cgo, libc, the vdso.
    Native,
    /// Kernel code.
    Kernel,
    /// No symbol found: the frame prints as `module+0xoffset`.
    Unknown,
}

/// One source frame. An address expands to several when functions were inlined into it.
///
/// Names are shared (`Arc<str>`): a profile's addresses name far fewer functions and files than
/// they have frames, and a symbolizer hands out one copy of each (allocating two strings per
/// frame was most of a batch's time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// Function name as Go prints it (`main.(*T).Method`), or `module+0xoffset` when unknown.
    pub function: Arc<str>,
    /// Source file, when known.
    pub file: Option<Arc<str>>,
    /// Source line, when known.
    pub line: Option<u32>,
    /// This frame was inlined into the next (outer) one of the same address.
    pub inlined: bool,
    /// Path of the mapped file the address belongs to, when known.
    pub module: Option<Arc<str>>,
    pub kind: FrameKind,
}

/// Frames of each symbolized address, innermost (most inlined) first.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    pub by_addr: HashMap<u64, Vec<Frame>>,
    /// The target's file mappings the addresses fell in (for profiles that backends
    /// re-symbolize: real range, file offset and build id).
    pub mappings: Vec<ModuleMapping>,
}

/// One file mapping of the target, as `/proc/PID/maps` listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleMapping {
    /// The program image the mapping belongs to (see `images`: 0 before any exec).
    pub image: usize,
    pub start: u64,
    /// One past the last address.
    pub limit: u64,
    /// Offset in the file of `start`.
    pub file_offset: u64,
    /// The file, as the target names it.
    pub path: Arc<str>,
    /// The file's GNU build id in hex, when it has one.
    pub build_id: Option<String>,
}

impl ModuleMapping {
    /// Whether the (untagged) `addr` of `image` is in this mapping.
    pub fn contains(&self, image: usize, addr: u64) -> bool {
        self.image == image && self.start <= addr && addr < self.limit
    }
}

impl Symbols {
    /// The frames of `addr`; an address that was never symbolized gets one unknown frame.
    pub fn frames(&self, addr: u64) -> std::borrow::Cow<'_, [Frame]> {
        if addr == crate::markers::GAP_MARKER {
            return std::borrow::Cow::Owned(vec![Frame::gap()]);
        }
        if addr == crate::markers::SWITCH_MARKER {
            return std::borrow::Cow::Owned(vec![Frame::switch_point()]);
        }
        if addr == crate::markers::NOT_CAPTURED_MARKER {
            return std::borrow::Cow::Owned(vec![Frame::not_captured()]);
        }
        if addr == crate::markers::NATIVE_CUT_MARKER {
            return std::borrow::Cow::Owned(vec![Frame::native_cut()]);
        }
        match self.by_addr.get(&addr) {
            Some(frames) if !frames.is_empty() => std::borrow::Cow::Borrowed(frames),
            _ => std::borrow::Cow::Owned(vec![Frame::unknown(None, addr)]),
        }
    }
}

impl Frame {
    /// Function name of the pseudo-frame standing for the uncaptured middle of a deep stack.
    pub const GAP_FUNCTION: &'static str = "[... frames counted, not kept ...]";

    /// The pseudo-frame for the middle of a deep stack (see `markers::GAP_MARKER`).
    pub fn gap() -> Self {
        Self {
            function: Self::GAP_FUNCTION.into(),
            file: None,
            line: None,
            inlined: false,
            module: None,
            kind: FrameKind::Unknown,
        }
    }

    /// Function name of the pseudo-frame marking a system-stack switch (see
    /// `markers::SWITCH_MARKER`): frames above it ran on `g0`, frames below on the goroutine.
    pub const SWITCH_FUNCTION: &'static str = "--- switched to goroutine stack ---";

    /// The pseudo-frame for a system-stack switch point.
    pub fn switch_point() -> Self {
        Self {
            function: Self::SWITCH_FUNCTION.into(),
            file: None,
            line: None,
            inlined: false,
            module: None,
            kind: FrameKind::Unknown,
        }
    }

    /// Function name of the pseudo-frame of a running goroutine whose stack a wall-clock
    /// snapshot could not take (see `markers::NOT_CAPTURED_MARKER`).
    pub const NOT_CAPTURED_FUNCTION: &'static str = "[running, stack not captured]";

    /// The pseudo-frame for a running goroutine's uncaptured stack.
    pub fn not_captured() -> Self {
        Self {
            function: Self::NOT_CAPTURED_FUNCTION.into(),
            file: None,
            line: None,
            inlined: false,
            module: None,
            kind: FrameKind::Unknown,
        }
    }

    /// Function name of the pseudo-frame where the native part of a mixed stack was cut (see
    /// `markers::NATIVE_CUT_MARKER`).
    pub const NATIVE_CUT_FUNCTION: &'static str = "[native frames cut: unwind stopped]";

    /// The pseudo-frame for a cut native part.
    pub fn native_cut() -> Self {
        Self {
            function: Self::NATIVE_CUT_FUNCTION.into(),
            ..Self::switch_point()
        }
    }

    /// A frame for an address no backend could name: `module+0xoffset`, or the bare address.
    pub fn unknown(module: Option<(Arc<str>, u64)>, addr: u64) -> Self {
        let function = match &module {
            Some((path, offset)) => {
                let name = path.rsplit('/').next().unwrap_or(path);
                format!("{name}+{offset:#x}")
            }
            None => format!("{addr:#x}"),
        };
        Self {
            function: function.into(),
            file: None,
            line: None,
            inlined: false,
            module: module.map(|(p, _)| p),
            kind: FrameKind::Unknown,
        }
    }
}

/// One source of names: Go's `.gopclntab`, DWARF, ELF symbols (addresses are ELF virtual
/// addresses of one file) or kallsyms (kernel addresses).
pub trait Resolve {
    /// Sets `out[i]` to the frames of `addrs[i]`, innermost first, for each address this source
    /// names and `out[i]` is still empty (an earlier source named it); `module` is the path the
    /// frames carry.
    fn resolve_batch(&self, addrs: &[u64], module: &Arc<str>, out: &mut [Vec<Frame>]);
}

/// Names the addresses of one process.
pub trait Symbolize {
    /// Symbolizes `addrs` (absolute addresses in the target's address space).
    fn symbolize(&mut self, addrs: &[u64]) -> Symbols;
}

/// Errors preparing symbolization.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    /// A file of the target could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The maps file of the target does not parse.
    #[error("parsing {path}: {source}")]
    Maps {
        path: String,
        #[source]
        source: maps::MapsParseError,
    },
    /// A mapped file is not a usable ELF file.
    #[error("{path}: {source}")]
    Format {
        path: String,
        #[source]
        source: FormatError,
    },
}

/// A file whose contents cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not an ELF file (or an ELF file the parser rejects).
    #[error("invalid object file: {0}")]
    Object(#[from] object::Error),
    /// An object file of another format.
    #[error("not an ELF file")]
    NotElf,
    /// DWARF that gimli rejects.
    #[error("invalid DWARF: {0}")]
    Dwarf(gimli::Error),
}
