//! An ELF file from the target's machine: ELF headers and symbol tables, `.gopclntab` (located
//! by section or by scanning for `runtime.firstmoduledata`; pc-value tables, inline trees,
//! names) and DWARF (line tables, inlined frames). Any input: typed errors or frames, no panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use stacksampler::symbolize::ModuleSymbolizer;

/// Addresses probed per input.
const PROBES: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(module) = ModuleSymbolizer::from_bytes(Arc::from(data)) else {
        return;
    };
    let name: Arc<str> = Arc::from("fuzzed");
    let mut addrs = Vec::new();
    if let Some((lo, hi)) = module.go_table().and_then(|t| t.pc_range()) {
        let step = (hi.saturating_sub(lo) / PROBES).max(1);
        addrs.extend((0..PROBES).map(|i| lo.saturating_add(i * step)));
    }
    // And addresses the input itself names (symbol values, table entries).
    addrs.extend(
        data.chunks_exact(8)
            .take(PROBES as usize)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())),
    );
    let frames = module.frames_batch(&addrs, &name);
    assert_eq!(frames.len(), addrs.len());
    if let Some(table) = module.go_table() {
        for &a in &addrs {
            let _ = table.frame_size_at(a);
            let _ = table.function_name_at(a);
        }
    }
});
