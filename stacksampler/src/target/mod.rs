//! The process being sampled and the kernel it runs on: existence, executable, privileges, and
//! the kernel structure offsets the eBPF program needs (from BTF).

pub mod exit;
pub mod kernel;
pub mod process;

pub use exit::{ExitWatch, sleep_or_forever};
pub use kernel::{KernelError, TaskOffsets, monotonic_ns, task_offsets};
pub use process::{Process, TargetError, check_privileges};
