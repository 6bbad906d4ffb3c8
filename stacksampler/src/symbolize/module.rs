//! One mapped file (executable, shared library, vdso) and every backend that can name its
//! addresses: `.gopclntab` for Go code, DWARF for native code, then ELF symbols.
//!
//! Addresses given here are ELF virtual addresses of the file (what `addr2line -e FILE` takes);
//! the process layer turns runtime addresses into them (see `process.rs`).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
};

use super::{
    FormatError, Frame, FrameKind, Resolve,
    dwarf::DwarfSymbolizer,
    elf::ElfImage,
    gopclntab::{GoPclnTab, PclnError},
};

/// The symbol sources of one file.
pub struct ModuleSymbolizer {
    image: ElfImage,
    go: Result<GoPclnTab, PclnError>,
    /// Separate debug files to try when the file itself has no DWARF.
    debug_candidates: Vec<PathBuf>,
    /// DWARF context, loaded on first use (`None`: no DWARF anywhere).
    dwarf: OnceLock<Option<Mutex<DwarfSymbolizer>>>,
    /// Symbols of a separate debug file, when one was found (they include local functions).
    debug_image: OnceLock<Option<ElfImage>>,
}

impl std::fmt::Debug for ModuleSymbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleSymbolizer")
            .field("image", &self.image)
            .field("go", &self.go)
            .finish_non_exhaustive()
    }
}

impl ModuleSymbolizer {
    /// Indexes a file read in full: parses its ELF headers and locates its Go tables.
    pub fn from_bytes(data: Arc<[u8]>) -> Result<Self, FormatError> {
        Self::from_image(ElfImage::parse(data)?)
    }

    fn from_image(image: ElfImage) -> Result<Self, FormatError> {
        let go = GoPclnTab::locate(&image);
        Ok(Self {
            image,
            go,
            debug_candidates: Vec::new(),
            dwarf: OnceLock::new(),
            debug_image: OnceLock::new(),
        })
    }

    /// Indexes an open file, mapped rather than read (see [`ElfImage::map_file`]); `path` names it
    /// in errors.
    pub fn from_file(
        file: &mut std::fs::File,
        path: &std::path::Path,
    ) -> Result<Self, super::SymbolizeError> {
        let image = ElfImage::map_file(file).map_err(|source| super::SymbolizeError::Io {
            path: path.display().to_string(),
            source,
        })?;
        image
            .and_then(Self::from_image)
            .map_err(|source| super::SymbolizeError::Format {
                path: path.display().to_string(),
                source,
            })
    }

    /// Opens and indexes the file at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, super::SymbolizeError> {
        let mut file = std::fs::File::open(path).map_err(|source| super::SymbolizeError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_file(&mut file, path)
    }

    /// Sets where separate debug info may be (see [`super::dwarf::debug_file_candidates`]).
    pub fn set_debug_candidates(&mut self, candidates: Vec<PathBuf>) {
        self.debug_candidates = candidates;
    }

    /// The parsed ELF image.
    pub fn image(&self) -> &ElfImage {
        &self.image
    }

    /// The Go table, when this is a Go binary.
    pub fn go_table(&self) -> Option<&GoPclnTab> {
        self.go.as_ref().ok()
    }

    /// Why there is no Go table.
    pub fn go_error(&self) -> Option<&PclnError> {
        self.go.as_ref().err()
    }

    /// Names `vaddr` (an ELF virtual address of this file): innermost frame first, never empty.
    /// `module` is the path frames carry; unknown addresses become `module+0xvaddr`.
    pub fn frames(&self, vaddr: u64, module: &Arc<str>) -> Vec<Frame> {
        self.frames_batch(&[vaddr], module)
            .pop()
            .unwrap_or_default()
    }

