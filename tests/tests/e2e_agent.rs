//! End to end, `stacksampler agent`: the real binary sampling real Go programs (`tests/go/agent`)
//! until SIGTERM, its interval profiles read back with `go tool pprof`, its metrics scraped by a
//! real Prometheus server (Debian's `prometheus`) and queried through Prometheus's HTTP API.
//! Every case checks that nothing the agent loaded stays in the kernel.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, GoToolchain, Variant, build_go, exclusive, go_tool_pprof,
    goroutines::Started,
    kernel::{assert_released, wait_attached},
    primary_go_toolchains, stacksampler_bin,
};

/// Debian's Prometheus server (`cargo xtask setup` installs it).
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Depth of the recursion target's deep goroutine.
const RECURSION_DEPTH: &str = "1000";
/// Goroutines the targets park on a channel.
const PARKED: &str = "30";

fn newest() -> GoToolchain {
    primary_go_toolchains().pop().expect("a toolchain")
}

/// Sends `signal` to our own child `pid`.
fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// A test target: `tests/go/agent` with its own count of goroutines (and of the deep
/// goroutine's frames, with `-depth`).
struct Target {
    process: GoProcess,
    goroutines: u64,
    frames: Option<u64>,
}

fn start_target(exe: &Path, seconds: &str, depth: Option<&str>) -> Target {
    let mut args = vec!["-seconds", seconds, "-parked", PARKED];
    if let Some(d) = depth {
        args.extend(["-depth", d]);
    }
    let mut process = GoProcess::spawn(exe, &args);
    let goroutines = process.wait_for_line("goroutines").parse().expect("count");
    let frames = depth.map(|_| process.wait_for_line("frames").parse().expect("frames"));
    process.wait_for_line("ready");
    Target {
        process,
        goroutines,
        frames,
    }
}

/// The agent, its stderr read line by line; stopped by SIGTERM (by pid) when dropped.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(stacksampler_bin())
            .arg("agent")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The agent on `pid` with one-second intervals and `extra` arguments.
    fn every_second(pid: u32, extra: &[&str]) -> Self {
        let pid = pid.to_string();
        let mut args = vec!["--pid", &pid, "--interval", "1s"];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Waits up to `timeout` for a stderr line containing `text`; returns it.
    fn wait_line(&mut self, text: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(text)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no stderr line with {text:?} in {timeout:?}; got {:#?}",
            self.seen
        );
    }

    /// `HOST:PORT` of the metrics endpoint, as the agent announces it.
    fn metrics_addr(&mut self) -> String {
        let serving = self.wait_line("metrics at http://", Duration::from_secs(10));
        serving
            .split("http://")
            .nth(1)
            .and_then(|r| r.strip_suffix("/metrics"))
            .expect("the metrics address")
            .to_owned()
    }

    /// SIGTERM, then its exit status and every stderr line.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, std::mem::take(&mut self.seen))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Profile files in `dir` of process `pid`, oldest first.
fn profiles_of(dir: &Path, pid: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the output folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.contains(&format!("-{pid}-")) && name.ends_with(".pb.gz")
        })
        .collect();
    files.sort();
    files
}

/// `<service>-<pid>-YYYYMMDDTHHMMSS.mmmZ.pb.gz`.
fn assert_file_name(file: &Path, service: &str, pid: u32) {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!("{service}-{pid}-");
    let stamp = name
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(".pb.gz"))
        .unwrap_or_else(|| panic!("{name} is not {prefix}<time>.pb.gz"));
    let b = stamp.as_bytes();
    assert!(
        b.len() == 20
            && b[8] == b'T'
            && b[15] == b'.'
            && b[19] == b'Z'
            && b.iter()
                .enumerate()
                .all(|(i, c)| matches!(i, 8 | 15 | 19) || c.is_ascii_digit()),
        "{name}: time {stamp} is not YYYYMMDDTHHMMSS.mmmZ"
    );
}

