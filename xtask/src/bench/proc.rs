//! Processes the benchmark starts. Every one is a [`Proc`]: reaped with `wait4` (which gives its
//! wall time, CPU time and peak RSS), and killed by its own pid then reaped when dropped, so no
//! child outlives the benchmark, also on error or Ctrl-C.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag the benchmark checks between steps, so it unwinds through
/// its guards (children reaped, sysctls restored) instead of dying on the spot.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic; the struct is fully initialised.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Fails once the benchmark was asked to stop.
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking early (with an error) when interrupted.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// How a process ended, from `wait4`.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// Raw wait status.
    pub status: libc::c_int,
    /// From spawn to reaping (polling granularity 2 ms).
    pub wall: Duration,
    /// User + system CPU time of the process (and of children it reaped).
    pub cpu: Duration,
    /// Peak resident set size in KiB: the last `VmHWM` read while the process lived (polled
    /// every 2 ms while waiting). Not `ru_maxrss`, which also counts the benchmark's own RSS:
    /// exec records the high-water mark of the address space it replaces, the parent's copy.
    pub max_rss_kib: u64,
}

impl Exit {
    /// Exited with status 0, or was ended by SIGINT after handling it (exit status 0 too).
    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    /// The status as a human reads it.
    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {:#x}", self.status)
        }
    }
}

/// A child process that is always reaped.
pub struct Proc {
    name: String,
    child: Child,
    started: Instant,
    exit: Option<Exit>,
    /// Highest `VmHWM` seen, KiB.
    hwm_kib: u64,
}

impl Proc {
    /// Starts `cmd`.
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        check_interrupted()?;
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            started,
            exit: None,
            hwm_kib: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Sends `sig` to this process (by its pid), unless it was already reaped.
    pub fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: plain syscall on our own unreaped child's pid.
            unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        }
    }

    /// Reaps the process if it has ended.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<Exit>> {
        if self.exit.is_none() {
            self.poll_hwm();
            self.wait4(libc::WNOHANG)?;
        }
        Ok(self.exit)
    }

    /// Waits for the process to end; after `timeout` it is killed and the wait fails.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_wait()? {
                return Ok(exit);
            }
            if Instant::now() > deadline {
                self.kill_and_reap();
                bail!("{} did not end within {timeout:?}: killed", self.name);
            }
            if let Err(e) = check_interrupted() {
                self.kill_and_reap();
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends `sig` and waits for the end (killing after `timeout`).
    pub fn stop(&mut self, sig: libc::c_int, timeout: Duration) -> anyhow::Result<Exit> {
        self.signal(sig);
        self.wait_timeout(timeout)
    }

    /// Reads the process's peak RSS so far (`VmHWM`) while it lives.
    pub fn poll_hwm(&mut self) {
        if let Some(kib) = status_kib(self.pid(), "VmHWM:") {
            self.hwm_kib = self.hwm_kib.max(kib);
        }
    }

    fn kill_and_reap(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.wait4(0);
        }
    }

    fn wait4(&mut self, flags: libc::c_int) -> anyhow::Result<()> {
        let pid = self.pid() as libc::pid_t;
        loop {
            let mut status = 0;
            // SAFETY: rusage is plain data the kernel fills.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child's pid.
            let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
            if r == pid {
                let tv = |t: libc::timeval| {
                    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
                };
                self.exit = Some(Exit {
                    status,
                    wall: self.started.elapsed(),
                    cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
                    max_rss_kib: self.hwm_kib,
                });
                return Ok(());
            }
            if r == 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).with_context(|| format!("waiting for {} (pid {pid})", self.name));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// Counts the perf events and BPF links a process holds open: a profiler is attached once it has
/// some (perf keeps its perf event fds; aya keeps one `bpf_link` per CPU and closes the events).
pub fn sampling_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| {
                l.as_os_str() == "anon_inode:[perf_event]" || l.as_os_str() == "anon_inode:bpf_link"
            })
        })
        .count()
}

/// CPU time of every live thread of `pid` so far, in ns (`/proc/PID/task/*/schedstat`). Without
/// CONFIG_IRQ_TIME_ACCOUNTING (as on the kernel here) the time spent in the sampling interrupt,
/// eBPF program or perf callchain walk included, is charged to the interrupted thread.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A `kB` field of `/proc/PID/status`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What the benchmark reads from a stacksampler json report, streamed from the file with the
/// frames skipped: reports of deep stacks run to hundreds of megabytes.
#[derive(serde::Deserialize)]
pub struct ReportSummary {
    pub samples: SampleCounts,
    pub stacks: Vec<StackSummary>,
}

