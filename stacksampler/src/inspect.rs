//! `inspect`: what stacksampler knows about a process's or a file's executable, without
//! loading anything into the kernel: the Go version, where the runtime layout comes from and its
//! offsets, build ids, whether `.gopclntab` and DWARF are there, and every warning.

use std::{fmt::Write as _, io::Write, path::PathBuf, sync::Arc};

use serde::Serialize;

use crate::{
    goruntime::{self, GoBinary, GoRuntimeError, LayoutSource},
    report::json::FORMAT_VERSION,
    symbolize::{elf::ElfImage, gopclntab::GoPclnTab},
    target::{Process, TargetError},
    warning::Warning,
};

/// What to inspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InspectTarget {
    /// The executable of a running process (opened through `/proc/PID/exe`).
    Pid(u32),
    /// An executable file.
    Binary(PathBuf),
}

/// Formats of the inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InspectFormat {
    Text,
    Json,
}

impl std::str::FromStr for InspectFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown inspect format {s:?} (one of: text, json)")),
        }
    }
}

/// Errors that leave nothing to report.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Binary(#[from] GoRuntimeError),
    #[error("writing the inspection: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the inspection: {0}")]
    Json(#[from] serde_json::Error),
}

/// The `.gopclntab` found (where Go function names and frame sizes come from).
#[derive(Clone, Debug, Serialize)]
pub struct PclnTabInfo {
    /// Functions in the table.
    pub functions: usize,
    /// Whether it carries inline trees (inlined frames are expanded).
    pub inline_info: bool,
}

/// One inspection.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// Version of this json document's schema.
    pub format_version: u32,
    /// The process inspected, when a pid was given.
    pub pid: Option<u32>,
    /// The executable as the process names it (or the file given).
    pub executable: PathBuf,
    /// What the binary says about its Go runtime.
    #[serde(flatten)]
    pub binary: GoBinary,
    /// The function table, `None` when absent or unreadable.
    pub pclntab: Option<PclnTabInfo>,
}

/// Inspects `target`.
pub fn inspect(target: &InspectTarget) -> Result<Inspection, InspectError> {
    let (pid, executable, open_path) = match target {
        InspectTarget::Pid(pid) => {
            let process = Process::open(*pid)?;
            (Some(*pid), process.exe, process.exe_link)
        }
        InspectTarget::Binary(path) => (None, path.clone(), path.clone()),
    };
    let data: Arc<[u8]> = std::fs::read(&open_path)
        .map_err(|source| GoRuntimeError::Io {
            path: open_path.clone(),
            source,
        })?
        .into();
    let mut binary = goruntime::inspect_bytes(&executable, &data)?;
    let pclntab = match ElfImage::parse(data) {
        Ok(image) => match GoPclnTab::locate(&image) {
            Ok(table) => Some(PclnTabInfo {
                functions: table.function_count(),
                inline_info: table.has_inline_info(),
            }),
            Err(e) => {
                if binary.is_go {
                    binary.warnings.push(Warning::NoPclntab(e.to_string()));
                }
                None
            }
        },
        Err(e) => {
            binary.warnings.push(Warning::NotElf(e.to_string()));
            None
        }
    };
    Ok(Inspection {
        format_version: FORMAT_VERSION,
        pid,
        executable,
        binary,
        pclntab,
    })
}

/// Writes `inspection` as one json document.
pub fn render_json(inspection: &Inspection, out: &mut dyn Write) -> Result<(), InspectError> {
    serde_json::to_writer_pretty(&mut *out, inspection)?;
    writeln!(out)?;
    Ok(())
}