/// Two targets, one of which exits after 3 s: one pprof per process per second, the oldest
/// removed past --keep, each the same content as record's (goroutine state and id labels, the
/// target's functions); the exit is one stderr line and the agent goes on; SIGTERM stops it
/// with nothing left loaded.
#[test]
fn agent_writes_rotating_profiles_and_drops_a_target_that_exits() {
    let _serial = exclusive();
    let tc = newest();
    let exe = build_go("agent", &tc, Variant::Normal);
    let service = exe.file_name().unwrap().to_string_lossy().replace('-', "_");
    let long = start_target(&exe, "60", Some("300"));
    let short = start_target(&exe, "3", None);
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("profiles");
    let keep = 3;
    let mut agent = Agent::start(&[
        "--pid",
        &long.process.pid().to_string(),
        "--pid",
        &short.process.pid().to_string(),
        "--interval",
        "1s",
        "--output-dir",
        out.to_str().unwrap(),
        "--keep",
        &keep.to_string(),
    ]);
    let held = wait_attached(agent.child.id());
    let dropped = agent.wait_line("exited; no longer sampled", Duration::from_secs(30));
    assert!(
        dropped.contains(&format!("pid {} (", short.process.pid())),
        "{dropped}"
    );
    // The agent goes on with the other target: more intervals of it after the exit.
    let before = profiles_of(&out, long.process.pid());
    std::thread::sleep(Duration::from_secs(4));
    let (status, lines) = agent.stop();
    assert!(status.success(), "agent failed: {lines:#?}");
    assert_released(&held, "agent after SIGTERM");
    assert!(
        lines.iter().any(|l| l.contains("agent stopped")),
        "{lines:#?}"
    );
    let drops = lines
        .iter()
        .filter(|l| l.contains("no longer sampled"))
        .count();
    assert_eq!(drops, 1, "{lines:#?}");

    let long_files = profiles_of(&out, long.process.pid());
    assert_eq!(long_files.len(), keep, "{long_files:?}");
    assert!(
        long_files.iter().all(|f| !before.contains(f)),
        "no new interval after the other target's exit: {before:?} then {long_files:?}"
    );
    let short_files = profiles_of(&out, short.process.pid());
    assert!((1..=keep).contains(&short_files.len()), "{short_files:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    for f in long_files.iter().chain(&short_files) {
        assert_file_name(
            f,
            &service,
            if short_files.contains(f) {
                short.process.pid()
            } else {
                long.process.pid()
            },
        );
    }

    // A whole interval of the long target: record's pprof, about 1 s long.
    let raw = go_tool_pprof(&tc.go, &["-raw"], &long_files[keep - 2]).0;
    for want in [
        "state:[running]",
        "goid:[",
        "main.spin",
        "main.recurse",
        "Duration: 1.",
    ] {
        assert!(raw.contains(want), "{want:?} missing from\n{raw}");
    }
    let short_raw = go_tool_pprof(&tc.go, &["-raw"], &short_files[0]).0;
    assert!(short_raw.contains("main.spin"), "{short_raw}");
    assert!(!short_raw.contains("main.recurse"), "{short_raw}");
}

