//! One run's stop conditions, the same for every verb: `--duration`, Ctrl-C or SIGTERM, the
//! target's exit (pidfd, or `/proc` polled where pidfd is missing). [`Session::next`] yields a
//! periodic tick until one of them ends the run with its [`EndReason`].
//!
//! What a run has to say while it runs goes to an [`Observer`] as a [`Notice`]: the library
//! never prints; the binary's status line decides what reaches the terminal.

use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    aggregate::Profile,
    events::tracker::KindCounts,
    report::{EndReason, events::AlertOut},
    symbolize::Symbolize,
    target::{self, ExitWatch, sleep_or_forever},
};

/// Something a run says while it runs.
#[derive(Clone, Debug)]
pub enum Notice<'a> {
    /// What the operator should know now (the report lists it among its warnings too).
    Warning(&'a crate::warning::Warning),
    /// A detail for `--verbose` (counts, costs).
    Detail(String),
    /// A record run's progress, every tick.
    Sampling { elapsed: Duration, samples: u64 },
    /// A watch has its probes attached to `pid`.
    Watching {
        pid: u32,
        probes: usize,
        /// Goroutines alive at attach, when `runtime.allgs` is readable.
        goroutines: Option<u64>,
    },
    /// A watch's status, every tick.
    WatchStatus(WatchStatus),
    /// A `--stack-alert` fired.
    Alert(&'a AlertOut),
    /// Sampling or watching is over (the report follows).
    Finished,
}

/// The numbers of a watch's status line.
#[derive(Clone, Copy, Debug)]
pub struct WatchStatus {
    pub elapsed: Duration,
    /// Goroutines alive now, when the count at attach is known.
    pub live: Option<i64>,
    /// Goroutines created minus ended since attach.
    pub net_change: i64,
    pub created: u64,
    /// The biggest stack seen: (goid, bytes).
    pub biggest: Option<(u64, u64)>,
    pub events_per_s: u64,
}

/// Receives a run's [`Notice`]s.
pub trait Observer {
    fn notice(&mut self, notice: Notice<'_>);

    /// Called at every tick of a record run with the profile so far (a live view, `top`);
    /// returning a reason ends the run as that reason would.
    fn live(&mut self, _tick: LiveTick<'_>) -> Option<EndReason> {
        None
    }
}

/// A record run's state at a tick, for a live view.
pub struct LiveTick<'a> {
    /// Time since sampling started.
    pub elapsed: Duration,
    /// Every kept sample since the start, or since an observer last took the profile: one that
    /// cuts the run into intervals (`agent`) takes it (`std::mem::take`) and sampling goes on
    /// into an empty one; the report then holds what followed the last cut.
    pub profile: &'a mut Profile,
    /// The run's symbolizer: names an address once, remembered by the run.
    pub symbolizer: &'a mut dyn Symbolize,
    /// Samples lost so far (ring buffer full, undecodable).
    pub lost: u64,
    /// The target's stack limit now (`runtime.maxstacksize`), when readable.
    pub max_stack_bytes: Option<u64>,
    /// Runtime events counted since the start (a run with `RecordOptions::events` whose
    /// probes are attached).
    pub runtime_events: Option<KindCounts>,
}

/// An observer that drops everything (tests, embedding).
pub struct Quiet;

impl Observer for Quiet {
    fn notice(&mut self, _: Notice<'_>) {}
}

/// What [`Session::next`] saw first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The tick period passed: time for periodic work (status, flushing logs).
    Tick,
    /// The run is over.
    End(EndReason),
}

/// The stop conditions of one run on one target.
pub struct Session {
    pid: u32,
    started: Instant,
    duration: Option<Duration>,
    exit: ExitWatch,
    sigint: Signal,
    sigterm: Signal,
    tick: tokio::time::Interval,
}

impl Session {
    /// Starts the clock for `pid`, ending after `duration` if given, ticking every `tick`.
    /// Needs a tokio runtime with IO and time enabled.
    pub fn start(pid: u32, duration: Option<Duration>, tick: Duration) -> std::io::Result<Self> {
        Ok(Self {
            pid,
            started: Instant::now(),
            duration,
            exit: ExitWatch::new(pid),
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            tick: tokio::time::interval(tick),
        })
    }

    /// Time since [`Session::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the next tick or the end of the run. Cancel-safe: a caller may race it against
    /// its streams in `select!` and call it again.
    pub async fn next(&mut self) -> Step {
        let remaining = self
            .duration
            .map(|d| d.saturating_sub(self.started.elapsed()));
        if remaining == Some(Duration::ZERO) {
            return Step::End(EndReason::Duration);
        }
        tokio::select! {
            _ = sleep_or_forever(remaining) => Step::End(EndReason::Duration),
            _ = self.sigint.recv() => Step::End(EndReason::Interrupted),
            _ = self.sigterm.recv() => Step::End(EndReason::Interrupted),
            _ = self.exit.exited() => Step::End(EndReason::TargetExited),
            _ = self.tick.tick() => {
                if !self.exit.has_pidfd() && !target::process::is_alive(self.pid) {
                    Step::End(EndReason::TargetExited)
                } else {
                    Step::Tick
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_ends_the_session_after_ticks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let me = std::process::id();
            let mut s = Session::start(
                me,
                Some(Duration::from_millis(120)),
                Duration::from_millis(20),
            )
            .expect("session");
            let mut ticks = 0;
            let end = loop {
                match s.next().await {
                    Step::Tick => ticks += 1,
                    Step::End(reason) => break reason,
                }
            };
            assert_eq!(end, EndReason::Duration);
            assert!(ticks >= 2, "{ticks} ticks");
            assert!(s.elapsed() >= Duration::from_millis(120));
        });
    }

    #[test]
    fn the_targets_exit_ends_the_session() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut child = std::process::Command::new("sleep")
            .arg("0.1")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        rt.block_on(async {
            let mut s = Session::start(
                pid,
                Some(Duration::from_secs(30)),
                Duration::from_millis(50),
            )
            .expect("session");
            // The child is reaped below; until then it is a zombie, which pidfd reports exited.
            let end = loop {
                if let Step::End(reason) = s.next().await {
                    break reason;
                }
            };
            assert_eq!(end, EndReason::TargetExited);
        });
        let _ = child.wait();
    }
}
