//! Goroutine exit: the `runtime.goexit1` uprobe.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use stacksampler_common::EventKind;

use crate::{
    maps::count,
    programs::event_record::{begin, config, goid_of, submit},
    regs::regs,
};

/// `runtime.goexit1()` runs on the goroutine that ends.
#[uprobe]
pub fn go_goexit1(ctx: ProbeContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    count(|c| c.exit_hits += 1);
    let r = regs(&ctx);
    let Some((cpu, rec)) = begin(EventKind::GOROUTINE_EXIT) else {
        return 0;
    };
    // SAFETY: user memory is read through bpf_probe_read_user only.
    unsafe {
        rec.header.goid = goid_of(&cfg.go, r.g);
        rec.header.g_addr = r.g;
    }
    submit(cpu);
    0
}
