//! Reading the runtime layout from a Go binary's DWARF.
//!
//! The Go linker puts the runtime's type definitions (`runtime.g`, `runtime.m`, ...) in a
//! compilation unit named `runtime`, as top-level `DW_TAG_structure_type` entries whose
//! `DW_TAG_member` children carry constant `DW_AT_data_member_location`s. Only the units named
//! `runtime` are scanned first (a few hundred KiB of a multi-MiB `.debug_info`), then the rest if a
//! type is still missing. Only `.debug_info`, `.debug_abbrev` and the string sections are loaded
//! (and decompressed: `.zdebug_*` and `SHF_COMPRESSED` sections alike, through `object`).

use std::{borrow::Cow, collections::HashMap};

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, SectionId};
use object::Object;

use super::layout::RuntimeLayout;
use crate::symbolize::elf::{SectionDataError, section_bytes};

/// Name of the compilation unit holding the runtime's types.
const RUNTIME_UNIT: &[u8] = b"runtime";
/// `runtime.g`: the goroutine.
const TYPE_G: &str = "runtime.g";
/// `runtime.m`: the OS thread.
const TYPE_M: &str = "runtime.m";
/// `runtime.gobuf`: saved registers of a descheduled goroutine.
const TYPE_GOBUF: &str = "runtime.gobuf";
/// `runtime.stack`: stack bounds `[lo, hi)`.
const TYPE_STACK: &str = "runtime.stack";
/// Every type the layout needs.
const WANTED_TYPES: [&str; 4] = [TYPE_G, TYPE_M, TYPE_GOBUF, TYPE_STACK];

/// Why the DWARF of a Go binary did not give a runtime layout.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    /// A DWARF section could not be read or decompressed.
    #[error("cannot read DWARF section {section}: {source}")]
    Section {
        /// Section name.
        section: &'static str,
        /// What was wrong with it.
        source: SectionDataError,
    },
    /// The DWARF data is malformed.
    #[error("malformed DWARF: {0}")]
    Parse(#[from] gimli::Error),
    /// A runtime type is not described (an unusual toolchain, or partial debug information).
    #[error("DWARF does not describe {0}")]
    MissingType(&'static str),
    /// A runtime type lacks a member stacksampler needs (a Go release it does not know).
    #[error("DWARF type {ty} has no member {member}")]
    MissingMember {
        /// The type (`runtime.g`).
        ty: &'static str,
        /// The member (`goid`).
        member: &'static str,
    },
    /// A member offset does not fit the kernel program's 32-bit offsets.
    #[error("DWARF offset of {ty}.{member} is out of range: {offset}")]
    OffsetOutOfRange {
        /// The type.
        ty: &'static str,
        /// The member.
        member: &'static str,
        /// The offset found.
        offset: u64,
    },
}

/// Member name -> byte offset, per wanted type.
type Members = HashMap<String, u64>;

/// Reads the runtime layout from `file`'s DWARF; `Ok(None)` when it has no `.debug_info`.
pub fn runtime_layout(file: &object::File<'_>) -> Result<Option<RuntimeLayout>, DwarfError> {
    if file.section_by_name(".debug_info").is_none() {
        return Ok(None);
    }
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let sections = gimli::DwarfSections::load(|id| load_section(file, id))?;
    let dwarf = sections.borrow(|data| EndianSlice::new(data, endian));
    let mut found: HashMap<&'static str, Members> = HashMap::new();
    // First the units named `runtime`, where the Go linker puts the types; then everything.
    for runtime_only in [true, false] {
        scan_units(&dwarf, runtime_only, &mut found)?;
        if found.len() == WANTED_TYPES.len() {
            break;
        }
    }
    build_layout(&found).map(Some)
}

/// Loads one of the sections the layout reader needs; every other section reads as empty.
fn load_section<'data>(
    file: &object::File<'data>,
    id: SectionId,
) -> Result<Cow<'data, [u8]>, DwarfError> {
    let needed = matches!(
        id,
        SectionId::DebugInfo
            | SectionId::DebugAbbrev
            | SectionId::DebugStr
            | SectionId::DebugLineStr
            | SectionId::DebugStrOffsets
    );
    let section = if needed {
        file.section_by_name(id.name())
    } else {
        None
    };
    match section {
        Some(section) => section_bytes(&section).map_err(|source| DwarfError::Section {
            section: id.name(),
            source,
        }),
        None => Ok(Cow::Borrowed(&[])),
    }
}

/// The string value of a name attribute (inline or in `.debug_str`/`.debug_line_str`).
fn attr_str<'a>(
    dwarf: &gimli::Dwarf<EndianSlice<'a, RunTimeEndian>>,
    value: AttributeValue<EndianSlice<'a, RunTimeEndian>>,
) -> Option<&'a [u8]> {
    match value {
        AttributeValue::String(s) => Some(s.slice()),
        AttributeValue::DebugStrRef(offset) => {
            dwarf.debug_str.get_str(offset).ok().map(|s| s.slice())
        }
        AttributeValue::DebugLineStrRef(offset) => {
            dwarf.debug_line_str.get_str(offset).ok().map(|s| s.slice())
        }
        _ => None,
    }
}