#[derive(serde::Deserialize)]
pub struct SampleCounts {
    pub total: u64,
    pub lost: u64,
}

#[derive(serde::Deserialize)]
pub struct StackSummary {
    pub count: u64,
    pub depth: u64,
    #[serde(default)]
    pub goids: Vec<u64>,
}

impl ReportSummary {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        serde_json::from_reader(std::io::BufReader::new(file))
            .with_context(|| format!("reading the report {}", path.display()))
    }
}

/// One window of the target's throughput.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// Work units per second of wall time (the program's own clock).
    pub units_per_s: f64,
    /// Work units per second of the target's own CPU time: insensitive to how much CPU other
    /// processes take, but blind to the CPU a profiler's own process takes.
    pub units_per_cpu_s: f64,
    /// CPU the other process (the profiler) used during the window, in cores.
    pub other_cpu_frac: f64,
}

/// One of the Go benchmark programs (`tests/go/bench`), driven over its standard input.
pub struct Target {
    proc: Proc,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Target {
    /// Starts `bin` with `args` and waits for its "ready" line.
    pub fn start(bin: &Path, args: &[String]) -> anyhow::Result<Self> {
        let mut proc = Proc::spawn(
            "the Go benchmark program",
            Command::new(bin)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )?;
        let stdin = proc.take_stdin();
        let stdout = BufReader::new(proc.take_stdout().context("target stdout")?);
        let mut target = Self {
            proc,
            stdin,
            stdout,
        };
        let line = target.line()?;
        if line != "ready" {
            bail!("the Go benchmark program said {line:?} instead of \"ready\"");
        }
        Ok(target)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let exit = self.proc.wait_timeout(Duration::from_secs(5))?;
            bail!("the Go benchmark program ended ({})", exit.describe());
        }
        Ok(line.trim().to_owned())
    }

    /// Work units done so far and the program's own clock (ns since its start).
    pub fn count(&mut self) -> anyhow::Result<(u64, u64)> {
        check_interrupted()?;
        let stdin = self.stdin.as_mut().context("target stdin closed")?;
        stdin.write_all(b"count\n")?;
        stdin.flush()?;
        let line = self.line()?;
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(units)), Some(Ok(ns))) => Ok((units, ns)),
            _ => bail!("unexpected answer from the Go benchmark program: {line:?}"),
        }
    }

    /// The program's own goroutine dump (`selfdump`): its duration in ns and its size in bytes.
    pub fn self_dump(&mut self) -> anyhow::Result<(u64, u64)> {
        check_interrupted()?;
        let stdin = self.stdin.as_mut().context("target stdin closed")?;
        stdin.write_all(b"selfdump\n")?;
        stdin.flush()?;
        let line = self.line()?;
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(ns)), Some(Ok(bytes))) => Ok((ns, bytes)),
            _ => bail!("unexpected answer from the Go benchmark program: {line:?}"),
        }
    }

    /// Work units per second over `window` (by the program's clock).
    pub fn throughput(&mut self, window: Duration) -> anyhow::Result<f64> {
        Ok(self.measure(window, None)?.units_per_s)
    }

    /// Throughput over `window`, with the CPU time the target (and `other`) used meanwhile.
    pub fn measure(&mut self, window: Duration, other: Option<u32>) -> anyhow::Result<Measurement> {
        let pid = self.pid();
        let other_cpu = || other.map_or(0, cpu_ns);
        let (c0, o0) = (cpu_ns(pid), other_cpu());
        let (u0, t0) = self.count()?;
        sleep(window)?;
        let (u1, t1) = self.count()?;
        let (c1, o1) = (cpu_ns(pid), other_cpu());
        let secs = (t1 - t0) as f64 / 1e9;
        let units = (u1 - u0) as f64;
        Ok(Measurement {
            units_per_s: units / secs,
            units_per_cpu_s: units / ((c1 - c0) as f64 / 1e9),
            other_cpu_frac: (o1.saturating_sub(o0)) as f64 / 1e9 / secs,
        })
    }

    /// Resident set size now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmRSS:")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // Closing its standard input ends the program; the Proc kills it if it lingers.
        drop(self.stdin.take());
        let _ = self.proc.wait_timeout(Duration::from_secs(3));
    }
}
