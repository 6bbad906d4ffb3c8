//! `goruntime::inspect` on real Go builds: every toolchain the harness lists, built normal,
//! stripped and PIE+cgo. Checks the version from the build information, the DWARF layout against
//! the per-version table, the table's use for stripped builds, the refusal to guess for an
//! unknown version, the wait reason tables against the toolchain's own `runtime2.go`, and that a
//! corrupted binary never panics. No root needed: nothing is run, only read.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use stacksampler::goruntime::{
    self, GPointer, GoBinary, LayoutSource, buildinfo, layout::AMD64_TLS_G_OFFSET, table,
    waitreason,
};
use stacksampler::warning::Warning;
use stacksampler_tests::{GoToolchain, Variant, build_go, go_toolchains};

/// The Go program every variant is built from (`tests/go/goinfo`).
const PROGRAM: &str = "goinfo";

/// Budget for one `inspect` of a 2-3 MB binary. Measured about 10-25 ms in release and well
/// under this in the dev profile; the budget leaves room for a loaded 2-core machine.
const INSPECT_BUDGET: Duration = Duration::from_millis(400);

fn inspect(path: &Path) -> GoBinary {
    goruntime::inspect(path).unwrap_or_else(|e| panic!("inspect {}: {e}", path.display()))
}

/// `go env GOVERSION` of a toolchain: what its binaries' build information must say.
fn toolchain_version(tc: &GoToolchain) -> String {
    let out = Command::new(&tc.go)
        .args(["env", "GOVERSION"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go env");
    assert!(
        out.status.success(),
        "go env GOVERSION failed for {}",
        tc.label()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `GOROOT` of a toolchain.
fn toolchain_goroot(tc: &GoToolchain) -> PathBuf {
    let out = Command::new(&tc.go)
        .args(["env", "GOROOT"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go env");
    assert!(
        out.status.success(),
        "go env GOROOT failed for {}",
        tc.label()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A copy of `exe` (under `target/go-programs/`) whose build information names `go1.99`
/// instead of the real release: the minor version digits right after `go1.` are replaced.
fn patched_to_go_1_99(exe: &Path, real_version: &str) -> PathBuf {
    let mut data = std::fs::read(exe).expect("read binary");
    let magic = find(&data, buildinfo::MAGIC).expect("build info magic in binary");
    let at = magic + find(&data[magic..], real_version.as_bytes()).expect("version in build info");
    let minor_at = at + "go1.".len();
    data[minor_at] = b'9';
    data[minor_at + 1] = b'9';
    let out = exe.with_file_name(format!(
        "{}-go1.99",
        exe.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&out, &data).expect("write patched binary");
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn version_and_layout_for_every_toolchain_and_variant() {
    let mut verified = Vec::new();
    for tc in go_toolchains() {
        let real_version = toolchain_version(&tc);
        let version: goruntime::GoVersion = real_version.parse().expect("toolchain version");
        assert_eq!(
            format!("{}.{}", version.major, version.minor),
            tc.version,
            "{real_version} is not the harness's {}",
            tc.version
        );
        let table_layout = table::layout_for(&version)
            .unwrap_or_else(|| panic!("no table row for {real_version}"));

        // Normal build: DWARF layout, equal to the table.
        let normal_exe = build_go(PROGRAM, &tc, Variant::Normal);
        let start = Instant::now();
        let normal = inspect(&normal_exe);
        let elapsed = start.elapsed();
        assert!(
            elapsed < INSPECT_BUDGET,
            "inspect took {elapsed:?} on {}",
            normal_exe.display()
        );
        assert!(normal.is_go);
        assert_eq!(normal.build_info.as_ref().unwrap().version, real_version);
        assert_eq!(normal.version.as_ref(), Some(&version));
        assert!(normal.has_dwarf);
        assert_eq!(normal.layout_source, LayoutSource::Dwarf, "{real_version}");
        assert_eq!(
            normal.runtime_layout,
            Some(table_layout),
            "DWARF of {real_version} differs from the table"
        );
        assert_eq!(normal.dwarf_matches_table, Some(true));
        assert_eq!(normal.g_pointer, Some(GPointer::Tls(AMD64_TLS_G_OFFSET)));
        assert_eq!(
            normal.layout,
            Some(table_layout.to_go_layout(
                GPointer::Tls(AMD64_TLS_G_OFFSET),
                goruntime::labels::repr(&version)
            ))
        );
        assert_eq!(normal.layout.unwrap().tls_g_offset, -8);
        assert!(normal.warnings.is_empty(), "{:?}", normal.warnings);
        assert!(!normal.is_pie);
        // Exactly the id the Go toolchain itself reads from the file.
        assert_eq!(
            normal.go_build_id.as_deref(),
            Some(go_tool_buildid(&tc, &normal_exe).as_str()),
            "{real_version}: Go build id"
        );
        assert!(normal.symbols.maxstacksize.is_some());
        assert!(normal.symbols.allgs.is_some() && normal.symbols.allm.is_some());
        // The dump's members (compared with the table above): present from the release that
        // added them.
        let dwarf_layout = normal.runtime_layout.unwrap();
        assert_eq!(
            dwarf_layout.g_parent_goid.is_some(),
            version.family() >= (1, 21),
            "{real_version}: parentGoid"
        );
        assert_eq!(
            dwarf_layout.g_syscallbp.is_some(),
            version.family() >= (1, 23),
            "{real_version}: syscallbp"
        );
        let (Some(waitsince), Some(gopc), Some(startpc), Some(_)) = (
            dwarf_layout.g_waitsince,
            dwarf_layout.g_gopc,
            dwarf_layout.g_startpc,
            dwarf_layout.g_lockedm,
        ) else {
            panic!("{real_version}: a dump member is missing: {dwarf_layout:?}");
        };
        assert!(
            waitsince > dwarf_layout.g_goid && startpc > gopc,
            "{real_version}: {dwarf_layout:?}"
        );
        verified.push(format!("{real_version} normal (inspect {elapsed:?})"));

        // Stripped: no DWARF, no symbols; the table gives the same layout.
        let stripped_exe = build_go(PROGRAM, &tc, Variant::Stripped);
        let stripped = inspect(&stripped_exe);
        assert!(stripped.is_go);
        assert_eq!(stripped.version.as_ref(), Some(&version));
        assert!(!stripped.has_dwarf);
        assert_eq!(stripped.layout_source, LayoutSource::VersionTable);
        assert_eq!(stripped.runtime_layout, normal.runtime_layout);
        assert_eq!(stripped.layout, normal.layout);
        assert_eq!(stripped.symbols, goruntime::RuntimeSymbols::default());
        assert!(stripped.warnings.is_empty(), "{:?}", stripped.warnings);
        assert_eq!(
            stripped.go_build_id.as_deref(),
            Some(go_tool_buildid(&tc, &stripped_exe).as_str()),
            "stripped builds keep .note.go.buildid"
        );
        verified.push(format!("{real_version} stripped"));

        // PIE + cgo: position independent, same layout, same g slot.
        let pie_exe = build_go(PROGRAM, &tc, Variant::PieCgo);
        let pie = inspect(&pie_exe);
        assert!(pie.is_go && pie.is_pie);
        assert_eq!(pie.version.as_ref(), Some(&version));
        assert_eq!(pie.layout_source, LayoutSource::Dwarf);
        assert_eq!(pie.runtime_layout, Some(table_layout));
        assert_eq!(pie.layout, normal.layout);
        let info = pie.build_info.as_ref().unwrap();
        // Go 1.19 does not record the build mode; 1.21 and later do.
        if version.minor >= 21 {
            assert_eq!(info.setting("-buildmode"), Some("pie"), "{real_version}");
        }
        assert_eq!(info.setting("CGO_ENABLED"), Some("1"));
        assert!(pie.warnings.is_empty(), "{:?}", pie.warnings);
        verified.push(format!("{real_version} pie+cgo"));

        // An unknown release, stripped: no layout, exactly one warning naming it.
        let unknown = inspect(&patched_to_go_1_99(&stripped_exe, &real_version));
        assert!(unknown.is_go);
        assert_eq!(unknown.version.as_ref().map(|v| v.family()), Some((1, 99)));
        assert_eq!(unknown.layout, None);
        assert_eq!(unknown.runtime_layout, None);
        assert_eq!(unknown.layout_source, LayoutSource::Unavailable);
        assert_eq!(unknown.warnings.len(), 1, "{:?}", unknown.warnings);
        assert!(
            matches!(
                &unknown.warnings[0],
                Warning::UnknownRuntimeLayout { version, .. } if version.contains("go1.99")
            ),
            "{:?}",
            unknown.warnings
        );
        assert_eq!(unknown.waitreason_name(14), None);

        // The same release with DWARF: DWARF still gives the layout; wait reasons are unnamed.
        let unknown_dwarf = inspect(&patched_to_go_1_99(&normal_exe, &real_version));
        assert_eq!(unknown_dwarf.layout_source, LayoutSource::Dwarf);
        // Same offsets; the label representation is a property of the release, unknown here,
        // so labels are not read.
        let without_labels = |l: Option<stacksampler_common::GoLayout>| {
            l.map(|l| stacksampler_common::GoLayout {
                label_format: stacksampler_common::LabelFormat::NONE,
                ..l
            })
        };
        assert_eq!(
            without_labels(unknown_dwarf.layout),
            without_labels(normal.layout)
        );
        assert_eq!(
            unknown_dwarf.layout.map(|l| l.label_format),
            Some(stacksampler_common::LabelFormat::NONE)
        );
        assert_eq!(
            unknown_dwarf.warnings.len(),
            1,
            "{:?}",
            unknown_dwarf.warnings
        );
        verified.push(format!("{real_version} patched to go1.99"));
    }
    eprintln!("verified: {}", verified.join(", "));
}

/// Go's wait reason names in enum order, read from a toolchain's `runtime/runtime2.go`
/// (`waitReasonStrings`, indexed by the `waitReason` constants in declaration order).
fn wait_reasons_from_source(runtime2: &str) -> Vec<String> {
    let enum_start = runtime2
        .find("waitReasonZero ")
        .expect("waitReasonZero in runtime2.go");
    let enum_end = enum_start + runtime2[enum_start..].find("\n)").expect("end of enum");
    let names: Vec<&str> = runtime2[enum_start..enum_end]
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.starts_with("waitReason"))
        .collect();
    let strings_start = runtime2
        .find("var waitReasonStrings = [...]string{")
        .expect("waitReasonStrings in runtime2.go");
    let strings_end = strings_start + runtime2[strings_start..].find("\n}").expect("end");
    let mut strings = std::collections::HashMap::new();
    for line in runtime2[strings_start..strings_end].lines() {
        if let Some((name, rest)) = line.trim().split_once(':') {
            let value = rest.trim().trim_end_matches(',').trim_matches('"');
            strings.insert(name.trim(), value.to_owned());
        }
    }
    names
        .iter()
        .map(|n| {
            strings
                .get(n)
                .unwrap_or_else(|| panic!("no string for {n}"))
                .clone()
        })
        .collect()
}

#[test]
fn wait_reason_tables_match_each_toolchains_runtime_source() {
    for tc in go_toolchains() {
        let version: goruntime::GoVersion = toolchain_version(&tc).parse().unwrap();
        let source = toolchain_goroot(&tc).join("src/runtime/runtime2.go");
        let runtime2 = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
        let expected = wait_reasons_from_source(&runtime2);
        let ours = waitreason::table(&version).expect("wait reason table");
        assert_eq!(ours, expected, "wait reasons of {version}");
    }
}

#[test]
fn a_c_binary_is_not_go() {
    let binary = inspect(Path::new("/bin/true"));
    assert!(!binary.is_go);
    assert_eq!(binary.layout, None);
    assert_eq!(binary.version, None);
    assert_eq!(binary.layout_source, LayoutSource::Unavailable);
}

/// Truncated and corrupted copies of a real Go binary give results or errors, never panics.
#[test]
fn corrupted_go_binaries_do_not_panic() {
    let tc = go_toolchains().pop().expect("a toolchain");
    let exe = build_go(PROGRAM, &tc, Variant::Normal);
    let data = std::fs::read(&exe).unwrap();
    let name = Path::new("corrupt");
    for len in [
        0,
        16,
        64,
        4096,
        data.len() / 3,
        data.len() / 2,
        data.len() - 1,
    ] {
        let _ = goruntime::inspect_bytes(name, &data[..len]);
    }
    // Flip bytes all over the file, then inside the build information and the section table.
    for stride in [4099usize, 997, 211] {
        let mut bad = data.clone();
        for i in (0..bad.len()).step_by(stride) {
            bad[i] ^= 0xa5;
        }
        let _ = goruntime::inspect_bytes(name, &bad);
    }
    let magic = find(&data, buildinfo::MAGIC).unwrap();
    for i in magic..magic + 64 {
        for byte in [0x00, 0x7f, 0x80, 0xff] {
            let mut bad = data.clone();
            bad[i] = byte;
            let _ = goruntime::inspect_bytes(name, &bad);
        }
    }
    // A build information blob with its version length pointing past the end of the file.
    let mut bad = data.clone();
    bad[magic + buildinfo::HEADER_SIZE] = 0x7f;
    bad.truncate(magic + buildinfo::HEADER_SIZE + 4);
    let _ = goruntime::inspect_bytes(name, &bad);
}

/// `/proc/PID/mem` of a child process.
struct ProcMem(std::fs::File);

impl goruntime::labels::ReadMemory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Option<()> {
        use std::os::unix::fs::FileExt;
        self.0.read_exact_at(buf, addr).ok()
    }
}

impl ProcMem {
    fn u64(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        goruntime::labels::ReadMemory::read(self, addr, &mut b)
            .unwrap_or_else(|| panic!("read {addr:#x}"));
        u64::from_le_bytes(b)
    }
    fn u32(&self, addr: u64) -> u32 {
        self.u64(addr) as u32
    }
    fn u8(&self, addr: u64) -> u8 {
        self.u64(addr) as u8
    }
}

/// The goroutine id the Go program printed after `prefix` (the harness returns the rest of the
/// line).
fn goid_after(process: &mut stacksampler_tests::GoProcess, prefix: &str) -> u64 {
    let rest = process.wait_for_line(prefix);
    rest.trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected `{prefix} N`, got {rest:?} after the prefix"))
}

/// The layout at work on a live process of every toolchain: walking `runtime.allgs` through
/// `/proc/PID/mem` with the table's offsets finds the goroutines the program names by goid, in
/// state waiting, with the wait reasons Go prints (`chan receive`, `sleep`) and the labelled one
/// carrying `req=42` in the label representation of its release.
#[test]
fn layout_reads_live_goroutines_ids_states_wait_reasons_and_labels() {
    use stacksampler::goruntime::{labels, state::GoroutineState};
    use stacksampler_tests::GoProcess;

    for tc in go_toolchains() {
        let exe = build_go(PROGRAM, &tc, Variant::Normal);
        let binary = inspect(&exe);
        let version = binary.version.clone().expect("version");
        let layout = binary.runtime_layout.expect("layout");
        let allgs = binary.symbols.allgs.expect("runtime.allgs in .symtab");
        let allglen = binary.symbols.allglen.expect("runtime.allglen in .symtab");

        let mut process = GoProcess::spawn(&exe, &["block"]);
        let labelled = goid_after(&mut process, "labelled goid");
        let sleeper = goid_after(&mut process, "sleeper goid");
        process.wait_for_line("ready");
        let mem =
            ProcMem(std::fs::File::open(format!("/proc/{}/mem", process.pid())).expect("open mem"));

        // Both goroutines print before parking: poll until they are parked.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (labelled_g, sleeper_g) = loop {
            let gs = mem.u64(allgs);
            let count = mem.u64(allglen);
            assert!(count > 0 && count < 100_000, "allglen {count}");
            let find = |goid: u64| {
                (0..count)
                    .map(|i| mem.u64(gs + 8 * i))
                    .filter(|&g| g != 0)
                    .find(|&g| mem.u64(g + u64::from(layout.g_goid)) == goid)
            };
            let (Some(l), Some(s)) = (find(labelled), find(sleeper)) else {
                panic!("{version}: goroutines {labelled}/{sleeper} not in allgs");
            };
            let parked = [l, s].iter().all(|&g| {
                GoroutineState::from_raw(mem.u32(g + u64::from(layout.g_atomicstatus)))
                    == GoroutineState::Waiting
            });
            if parked {
                break (l, s);
            }
            assert!(
                Instant::now() < deadline,
                "{version}: goroutines never parked"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let reason = |g: u64| {
            let raw = mem.u8(g + u64::from(layout.g_waitreason));
            waitreason::name(&version, raw)
        };
        assert_eq!(reason(labelled_g), Some("chan receive"), "{version}");
        assert_eq!(reason(sleeper_g), Some("sleep"), "{version}");
        for g in [labelled_g, sleeper_g] {
            let lo = mem.u64(g + u64::from(layout.g_stack_lo));
            let hi = mem.u64(g + u64::from(layout.g_stack_hi));
            let sp = mem.u64(g + u64::from(layout.g_sched + layout.gobuf_sp));
            let pc = mem.u64(g + u64::from(layout.g_sched + layout.gobuf_pc));
            assert!(
                lo < sp && sp < hi,
                "{version}: sched.sp {sp:#x} outside [{lo:#x}, {hi:#x})"
            );
            assert!(pc != 0, "{version}: sched.pc is 0");
            assert_eq!(
                mem.u64(g + u64::from(layout.g_m)),
                0,
                "{version}: parked g has an m"
            );
        }
        let labels_of = |g: u64| {
            let ptr = mem.u64(g + u64::from(layout.g_labels));
            labels::read_labels(&version, ptr, &mem)
                .unwrap_or_else(|e| panic!("{version}: labels: {e}"))
        };
        assert_eq!(
            labels_of(labelled_g),
            [("req".to_owned(), "42".to_owned())],
            "{version}"
        );
        assert_eq!(labels_of(sleeper_g), [], "{version}");
        eprintln!(
            "{version}: live goroutines {labelled} (chan receive, req=42) and {sleeper} (sleep) read right"
        );
    }
}

/// The Go build id of `exe` as `go tool buildid` prints it.
fn go_tool_buildid(tc: &GoToolchain, exe: &std::path::Path) -> String {
    let out = std::process::Command::new(&tc.go)
        .args(["tool", "buildid"])
        .arg(exe)
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run go tool buildid");
    assert!(
        out.status.success(),
        "go tool buildid {}: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.contains('/'), "go tool buildid printed {id:?}");
    id
}
