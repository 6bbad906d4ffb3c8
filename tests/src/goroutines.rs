//! Programs that print their goroutine ids (`tests/go/goroutines`, `tests/go/stackgrow`): the
//! `goid <role> <id>` ... `ready` handshake, and the checks of a report against those ids.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::{
    GoProcess,
    report::{count_where, functions, stacks},
};

/// Fewest samples a busy goroutine must get in a matrix run (2 s at 99 Hz; three busy
/// goroutines share 2 CPUs with whatever else the machine runs).
pub const MIN_BUSY_SAMPLES: u64 = 8;

/// A started test program and the goroutine ids it printed (`goid <role> <id>` lines).
pub struct Started {
    /// Kept to be reaped on drop.
    _process: GoProcess,
    /// The Go program's own pid as the host sees it (the spawned process, or a descendant of
    /// it when it runs under `unshare`/a shell).
    pid: u32,
    goids: Vec<(String, u64)>,
    /// The pid the program printed for itself (`pid N`), as its PID namespace numbers it.
    own_pid: Option<u32>,
}

impl Started {
    /// Starts `exe -seconds 60` and reads its goroutine ids.
    pub fn spawn(exe: &Path) -> Self {
        let process = GoProcess::spawn(exe, &["-seconds", "60"]);
        let pid = process.pid();
        Self::ready(process, |_| pid)
    }

    /// Starts `cmd` (which runs the program somewhere below it: `unshare`, a shell), reads the
    /// goroutine ids, then finds the program's host pid: the descendant of the spawned process
    /// whose executable is named `exe_name`.
    pub fn spawn_wrapped(cmd: &mut Command, exe_name: &str) -> Self {
        let process = GoProcess::spawn_command(cmd);
        Self::ready(process, |root| {
            descendant_running(root, exe_name)
                .unwrap_or_else(|| panic!("no descendant of {root} runs {exe_name}"))
        })
    }

    /// Reads the handshake of an already started `process`; `find_pid` maps the spawned
    /// process's pid to the program's.
    pub fn ready(mut process: GoProcess, find_pid: impl FnOnce(u32) -> u32) -> Self {
        let exe = format!("pid {}", process.pid());
        let mut goids = Vec::new();
        let mut own_pid = None;
        loop {
            let line = process
                .read_line()
                .unwrap_or_else(|| panic!("{exe} printed nothing"));
            if line == "ready" {
                break;
            }
            if let Some(rest) = line.strip_prefix("pid ") {
                own_pid = rest.trim().parse().ok();
            }
            if let Some(rest) = line.strip_prefix("goid ") {
                let mut it = rest.split_whitespace();
                let role = it.next().unwrap_or_default().to_owned();
                let id = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                goids.push((role, id));
            }
        }
        let pid = find_pid(process.pid());
        Self {
            _process: process,
            pid,
            goids,
            own_pid,
        }
    }

    /// The id the program printed for `role`.
    pub fn goid(&self, role: &str) -> u64 {
        self.goids
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, id)| *id)
            .unwrap_or_else(|| panic!("no goid printed for {role}: {:?}", self.goids))
    }

    /// The pid the program printed for itself, in its own PID namespace.
    pub fn own_pid(&self) -> Option<u32> {
        self.own_pid
    }

    /// The program's host pid, as the `--pid` argument.
    pub fn pid(&self) -> String {
        self.pid.to_string()
    }
}

