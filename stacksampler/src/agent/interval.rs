//! Cutting a running `record` run into intervals: [`IntervalCutter`] is the run's
//! [`Observer`]; every [`AgentOptions::interval`](super::AgentOptions) it takes the profile the
//! run has gathered since the last cut (the run goes on into an empty one), names its unique
//! addresses with the run's own symbolizer, diagnoses it, and hands an [`IntervalProfile`] (the
//! pprof `record` would write for that interval) to the exporters. The last interval is cut
//! from the run's final report when the run ends.

use std::{
    cell::Cell,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, SystemTime},
};

use tokio::sync::mpsc;

use crate::{
    aggregate::Profile,
    diagnose::{self, Finding},
    goruntime,
    report::{self, EndReason, OutputFormat, Report, RunInfo},
    session::{LiveTick, Notice, Observer},
    symbolize::Symbols,
};

use super::{AgentNotice, metrics::TargetMetrics};

/// Facts about one target that every interval's profile repeats.
#[derive(Clone, Debug)]
pub struct TargetFacts {
    pub pid: u32,
    /// The service name in file names and labels: the executable's file name.
    pub service: String,
    pub binary: PathBuf,
    pub build_id: Option<String>,
    pub go_version: Option<String>,
    pub frequency_hz: u64,
    pub max_frames: u32,
}

impl TargetFacts {
    /// Reads them from `/proc/PID/exe` (the file the target runs).
    pub fn of(pid: u32, frequency_hz: u64, max_frames: u32) -> Self {
        let binary = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let inspected = goruntime::inspect(Path::new(&format!("/proc/{pid}/exe"))).ok();
        let service = binary
            .file_name()
            .map(|n| service_name(&n.to_string_lossy()))
            .unwrap_or_else(|| format!("pid{pid}"));
        Self {
            pid,
            service,
            binary,
            build_id: inspected
                .as_ref()
                .and_then(|b| b.gnu_build_id.clone().or(b.go_build_id.clone())),
            go_version: inspected
                .as_ref()
                .and_then(|b| b.version.as_ref())
                .map(|v| v.to_string()),
            frequency_hz,
            max_frames,
        }
    }
}

#[cfg(test)]
impl TargetFacts {
    /// A target `svc` of pid `pid` (unit tests).
    pub fn example(pid: u32) -> Self {
        Self {
            pid,
            service: "svc".into(),
            binary: "/bin/svc".into(),
            build_id: None,
            go_version: None,
            frequency_hz: 99,
            max_frames: 64,
        }
    }
}

/// `name` with every character outside `[A-Za-z0-9_.]` replaced by `_`: safe in a file name and
/// in a Pyroscope application name.
pub fn service_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

/// One process's profile of one interval, ready for the exporters.
#[derive(Clone, Debug)]
pub struct IntervalProfile {
    pub pid: u32,
    pub service: String,
    /// Wall-clock start and end of the interval.
    pub start: SystemTime,
    pub end: SystemTime,
    /// The gzipped pprof protobuf (`record`'s own pprof output for the interval).
    pub pprof: Vec<u8>,
    /// Samples kept in the interval.
    pub samples: u64,
}

/// What one interval's profile says, for the metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntervalFacts {
    pub samples: u64,
    /// The deepest user stack sampled, frames.
    pub deepest_frames: u64,
    /// The largest goroutine stack in use sampled, bytes.
    pub max_stack_bytes: Option<u64>,
    /// Finding kinds (`runaway_recursion`, `pileup`, ...) and how many of each.
    pub findings: Vec<(&'static str, u64)>,
}

impl IntervalFacts {
    pub fn of(profile: &Profile, findings: &[Finding]) -> Self {
        let mut facts = Self {
            samples: profile.counts.kept,
            ..Self::default()
        };
        for stats in profile.stacks.values() {
            facts.deepest_frames = facts.deepest_frames.max(stats.depth.1);
            if let Some((_, max)) = stats.stack_bytes {
                facts.max_stack_bytes = Some(facts.max_stack_bytes.unwrap_or(0).max(max));
            }
        }
        facts.findings = count_kinds(findings.iter().map(Finding::kind));
        facts
    }
}