/// A GET of `path` on `addr` (HTTP/1.0); the body of a 200 response.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// A free loopback port now (the kernel's pick; released before use).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Debian's Prometheus on loopback, scraping `target` every second; SIGTERMed (by pid) and
/// reaped when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: run `cargo xtask setup`"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: stacksampler\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The value of the instant query `query` once it has one (polled for up to `timeout`).
    fn query_value(&self, query: &str, timeout: Duration) -> f64 {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(body) = http_get(&self.addr, &format!("/api/v1/query?query={encoded}")) {
                let v: Value = serde_json::from_str(&body).expect("prometheus answers json");
                if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                    return value.parse().expect("a number");
                }
                last = Some(v);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("no value for {query} in {timeout:?}; last answer {last:?}");
    }

    /// The value of `query` once it is at least `min` (polled for up to `timeout`); panics
    /// with the last value if it never is.
    fn query_at_least(&self, query: &str, min: f64, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.query_value(query, timeout);
            if v >= min {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{query} is {v}, not at least {min}, after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

/// A real Prometheus scrapes the agent: the goroutine count it stores is within 2 of the
/// target's own runtime.NumGoroutine, the deepest stack within 10 frames of the target's own
/// runtime.Callers at the bottom of its recursion, and the agent's own CPU and memory are there.
#[test]
fn prometheus_scrapes_goroutines_and_the_deepest_stack() {
    let _serial = exclusive();
    let tc = newest();
    let exe = build_go("agent", &tc, Variant::Normal);
    let target = start_target(&exe, "60", Some(RECURSION_DEPTH));
    let pid = target.process.pid();
    let mut agent = Agent::every_second(pid, &["--metrics-addr", "127.0.0.1:0"]);
    let held = wait_attached(agent.child.id());
    let metrics_addr = agent.metrics_addr();
    let exposition = http_get(&metrics_addr, "/metrics").expect("GET /metrics");
    assert!(exposition.ends_with("# EOF\n"), "{exposition}");
    let prometheus = Prometheus::start(&metrics_addr);
    let timeout = Duration::from_secs(60);
    let goroutines = prometheus.query_value(
        &format!("sum(stacksampler_goroutines{{pid=\"{pid}\"}})"),
        timeout,
    );
    assert!(
        (goroutines - target.goroutines as f64).abs() <= 2.0,
        "Prometheus has {goroutines} goroutines, the target counts {}",
        target.goroutines
    );
    let waiting = prometheus.query_value(
        &format!("stacksampler_goroutines{{pid=\"{pid}\",state=\"waiting\"}}"),
        timeout,
    );
    assert!(
        waiting >= PARKED.parse::<f64>().unwrap(),
        "{waiting} waiting"
    );
    let frames = prometheus.query_value(
        &format!("max_over_time(stacksampler_deepest_stack_frames{{pid=\"{pid}\"}}[1m])"),
        timeout,
    );
    let own = target.frames.expect("frames") as f64;
    assert!(
        (frames - own).abs() <= 10.0,
        "Prometheus has a deepest stack of {frames} frames, the target counts {own}"
    );
    let findings = prometheus.query_value(
        &format!("stacksampler_findings{{pid=\"{pid}\",kind=\"runaway_recursion\"}}"),
        timeout,
    );
    assert!(findings >= 1.0, "{findings} recursion findings");
    let cpu = prometheus.query_value("process_cpu_seconds_total{job=\"stacksampler\"}", timeout);
    let rss = prometheus.query_value(
        "process_resident_memory_bytes{job=\"stacksampler\"}",
        timeout,
    );
    assert!(cpu > 0.0 && rss > 1e6, "cpu {cpu} s, rss {rss} B");
    let samples = prometheus.query_value(
        &format!("stacksampler_samples_total{{pid=\"{pid}\"}}"),
        timeout,
    );
    assert!(samples > 0.0, "{samples} samples");
    eprintln!(
        "agent: {goroutines} goroutines (target: {}), deepest {frames} frames (target: {own}), \
         {samples} samples, own cpu {cpu:.2} s, rss {:.1} MiB",
        target.goroutines,
        rss / (1 << 20) as f64
    );
    drop(prometheus);
    let (status, lines) = agent.stop();
    assert!(status.success(), "agent failed: {lines:#?}");
    assert_released(&held, "agent after SIGTERM");
}

/// Goroutines each "spawn" line makes the agent test target start.
const SPAWNED: u64 = 200;
/// Stack growths of each of them: 2 KiB to 128 KiB (about 100 KiB of frames).
const GROWTHS_EACH: u64 = 6;

/// Goroutine creations and stack growths, counted by the runtime-event probes, reach a real
/// Prometheus: the target starts SPAWNED goroutines after the agent attached, each growing its
/// stack GROWTHS_EACH times (adaptive stack starts off: each starts at 2 KiB); the counters
/// Prometheus stores grow by that, within a few (the runtime's own goroutines and growths).
#[test]
fn prometheus_counts_goroutines_created_and_stack_growths() {
    let _serial = exclusive();
    let tc = newest();
    let exe = build_go("agent", &tc, Variant::Normal);
    let spawned = SPAWNED.to_string();
    let mut process = GoProcess::spawn_command(
        Command::new(&exe)
            .args(["-seconds", "60", "-spawn", &spawned])
            .env("GODEBUG", "adaptivestackstart=0"),
    );
    process.wait_for_line("ready");
    let pid = process.pid();
    let mut agent = Agent::every_second(pid, &["--metrics-addr", "127.0.0.1:0"]);
    let held = wait_attached(agent.child.id());
    let metrics_addr = agent.metrics_addr();
    agent.wait_line("sampling pid", Duration::from_secs(10));
    let prometheus = Prometheus::start(&metrics_addr);
    let timeout = Duration::from_secs(60);
    let created_q = format!("stacksampler_goroutines_created_total{{pid=\"{pid}\"}}");
    let growth_q = format!("stacksampler_stack_growth_total{{pid=\"{pid}\"}}");
    let created_before = prometheus.query_value(&created_q, timeout);
    let growth_before = prometheus.query_value(&growth_q, timeout);
    process.write_stdin("spawn\n");
    process.wait_for_line("spawned");
    let want_growth = growth_before + (SPAWNED * GROWTHS_EACH) as f64;
    let created = prometheus.query_at_least(&created_q, created_before + SPAWNED as f64, timeout);
    let growth = prometheus.query_at_least(&growth_q, want_growth, timeout);
    // A scrape after the counts settled: nothing is counted twice.
    std::thread::sleep(Duration::from_secs(3));
    let created = prometheus.query_value(&created_q, timeout).max(created);
    let growth = prometheus.query_value(&growth_q, timeout).max(growth);
    assert!(
        created - created_before <= SPAWNED as f64 + 5.0,
        "{created} created (before the spawn {created_before}) for {SPAWNED} goroutines"
    );
    assert!(
        growth - want_growth <= 20.0,
        "{growth} growths (before {growth_before}) for {SPAWNED} goroutines growing {GROWTHS_EACH} times"
    );
    eprintln!(
        "agent: {} goroutines created, {} stack growths counted for {SPAWNED} x {GROWTHS_EACH}",
        created - created_before,
        growth - growth_before
    );
    drop(prometheus);
    let (status, lines) = agent.stop();
    assert!(status.success(), "agent failed: {lines:#?}");
    assert_released(&held, "agent after SIGTERM");
    process.close_stdin();
}

/// One executable mapping of `/proc/PID/maps`.
#[derive(Debug, PartialEq, Eq)]
struct ExecMapping {
    start: u64,
    limit: u64,
    offset: u64,
    path: String,
}

fn exec_mappings(pid: u32) -> Vec<ExecMapping> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    maps.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || !f[1].contains('x') || !f[5].starts_with('/') {
                return None;
            }
            let (s, e) = f[0].split_once('-')?;
            Some(ExecMapping {
                start: u64::from_str_radix(s, 16).ok()?,
                limit: u64::from_str_radix(e, 16).ok()?,
                offset: u64::from_str_radix(f[2], 16).ok()?,
                path: f[5].to_owned(),
            })
        })
        .collect()
}