pub fn goids(stack: &Value) -> Vec<u64> {
    stack["goids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Whether the row holds `name` on the stack of a user goroutine. A sample taken on the system
/// stack after the scheduler dropped the goroutine (`mcall` -> `goschedImpl` once `m.curg` is
/// cleared) still walks into the goroutine's frames but belongs to the scheduler (goroutine 0,
/// `idle`): it is not the goroutine's sample.
pub fn has_function(stack: &Value, name: &str) -> bool {
    let scheduler = stack["goids"]
        .as_array()
        .is_some_and(|g| g == &[Value::from(0)]);
    !scheduler && functions(stack).iter().any(|f| f == name)
}

pub fn label(stack: &Value, key: &str) -> Option<String> {
    stack["labels"][key].as_str().map(str::to_owned)
}

/// Checks one matrix run of `tests/go/goroutines`; returns a one-line summary.
pub fn check_goroutines(what: &str, report: &Value, started: &Started) -> String {
    let spinner = started.goid("spinner");
    let syscaller = started.goid("syscaller");
    let labelled = started.goid("labelled");
    let all = stacks(report);

    // The spinner: running, with its own goid and nothing else, never labelled.
    let spin: Vec<&Value> = all
        .iter()
        .filter(|s| has_function(s, "main.spinUser"))
        .collect();
    let spin_samples: u64 = spin.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
    assert!(
        spin_samples >= MIN_BUSY_SAMPLES,
        "{what}: {spin_samples} spinner samples"
    );
    for s in &spin {
        assert_eq!(goids(s), [spinner], "{what}: spinner row {s}");
        assert_eq!(s["labels"], serde_json::json!({}), "{what}: spinner labels");
    }
    let spin_running = count_where(report, |s| {
        has_function(s, "main.spinUser") && s["state"] == "running"
    });
    assert!(
        spin_running * 10 >= spin_samples * 9,
        "{what}: only {spin_running} of {spin_samples} spinner samples are running"
    );

    // The syscall loop: `syscall`, with its goid.
    let sys: Vec<&Value> = all
        .iter()
        .filter(|s| has_function(s, "main.readZero"))
        .collect();
    let sys_samples: u64 = sys.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
    assert!(
        sys_samples >= MIN_BUSY_SAMPLES,
        "{what}: {sys_samples} syscall-loop samples"
    );
    for s in &sys {
        assert_eq!(goids(s), [syscaller], "{what}: syscall row {s}");
    }
    let in_syscall = count_where(report, |s| {
        has_function(s, "main.readZero") && s["state"] == "syscall"
    });
    assert!(
        in_syscall * 2 >= sys_samples,
        "{what}: only {in_syscall} of {sys_samples} syscall-loop samples are in state syscall"
    );

    // The labelled spinner: running, its goid, req=42.
    let lab: Vec<&Value> = all
        .iter()
        .filter(|s| has_function(s, "main.spinLabelled"))
        .collect();
    let lab_samples: u64 = lab.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum();
    assert!(
        lab_samples >= MIN_BUSY_SAMPLES,
        "{what}: {lab_samples} labelled samples"
    );
    for s in &lab {
        assert_eq!(goids(s), [labelled], "{what}: labelled row {s}");
        assert_eq!(
            label(s, "req").as_deref(),
            Some("42"),
            "{what}: labels of {s}"
        );
    }
    format!(
        "{what}: spinner {spinner} running {spin_running}/{spin_samples}, syscaller {syscaller} \
         syscall {in_syscall}/{sys_samples}, labelled {labelled} req=42 {lab_samples}"
    )
}

/// The host pid of a descendant of `root` whose executable's file name is `exe_name`.
pub fn descendant_running(root: u32, exe_name: &str) -> Option<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The parent pid is the second field after the parenthesised command name.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            match parent_of(pid) {
                Some(p) if p == root => return true,
                Some(p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            (exe.file_name()? == exe_name && descends(pid)).then_some(pid)
        })
}

/// A copy of the Go binary `exe` whose build information claims another minor release:
/// `go1.<minor>` with the same patch digits (`minor` has two digits, as the real one must).
/// The program runs as before; stacksampler then picks that release's runtime layout.
pub fn claiming_go_minor(exe: &Path, minor: &str) -> PathBuf {
    use stacksampler::goruntime::{self, buildinfo};
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(minor.len(), 2, "two minor digits: {minor}");
    let binary = goruntime::inspect(exe).expect("inspect");
    let real = binary.build_info.expect("build info").version;
    let mut data = std::fs::read(exe).expect("read binary");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let magic = find(&data, buildinfo::MAGIC).expect("build info magic");
    let at = magic + find(&data[magic..], real.as_bytes()).expect("version in build info");
    let minor_at = at + "go1.".len();
    assert!(
        data[minor_at..minor_at + 2].iter().all(u8::is_ascii_digit),
        "{real} has a two-digit minor"
    );
    data[minor_at..minor_at + 2].copy_from_slice(minor.as_bytes());
    let out = exe.with_file_name(format!(
        "{}-go1.{minor}",
        exe.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&out, &data).expect("write patched binary");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    out
}
