//! Kernel side of stacksampler: a `perf_event` program that samples the user stack and the
//! goroutine of the target's threads, and uprobes on the Go runtime (stack growth, goroutine
//! creation and exit, fatal errors), all sending records to user space through ring buffers.
//!
//! Module map: `programs/` one file per program kind (`sample` the perf-event sampler,
//! `stack_growth`, `goroutine_create`, `goroutine_exit`, `fatal` the uprobes, `event_record`
//! what the uprobes share), `maps` (every map), `regs` (user registers per architecture),
//! `goroutine` (`runtime.g`/`m`), `walk` (the `bpf_loop` frame-pointer walk from bulk copies of
//! the stack, shared by the sampler and the probes), `native` (cgo crossings and the native
//! stack copy); this file is only the crate root.
#![no_std]
#![no_main]

mod goroutine;
mod maps;
mod native;
mod programs;
mod regs;
mod walk;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
