//! One stack as the diagnosis sees it: addresses expanded into inline frames, each frame reduced
//! to an interned function id (the identity cycles are detected on).
//!
//! Symbolized frames are looked up once per unique address ([`Expander`] caches the function ids
//! of each address); a deep stack costs 4 bytes per expanded frame plus 4 per address, and the
//! [`Frame`]s themselves are only fetched for the few frames a finding prints.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use serde::Serialize;

use crate::symbolize::{Frame, Symbols};

/// Interned function name.
pub(crate) type FuncId = u32;

/// Multiply-shift hasher for integer keys (addresses): the std SipHash is several times slower and
/// the keys are not attacker-chosen strings.
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Caches, per address, the function ids of its inline-expanded frames.
pub(crate) struct Expander<'a> {
    symbols: &'a Symbols,
    names: HashMap<Arc<str>, FuncId>,
    /// Range into `ids` of each address seen.
    by_addr: IntMap<u64, (u32, u32)>,
    ids: Vec<FuncId>,
}

impl<'a> Expander<'a> {
    pub(crate) fn new(symbols: &'a Symbols) -> Self {
        Self {
            symbols,
            names: HashMap::new(),
            by_addr: IntMap::default(),
            ids: Vec::new(),
        }
    }

    /// Function ids of `addr`, innermost first.
    pub(crate) fn ids(&mut self, addr: u64) -> &[FuncId] {
        let (start, len) = match self.by_addr.get(&addr) {
            Some(r) => *r,
            None => {
                let start = self.ids.len() as u32;
                for frame in self.symbols.frames(addr).iter() {
                    let next = self.names.len() as FuncId;
                    let id = match self.names.get(&*frame.function) {
                        Some(id) => *id,
                        None => {
                            self.names.insert(frame.function.clone(), next);
                            next
                        }
                    };
                    self.ids.push(id);
                }
                let r = (start, self.ids.len() as u32 - start);
                self.by_addr.insert(addr, r);
                r
            }
        };
        &self.ids[start as usize..(start + len) as usize]
    }

    /// The symbols this expander reads.
    pub(crate) fn symbols(&self) -> &'a Symbols {
        self.symbols
    }

    /// Expands a stack of addresses (innermost first).
    pub(crate) fn expand(&mut self, addrs: Vec<u64>) -> ExpandedStack {
        let mut funcs = Vec::with_capacity(addrs.len());
        let mut addr_start = Vec::with_capacity(addrs.len());
        for &addr in &addrs {
            addr_start.push(funcs.len() as u32);
            funcs.extend_from_slice(self.ids(addr));
        }
        ExpandedStack {
            addrs,
            addr_start,
            funcs,
        }
    }

    /// Function ids of the expanded frames of `addrs`.
    pub(crate) fn expand_ids(&mut self, addrs: &[u64]) -> Vec<FuncId> {
        let mut out = Vec::new();
        for a in addrs {
            out.extend_from_slice(self.ids(*a));
        }
        out
    }
}

/// A stack expanded into inline frames, innermost first.
pub(crate) struct ExpandedStack {
    /// Addresses, innermost first.
    pub(crate) addrs: Vec<u64>,
    /// Index in `funcs` of the first frame of each address.
    pub(crate) addr_start: Vec<u32>,
    /// Function id of each expanded frame.
    pub(crate) funcs: Vec<FuncId>,
}

impl ExpandedStack {
    /// Expanded index of the first frame of address `i` (`funcs.len()` past the end).
    pub(crate) fn start_of_addr(&self, i: usize) -> usize {
        self.addr_start
            .get(i)
            .map_or(self.funcs.len(), |s| *s as usize)
    }

    /// The symbolized frame at expanded index `i`.
    pub(crate) fn frame(&self, symbols: &Symbols, i: usize) -> Option<FrameInfo> {
        if i >= self.funcs.len() {
            return None;
        }
        let a = self.addr_start.partition_point(|s| *s as usize <= i) - 1;
        let sub = i - self.addr_start[a] as usize;
        let frames = symbols.frames(self.addrs[a]);
        frames.get(sub).map(FrameInfo::from)
    }
}

/// The printable facts of one frame.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FrameInfo {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl From<&Frame> for FrameInfo {
    fn from(f: &Frame) -> Self {
        Self {
            function: f.function.to_string(),
            file: f.file.as_deref().map(str::to_owned),
            line: f.line,
        }
    }
}

impl FrameInfo {
    /// `file:line` with the file's last path element, `?` parts when unknown.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_deref()?;
        let base = file.rsplit('/').next().unwrap_or(file);
        Some(match self.line {
            Some(l) => format!("{base}:{l}"),
            None => base.to_string(),
        })
    }

    /// `function (file:line)`, or the function alone.
    pub fn describe(&self) -> String {
        match self.location() {
            Some(loc) => format!("{} ({loc})", self.function),
            None => self.function.clone(),
        }
    }
}