/// Writes `inspection` for a terminal.
pub fn render_text(inspection: &Inspection, out: &mut dyn Write) -> Result<(), InspectError> {
    out.write_all(text(inspection).as_bytes())?;
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn text(i: &Inspection) -> String {
    let b = &i.binary;
    let mut s = String::new();
    let _ = writeln!(s, "executable:   {}", i.executable.display());
    if let Some(pid) = i.pid {
        let _ = writeln!(s, "pid:          {pid}");
    }
    let _ = writeln!(
        s,
        "go:           {}",
        match (&b.version, b.is_go) {
            (Some(v), _) => v.to_string(),
            (None, true) => "yes, version unknown".to_owned(),
            (None, false) => "not a Go binary".to_owned(),
        }
    );
    let _ = writeln!(s, "architecture: {:?}", b.arch);
    let _ = writeln!(s, "pie:          {}", yes_no(b.is_pie));
    let _ = writeln!(
        s,
        "layout:       {}",
        match b.layout_source {
            LayoutSource::Dwarf => "from the binary's DWARF",
            LayoutSource::VersionTable => "from stacksampler's table for this Go version",
            LayoutSource::Unavailable => "unknown (goroutine fields will not be read)",
        }
    );
    if let Some(m) = b.dwarf_matches_table {
        let _ = writeln!(s, "dwarf = table: {}", yes_no(m));
    }
    if let Some(g) = b.g_pointer {
        let _ = writeln!(s, "g pointer:    {g:?}");
    }
    let _ = writeln!(s, "dwarf:        {}", yes_no(b.has_dwarf));
    let _ = writeln!(
        s,
        "pclntab:      {}",
        match &i.pclntab {
            Some(p) => format!(
                "{} functions{}",
                p.functions,
                if p.inline_info { ", inline trees" } else { "" }
            ),
            None => "no".to_owned(),
        }
    );
    let _ = writeln!(
        s,
        "go build id:  {}",
        b.go_build_id.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        s,
        "gnu build id: {}",
        b.gnu_build_id.as_deref().unwrap_or("-")
    );
    if let Some(l) = &b.runtime_layout {
        let _ = writeln!(s, "offsets (bytes):");
        let rows = [
            ("g.stack.lo", l.g_stack_lo),
            ("g.stack.hi", l.g_stack_hi),
            ("g.m", l.g_m),
            ("g.sched", l.g_sched),
            ("g.syscallsp", l.g_syscallsp),
            ("g.syscallpc", l.g_syscallpc),
            ("g.atomicstatus", l.g_atomicstatus),
            ("g.goid", l.g_goid),
            ("g.waitreason", l.g_waitreason),
            ("g.labels", l.g_labels),
            ("m.g0", l.m_g0),
            ("m.gsignal", l.m_gsignal),
            ("m.curg", l.m_curg),
            ("m.procid", l.m_procid),
            ("gobuf.sp", l.gobuf_sp),
            ("gobuf.pc", l.gobuf_pc),
            ("gobuf.bp", l.gobuf_bp),
        ];
        for (name, offset) in rows {
            let _ = writeln!(s, "  {name:<16}{offset}");
        }
    }
    let sym = &b.symbols;
    let named = [
        ("runtime.maxstacksize", sym.maxstacksize),
        ("runtime.allgs", sym.allgs),
        ("runtime.allglen", sym.allglen),
        ("runtime.allm", sym.allm),
    ];
    if named.iter().any(|(_, a)| a.is_some()) {
        let _ = writeln!(s, "runtime symbols:");
        for (name, addr) in named {
            if let Some(a) = addr {
                let _ = writeln!(s, "  {name:<22}{a:#x}");
            }
        }
    }
    if b.warnings.is_empty() {
        let _ = writeln!(s, "warnings:     none");
    } else {
        let _ = writeln!(s, "warnings:");
        for w in &b.warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_go_has_no_layout_and_no_pclntab() {
        let exe = std::env::current_exe().expect("test binary");
        let i = inspect(&InspectTarget::Binary(exe.clone())).expect("inspect the test binary");
        assert!(!i.binary.is_go);
        assert!(i.pclntab.is_none());
        assert_eq!(i.binary.layout_source, LayoutSource::Unavailable);
        let t = text(&i);
        assert!(t.contains("not a Go binary"), "{t}");
        let mut json = Vec::new();
        render_json(&i, &mut json).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&json).expect("valid json");
        assert_eq!(v["format_version"], FORMAT_VERSION);
        assert_eq!(v["is_go"], false);
        assert_eq!(v["executable"], exe.display().to_string());
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(inspect(&InspectTarget::Binary("/nonexistent/x".into())).is_err());
    }
}