    /// [`Self::frames`] of each of `vaddrs`, in order. The sources are asked in order of
    /// preference, each for what the ones before it did not name: Go code in one pass over the
    /// addresses sorted by function (see [`GoPclnTab::visit_frames_batch`]), then DWARF and ELF
    /// symbols (loaded, with a separate debug file, only when an address is left).
    pub fn frames_batch(&self, vaddrs: &[u64], module: &Arc<str>) -> Vec<Vec<Frame>> {
        let mut out: Vec<Vec<Frame>> = vec![Vec::new(); vaddrs.len()];
        let left = |out: &[Vec<Frame>]| out.iter().any(Vec::is_empty);
        if let Ok(go) = &self.go {
            go.resolve_batch(vaddrs, module, &mut out);
        }
        let symbols = ElfSymbols(self);
        if left(&out)
            && let Some(dwarf) = self.dwarf()
        {
            DwarfLines {
                dwarf,
                symbols: &symbols,
            }
            .resolve_batch(vaddrs, module, &mut out);
        }
        if left(&out) {
            symbols.resolve_batch(vaddrs, module, &mut out);
        }
        for (frames, &vaddr) in out.iter_mut().zip(vaddrs) {
            if frames.is_empty() {
                *frames = vec![Frame::unknown(Some((module.clone(), vaddr)), vaddr)];
            }
        }
        out
    }

    /// The ELF symbol covering `vaddr`: this file's tables, then a separate debug file's.
    fn symbol_name(&self, vaddr: u64) -> Option<String> {
        if let Some(hit) = self.image.symbols().lookup(vaddr) {
            return Some(hit.name.to_owned());
        }
        self.debug_image()?
            .symbols()
            .lookup(vaddr)
            .map(|hit| hit.name.to_owned())
    }

    fn debug_image(&self) -> Option<&ElfImage> {
        self.debug_image
            .get_or_init(|| {
                self.debug_candidates.iter().find_map(|p| {
                    let data = std::fs::read(p).ok()?;
                    let img = ElfImage::parse(data.into()).ok()?;
                    // A build-id file must carry the same id.
                    match (img.build_id(), self.image.build_id()) {
                        (Some(a), Some(b)) if a != b => None,
                        _ => Some(img),
                    }
                })
            })
            .as_ref()
    }

    fn dwarf(&self) -> Option<&Mutex<DwarfSymbolizer>> {
        self.dwarf
            .get_or_init(|| {
                let source = if self.image.has_dwarf() {
                    Some(&self.image)
                } else {
                    self.debug_image().filter(|img| img.has_dwarf())
                };
                source
                    .and_then(|img| DwarfSymbolizer::load(img).ok())
                    .map(Mutex::new)
            })
            .as_ref()
    }
}

impl Resolve for GoPclnTab {
    fn resolve_batch(&self, vaddrs: &[u64], module: &Arc<str>, out: &mut [Vec<Frame>]) {
        // The frames of one address arrive together: gather them, then move them into a
        // vector of their exact size.
        let mut current: Option<usize> = None;
        let mut frames: Vec<Frame> = Vec::new();
        let mut functions = Interner::<u32>::default();
        let mut files = Interner::<(usize, usize)>::default();
        let mut place = |i: usize, frames: &mut Vec<Frame>| {
            if out[i].is_empty() {
                let mut exact = Vec::with_capacity(frames.len());
                exact.append(frames);
                out[i] = exact;
            }
            frames.clear();
        };
        self.visit_frames_batch(vaddrs, |i, f| {
            if current != Some(i) {
                if let Some(prev) = current {
                    place(prev, &mut frames);
                }
                current = Some(i);
            }
            frames.push(Frame {
                kind: go_kind(f.function),
                function: match f.function_key {
                    Some(key) => functions.get(key, f.function),
                    None => Arc::from(f.function),
                },
                file: f
                    .file
                    .map(|file| files.get((file.as_ptr() as usize, file.len()), file)),
                line: f.line,
                inlined: f.inlined,
                module: Some(module.clone()),
            })
        });
        if let Some(prev) = current {
            place(prev, &mut frames);
        }
    }
}

