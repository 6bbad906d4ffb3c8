//! `stacksampler dump`: every goroutine of a running Go program, read from its memory without
//! stopping it (no ptrace, no signal: only reads of `/proc/PID/mem`).
//!
//! - [`read`]: the goroutine list (`runtime.allgs`, see [`goruntime::allgs`]), each `g`'s fields
//!   and its stack, walked by frame pointers from where the goroutine will resume;
//! - [`text`]: Go's own `goroutine?debug=2` format, and `debug=1` (grouped);
//! - [`pprof`]: a goroutine profile;
//! - json: [`Dump`] serialized as it is (`docs/dump.md`).
//!
//! The library returns a [`Dump`]; the binary writes it.

pub mod findings;
pub mod output;
pub mod pileup;
pub mod pprof;
pub mod read;
pub mod text;

use std::sync::Arc;

use serde::Serialize;

use crate::goruntime::{self, state::GoroutineState};

pub use read::{DumpOptions, dump};

/// Everything read from one target.
#[derive(Clone, Debug, Serialize)]
pub struct Dump {
    /// The target.
    pub pid: u32,
    /// Its executable as the target sees it.
    pub binary: String,
    /// The Go release that built it.
    pub go_version: Option<String>,
    /// How `runtime.allgs` was found.
    pub allgs_source: goruntime::allgs::AllGsSource,
    /// Wall-clock time of the dump (seconds since the Unix epoch).
    pub time_unix_s: f64,
    /// Time the dump took (reading and symbolizing, not writing the output).
    pub elapsed_s: f64,
    /// CPU time the dump used meanwhile (user and system): what it costs on an idle machine,
    /// whatever else competes for the CPUs.
    pub cpu_s: f64,
    /// Bytes read from the target's memory.
    pub bytes_read: u64,
    /// Goroutines whose state or saved registers changed while their stack was read, and that
    /// were read again.
    pub reread: u64,
    /// Goroutines still changing after every re-read: their stack is marked
    /// [`Goroutine::inconsistent`].
    pub inconsistent: u64,
    /// The target exited (or its memory became unreadable) before every goroutine was read:
    /// the dump holds what was read.
    pub incomplete: bool,
    /// Goroutines in the list that are dead (kept by the runtime for reuse; not listed).
    pub dead: u64,
    /// Every goroutine not dead, in the runtime's list order (creation order).
    pub goroutines: Vec<Goroutine>,
    /// What limited the dump, one sentence each.
    pub warnings: Vec<crate::warning::Warning>,
    /// Pile-ups: many goroutines blocked at one call, created at one site ([`pileup`]).
    pub findings: Vec<pileup::DumpFinding>,
}

/// One goroutine.
#[derive(Clone, Debug, Serialize)]
pub struct Goroutine {
    /// `g.goid`.
    pub goid: u64,
    /// Address of its `runtime.g`.
    pub address: u64,
    /// `g.atomicstatus` decoded.
    pub state: GoroutineState,
    /// The GC was scanning its stack (`_Gscan` bit).
    pub scan: bool,
    /// `g.waitreason` as Go names it in the target's release (waiting goroutines).
    pub wait_reason: Option<String>,
    /// What Go's traceback shows in brackets: the wait reason, else the state's Go name.
    pub status_text: String,
    /// Nanoseconds since `g.waitsince` (set by the GC, so approximate, as in Go's traceback).
    pub waiting_ns: Option<u64>,
    /// Locked to its thread (`runtime.LockOSThread`; `g.lockedm` set).
    pub locked_to_thread: bool,
    /// A runtime goroutine (its function is in package `runtime`): Go's dumps hide them.
    pub system: bool,
    /// Its pprof labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// The function it was started with (`g.startpc`).
    pub start_function: Option<Arc<str>>,
    /// Where it was created (`g.gopc`), absent for the main goroutine.
    pub created_by: Option<CreatedBy>,
    /// Its stack.
    pub stack: Stack,
    /// Its status or saved registers kept changing while its stack was read: the stack may
    /// mix two moments.
    pub inconsistent: bool,
}

/// What makes goroutines "the same" in grouped outputs: one stack (resume addresses), one
/// status, one label set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupKey<'a> {
    pub pcs: Vec<u64>,
    pub status: &'a str,
    pub labels: &'a [(String, String)],
}

impl Goroutine {
    /// The resume addresses of its stack, one per call (inlined frames share theirs).
    pub fn physical_pcs(&self) -> Vec<u64> {
        self.stack
            .all_frames()
            .filter(|f| !f.inlined)
            .map(|f| f.pc)
            .collect()
    }

    /// Its key in grouped outputs.
    pub fn group_key(&self) -> GroupKey<'_> {
        GroupKey {
            pcs: self.physical_pcs(),
            status: &self.status_text,
            labels: &self.labels,
        }
    }
}

