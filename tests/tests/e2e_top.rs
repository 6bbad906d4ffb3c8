//! End to end: `stacksampler top` in a real terminal. Each test starts its own tmux server on a
//! private socket (`tmux -L <unique name>`), runs an interactive shell in it, types the `top`
//! command line, reads the screen with `tmux capture-pane -p`, types keys, and kills only its
//! own server (by that socket name) at the end. Without a terminal `top` must refuse in one line.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use stacksampler_tests::{
    GoProcess, Variant, build_go, exclusive,
    kernel::{HeldObjects, assert_released, held_by},
    primary_go_toolchains,
    report::{functions, stacks},
    stacksampler_bin,
};

/// The prompt of the shell inside tmux (a capture drops its trailing space).
const PROMPT: &str = "toptest$";
/// How long the view may take to show a hot function once it is on screen.
const HOT_FUNCTION_WITHIN: Duration = Duration::from_secs(3);
/// How long to wait for the view to come up (load and attach) or for the shell to come back.
const START_WITHIN: Duration = Duration::from_secs(30);

/// A tmux server of this test alone, running `sh` in one 100x30 window.
struct Tmux {
    socket: String,
    dir: tempfile::TempDir,
}

impl Tmux {
    fn start() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "stacksampler-e2e-top-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let t = Self { socket, dir };
        let status = t
            .tmux()
            .args(["new-session", "-d", "-s", "top", "-x", "100", "-y", "30"])
            .arg(format!("env PS1='{PROMPT} ' ENV= sh -i"))
            .status()
            .expect("run tmux (cargo xtask setup installs it)");
        assert!(status.success(), "tmux new-session failed");
        t.wait_for("the shell prompt", START_WITHIN, |s| s.contains(PROMPT));
        t
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        // The socket lives in the test's own folder, removed with it.
        c.env("TMUX_TMPDIR", self.dir.path())
            .args(["-L", &self.socket])
            .stdin(Stdio::null());
        c
    }

    /// The visible screen, as text.
    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names: `q`, `Enter`, `C-c`).
    fn send(&self, keys: &[&str]) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Types a command line and Enter.
    fn type_line(&self, line: &str) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", "top", "-l", line])
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
        self.send(&["Enter"]);
    }

    /// Polls the screen until `pred` holds; panics with the last screen after `within`.
    fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not on screen within {within:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Only this test's server, by its socket name.
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// The status the shell echoed after `top` ended: a line of its own starting `top-exit=`, never
/// the typed command line (which holds `top-exit=$?` and is on screen before `top` draws).
fn top_exit(screen: &str) -> Option<&str> {
    screen
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("top-exit="))
        .find(|status| !status.is_empty() && status.bytes().all(|b| b.is_ascii_digit()))
}

