//! The binary's one voice on stderr: warnings, `--verbose` details, the live status line of
//! `record` and `watch` (rewritten in place on a terminal; a line per second with `--verbose`
//! otherwise), and `--stack-alert` alerts. The library reports through
//! [`Observer`]; only this module prints what it says.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use stacksampler::{
    session::{Notice, Observer, WatchStatus},
    units::human_bytes,
};

/// How often the status line is redrawn.
const STATUS_PERIOD: Duration = Duration::from_secs(1);

/// Prints a run's notices on stderr.
pub struct StatusLine {
    verbose: bool,
    tty: bool,
    /// Show the status line (a terminal, or `--verbose`).
    status: bool,
    /// Alerts' json lines go to standard output (the report is json there), else to stderr.
    alerts_to_stdout: bool,
    last_status: Option<Instant>,
    /// A status line is on screen (a terminal): clear it before any other line.
    drawn: bool,
}

impl StatusLine {
    pub fn new(verbose: bool, alerts_to_stdout: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            verbose,
            tty,
            status: tty || verbose,
            alerts_to_stdout,
            last_status: None,
            drawn: false,
        }
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.drawn = false;
        }
    }

    fn line(&mut self, text: &str) {
        self.clear();
        eprintln!("stacksampler: {text}");
    }

    fn show_status(&mut self, text: String) {
        if !self.status
            || self
                .last_status
                .is_some_and(|t| t.elapsed() < STATUS_PERIOD)
        {
            return;
        }
        self.last_status = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{text}\x1b[K");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{text}");
        }
    }
}

fn watch_status(s: &WatchStatus) -> String {
    let goroutines = match s.live {
        Some(n) => format!("{n} goroutines"),
        None => format!("{:+} goroutines", s.net_change),
    };
    let biggest = s.biggest.map_or("-".to_owned(), |(id, b)| {
        format!("{} (goroutine {id})", human_bytes(b))
    });
    format!(
        "stacksampler: {:.0}s  {goroutines}  {} created  biggest stack {biggest}  {} events/s",
        s.elapsed.as_secs_f64(),
        s.created,
        s.events_per_s
    )
}

impl Observer for StatusLine {
    fn notice(&mut self, notice: Notice<'_>) {
        match notice {
            Notice::Warning(w) => self.line(&format!("warning: {w}")),
            Notice::Detail(d) => {
                if self.verbose {
                    self.line(&d);
                }
            }
            // The first line after a second of sampling: tests wait for it.
            Notice::Sampling { elapsed, samples } => {
                if self.last_status.is_none() {
                    // Start the clock: the first line comes a period after sampling began.
                    self.last_status = Some(Instant::now());
                    return;
                }
                self.show_status(format!(
                    "stacksampler: sampling {:.0}s, {samples} samples",
                    elapsed.as_secs_f64()
                ));
            }
            Notice::Watching {
                pid,
                probes,
                goroutines,
            } => self.line(&format!(
                "watching pid {pid} ({probes} probes attached{})",
                goroutines.map_or(String::new(), |n| format!(", {n} goroutines"))
            )),
            Notice::WatchStatus(s) => self.show_status(watch_status(&s)),
            Notice::Alert(a) => {
                self.line(&format!(
                    "ALERT goroutine {} stack reached {} (alert at {}), {} frames: {}",
                    a.goid,
                    human_bytes(a.stack_bytes),
                    human_bytes(a.threshold_bytes),
                    a.depth,
                    a.folded
                ));
                let json = serde_json::to_string(a).unwrap_or_default();
                if self.alerts_to_stdout {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{json}");
                    let _ = out.flush();
                } else {
                    eprintln!("{json}");
                }
            }
            Notice::Finished => self.clear(),
        }
    }
}
