//! What stacksampler knows about the Go runtime of a target binary: its version, the layout of
//! `runtime.g`/`runtime.m`/`runtime.gobuf`, goroutine states and wait reasons.
//!
//! [`inspect`] reads a binary once: the Go version from `.go.buildinfo` (present in stripped
//! binaries too), the structure layout from DWARF when present (DWARF always wins), else from the
//! per-version [`table`]. An unknown Go release without DWARF gets no layout and one warning:
//! goroutine fields are then reported unknown, never read at guessed offsets.

pub mod allgs;
pub mod buildinfo;
pub mod dwarf;
pub mod labels;
pub mod layout;
pub mod state;
pub mod table;
pub mod version;
pub mod waitreason;

use std::path::{Path, PathBuf};

use crate::warning::{GoRange, Warning};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use serde::Serialize;
use stacksampler_common::GoLayout;

pub use buildinfo::BuildInfo;
pub use layout::{GPointer, GoArch, RuntimeLayout};
pub use version::GoVersion;

/// Section holding the build information blob.
const BUILDINFO_SECTION: &str = ".go.buildinfo";
/// ELF note section holding the Go build id.
const GO_BUILDID_SECTION: &str = ".note.go.buildid";
/// Sections only the Go linker writes: their presence marks a Go binary.
const GO_ONLY_SECTIONS: [&str; 4] = [
    BUILDINFO_SECTION,
    GO_BUILDID_SECTION,
    ".gopclntab",
    ".gosymtab",
];
/// Owner name of the Go build id note (`"Go\0\0"`, 4 bytes with its padding).
const GO_NOTE_NAME: &[u8] = b"Go\0\0";
/// Type of the Go build id note (`ELF_NOTE_GOBUILDID_TAG`).
const GO_NOTE_BUILDID_TYPE: u32 = 4;
/// Page size of the segments' load alignment (4 KiB on linux/amd64 and arm64).
const PAGE_SIZE: u64 = 4096;
/// Size of an ELF note header (namesz, descsz, type).
const NOTE_HEADER_SIZE: usize = 12;

/// Runtime symbol names looked up in `.symtab` (absent from stripped binaries).
mod symbol_names {
    pub const MAXSTACKSIZE: &str = "runtime.maxstacksize";
    pub const ALLGS: &str = "runtime.allgs";
    pub const ALLGLEN: &str = "runtime.allglen";
    pub const ALLM: &str = "runtime.allm";
    pub const TLS_G: &str = "runtime.tls_g";
}

/// Where [`GoBinary::layout`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The per-version [`table`], selected by the build information's Go version.
    VersionTable,
    /// No layout: not Go, an unknown version without DWARF, or an unsupported architecture.
    Unavailable,
}

/// Link-time addresses of runtime variables, from `.symtab` (all `None` when stripped).
///
/// For PIE binaries these are relative to the load address: add the mapping's bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuntimeSymbols {
    /// `runtime.maxstacksize` (`uintptr`: the stack overflow limit, `debug.SetMaxStack`).
    pub maxstacksize: Option<u64>,
    /// `runtime.allgs` (`[]*g`).
    pub allgs: Option<u64>,
    /// `runtime.allglen` (`uintptr`).
    pub allglen: Option<u64>,
    /// `runtime.allm` (`*m`, head of the list of threads).
    pub allm: Option<u64>,
    /// `runtime.tls_g` (arm64 cgo builds: offset of the `g` slot in the TLS block).
    pub tls_g: Option<u64>,
}