/// The `go` statement that created a goroutine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreatedBy {
    /// The function holding the `go` statement.
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// `gopc` minus the function's entry.
    pub offset: Option<u64>,
    /// The creator's goid (`g.parentGoid`, Go 1.21+).
    pub parent_goid: Option<u64>,
}

/// How a goroutine's stack was captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackSource {
    /// From `g.sched` (a goroutine not on a thread).
    Sched,
    /// From `g.syscallpc/syscallsp/syscallbp` (in a system call).
    Syscall,
    /// Running on a thread: its saved registers are stale, so no stack is shown.
    NotCaptured,
    /// Its memory could not be read.
    Unreadable,
}

/// A goroutine's stack, innermost frame first.
#[derive(Clone, Debug, Serialize)]
pub struct Stack {
    pub source: StackSource,
    /// Frames from the innermost (at most [`read::HEAD_FRAMES`] calls).
    pub frames: Vec<DumpFrame>,
    /// Calls between `frames` and `tail` counted but not kept.
    pub elided: u64,
    /// The outermost calls of a stack deeper than `frames`.
    pub tail: Vec<DumpFrame>,
    /// The frame-pointer chain ended before the goroutine's root (the stack may be partial).
    pub truncated: bool,
}

impl Stack {
    /// Every frame kept, innermost first.
    pub fn all_frames(&self) -> impl Iterator<Item = &DumpFrame> {
        self.frames.iter().chain(self.tail.iter())
    }
}

/// One source frame (a call expands to several when functions were inlined into it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct DumpFrame {
    /// Function name as Go prints it.
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// Inlined into the next frame (same `pc`).
    pub inlined: bool,
    /// The resume address: the return address of a call, or the goroutine's saved pc.
    pub pc: u64,
    /// `pc` minus the function's entry (on the frame of the real function only).
    pub offset: Option<u64>,
    /// A compiler-generated wrapper (Go's tracebacks hide it).
    pub wrapper: bool,
}

/// Why a dump could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
    #[error(transparent)]
    Inspect(#[from] goruntime::GoRuntimeError),
    /// The executable was not built by Go.
    #[error("{0} is not a Go program")]
    NotGo(String),
    /// A Go release whose runtime layout is unknown (and no DWARF).
    #[error("{0}")]
    NoLayout(String),
    /// The goroutine list could not be found or read.
    #[error("cannot find the goroutine list of {binary}")]
    AllGs {
        binary: String,
        #[source]
        source: goruntime::allgs::AllGsError,
    },
    #[error(transparent)]
    Symbolize(#[from] crate::symbolize::SymbolizeError),
    #[error("cannot read {what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Hand-made dumps for the renderers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use super::*;
    use crate::goruntime::allgs::AllGsSource;

    /// Nanoseconds in a minute.
    const NS_PER_MINUTE: u64 = 60_000_000_000;

    pub fn frame(
        function: &str,
        line: u32,
        pc: u64,
        offset: Option<u64>,
        inlined: bool,
    ) -> DumpFrame {
        DumpFrame {
            function: Arc::from(function),
            file: Some(Arc::from("/src/main.go")),
            line: Some(line),
            inlined,
            pc,
            offset,
            wrapper: false,
        }
    }

    pub fn goroutine(goid: u64, frames: Vec<DumpFrame>) -> Goroutine {
        Goroutine {
            goid,
            address: 0xc000001000,
            state: GoroutineState::Waiting,
            scan: false,
            wait_reason: Some("chan receive".into()),
            status_text: "chan receive".into(),
            waiting_ns: Some(3 * NS_PER_MINUTE + 1),
            locked_to_thread: true,
            system: false,
            labels: vec![("k".into(), "v".into())],
            start_function: Some(Arc::from("main.worker")),
            created_by: Some(CreatedBy {
                function: Arc::from("main.main"),
                file: Some(Arc::from("/src/main.go")),
                line: Some(40),
                offset: Some(0x65),
                parent_goid: Some(1),
            }),
            stack: Stack {
                source: StackSource::Sched,
                frames,
                elided: 0,
                tail: Vec::new(),
                truncated: false,
            },
            inconsistent: false,
        }
    }

    pub fn dump(goroutines: Vec<Goroutine>) -> Dump {
        Dump {
            pid: 1,
            binary: "/src/app".into(),
            go_version: Some("go1.27.3".into()),
            allgs_source: AllGsSource::SymbolTable,
            time_unix_s: 0.0,
            elapsed_s: 0.0,
            cpu_s: 0.0,
            bytes_read: 0,
            reread: 0,
            inconsistent: 0,
            incomplete: false,
            dead: 0,
            goroutines,
            warnings: Vec::new(),
            findings: Vec::new(),
        }
    }
}
