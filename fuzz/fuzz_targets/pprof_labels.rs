//! A goroutine's pprof label set read from the target's memory (map and slice forms): the
//! memory is the input, laid out from address `BASE`; every length read from it is capped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacksampler::goruntime::{GoVersion, labels::read_labels};
use stacksampler_fuzz::FlatMemory;

/// Where the fuzzed bytes sit in the fake address space.
const BASE: u64 = 0x1000;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, memory)) = data.split_first() else {
        return;
    };
    // Go 1.19-1.23 keep labels in a map, 1.24+ in a slice.
    let version: GoVersion = match selector % 3 {
        0 => "go1.19.8",
        1 => "go1.23.9",
        _ => "go1.27.3",
    }
    .parse()
    .expect("a valid version");
    let mem = FlatMemory {
        base: BASE,
        bytes: memory,
    };
    let _ = read_labels(&version, BASE, &mem);
});