/// The GNU build id of `exe` in hex (Go 1.27's linker writes one).
fn gnu_build_id(exe: &Path) -> String {
    use object::Object as _;
    let data = std::fs::read(exe).expect("read the binary");
    let file = object::File::parse(&*data).expect("an ELF file");
    let id = file.build_id().expect("notes").expect("a GNU build id");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `go tool pprof -raw`'s mappings (`id: start/limit/offset file [build id] flags`), by id.
fn raw_mappings(raw: &str) -> Vec<(u64, ExecMapping, String)> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex");
    raw.split_once("\nMappings\n")
        .expect("a Mappings section")
        .1
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(": ")?;
            let mut parts = rest.split_whitespace();
            let range: Vec<&str> = parts.next()?.split('/').collect();
            let path = parts.next()?.to_owned();
            let build_id = parts.next().filter(|p| !p.starts_with('[')).unwrap_or("");
            Some((
                id.trim().parse().ok()?,
                ExecMapping {
                    start: hex(range[0]),
                    limit: hex(range[1]),
                    offset: hex(range[2]),
                    path,
                },
                build_id.to_owned(),
            ))
        })
        .collect()
}

/// Every pprof mapping is one of the process's own executable mappings (start, limit, file
/// offset as `/proc/PID/maps` lists them), the binary first with its build id, and every
/// location's address lies in its mapping: a normal binary and a PIE one linking libc.
#[test]
fn profile_mappings_are_the_processes_own() {
    let _serial = exclusive();
    let tc = newest();
    for variant in [Variant::Normal, Variant::PieCgo] {
        let exe = build_go("agent", &tc, variant);
        let target = start_target(&exe, "60", None);
        let pid = target.process.pid();
        let maps = exec_mappings(pid);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut agent = Agent::every_second(pid, &["--output-dir", dir.path().to_str().unwrap()]);
        let held = wait_attached(agent.child.id());
        agent.wait_line("sampling pid", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(2500));
        let (status, lines) = agent.stop();
        assert!(status.success(), "{variant:?}: agent failed: {lines:#?}");
        assert_released(&held, "agent");
        let files = profiles_of(dir.path(), pid);
        assert!(!files.is_empty(), "{variant:?}: no profile");
        let raw = go_tool_pprof(&tc.go, &["-raw"], &files[0]).0;
        let mappings = raw_mappings(&raw);
        let exe_path = std::fs::canonicalize(&exe).unwrap().display().to_string();
        let (_, main, build_id) = &mappings[0];
        assert_eq!(main.path, exe_path, "{variant:?}: first mapping\n{raw}");
        assert!(!build_id.is_empty(), "{variant:?}: no build id\n{raw}");
        assert_eq!(*build_id, gnu_build_id(&exe), "{variant:?}: build id");
        for (_, m, _) in &mappings {
            assert!(
                maps.contains(m),
                "{variant:?}: mapping {m:?} is not one of the process's: {maps:#?}"
            );
        }
        if variant == Variant::PieCgo {
            assert!(
                main.start > 0x1000_0000,
                "{variant:?}: a PIE's load address {main:?}"
            );
        }
        // Every location is inside its mapping.
        let locations = raw
            .split_once("\nLocations\n")
            .unwrap()
            .1
            .split_once("\nMappings\n")
            .unwrap()
            .0;
        let mut checked = 0;
        for l in locations.lines() {
            // `ID: ADDRESS M=MAPPING FUNCTION ...`; the lines of inlined frames that follow a
            // location carry no address.
            let mut parts = l.split_whitespace();
            if !parts.next().is_some_and(|id| id.ends_with(':')) {
                continue;
            }
            let (Some(addr), Some(m)) = (parts.next(), parts.next()) else {
                continue;
            };
            let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
            let id: u64 = m.trim_start_matches("M=").parse().unwrap();
            let (_, mapping, _) = mappings.iter().find(|(i, _, _)| *i == id).unwrap();
            assert!(
                (mapping.start..mapping.limit).contains(&addr),
                "{variant:?}: location {l} outside {mapping:?}"
            );
            checked += 1;
        }
        assert!(checked > 0, "{variant:?}: no location\n{raw}");
    }
}

