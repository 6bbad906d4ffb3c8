//! What limited an inspection, a run or a dump, short of failing it: typed, so a caller can
//! match on a warning; its `Display` is the sentence the reports print, and json writes that
//! sentence (`"warnings": [string]`, docs/json-format.md).
//!
//! Causes that are errors of other layers are carried as their rendered text: a warning is
//! reported, never handled further.

use std::path::PathBuf;

use serde::Serialize;

/// A Go release range of stacksampler's tables, for messages: `go1.19 to go1.27`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoRange {
    pub oldest: (u32, u32),
    pub newest: (u32, u32),
}

impl std::fmt::Display for GoRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "go{}.{} to go{}.{}",
            self.oldest.0, self.oldest.1, self.newest.0, self.newest.1
        )
    }
}

/// Why the goroutine fields of many samples are unknown, as the kernel counted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownGoroutineCause {
    /// The thread was not the one `m.procid` names.
    ThreadMismatch,
    /// The goroutine could not be read from the thread.
    Unreadable,
}

impl std::fmt::Display for UnknownGoroutineCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ThreadMismatch => {
                "the thread was not the one the goroutine's m.procid names (threads not created \
                 by Go, thread ids of another PID namespace, or a wrong runtime layout)"
            }
            Self::Unreadable => {
                "the goroutine could not be read from the thread (a wrong runtime layout or TLS \
                 slot)"
            }
        })
    }
}

/// One warning.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Warning {
    // What inspecting a Go binary found.
    #[error("unreadable Go build information: {0}")]
    BuildInfoUnreadable(String),
    #[error("{arch} binaries are not supported: goroutine fields will be unknown")]
    UnsupportedArchitecture { arch: String },
    #[error("no runtime layout from DWARF ({0}); falling back to the Go version table")]
    NoDwarfLayout(String),
    #[error(
        "the runtime layout in DWARF differs from stacksampler's table for {version}: using DWARF"
    )]
    DwarfDiffersFromTable { version: String },
    #[error(
        "{version} has no wait reason table in stacksampler ({tables}): the runtime layout comes \
         from DWARF, wait reasons are shown as numbers"
    )]
    NoWaitReasonTable { version: String, tables: GoRange },
    #[error(
        "{version} is not in stacksampler's runtime layout table ({tables}) and the binary has no \
         usable DWARF: goroutine fields will be reported as unknown"
    )]
    UnknownRuntimeLayout { version: String, tables: GoRange },
    #[error("no usable .gopclntab: {0}")]
    NoPclntab(String),
    #[error("not a readable ELF image: {0}")]
    NotElf(String),

    // What a record run found.
    #[error("{} is not a Go binary: sampling native stacks, goroutine fields unknown", .exe.display())]
    NotGo { exe: PathBuf },
    #[error(
        "could not read the Go runtime layout of {}: {error}; goroutine fields unknown",
        .exe.display()
    )]
    InspectFailed { exe: PathBuf, error: String },
    #[error("cannot read goroutine labels: /proc/{pid}/mem: {error}")]
    LabelMemory { pid: u32, error: String },
    #[error(
        "goroutine labels of {failed} of {referenced} labelled samples could not be read: {error}"
    )]
    LabelsUnreadable {
        failed: u64,
        referenced: u64,
        error: String,
    },
    #[error("{what} of the target will not be reported: {error}")]
    ProbesNotAttached { what: &'static str, error: String },
    #[error(
        "{0} samples were lost (ring buffer full); lower --frequency or --max-frames, or raise --ring-size"
    )]
    SamplesLost(u64),
    #[error(
        "walk check: {differed} of {checked} samples walked from bulk copies of the stack differed from the record-by-record walk"
    )]
    WalkMismatch { differed: u64, checked: u64 },
    #[error(
        "{samples} samples of deep stacks kept only their innermost frames (depth is a lower \
         bound): reading the rest of each would have passed {mib_per_second} MiB/s of target \
         stack; lower --frequency (or --wall-frequency) to see them whole"
    )]
    DeepStacksOverBudget { samples: u64, mib_per_second: u64 },
    #[error(
        "goroutine fields are unknown in {unknown} of {total} samples ({:.0}%): {cause}; states, \
         goroutine ids and labels of those samples are missing",
        *.unknown as f64 * 100.0 / *.total as f64
    )]
    UnknownGoroutines {
        unknown: u64,
        total: u64,
        cause: UnknownGoroutineCause,
    },
    #[error("{0} events were lost (ring buffer full or undecodable)")]
    EventsLost(u64),
    #[error(
        "the target exec'd: wall-clock snapshots stopped (they read the program it ran at start)"
    )]
    WallStoppedByExec,
    #[error("wall-clock snapshots stopped: {0}")]
    WallStopped(String),

    // What a dump found.
    #[error(
        "pid {pid} exited during the dump: {listed} goroutines were listed, {read} of their stacks read"
    )]
    ExitedDuringDump {
        pid: u32,
        listed: usize,
        read: usize,
    },
}

/// `warnings` in one line, `; ` between them (for an error that says why a layout is missing).
pub fn joined(warnings: &[Warning]) -> String {
    warnings
        .iter()
        .map(Warning::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Serialize for Warning {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_print_and_serialize_as_one_sentence() {
        let w = Warning::UnknownGoroutines {
            unknown: 121,
            total: 121,
            cause: UnknownGoroutineCause::ThreadMismatch,
        };
        let text = w.to_string();
        assert!(
            text.starts_with(
                "goroutine fields are unknown in 121 of 121 samples (100%): the thread was not"
            ),
            "{text}"
        );
        assert_eq!(serde_json::to_value(&w).unwrap(), serde_json::json!(text));
        let range = GoRange {
            oldest: (1, 19),
            newest: (1, 27),
        };
        let w = Warning::UnknownRuntimeLayout {
            version: "go1.40".into(),
            tables: range,
        };
        assert!(w.to_string().contains("(go1.19 to go1.27)"), "{w}");
    }
}