/// The ELF symbols of one file and of its separate debug file: one native frame per address.
struct ElfSymbols<'a>(&'a ModuleSymbolizer);

impl Resolve for ElfSymbols<'_> {
    fn resolve_batch(&self, vaddrs: &[u64], module: &Arc<str>, out: &mut [Vec<Frame>]) {
        for (frames, &vaddr) in out.iter_mut().zip(vaddrs) {
            if frames.is_empty()
                && let Some(function) = self.0.symbol_name(vaddr)
            {
                *frames = vec![Frame {
                    function: function.into(),
                    file: None,
                    line: None,
                    inlined: false,
                    module: Some(module.clone()),
                    kind: FrameKind::Native,
                }];
            }
        }
    }
}

/// DWARF line tables and inlined frames of native code; an outermost frame DWARF leaves
/// unnamed takes the ELF symbol's name.
struct DwarfLines<'a> {
    dwarf: &'a Mutex<DwarfSymbolizer>,
    symbols: &'a ElfSymbols<'a>,
}

impl Resolve for DwarfLines<'_> {
    fn resolve_batch(&self, vaddrs: &[u64], module: &Arc<str>, out: &mut [Vec<Frame>]) {
        let Ok(dwarf) = self.dwarf.lock() else {
            return;
        };
        for (slot, &vaddr) in out.iter_mut().zip(vaddrs) {
            if !slot.is_empty() {
                continue;
            }
            let Some(found) = dwarf.find_frames(vaddr) else {
                continue;
            };
            let last = found.len().saturating_sub(1);
            *slot = found
                .into_iter()
                .enumerate()
                .map(|(i, f)| Frame {
                    function: f
                        .function
                        .or_else(|| {
                            (i == last)
                                .then(|| self.symbols.0.symbol_name(vaddr))
                                .flatten()
                        })
                        .unwrap_or_else(|| format!("{}+{vaddr:#x}", basename(module)))
                        .into(),
                    file: f.file.map(Arc::from),
                    line: f.line,
                    inlined: f.inlined,
                    module: Some(module.clone()),
                    kind: FrameKind::Native,
                })
                .collect();
        }
    }
}

/// The last path component of a module path.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Go runtime or user code, by package path.
pub fn go_kind(function: &str) -> FrameKind {
    if function.starts_with("runtime.")
        || function.starts_with("runtime/")
        || function.starts_with("internal/")
    {
        FrameKind::GoRuntime
    } else {
        FrameKind::Go
    }
}

/// One shared copy of each name of a batch (see [`Frame`]'s names), found by a key that is
/// cheaper to hash than the text: a function's place in the name table, a file name's address
/// in the table's bytes (see [`GoFrameRef`](super::gopclntab::GoFrameRef)). The last key
/// answers most lookups: the frames of one function arrive together.
struct Interner<K> {
    names: HashMap<K, Arc<str>, foldhash::fast::FixedState>,
    last: Option<(K, Arc<str>)>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Self {
            names: HashMap::default(),
            last: None,
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> Interner<K> {
    fn get(&mut self, key: K, name: &str) -> Arc<str> {
        if let Some((last, shared)) = &self.last
            && *last == key
        {
            return shared.clone();
        }
        let shared = self
            .names
            .entry(key)
            .or_insert_with(|| Arc::from(name))
            .clone();
        self.last = Some((key, shared.clone()));
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_shares_one_copy_per_key() {
        let mut names = Interner::<u32>::default();
        let a = names.get(1, "main.f");
        let b = names.get(2, "main.g");
        let a_again = names.get(1, "main.f");
        assert!(Arc::ptr_eq(&a, &a_again));
        assert_eq!((&*a, &*b), ("main.f", "main.g"));
        // Back and forth between keys: the map answers, not only the last key.
        assert!(Arc::ptr_eq(&names.get(2, "main.g"), &b));
        assert!(Arc::ptr_eq(&names.get(1, "main.f"), &a));
        assert_eq!(names.names.len(), 2);
    }
}
