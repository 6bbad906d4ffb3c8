//! What a record run learns of the executable its target runs, at start and after an `exec`.

use std::path::{Path, PathBuf};

use stacksampler_common::{GoLayout, LabelFormat};

use crate::{
    goruntime::{self, GoVersion},
    record::labels::{LabelResolver, ProcMem},
    symbolize::ProcessSymbolizer,
    target,
    warning::Warning,
};

/// What stacksampler learns of the executable a target runs (at start, and after an `exec`).
pub(super) struct ImageFacts {
    pub(super) version: Option<GoVersion>,
    pub(super) layout: Option<GoLayout>,
    pub(super) build_id: Option<String>,
    pub(super) is_go: bool,
    /// Where the stack limit lives (`runtime.maxstacksize`, set by debug.SetMaxStack).
    pub(super) maxstacksize_addr: Option<u64>,
    pub(super) warnings: Vec<Warning>,
}

impl ImageFacts {
    /// Inspects the executable `pid` runs now, through `/proc/PID/exe` (the file the target
    /// runs, whatever its mount namespace calls it); `exe` is its name for messages.
    pub(super) fn inspect(pid: u32, exe: &Path) -> Self {
        let mut warnings = Vec::new();
        match goruntime::inspect(Path::new(&format!("/proc/{pid}/exe"))) {
            Ok(binary) => {
                let maxstacksize_addr = binary.symbols.maxstacksize.and_then(|addr| {
                    if binary.is_pie {
                        target::process::pie_base(pid, exe).map(|base| base + addr)
                    } else {
                        Some(addr)
                    }
                });
                warnings.extend(binary.warnings.iter().cloned());
                if !binary.is_go {
                    warnings.push(Warning::NotGo {
                        exe: exe.to_owned(),
                    });
                }
                Self {
                    build_id: binary.gnu_build_id.clone().or(binary.go_build_id.clone()),
                    is_go: binary.is_go,
                    version: binary.version,
                    layout: binary.layout,
                    maxstacksize_addr,
                    warnings,
                }
            }
            Err(e) => {
                warnings.push(Warning::InspectFailed {
                    exe: exe.to_owned(),
                    error: e.to_string(),
                });
                Self {
                    version: None,
                    layout: None,
                    build_id: None,
                    is_go: false,
                    maxstacksize_addr: None,
                    warnings,
                }
            }
        }
    }

    /// The label decoder for this image (labels are decoded in user space from what the
    /// kernel recorded, see labels.rs), or why there is none.
    pub(super) fn label_resolver(&self, pid: u32) -> Result<Option<LabelResolver>, Warning> {
        match (&self.version, self.layout) {
            (Some(version), Some(layout)) if layout.label_format != LabelFormat::NONE => {
                match ProcMem::open(pid) {
                    Ok(mem) => Ok(Some(LabelResolver::new(version.clone(), Box::new(mem)))),
                    Err(e) => Err(Warning::LabelMemory {
                        pid,
                        error: e.to_string(),
                    }),
                }
            }
            _ => Ok(None),
        }
    }
}

/// The executable a target runs after an `exec`, opened while the target lives.
pub(super) struct PreparedImage {
    pub(super) exe: PathBuf,
    pub(super) facts: ImageFacts,
    pub(super) symbolizer: ProcessSymbolizer,
}

impl PreparedImage {
    /// Opens what `pid` runs now; `fallback` names it when `/proc/PID/exe` is gone.
    pub(super) fn open(pid: u32, fallback: &Path) -> Self {
        let exe =
            std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_else(|_| fallback.to_owned());
        let facts = ImageFacts::inspect(pid, &exe);
        // A target that exited right after its exec keeps its samples unnamed.
        let symbolizer =
            ProcessSymbolizer::new(pid).unwrap_or_else(|_| ProcessSymbolizer::empty(pid));
        Self {
            exe,
            facts,
            symbolizer,
        }
    }
}