/// What stacksampler learned about one executable.
#[derive(Clone, Debug, Serialize)]
pub struct GoBinary {
    /// The file inspected.
    pub path: PathBuf,
    /// Whether it was built by the Go toolchain.
    pub is_go: bool,
    /// CPU architecture.
    pub arch: GoArch,
    /// Position independent (`ET_DYN`): symbol addresses need the load bias.
    pub is_pie: bool,
    /// Lowest virtual address of a loadable segment, page-aligned: a PIE's first mapping is
    /// loaded at `this + bias` (Go links some PIEs at 0x400000, others at 0).
    pub link_base: u64,
    /// The parsed `.go.buildinfo`, if found.
    pub build_info: Option<BuildInfo>,
    /// The Go release that built it, if the build information names one.
    pub version: Option<GoVersion>,
    /// The kernel program's layout, `None` when unknown (see [`GoBinary::warnings`]).
    /// Not serialized: [`GoBinary::runtime_layout`] and [`GoBinary::g_pointer`] carry it.
    #[serde(skip)]
    pub layout: Option<GoLayout>,
    /// The full runtime layout behind [`GoBinary::layout`].
    pub runtime_layout: Option<RuntimeLayout>,
    /// Where the layout came from.
    pub layout_source: LayoutSource,
    /// Where the current `g` is found on a thread.
    pub g_pointer: Option<GPointer>,
    /// Whether the binary has DWARF (`.debug_info`).
    pub has_dwarf: bool,
    /// Whether the runtime layout from DWARF, when present, equals the version table's row
    /// (`None` if either is missing).
    pub dwarf_matches_table: Option<bool>,
    /// The Go build id (`.note.go.buildid`).
    pub go_build_id: Option<String>,
    /// The GNU build id (`.note.gnu.build-id`), hex.
    pub gnu_build_id: Option<String>,
    /// Runtime variables' link-time addresses.
    pub symbols: RuntimeSymbols,
    /// Everything that limits what can be read from this binary, one sentence each.
    pub warnings: Vec<Warning>,
}

impl GoBinary {
    /// Whether the goroutine fields can be read (a layout is known).
    pub fn layout_known(&self) -> bool {
        self.layout.is_some()
    }

    /// What to add to a link-time address of this binary to get the runtime address in `pid`
    /// (0 unless PIE; `None` when the PIE's mapping of `exe` is not found).
    pub fn load_bias(&self, pid: u32, exe: &Path) -> Option<u64> {
        if !self.is_pie {
            return Some(0);
        }
        crate::target::process::pie_base(pid, exe).map(|base| base.wrapping_sub(self.link_base))
    }

    /// The Go wait reason name for a raw `g.waitreason` of this binary.
    pub fn waitreason_name(&self, raw: u8) -> Option<&'static str> {
        waitreason::name(self.version.as_ref()?, raw)
    }
}

/// Why a binary could not be inspected at all.
#[derive(Debug, thiserror::Error)]
pub enum GoRuntimeError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not an executable format `object` can parse (ELF, ...).
    #[error("{path} is not an executable object file: {source}")]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: object::Error,
    },
}

/// Reads `path` and describes its Go runtime.
///
/// Errors only when the file cannot be read or parsed as an object file; everything else (not
/// Go, no DWARF, unknown version, malformed build information) is a [`GoBinary`] with the
/// corresponding fields `None` and [`GoBinary::warnings`] saying why.
pub fn inspect(path: &Path) -> Result<GoBinary, GoRuntimeError> {
    let data = std::fs::read(path).map_err(|source| GoRuntimeError::Io {
        path: path.to_owned(),
        source,
    })?;
    inspect_bytes(path, &data)
}

/// [`inspect`] on a binary already in memory; `path` only names it.
pub fn inspect_bytes(path: &Path, data: &[u8]) -> Result<GoBinary, GoRuntimeError> {
    let file = object::File::parse(data).map_err(|source| GoRuntimeError::NotAnObject {
        path: path.to_owned(),
        source,
    })?;
    let mut warnings = Vec::new();
    let arch = match file.architecture() {
        object::Architecture::X86_64 => GoArch::Amd64,
        object::Architecture::Aarch64 => GoArch::Arm64,
        _ => GoArch::Other,
    };
    let has_go_section = GO_ONLY_SECTIONS
        .iter()
        .any(|name| file.section_by_name(name).is_some());
    let build_info = match read_build_info(&file) {
        Ok(info) => info,
        Err(e) => {
            warnings.push(Warning::BuildInfoUnreadable(e.to_string()));
            None
        }
    };
    let is_go = has_go_section || build_info.is_some();
    let symbols = runtime_symbols(&file);
    let mut binary = GoBinary {
        path: path.to_owned(),
        is_go,
        arch,
        is_pie: file.kind() == object::ObjectKind::Dynamic,
        link_base: file.segments().map(|s| s.address()).min().unwrap_or(0) & !(PAGE_SIZE - 1),
        build_info,
        version: None,
        layout: None,
        runtime_layout: None,
        layout_source: LayoutSource::Unavailable,
        g_pointer: None,
        has_dwarf: file.section_by_name(".debug_info").is_some(),
        dwarf_matches_table: None,
        go_build_id: go_build_id(&file),
        gnu_build_id: file
            .build_id()
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect()),
        symbols,
        warnings,
    };
    if !is_go {
        return Ok(binary);
    }
    binary.version = binary
        .build_info
        .as_ref()
        .and_then(|info| info.version.parse::<GoVersion>().ok());
    if arch == GoArch::Other {
        binary.warnings.push(Warning::UnsupportedArchitecture {
            arch: format!("{:?}", file.architecture()),
        });
        return Ok(binary);
    }
    select_layout(&file, &mut binary);
    if let Some(runtime_layout) = binary.runtime_layout {
        let g_pointer = g_pointer(&file, &binary);
        binary.g_pointer = Some(g_pointer);
        let labels = binary.version.as_ref().and_then(labels::repr);
        binary.layout = Some(runtime_layout.to_go_layout(g_pointer, labels));
    }
    Ok(binary)
}

