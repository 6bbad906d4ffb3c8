//! Finding `runtime.allgs` in stripped binaries from the machine code of `runtime.allgadd`, on
//! both instruction sets: for every primary Go toolchain, the candidates the scan forms from a
//! build's code include the addresses its `.symtab` gives for `runtime.allgs` and
//! `runtime.allglen` (the scan reads only code and segments, so the unstripped build can check
//! it: stripping changes the build settings recorded in the binary, and with them where the data
//! lands), and the stripped build's `runtime.allgadd` is found and scanned the same way. The
//! arm64 builds are cross-compiled and only read; the live half of the scan (the target's memory choosing among
//! the candidates) runs in `e2e_dump` on amd64 and in the arm64 guest (`cargo xtask
//! test-aarch64`).

use stacksampler::{
    goruntime::{self, GoArch, allgs::AllgaddScan},
    symbolize::elf::ElfImage,
};
use stacksampler_tests::{Variant, build_go_for, primary_go_toolchains};

/// The program scanned (any Go program has `runtime.allgadd`).
const PROGRAM: &str = "dumpstates";

#[test]
fn stripped_binaries_reference_allgs_and_allglen_from_allgadd() {
    for tc in primary_go_toolchains() {
        for (goarch, arch) in [(None, GoArch::Amd64), (Some("arm64"), GoArch::Arm64)] {
            let what = format!("{} {}", tc.label(), goarch.unwrap_or("amd64"));
            let normal = build_go_for(PROGRAM, &tc, Variant::Normal, goarch);
            let symbols = goruntime::inspect(&normal)
                .unwrap_or_else(|e| panic!("{what}: inspect: {e}"))
                .symbols;
            let allgs = symbols.allgs.expect("runtime.allgs in .symtab");
            let allglen = symbols.allglen.expect("runtime.allglen in .symtab");

            let scan_of = |exe: &std::path::Path| {
                let image =
                    ElfImage::parse(std::fs::read(exe).expect("read").into()).expect("parse");
                let binary = goruntime::inspect(exe).expect("inspect");
                assert_eq!(binary.arch, arch, "{what}");
                let scan = AllgaddScan::of(&image, arch).unwrap_or_else(|e| panic!("{what}: {e}"));
                (binary, scan.candidates())
            };
            let (_, candidates) = scan_of(&normal);
            assert!(
                candidates.contains(&allgs) && candidates.contains(&allglen),
                "{what}: allgs {allgs:#x} and allglen {allglen:#x} among {candidates:x?}"
            );
            let stripped = build_go_for(PROGRAM, &tc, Variant::Stripped, goarch);
            let (binary, stripped_candidates) = scan_of(&stripped);
            assert_eq!(
                binary.symbols.allgs, None,
                "{what}: stripped has no .symtab"
            );
            assert_eq!(
                stripped_candidates.len(),
                candidates.len(),
                "{what}: the stripped build's allgadd references as many data words"
            );
            eprintln!(
                "passed: {what}: allgs {allgs:#x}, allglen {allglen:#x} among {} candidates",
                candidates.len()
            );
        }
    }
}
