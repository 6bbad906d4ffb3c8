//! Kernel addresses named from `/proc/kallsyms` (read once per process): the kernel stacks of
//! `--kernel`.

use std::sync::{Arc, OnceLock};

use super::{Frame, FrameKind, Resolve};

/// The kernel's text symbols, as a [`Resolve`] source (`module` is ignored: frames carry
/// `[kernel]`).
pub struct KernelSymbols;

impl Resolve for KernelSymbols {
    fn resolve_batch(&self, addrs: &[u64], _module: &Arc<str>, out: &mut [Vec<Frame>]) {
        for (frames, &addr) in out.iter_mut().zip(addrs) {
            if frames.is_empty() {
                *frames = vec![frame(addr)];
            }
        }
    }
}

/// A kernel symbol from `/proc/kallsyms`.
struct KernelSymbol {
    addr: u64,
    name: Arc<str>,
}

/// Kernel text symbols sorted by address (empty when kallsyms hides addresses).
fn kernel_symbols() -> &'static [KernelSymbol] {
    static SYMS: OnceLock<Vec<KernelSymbol>> = OnceLock::new();
    SYMS.get_or_init(|| {
        let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
            return Vec::new();
        };
        let mut syms: Vec<KernelSymbol> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| KernelSymbol {
                    addr,
                    name: name.into(),
                })
            })
            .collect();
        syms.sort_by_key(|s| s.addr);
        syms
    })
}

/// The frame of kernel address `addr`: the kallsyms symbol at or before it, else unknown.
pub fn frame(addr: u64) -> Frame {
    let syms = kernel_symbols();
    let idx = syms.partition_point(|s| s.addr <= addr);
    match idx.checked_sub(1).and_then(|i| syms.get(i)) {
        Some(sym) => Frame {
            function: sym.name.clone(),
            file: None,
            line: None,
            inlined: false,
            module: Some(Arc::from("[kernel]")),
            kind: FrameKind::Kernel,
        },
        None => {
            let mut f = Frame::unknown(Some((Arc::from("[kernel]"), addr)), addr);
            f.kind = FrameKind::Kernel;
            f
        }
    }
}
