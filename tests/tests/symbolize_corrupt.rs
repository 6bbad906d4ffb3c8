//! Malformed input: truncated and corrupted Go binaries (ELF headers, `.gopclntab`, DWARF) must
//! give typed errors or `module+0xoffset` frames, never a panic.

use std::sync::Arc;

use stacksampler::symbolize::{FrameKind, ModuleSymbolizer};
use stacksampler_tests::{Variant, build_go, primary_go_toolchains};

/// Addresses tried on each damaged file.
const PROBES: u64 = 400;

/// Symbolizes `PROBES` addresses spread over `[lo, hi)`; only checks that nothing panics and
/// that every address gets at least one frame.
fn exercise(module: &ModuleSymbolizer, lo: u64, hi: u64) {
    let name: Arc<str> = Arc::from("damaged");
    let step = ((hi - lo) / PROBES).max(1);
    let mut addr = lo;
    while addr < hi {
        let frames = module.frames(addr, &name);
        assert!(!frames.is_empty());
        addr += step;
    }
}

/// The text range of a healthy build, used to probe damaged copies.
fn text_range(bytes: &[u8]) -> (u64, u64) {
    let module = ModuleSymbolizer::from_bytes(Arc::from(bytes)).expect("healthy binary parses");
    module
        .go_table()
        .and_then(|t| t.pc_range())
        .expect("healthy binary has a pclntab")
}

fn pclntab_range(module: &ModuleSymbolizer) -> (usize, usize) {
    let img = module.image();
    match img.section(".gopclntab").and_then(|s| s.file_range) {
        Some((off, len)) => (off as usize, len as usize),
        // Inside .data.rel.ro (external linking): damage that section instead.
        None => {
            let s = img.section(".data.rel.ro").expect(".data.rel.ro");
            let (off, len) = s.file_range.expect("file range");
            (off as usize, len as usize)
        }
    }
}

#[test]
fn damaged_go_binaries_never_panic() {
    for tc in primary_go_toolchains() {
        for variant in [Variant::Stripped, Variant::PieCgo] {
            let exe = build_go("symoracle", &tc, variant);
            let healthy = std::fs::read(&exe).expect("read binary");
            let (lo, hi) = text_range(&healthy);
            let module = ModuleSymbolizer::from_bytes(Arc::from(&healthy[..])).expect("parse");
            let (pcln_off, pcln_len) = pclntab_range(&module);

            // Truncations, from inside the ELF header to just before the end.
            for cut in [
                0,
                1,
                16,
                63,
                64,
                500,
                4096,
                pcln_off + 8,
                pcln_off + pcln_len / 2,
            ]
            .into_iter()
            .chain((1..8).map(|i| healthy.len() * i / 8))
            {
                let cut = cut.min(healthy.len());
                if let Ok(m) = ModuleSymbolizer::from_bytes(Arc::from(&healthy[..cut])) {
                    exercise(&m, lo, hi);
                }
            }

            // Corruption of the pclntab: header fields, then spread through the tables.
            let mut positions: Vec<usize> = (0..80).map(|i| pcln_off + i).collect();
            positions.extend((0..200).map(|i| pcln_off + pcln_len * i / 200));
            for (n, pos) in positions.into_iter().enumerate() {
                let mut bytes = healthy.clone();
                for k in 0..8 {
                    if let Some(b) = bytes.get_mut(pos + k) {
                        *b ^= 0x5a_u8.wrapping_add((n * 7 + k) as u8) | 1;
                    }
                }
                if let Ok(m) = ModuleSymbolizer::from_bytes(Arc::from(bytes)) {
                    exercise(&m, lo, hi);
                }
            }

            // Garbage over the section headers and the DWARF of the normal sections.
            let mut bytes = healthy.clone();
            let len = bytes.len();
            for (i, b) in bytes[len - 4096..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(13);
            }
            if let Ok(m) = ModuleSymbolizer::from_bytes(Arc::from(bytes)) {
                exercise(&m, lo, hi);
            }
        }
    }
}

#[test]
fn non_elf_input_is_a_typed_error_and_unknown_addresses_print_module_offset() {
    assert!(ModuleSymbolizer::from_bytes(Arc::from(&b"\x7fELF garbage"[..])).is_err());
    assert!(ModuleSymbolizer::from_bytes(Arc::from(&[][..])).is_err());
    let tc = primary_go_toolchains().pop().expect("toolchain");
    let exe = build_go("symoracle", &tc, Variant::Stripped);
    let module = ModuleSymbolizer::open(&exe).expect("open");
    let name: Arc<str> = Arc::from("/x/symoracle");
    let frames = module.frames(0x10, &name);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].kind, FrameKind::Unknown);
    assert_eq!(&*frames[0].function, "symoracle+0x10");
}