/// An agent watching for Go programs started from `exe`'s folder (`--all-go --exe-dir`), one
/// profile a second into `out`.
fn all_go_agent(exe: &Path, out: &Path) -> Agent {
    let programs = exe.parent().expect("the programs' folder");
    Agent::start(&[
        "--all-go",
        "--exe-dir",
        programs.to_str().unwrap(),
        "--interval",
        "1s",
        "--output-dir",
        out.to_str().unwrap(),
    ])
}

/// `--all-go`: a Go program started after the agent is picked up at the next scan, sampled
/// into its own profiles, and dropped (everything of it detached) when it exits; the agent
/// goes on.
#[test]
fn all_go_picks_up_a_program_started_later_and_drops_it_when_it_exits() {
    let _serial = exclusive();
    let tc = newest();
    let exe = build_go("agent", &tc, Variant::Normal);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = all_go_agent(&exe, dir.path());
    // The agent runs before the program exists.
    std::thread::sleep(Duration::from_secs(2));
    let target = start_target(&exe, "4", None);
    let pid = target.process.pid();
    agent.wait_line(&format!("sampling pid {pid} "), Duration::from_secs(15));
    let held = wait_attached(agent.child.id());
    let dropped = agent.wait_line("exited; no longer sampled", Duration::from_secs(20));
    assert!(dropped.contains(&format!("pid {pid} (")), "{dropped}");
    // Dropped means detached: the agent holds nothing of it while it goes on.
    assert_released(&held, "agent after its target exited");
    let (status, lines) = agent.stop();
    assert!(status.success(), "agent failed: {lines:#?}");
    let files = profiles_of(dir.path(), pid);
    assert!(!files.is_empty(), "no profile of {pid}: {lines:#?}");
    let raw = go_tool_pprof(&tc.go, &["-raw"], files.last().unwrap()).0;
    assert!(raw.contains("main.spin"), "{raw}");
}