/// `top` started in `tmux` on `pid` with `extra` flags; returns the sampler's pid. The command
/// line echoes its exit status when it ends (`top-exit=N`).
fn start_top(tmux: &Tmux, pid: u32, extra: &str) -> u32 {
    let pidfile = tmux.path("top.pid");
    let _ = std::fs::remove_file(&pidfile);
    tmux.type_line(&format!(
        "sh -c 'echo $$ > {}; exec {} top --pid {pid} {extra}'; echo top-exit=$?",
        pidfile.display(),
        stacksampler_bin().display()
    ));
    let deadline = Instant::now() + START_WITHIN;
    loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "top never started:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the sampler holds its eBPF programs; returns what it holds.
fn attached_programs(tmux: &Tmux, sampler: u32) -> HeldObjects {
    let deadline = Instant::now() + START_WITHIN;
    loop {
        let held = held_by(sampler);
        if !held.programs.is_empty() {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "top never loaded a program:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_demo(workers: &str, seconds: &str) -> GoProcess {
    let tc = primary_go_toolchains().pop().expect("a toolchain");
    let exe = build_go("demo", &tc, Variant::Normal);
    let mut p = GoProcess::spawn(&exe, &["-seconds", seconds, "-workers", workers]);
    p.wait_for_line("ready");
    p
}

/// The rows of the function table: the lines after its heading.
fn table_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !l.contains("%Own"))
        .skip(1)
        .collect()
}

/// The process `pid` is gone (exited and reaped).
fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn shows_the_hot_function_and_syscall_state_and_quits_cleanly() {
    let _serial = exclusive();
    let demo = start_demo("hot,syscall", "120");
    let tmux = Tmux::start();
    let sampler = start_top(&tmux, demo.pid(), "--frequency 99");
    let ids = attached_programs(&tmux, sampler);
    tmux.wait_for("the view", START_WITHIN, |s| s.contains("stacksampler top"));
    let screen = tmux.wait_for("main.hotLoop in the table", HOT_FUNCTION_WITHIN, |s| {
        table_rows(s)
            .iter()
            .take(3)
            .any(|r| r.contains("main.hotLoop"))
    });
    assert!(
        screen.contains(&format!("pid {}", demo.pid())),
        "header: {screen}"
    );
    // The state bar (the line starting with "states") names the syscall-heavy goroutine's state.
    let screen = tmux.wait_for("syscall in the state bar", START_WITHIN, |s| {
        s.lines()
            .any(|l| l.starts_with("states ") && l.contains("syscall"))
    });
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("states ") && l.contains("running")),
        "{screen}"
    );

    // Keys: sort by TotalTime, show only syscall samples, pause, help.
    tmux.send(&["4"]);
    tmux.send(&["s", "s"]);
    let screen = tmux.wait_for("the syscall view", START_WITHIN, |s| {
        s.contains("states: syscall")
    });
    assert!(
        !table_rows(&screen)
            .iter()
            .any(|r| r.contains("main.hotLoop")),
        "hot loop shown under the syscall filter:\n{screen}"
    );
    tmux.send(&["p"]);
    tmux.wait_for("PAUSED", START_WITHIN, |s| s.contains("PAUSED"));
    tmux.send(&["?"]);
    tmux.wait_for("the help", START_WITHIN, |s| {
        s.contains("pause the display")
    });

    tmux.send(&["q"]);
    let screen = tmux.wait_for("the shell back", START_WITHIN, |s| top_exit(s).is_some());
    assert_eq!(top_exit(&screen), Some("0"), "{screen}");
    // The view is gone (alternate screen left), the detach line is printed, and the last line
    // is a fresh prompt.
    assert!(!screen.contains("%Own"), "view left on screen:\n{screen}");
    assert!(screen.contains("detached"), "{screen}");
    let last = screen.lines().rev().find(|l| !l.trim().is_empty());
    assert_eq!(last.map(str::trim_end), Some(PROMPT), "{screen}");
    // The terminal is cooked again: a typed line echoes and runs.
    tmux.type_line("echo cooked-$((40+2))");
    tmux.wait_for("the shell running a command", START_WITHIN, |s| {
        s.contains("cooked-42")
    });
    assert!(gone(sampler), "top still running");
    assert_released(&ids, "top after q");
}

#[test]
fn sigterm_and_the_target_exiting_end_it_with_a_report() {
    let _serial = exclusive();
    let tmux = Tmux::start();

    // SIGTERM: terminal restored, status 0.
    let demo = start_demo("hot", "120");
    let sampler = start_top(&tmux, demo.pid(), "");
    let ids = attached_programs(&tmux, sampler);
    tmux.wait_for("the view", START_WITHIN, |s| s.contains("stacksampler top"));
    // SAFETY: signalling the sampler this test started, by pid.
    assert_eq!(
        unsafe { libc::kill(sampler as libc::pid_t, libc::SIGTERM) },
        0
    );
    let screen = tmux.wait_for("the shell back", START_WITHIN, |s| top_exit(s).is_some());
    assert_eq!(top_exit(&screen), Some("0"), "{screen}");
    assert!(!screen.contains("%Own"), "{screen}");
    assert_released(&ids, "top after SIGTERM");
    drop(demo);

    // The target exits: shown, detached, and -o has the whole session's report.
    tmux.type_line("clear");
    let demo = start_demo("hot", "6");
    let report = tmux.path("top.json");
    let sampler = start_top(&tmux, demo.pid(), &format!("-o {}", report.display()));
    let ids = attached_programs(&tmux, sampler);
    let screen = tmux.wait_for("the shell back", START_WITHIN, |s| top_exit(s).is_some());
    assert_eq!(top_exit(&screen), Some("0"), "{screen}");
    assert!(
        screen.contains(&format!("process {} exited", demo.pid())),
        "{screen}"
    );
    assert_released(&ids, "top after the target exited");
    let json: Value =
        serde_json::from_slice(&std::fs::read(&report).expect("-o file")).expect("json report");
    assert_eq!(json["ended_by"], "target_exited", "{json}");
    let top = &stacks(&json)[0];
    assert_eq!(
        functions(top).first().map(String::as_str),
        Some("main.hotLoop")
    );
}

#[test]
fn without_a_terminal_it_points_to_record() {
    let _serial = exclusive();
    let demo = start_demo("hot", "60");
    let out = Command::new(stacksampler_bin())
        .args(["top", "--pid", &demo.pid().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run stacksampler");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("needs a terminal") && stderr.contains("stacksampler record"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
