//! What stacksampler reads of a Go executable before sampling: `.go.buildinfo` (Go version,
//! settings), `.note.go.buildid`, the runtime layout from DWARF or the per-version tables, the
//! runtime's symbols. Any input: an error or a description, no panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stacksampler::goruntime;

fuzz_target!(|data: &[u8]| {
    if let Ok(binary) = goruntime::inspect_bytes(Path::new("fuzzed"), data) {
        let _ = binary.layout_known();
        for raw in [0u8, 1, 7, 255] {
            let _ = binary.waitreason_name(raw);
        }
    }
});