/// `--all-go` finds a Go program started later in a container's namespaces (`unshare --pid
/// --fork --mount-proc`, as Docker and Kubernetes place a program): it is sampled by its host
/// pid, its profile has its functions and goroutine states, and it is dropped when it exits.
#[test]
fn all_go_picks_up_a_program_in_its_own_pid_namespace() {
    let _serial = exclusive();
    let tc = newest();
    let exe = build_go("agent", &tc, Variant::Normal);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = all_go_agent(&exe, dir.path());
    std::thread::sleep(Duration::from_secs(2));
    let name = exe.file_name().and_then(|n| n.to_str()).expect("exe name");
    let started = Started::spawn_wrapped(
        Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(&exe)
            .args(["-seconds", "5", "-parked", PARKED]),
        name,
    );
    let pid: u32 = started.pid().parse().expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .expect("NSpid");
    assert_eq!(
        nspid.split_whitespace().count(),
        3,
        "the program is in its own PID namespace: {nspid}"
    );
    agent.wait_line(&format!("sampling pid {pid} "), Duration::from_secs(15));
    let dropped = agent.wait_line("exited; no longer sampled", Duration::from_secs(30));
    assert!(dropped.contains(&format!("pid {pid} (")), "{dropped}");
    let (status, lines) = agent.stop();
    assert!(status.success(), "agent failed: {lines:#?}");
    let files = profiles_of(dir.path(), pid);
    assert!(
        files.len() >= 2,
        "{} profiles of {pid}: {lines:#?}",
        files.len()
    );
    let raw = go_tool_pprof(&tc.go, &["-raw"], &files[files.len() - 2]).0;
    for want in ["main.spin", "state:[running]", "goid:["] {
        assert!(raw.contains(want), "{want:?} missing from\n{raw}");
    }
}

/// One request a [`Receiver`] got.
#[derive(Clone, Debug)]
struct Received {
    target: String,
    /// The request's header lines.
    head: String,
    body: Vec<u8>,
}

