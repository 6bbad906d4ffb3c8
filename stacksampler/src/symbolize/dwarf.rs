//! DWARF: source lines and inlined frames for native code (cgo, libc with debug info installed,
//! any C/C++/Rust library), through the `addr2line` crate (built on gimli).
//!
//! Go code is not looked up here: `.gopclntab` is what the Go runtime itself reads, so it is the
//! only source that matches `runtime.CallersFrames` exactly (DWARF line tables of Go binaries
//! differ at some inlined PCs and name closures differently in old versions).

use std::{
    borrow::Cow,
    path::{Path, PathBuf},
    sync::Arc,
};

use gimli::{EndianArcSlice, RunTimeEndian};
use object::Object;

use super::{FormatError, elf::ElfImage};

/// The reader type: sections copied out of the file once, shared by reference count.
type Reader = EndianArcSlice<RunTimeEndian>;

/// Default root of separate debug files.
const DEBUG_ROOT: &str = "/usr/lib/debug";

/// One frame found in DWARF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DwarfFrame {
    /// Function name as stored (mangled names are kept as they are).
    pub function: Option<String>,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// Inlined into the next frame.
    pub inlined: bool,
}

/// Line and inline lookups for one ELF file.
pub struct DwarfSymbolizer {
    context: addr2line::Context<Reader>,
}

impl std::fmt::Debug for DwarfSymbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DwarfSymbolizer").finish_non_exhaustive()
    }
}

impl DwarfSymbolizer {
    /// Loads the DWARF sections of `image` (decompressing them when needed).
    pub fn load(image: &ElfImage) -> Result<Self, FormatError> {
        let file = object::File::parse(&**image.data())?;
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
            let bytes: Cow<'_, [u8]> = file
                .section_by_name(id.name())
                .and_then(|s| super::elf::section_bytes(&s).ok())
                .unwrap_or(Cow::Borrowed(&[]));
            Ok(EndianArcSlice::new(Arc::from(&*bytes), endian))
        };
        let dwarf = gimli::Dwarf::load(load).map_err(FormatError::Dwarf)?;
        let context = addr2line::Context::from_dwarf(dwarf).map_err(FormatError::Dwarf)?;
        Ok(Self { context })
    }

    /// Frames of `vaddr`, innermost first; `None` when no unit covers it.
    pub fn find_frames(&self, vaddr: u64) -> Option<Vec<DwarfFrame>> {
        let mut iter = self.context.find_frames(vaddr).skip_all_loads().ok()?;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = iter.next() {
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok().map(|n| n.into_owned()));
            let (file, line) = frame
                .location
                .as_ref()
                .map_or((None, None), |l| (l.file.map(str::to_owned), l.line));
            frames.push(DwarfFrame {
                function,
                file,
                line,
                inlined: false,
            });
        }
        let last = frames.len().checked_sub(1)?;
        for f in &mut frames[..last] {
            f.inlined = true;
        }
        Some(frames)
    }
}

/// Where a separate debug file for `image` may be: by build id, then by `.gnu_debuglink` next to
/// the file, in its `.debug/` folder and under `/usr/lib/debug`. Each is tried under `root`
/// (the target's `/proc/PID/root`) and then on the host.
pub fn debug_file_candidates(
    image: &ElfImage,
    file_path: &str,
    root: Option<&Path>,
) -> Vec<PathBuf> {
    let mut rel: Vec<PathBuf> = Vec::new();
    if let Some(id) = image.build_id().filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        rel.push(PathBuf::from(format!(
            "{DEBUG_ROOT}/.build-id/{}/{}.debug",
            &hex[..2],
            &hex[2..]
        )));
    }
    if let Some(link) = image.debuglink().filter(|l| !l.contains('/')) {
        let dir = Path::new(file_path).parent().unwrap_or(Path::new("/"));
        rel.push(dir.join(link));
        rel.push(dir.join(".debug").join(link));
        rel.push(
            Path::new(DEBUG_ROOT)
                .join(dir.strip_prefix("/").unwrap_or(dir))
                .join(link),
        );
    }
    let mut out = Vec::new();
    for p in rel {
        if let Some(root) = root {
            out.push(root.join(p.strip_prefix("/").unwrap_or(&p)));
        }
        out.push(p);
    }
    out.retain(|p| p.as_path() != Path::new(file_path));
    out
}
