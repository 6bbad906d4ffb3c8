//! The dump's goroutine list read from the target's memory: `runtime.allgs` found from the code
//! of `runtime.allgadd` (stripped binaries), then the list and every goroutine's status read
//! through it. The input is both the code and the memory; every length read is capped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stacksampler::goruntime::{
    GoArch,
    allgs::{AllGs, AllGsSource, MachineCode, count_live, find_in_code, read_g_pointers},
};
use stacksampler_fuzz::FlatMemory;

/// Where the fuzzed memory sits in the fake address space (and the code's link-time address).
const BASE: u64 = 0x10_0000;
/// `g.goid` and `g.atomicstatus` offsets tried (Go 1.19's and 1.27's amd64 values and others).
const OFFSETS: [u32; 4] = [0x98, 0xa0, 0x90, 0x8];

fuzz_target!(|data: &[u8]| {
    // [selector][code length][code][memory]
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&code_len, rest)) = rest.split_first() else {
        return;
    };
    let (code, memory) = rest.split_at(usize::from(code_len).min(rest.len()));
    let mem = FlatMemory {
        base: BASE,
        bytes: memory,
    };
    let offset = OFFSETS[usize::from(selector) % OFFSETS.len()];
    let data_ranges = [(BASE, BASE + memory.len() as u64)];
    // Either instruction set, by the selector's second bit.
    let arch = if selector & 0x40 != 0 {
        GoArch::Arm64
    } else {
        GoArch::Amd64
    };
    let code = MachineCode {
        arch,
        bytes: code,
        vaddr: BASE,
    };
    let found = find_in_code(&code, &data_ranges, 0, offset, &mem);
    // And the list read from wherever the input says, found or not.
    let word = |i: usize| {
        memory
            .get(i * 8..i * 8 + 8)
            .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
    };
    let named = AllGs {
        allgs: BASE.wrapping_add(word(0) % 4096),
        allglen: (selector & 0x80 != 0).then(|| BASE.wrapping_add(word(1) % 4096)),
        source: AllGsSource::SymbolTable,
    };
    for at in found.iter().chain([&named]) {
        if let Ok(gs) = read_g_pointers(&mem, at) {
            assert!(gs.iter().all(|&g| g != 0));
        }
        let _ = count_live(&mem, at, offset);
    }
});