/// A loopback HTTP server standing in for Pyroscope or a Collector: answers every request with `status`
/// and keeps what it got. Its thread ends when dropped.
struct Receiver {
    addr: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(status: &'static str) -> Self {
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes, whatever happens.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !s.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Some(r) = Self::serve(conn, status) {
                            g.lock().unwrap().push(r);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            addr,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(mut conn: TcpStream, status: &str) -> Option<Received> {
        conn.set_nonblocking(false).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut data = Vec::new();
        let mut buf = [0u8; 65536];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = conn.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while data.len() < head_end + length {
            let n = conn.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let target = head.split_whitespace().nth(1)?.to_owned();
        Some(Received {
            target,
            head,
            body: data[head_end..].to_vec(),
        })
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value of `key` in a query string, percent-decoded.
fn query_value(target: &str, key: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))?;
    let mut out = Vec::new();
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A run of the agent on the agent test target, every second for 3.5 s, pushing to a
/// loopback [`Receiver`] that accepts everything: at least 3 pushes, nothing left loaded.
struct PushRun {
    tc: GoToolchain,
    exe: PathBuf,
    service: String,
    pid: u32,
    got: Vec<Received>,
    lines: Vec<String>,
}

impl PushRun {
    /// `flags(receiver address)` are the agent's export flags.
    fn of(flags: impl FnOnce(&str) -> Vec<String>) -> Self {
        let tc = newest();
        let exe = build_go("agent", &tc, Variant::Normal);
        let service = exe.file_name().unwrap().to_string_lossy().replace('-', "_");
        let target = start_target(&exe, "60", None);
        let pid = target.process.pid();
        let receiver = Receiver::start("200 OK");
        let flags = flags(&receiver.addr);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut agent = Agent::every_second(pid, &flags);
        let held = wait_attached(agent.child.id());
        agent.wait_line("sampling pid", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(3500));
        let (status, lines) = agent.stop();
        assert!(status.success(), "agent failed: {lines:#?}");
        assert_released(&held, "agent");
        let got = receiver.got();
        assert!(got.len() >= 3, "{} pushes: {lines:#?}", got.len());
        Self {
            tc,
            exe,
            service,
            pid,
            got,
            lines,
        }
    }
}

/// `--pyroscope`: each interval is POSTed to /ingest with the service, host and pid in its
/// name, its time range and format=pprof; `go tool pprof` reads the body as record's profile.
#[test]
fn pyroscope_receives_each_interval_as_pprof() {
    let _serial = exclusive();
    let run = PushRun::of(|receiver| vec!["--pyroscope".into(), format!("http://{receiver}")]);
    let (tc, service, pid, got) = (&run.tc, &run.service, run.pid, &run.got);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for r in got {
        assert!(r.target.starts_with("/ingest?"), "{}", r.target);
        assert_eq!(
            query_value(&r.target, "name").as_deref(),
            Some(format!("{service}.cpu{{host={},pid={pid}}}", host.trim()).as_str()),
            "{}",
            r.target
        );
        assert_eq!(query_value(&r.target, "format").as_deref(), Some("pprof"));
        let from: u64 = query_value(&r.target, "from").unwrap().parse().unwrap();
        let until: u64 = query_value(&r.target, "until").unwrap().parse().unwrap();
        assert!(from < until && until - from <= 2, "{}", r.target);
    }
    let body = dir_file(&got[1].body);
    let raw = go_tool_pprof(&tc.go, &["-raw"], body.path()).0;
    for want in ["state:[running]", "goid:[", "main.spin"] {
        assert!(raw.contains(want), "{want:?} missing from\n{raw}");
    }
}

/// `body` in a temporary `.pb.gz` file.
fn dir_file(body: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".pb.gz")
        .tempfile()
        .unwrap();
    f.write_all(body).unwrap();
    f
}

/// A server that refuses every push: sampling and the files go on at one per interval, the
/// failures and drops are counted in /metrics, and it is said once on stderr.
#[test]
fn a_refusing_pyroscope_does_not_slow_sampling_and_is_counted() {
    let _serial = exclusive();
    let tc = newest();
    let exe = build_go("agent", &tc, Variant::Normal);
    let target = start_target(&exe, "60", None);
    let pid = target.process.pid();
    let receiver = Receiver::start("503 Service Unavailable");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = Agent::every_second(
        pid,
        &[
            "--output-dir",
            dir.path().to_str().unwrap(),
            "--pyroscope",
            &format!("http://{}", receiver.addr),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let held = wait_attached(agent.child.id());
    let metrics_addr = agent.metrics_addr();
    agent.wait_line("sampling pid", Duration::from_secs(10));
    let sampling_from = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let metrics = http_get(&metrics_addr, "/metrics").expect("GET /metrics");
    let sampled_for = sampling_from.elapsed().as_secs();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    let failures = value("stacksampler_export_failures_total{exporter=\"pyroscope\"}");
    assert!(failures >= 2.0, "{failures} failures\n{metrics}");
    let files = value("stacksampler_exported_profiles_total{exporter=\"files\"}");
    // One file per interval while the server fails: sampling waits for nothing.
    assert!(
        files >= (sampled_for - 1) as f64,
        "{files} files in {sampled_for} s\n{metrics}"
    );
    let (status, lines) = agent.stop();
    assert!(status.success(), "agent failed: {lines:#?}");
    assert_released(&held, "agent");
    let warned = lines.iter().filter(|l| l.contains("pyroscope at")).count();
    assert_eq!(warned, 1, "one line per state change: {lines:#?}");
    assert!(!receiver.got().is_empty(), "the server saw no try");
}

/// `go tool pprof -raw`'s sum of the first sample value (`samples/count`).
fn raw_sample_total(raw: &str) -> i64 {
    raw.split_once("\nSamples:\n")
        .expect("a Samples section")
        .1
        .split("\nLocations\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let (values, _) = l.split_once(':')?;
            let mut v = values.split_whitespace();
            let first = v.next()?.parse::<i64>().ok()?;
            v.next()?.parse::<i64>().ok()?;
            Some(first)
        })
        .sum()
}

/// `go tool pprof -raw`'s function names: every location's line and inlined lines.
fn raw_functions(raw: &str) -> std::collections::BTreeSet<String> {
    let locations = raw
        .split_once("\nLocations\n")
        .expect("a Locations section")
        .1
        .split("\nMappings\n")
        .next()
        .unwrap_or("");
    locations
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace().peekable();
            // `N: 0xADDR M=n name file:line s=..`, or an inlined frame's `name file:line s=..`.
            if parts.peek()?.ends_with(':') {
                parts.next();
                parts.next();
                parts.next();
            }
            parts
                .next()
                .filter(|n| !n.starts_with("s="))
                .map(str::to_owned)
        })
        .collect()
}

/// The OTLP bodies, decoded by the OpenTelemetry project's own Python classes
/// (`tests/otlp/decode_profiles.py`, PyPI `opentelemetry-proto` as `cargo xtask setup`
/// installs it).
fn decode_otlp(bodies: &[Vec<u8>]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths: Vec<PathBuf> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let p = dir.path().join(format!("{i}.bin"));
            std::fs::write(&p, b).expect("write a body");
            p
        })
        .collect();
    let classes = stacksampler_tests::tools_dir().join(stacksampler_tests::PYPI_OTLP_DIR);
    let out = Command::new("python3")
        .arg(stacksampler_tests::workspace_root().join("tests/otlp/decode_profiles.py"))
        .args(&paths)
        .env("PYTHONPATH", &classes)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "decode_profiles.py failed (PYTHONPATH {}): {}",
        classes.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per body"))
        .collect()
}

