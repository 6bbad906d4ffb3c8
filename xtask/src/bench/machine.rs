//! The machine and the tree a result was taken on.

use std::process::Command;

use serde::Serialize;

use crate::util::{output, workspace_root};

#[derive(Serialize)]
pub struct Machine {
    pub date_utc: String,
    pub git_commit: String,
    /// Uncommitted changes in the work tree when the benchmark ran.
    pub git_dirty: bool,
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
    pub os: String,
    pub perf_version: String,
    pub bpftrace_version: String,
    pub go_version: String,
    /// CONFIG_IRQ_TIME_ACCOUNTING: when off, time in the sampling interrupt is charged to the
    /// interrupted (target) thread, which the per-CPU-second overhead ratio relies on.
    pub irq_time_accounting: Option<bool>,
}

fn kernel_config(option: &str, release: &str) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .or_else(|| output(Command::new("zcat").arg("/proc/config.gz")).ok())?;
    Some(text.lines().any(|l| l == format!("{option}=y")))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_owned()
}

fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

impl Machine {
    pub fn describe(perf: &str, bpftrace: &str, go: &std::path::Path) -> Self {
        let root = workspace_root();
        let git = |args: &[&str]| output(Command::new("git").current_dir(&root).args(args));
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let version = |cmd: &mut Command| output(cmd).map(|s| first_line(&s)).unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            irq_time_accounting: kernel_config("CONFIG_IRQ_TIME_ACCOUNTING", &kernel),
            date_utc: version(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
            git_commit: git(&["rev-parse", "HEAD"])
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            git_dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .is_ok_and(|s| !s.trim().is_empty()),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_default(),
            memory_mib: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            kernel,
            os: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|s| field(&s.replace('=', ":"), "PRETTY_NAME"))
                .map(|s| s.trim_matches('"').to_owned())
                .unwrap_or_default(),
            perf_version: version(Command::new(perf).arg("--version")),
            bpftrace_version: version(Command::new(bpftrace).arg("--version")),
            go_version: version(Command::new(go).arg("version")),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}
