//! The programs, one file per kind: [`sample`] (the perf-event sampler) and the uprobes on the
//! Go runtime, which share [`event_record`].
//!
//! Runtime events are uprobes on the Go runtime of the target, all placed at function
//! entries or at one plain instruction (never return probes: Go moves stacks, and a return probe
//! rewrites a return address on the stack being moved).
//!
//! - `runtime.copystack(gp, newsize)`: a goroutine's stack grows (or shrinks); the stack is the
//!   goroutine's own, walked from `gp.sched`.
//! - the instruction after `CALL runtime.newproc1` in `runtime.newproc.func1` (AX = the new `g`,
//!   its `goid` already set): a goroutine was created; the creator's stack is walked from
//!   `curg.sched` (the closure runs on `g0`). `runtime.newproc1` entry is the fallback.
//! - `runtime.goexit1`: a goroutine ends (runs on it: R14 = `g`).
//! - `runtime.throw` / `runtime.fatal` (message in AX/BX): a fatal error (they are the only
//!   callers of `runtime.fatalthrow`).
//!
//! Arguments follow Go's register ABI (Go 1.17+): amd64 AX, BX, CX, DI, SI, R8-R11, `g` in R14;
//! arm64 R0-R15, `g` in R28. Offsets of `runtime.g`/`m`/`gobuf` come from user space.
//!
//! Stacks are walked by the sampler's walk (`walk`) into a per-CPU `EventRecord`: the first
//! `EVENT_HEAD_FRAMES` frames in order, then a ring of `EVENT_TAIL_FRAMES`, so a stack
//! deeper than the buffer still yields its head, its tail and its exact depth.

pub mod event_record;
pub mod fatal;
pub mod goroutine_create;
pub mod goroutine_exit;
pub mod sample;
pub mod stack_growth;