/// The Go releases stacksampler's layout and wait-reason tables cover.
const TABLE_RANGE: GoRange = GoRange {
    oldest: table::OLDEST,
    newest: table::NEWEST,
};

/// Chooses the runtime layout: DWARF first, then the version table; records why neither worked.
fn select_layout(file: &object::File<'_>, binary: &mut GoBinary) {
    let from_table = binary.version.as_ref().and_then(table::layout_for);
    let from_dwarf = match dwarf::runtime_layout(file) {
        Ok(layout) => layout,
        Err(e) => {
            binary.warnings.push(Warning::NoDwarfLayout(e.to_string()));
            None
        }
    };
    if let (Some(d), Some(t)) = (from_dwarf, from_table) {
        binary.dwarf_matches_table = Some(d == t);
        if d != t {
            binary.warnings.push(Warning::DwarfDiffersFromTable {
                version: version_text(binary),
            });
        }
    }
    match (from_dwarf, from_table) {
        (Some(layout), _) => {
            binary.runtime_layout = Some(layout);
            binary.layout_source = LayoutSource::Dwarf;
            if binary
                .version
                .as_ref()
                .and_then(waitreason::table)
                .is_none()
            {
                binary.warnings.push(Warning::NoWaitReasonTable {
                    version: version_text(binary),
                    tables: TABLE_RANGE,
                });
            }
        }
        (None, Some(layout)) => {
            binary.runtime_layout = Some(layout);
            binary.layout_source = LayoutSource::VersionTable;
        }
        (None, None) => {
            binary.warnings.push(Warning::UnknownRuntimeLayout {
                version: version_text(binary),
                tables: TABLE_RANGE,
            });
        }
    }
}

/// The Go version for messages: parsed, raw (unrecognised), or missing.
fn version_text(binary: &GoBinary) -> String {
    match (&binary.version, &binary.build_info) {
        (Some(v), _) => v.to_string(),
        (None, Some(info)) => format!("the unrecognised Go version {:?}", info.version),
        (None, None) => "a Go binary without build information (.go.buildinfo)".to_owned(),
    }
}

/// Where `g` lives on this binary's threads.
fn g_pointer(file: &object::File<'_>, binary: &GoBinary) -> GPointer {
    match binary.arch {
        GoArch::Arm64 => {
            let cgo = binary
                .build_info
                .as_ref()
                .and_then(|info| info.setting("CGO_ENABLED"))
                == Some("1");
            match (cgo, binary.symbols.tls_g, tls_alignment(file)) {
                (true, Some(offset), Some(align)) => {
                    let tcb = layout::ARM64_TCB_SIZE.next_multiple_of(align.max(1));
                    i32::try_from(tcb + offset).map_or(GPointer::Register, GPointer::Tls)
                }
                _ => GPointer::Register,
            }
        }
        _ => GPointer::Tls(layout::AMD64_TLS_G_OFFSET),
    }
}

/// Alignment of the `PT_TLS` segment, if the binary has one.
fn tls_alignment(file: &object::File<'_>) -> Option<u64> {
    use object::read::elf::ProgramHeader;
    match file {
        object::File::Elf64(elf) => {
            let endian = elf.endian();
            elf.elf_program_headers()
                .iter()
                .find(|ph| ph.p_type(endian) == object::elf::PT_TLS)
                .map(|ph| ph.p_align(endian))
        }
        _ => None,
    }
}