/// Scans units (only those named `runtime` when `runtime_only`) for the wanted struct types,
/// recording each one's members the first time it is seen.
fn scan_units(
    dwarf: &gimli::Dwarf<EndianSlice<'_, RunTimeEndian>>,
    runtime_only: bool,
    found: &mut HashMap<&'static str, Members>,
) -> Result<(), DwarfError> {
    let mut headers = dwarf.units();
    while let Some(header) = headers.next()? {
        let abbrevs = dwarf.abbreviations(&header)?;
        let mut cursor = header.entries(&abbrevs);
        let Some((_, root)) = cursor.next_dfs()? else {
            continue;
        };
        let unit_name = root
            .attr_value(gimli::DW_AT_name)?
            .and_then(|v| attr_str(dwarf, v));
        if (unit_name == Some(RUNTIME_UNIT)) != runtime_only {
            continue;
        }
        let mut depth: isize = 0;
        // The wanted struct whose members are being read (children at depth 2).
        let mut current: Option<(&'static str, Members)> = None;
        while let Some((delta, entry)) = cursor.next_dfs()? {
            depth += delta;
            // Back at the unit's top level: the struct being read (if any) is complete.
            if let Some((name, members)) = current.take_if(|_| depth <= 1) {
                found.insert(name, members);
                if found.len() == WANTED_TYPES.len() {
                    return Ok(());
                }
            }
            match (depth, entry.tag()) {
                (1, gimli::DW_TAG_structure_type) => {
                    let name = entry
                        .attr_value(gimli::DW_AT_name)?
                        .and_then(|v| attr_str(dwarf, v));
                    current = WANTED_TYPES
                        .into_iter()
                        .find(|t| Some(t.as_bytes()) == name && !found.contains_key(t))
                        .map(|t| (t, Members::new()));
                }
                (2, gimli::DW_TAG_member) => {
                    if let Some((_, members)) = current.as_mut() {
                        let name = entry
                            .attr_value(gimli::DW_AT_name)?
                            .and_then(|v| attr_str(dwarf, v));
                        let offset = entry
                            .attr_value(gimli::DW_AT_data_member_location)?
                            .and_then(|v| v.udata_value());
                        if let (Some(name), Some(offset)) = (name, offset) {
                            members.insert(String::from_utf8_lossy(name).into_owned(), offset);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some((name, members)) = current.take() {
            found.insert(name, members);
        }
    }
    Ok(())
}

/// Assembles the layout from the members found, or names what is missing.
fn build_layout(found: &HashMap<&'static str, Members>) -> Result<RuntimeLayout, DwarfError> {
    let member = |ty: &'static str, member: &'static str| -> Result<u32, DwarfError> {
        let members = found.get(ty).ok_or(DwarfError::MissingType(ty))?;
        let offset = *members
            .get(member)
            .ok_or(DwarfError::MissingMember { ty, member })?;
        u32::try_from(offset).map_err(|_| DwarfError::OffsetOutOfRange { ty, member, offset })
    };
    // Members that only some releases have.
    let optional = |ty: &'static str, name: &'static str| -> Result<Option<u32>, DwarfError> {
        match member(ty, name) {
            Err(DwarfError::MissingMember { .. }) => Ok(None),
            other => other.map(Some),
        }
    };
    let stack = member(TYPE_G, "stack")?;
    let sched = member(TYPE_G, "sched")?;
    Ok(RuntimeLayout {
        g_stack_lo: stack + member(TYPE_STACK, "lo")?,
        g_stack_hi: stack + member(TYPE_STACK, "hi")?,
        g_m: member(TYPE_G, "m")?,
        g_sched: sched,
        g_syscallsp: member(TYPE_G, "syscallsp")?,
        g_syscallpc: member(TYPE_G, "syscallpc")?,
        g_atomicstatus: member(TYPE_G, "atomicstatus")?,
        g_goid: member(TYPE_G, "goid")?,
        g_waitreason: member(TYPE_G, "waitreason")?,
        g_labels: member(TYPE_G, "labels")?,
        m_g0: member(TYPE_M, "g0")?,
        m_gsignal: member(TYPE_M, "gsignal")?,
        m_curg: member(TYPE_M, "curg")?,
        m_procid: member(TYPE_M, "procid")?,
        gobuf_sp: member(TYPE_GOBUF, "sp")?,
        gobuf_pc: member(TYPE_GOBUF, "pc")?,
        gobuf_bp: member(TYPE_GOBUF, "bp")?,
        g_syscallbp: optional(TYPE_G, "syscallbp")?,
        g_waitsince: optional(TYPE_G, "waitsince")?,
        g_lockedm: optional(TYPE_G, "lockedm")?,
        g_gopc: optional(TYPE_G, "gopc")?,
        g_startpc: optional(TYPE_G, "startpc")?,
        g_parent_goid: optional(TYPE_G, "parentGoid")?,
    })
}