/// How many findings of each kind, by kind.
pub fn count_kinds(found: impl IntoIterator<Item = &'static str>) -> Vec<(&'static str, u64)> {
    let mut kinds: Vec<(&'static str, u64)> = Vec::new();
    for kind in found {
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    kinds
}

/// Builds the report `record` would make of `profile` over `[start, end]`.
pub fn interval_report(
    facts: &TargetFacts,
    profile: Profile,
    symbols: Symbols,
    max_stack_bytes: Option<u64>,
    duration: Duration,
) -> Report {
    let options = diagnose::DiagnoseOptions {
        max_stack_bytes,
        ..Default::default()
    };
    let diagnosis = diagnose::diagnose(&profile, &symbols, &options);
    Report {
        run: RunInfo {
            pid: facts.pid,
            binary: facts.binary.clone(),
            build_id: facts.build_id.clone(),
            go_version: facts.go_version.clone(),
            execs: Vec::new(),
            duration_secs: duration.as_secs_f64(),
            frequency_hz: facts.frequency_hz,
            // The agent takes CPU samples only.
            wall_frequency_hz: None,
            max_frames: facts.max_frames,
            ended_by: EndReason::Duration,
        },
        profile,
        symbols,
        diagnosis,
        warnings: Vec::new(),
        fatal: None,
        runtime_events: None,
    }
}

/// The gzipped pprof of `report`.
pub fn encode_pprof(report: &Report) -> Result<Vec<u8>, report::RenderError> {
    let mut out = Vec::new();
    report::render(report, OutputFormat::Pprof, &mut out)?;
    Ok(out)
}

/// The [`Observer`] of one target's record run in the agent.
pub struct IntervalCutter {
    pub facts: TargetFacts,
    interval: Duration,
    /// Run time and wall-clock time of the last cut.
    last_cut: (Duration, SystemTime),
    profiles: mpsc::Sender<IntervalProfile>,
    notices: mpsc::UnboundedSender<AgentNotice>,
    metrics: Option<TargetMetrics>,
    /// Set when the agent stops: the run ends at its next tick.
    stopping: Rc<Cell<bool>>,
    /// Samples lost (cumulative) at the last cut.
    lost_seen: u64,
    /// The run's first tick came: it is attached.
    started: bool,
}

impl IntervalCutter {
    pub fn new(
        facts: TargetFacts,
        interval: Duration,
        profiles: mpsc::Sender<IntervalProfile>,
        notices: mpsc::UnboundedSender<AgentNotice>,
        metrics: Option<TargetMetrics>,
        stopping: Rc<Cell<bool>>,
    ) -> Self {
        Self {
            facts,
            interval,
            last_cut: (Duration::ZERO, SystemTime::now()),
            profiles,
            notices,
            metrics,
            stopping,
            lost_seen: 0,
            started: false,
        }
    }

    /// Ends the current interval with `report` (its profile is the interval's), updates the
    /// metrics and queues the profile; a full queue drops it (counted, never waited on).
    fn cut(&mut self, report: &Report, elapsed: Duration, lost_total: u64) {
        let end = SystemTime::now();
        let start = self.last_cut.1;
        self.last_cut = (elapsed, end);
        let lost = lost_total.saturating_sub(self.lost_seen);
        self.lost_seen = self.lost_seen.max(lost_total);
        if let Some(m) = &mut self.metrics {
            let read = m.read_goroutines();
            m.interval(
                &IntervalFacts::of(&report.profile, &report.diagnosis),
                lost,
                &read,
            );
        }
        let pprof = match encode_pprof(report) {
            Ok(p) => p,
            Err(e) => {
                let _ = self.notices.send(AgentNotice::Warning(format!(
                    "pid {}: encoding the interval's pprof: {e}",
                    self.facts.pid
                )));
                return;
            }
        };
        let profile = IntervalProfile {
            pid: self.facts.pid,
            service: self.facts.service.clone(),
            start,
            end,
            pprof,
            samples: report.profile.counts.kept,
        };
        if self.profiles.try_send(profile).is_err()
            && let Some(m) = &self.metrics
        {
            m.dropped_profile();
        }
    }

    /// Cuts the last interval from the run's final report (its profile is what followed the
    /// last cut).
    pub fn finish(&mut self, report: &mut Report) {
        let elapsed = Duration::from_secs_f64(report.run.duration_secs.max(0.0));
        report.run.duration_secs = elapsed.saturating_sub(self.last_cut.0).as_secs_f64();
        if report.profile.counts.total > 0 {
            let lost = report.profile.counts.lost;
            self.cut(report, elapsed, lost);
        }
    }

    /// Whether the run has sampled (its first tick came).
    pub fn attached(&self) -> bool {
        self.started
    }
}

impl Observer for IntervalCutter {
    fn notice(&mut self, notice: Notice<'_>) {
        match notice {
            Notice::Warning(w) => {
                let _ = self
                    .notices
                    .send(AgentNotice::Warning(format!("pid {}: {w}", self.facts.pid)));
            }
            Notice::Sampling { .. } if !self.started => {
                self.started = true;
                let _ = self.notices.send(AgentNotice::Attached {
                    pid: self.facts.pid,
                    service: self.facts.service.clone(),
                });
            }
            _ => {}
        }
    }

    fn live(&mut self, tick: LiveTick<'_>) -> Option<EndReason> {
        if self.stopping.get() {
            return Some(EndReason::Interrupted);
        }
        if let (Some(m), Some(counts)) = (&mut self.metrics, &tick.runtime_events) {
            m.runtime_events(counts);
        }
        if tick.elapsed < self.last_cut.0 + self.interval {
            return None;
        }
        let profile = std::mem::take(tick.profile);
        let symbols = tick.symbolizer.symbolize(&profile.table.unique_addresses());
        let duration = tick.elapsed.saturating_sub(self.last_cut.0);
        let report = interval_report(
            &self.facts,
            profile,
            symbols,
            tick.max_stack_bytes,
            duration,
        );
        if let Some(m) = &self.metrics {
            m.stack_limit(tick.max_stack_bytes);
        }
        self.cut(&report, tick.elapsed, tick.lost);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{goruntime::state::GoroutineState, sample::Sample};

    #[test]
    fn service_names_are_safe_in_file_names() {
        assert_eq!(service_name("api-server"), "api_server");
        assert_eq!(service_name("demo.bin"), "demo.bin");
        assert_eq!(service_name(""), "unknown");
        assert_eq!(service_name("a/b c"), "a_b_c");
    }

    #[test]
    fn interval_facts_take_the_deepest_stack_and_count_finding_kinds() {
        let mut profile = Profile::default();
        profile.add(&Sample::of_goroutine(
            &[1, 2, 3],
            1,
            GoroutineState::Running,
        ));
        profile.add(&Sample::of_goroutine(&[1, 2], 2, GoroutineState::Syscall));
        let facts = IntervalFacts::of(&profile, &[]);
        assert_eq!(facts.samples, 2);
        assert_eq!(facts.deepest_frames, 3);
        assert!(facts.findings.is_empty());
    }

    struct NoNames;

    impl crate::symbolize::Symbolize for NoNames {
        fn symbolize(&mut self, _: &[u64]) -> Symbols {
            Symbols::default()
        }
    }

    #[test]
    fn each_interval_takes_the_profile_and_queues_one_pprof() {
        let (tx, mut rx) = mpsc::channel(1);
        let (ntx, _nrx) = mpsc::unbounded_channel();
        let stopping = Rc::new(Cell::new(false));
        let mut cutter = IntervalCutter::new(
            TargetFacts::example(7),
            Duration::from_secs(2),
            tx,
            ntx,
            None,
            stopping.clone(),
        );
        let mut profile = Profile::default();
        let mut names = NoNames;
        let mut tick = |ms: u64, profile: &mut Profile, cutter: &mut IntervalCutter| {
            cutter.live(LiveTick {
                elapsed: Duration::from_millis(ms),
                profile,
                symbolizer: &mut names,
                lost: 0,
                max_stack_bytes: None,
                runtime_events: None,
            })
        };
        profile.add(&Sample::of_goroutine(&[1, 2], 1, GoroutineState::Running));
        assert_eq!(tick(1000, &mut profile, &mut cutter), None);
        assert_eq!(profile.counts.kept, 1, "not cut before the interval");
        assert!(rx.try_recv().is_err());
        assert_eq!(tick(2000, &mut profile, &mut cutter), None);
        assert_eq!(profile.counts.kept, 0, "the cut took the profile");
        let cut = rx.try_recv().expect("one interval profile");
        assert_eq!((cut.pid, cut.samples), (7, 1));
        assert_eq!(&cut.pprof[..2], &[0x1f, 0x8b], "gzipped");
        // The queue holds one: the next cut while it is full is dropped, not waited for.
        profile.add(&Sample::of_goroutine(&[1], 1, GoroutineState::Running));
        assert_eq!(tick(4000, &mut profile, &mut cutter), None);
        profile.add(&Sample::of_goroutine(&[1], 1, GoroutineState::Running));
        assert_eq!(tick(6000, &mut profile, &mut cutter), None);
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        stopping.set(true);
        assert_eq!(
            tick(6250, &mut profile, &mut cutter),
            Some(EndReason::Interrupted)
        );
    }
}