/// Finds and parses the build information: in `.go.buildinfo`, else (no section headers) at an
/// aligned position of a data segment. `Ok(None)` when there is none.
fn read_build_info(
    file: &object::File<'_>,
) -> Result<Option<BuildInfo>, buildinfo::BuildInfoError> {
    let memory = |addr: u64, len: usize| read_at_address(file, addr, len);
    if let Some(section) = file.section_by_name(BUILDINFO_SECTION) {
        let data = section.data().unwrap_or(&[]);
        if let Some(start) = buildinfo::find_magic(data) {
            return buildinfo::parse(&data[start..], &memory).map(Some);
        }
    }
    for segment in file.segments() {
        let Ok(data) = segment.data() else { continue };
        // The magic is aligned in memory: skip to the first aligned address of the segment.
        let align = buildinfo::ALIGN as u64;
        let skip = (align - segment.address() % align) % align;
        let Some(data) = usize::try_from(skip).ok().and_then(|skip| data.get(skip..)) else {
            continue;
        };
        if let Some(start) = buildinfo::find_magic(data) {
            return buildinfo::parse(&data[start..], &memory).map(Some);
        }
    }
    Ok(None)
}

/// File-backed bytes at virtual address `addr..addr + len`, if one segment holds them all.
fn read_at_address(file: &object::File<'_>, addr: u64, len: usize) -> Option<Vec<u8>> {
    file.segments().find_map(|segment| {
        let offset = usize::try_from(addr.checked_sub(segment.address())?).ok()?;
        let data = segment.data().ok()?;
        data.get(offset..offset.checked_add(len)?)
            .map(<[u8]>::to_vec)
    })
}

/// The Go build id from the `.note.go.buildid` ELF note.
fn go_build_id(file: &object::File<'_>) -> Option<String> {
    let data = file.section_by_name(GO_BUILDID_SECTION)?.data().ok()?;
    let word = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if file.is_little_endian() {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    };
    let name_size = usize::try_from(word(0)?).ok()?;
    let desc_size = usize::try_from(word(4)?).ok()?;
    if word(8)? != GO_NOTE_BUILDID_TYPE || name_size != GO_NOTE_NAME.len() {
        return None;
    }
    let name = data.get(NOTE_HEADER_SIZE..NOTE_HEADER_SIZE + name_size)?;
    if name != GO_NOTE_NAME {
        return None;
    }
    let desc_start = NOTE_HEADER_SIZE + name_size;
    let desc = data.get(desc_start..desc_start.checked_add(desc_size)?)?;
    Some(String::from_utf8_lossy(desc).into_owned())
}

/// Looks the runtime variables up in `.symtab`.
fn runtime_symbols(file: &object::File<'_>) -> RuntimeSymbols {
    let mut symbols = RuntimeSymbols::default();
    for symbol in file.symbols() {
        let Ok(name) = symbol.name() else { continue };
        let slot = match name {
            symbol_names::MAXSTACKSIZE => &mut symbols.maxstacksize,
            symbol_names::ALLGS => &mut symbols.allgs,
            symbol_names::ALLGLEN => &mut symbols.allglen,
            symbol_names::ALLM => &mut symbols.allm,
            symbol_names::TLS_G => &mut symbols.tls_g,
            _ => continue,
        };
        *slot = Some(symbol.address());
    }
    symbols
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_c_binary_is_not_go() {
        let binary = inspect(Path::new("/bin/true")).unwrap();
        assert!(!binary.is_go);
        assert!(binary.layout.is_none());
        assert_eq!(binary.layout_source, LayoutSource::Unavailable);
        assert!(binary.version.is_none());
    }

    #[test]
    fn unreadable_and_non_object_files_are_errors() {
        assert!(matches!(
            inspect(Path::new("/nonexistent/stacksampler")),
            Err(GoRuntimeError::Io { .. })
        ));
        assert!(matches!(
            inspect_bytes(Path::new("x"), b"#!/bin/sh\nexit 0\n"),
            Err(GoRuntimeError::NotAnObject { .. })
        ));
    }
}