/// `--otlp` with `--output-dir` in one run: each interval is POSTed to
/// /v1development/profiles as protobuf; the OpenTelemetry project's own generated classes
/// decode it, and its sample counts, function names and mappings are those of the same
/// interval's pprof file, with the goroutine labels as attributes.
#[test]
fn otlp_receives_each_interval_as_its_pprof() {
    let _serial = exclusive();
    let dir = tempfile::tempdir().expect("temp dir");
    let run = PushRun::of(|receiver| {
        vec![
            "--output-dir".into(),
            dir.path().display().to_string(),
            "--otlp".into(),
            format!("http://{receiver}"),
        ]
    });
    let (tc, service, pid, got, lines) = (&run.tc, &run.service, run.pid, &run.got, &run.lines);
    let files = profiles_of(dir.path(), pid);
    // Each interval is written, then queued for the pusher, which sends them in order.
    assert_eq!(got.len(), files.len(), "one push per file: {lines:#?}");
    for r in got {
        assert_eq!(r.target, "/v1development/profiles");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("content-type: application/x-protobuf"),
            "{}",
            r.head
        );
    }
    let bodies: Vec<Vec<u8>> = got.iter().map(|r| r.body.clone()).collect();
    let decoded = decode_otlp(&bodies);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let build_id = gnu_build_id(&run.exe);
    for (otlp, file) in decoded.iter().zip(&files) {
        let raw = go_tool_pprof(&tc.go, &["-raw"], file).0;
        let resource = &otlp["resource"];
        assert_eq!(resource["service.name"], service.as_str(), "{otlp}");
        assert_eq!(resource["process.pid"], pid, "{otlp}");
        assert_eq!(resource["host.name"], host.trim(), "{otlp}");
        let profiles = otlp["profiles"].as_array().expect("profiles");
        let count = profiles
            .iter()
            .find(|p| p["sample_type"] == "samples/count")
            .unwrap_or_else(|| panic!("no samples/count profile: {otlp}"));
        assert_eq!(
            count["total"].as_i64(),
            Some(raw_sample_total(&raw)),
            "sample counts of {} and its OTLP body: {otlp}\n{raw}",
            file.display()
        );
        let functions: std::collections::BTreeSet<String> = count["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .map(|f| f.as_str().expect("a name").to_owned())
            .collect();
        assert_eq!(functions, raw_functions(&raw), "{}", file.display());
        assert!(functions.contains("main.spin"), "{functions:?}");
        assert!(
            count["states"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "running"),
            "{otlp}"
        );
        assert!(
            count["goids"].as_u64().unwrap_or(0) > 0,
            "no goid attributes: {otlp}"
        );
        // The mappings are the pprof's: range, file offset, build id.
        let mappings: Vec<(u64, u64, u64, String)> = otlp["mappings"]
            .as_array()
            .expect("mappings")
            .iter()
            .map(|m| {
                let build_id = m["attributes"]["process.executable.build_id.gnu"]
                    .as_str()
                    .or(m["attributes"]["process.executable.build_id.go"].as_str())
                    .unwrap_or("")
                    .to_owned();
                (
                    m["start"].as_u64().unwrap(),
                    m["limit"].as_u64().unwrap(),
                    m["offset"].as_u64().unwrap(),
                    build_id,
                )
            })
            .collect();
        let raw_maps: Vec<(u64, u64, u64, String)> = raw_mappings(&raw)
            .into_iter()
            .map(|(_, m, b)| (m.start, m.limit, m.offset, b))
            .collect();
        assert_eq!(mappings, raw_maps, "{}", file.display());
        assert_eq!(mappings[0].3, build_id, "the binary's GNU build id");
    }
}
