//! `--metrics-addr`: the agent's Prometheus metrics (prometheus-client, OpenMetrics text) and
//! the HTTP endpoint that serves them at `/metrics`.
//!
//! Per process (labels `pid`, `service`): goroutines by state (read from the target's memory
//! at each interval, Go's own count: runtime goroutines excluded), the deepest stack sampled,
//! the largest goroutine stack sampled and the stack limit, samples and lost samples, findings
//! by kind; goroutines created and stack growths (counted by the runtime-event probes, headers
//! only). The agent's own CPU seconds and resident memory under Prometheus's standard
//! `process_*` names.

use std::{
    collections::BTreeMap, net::SocketAddr, rc::Rc, sync::atomic::AtomicU64, time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{dump, events::tracker::KindCounts, goruntime::state::GoroutineState};

use super::interval::{IntervalFacts, TargetFacts, count_kinds};

/// Labels of a per-process series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    pub pid: u32,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pid: u32,
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabels {
    exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    pid: u32,
    service: String,
    kind: String,
}

/// Every metric family of the agent (cheap to clone: each family is shared).
#[derive(Clone, Default)]
pub struct Metrics {
    goroutines: Family<StateLabels, Gauge>,
    deepest_stack_frames: Family<ProcessLabels, Gauge>,
    max_stack_bytes: Family<ProcessLabels, Gauge>,
    stack_limit_bytes: Family<ProcessLabels, Gauge>,
    samples: Family<ProcessLabels, Counter>,
    lost_samples: Family<ProcessLabels, Counter>,
    goroutines_created: Family<ProcessLabels, Counter>,
    stack_growths: Family<ProcessLabels, Counter>,
    findings: Family<KindLabels, Gauge>,
    profiles_dropped: Family<ProcessLabels, Counter>,
    exported: Family<ExporterLabels, Counter>,
    export_failures: Family<ExporterLabels, Counter>,
    export_dropped: Family<ExporterLabels, Counter>,
    targets: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
}

impl Metrics {
    /// The registry that exposes them.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "stacksampler_goroutines",
            "Goroutines of the process by state (runtime goroutines excluded, as runtime.NumGoroutine)",
            self.goroutines.clone(),
        );
        r.register(
            "stacksampler_deepest_stack_frames",
            "Frames of the deepest user stack sampled in the last interval",
            self.deepest_stack_frames.clone(),
        );
        r.register(
            "stacksampler_stack_bytes",
            "Largest goroutine stack in use sampled in the last interval, bytes",
            self.max_stack_bytes.clone(),
        );
        r.register(
            "stacksampler_stack_limit_bytes",
            "The process's goroutine stack limit (runtime.maxstacksize), bytes",
            self.stack_limit_bytes.clone(),
        );
        r.register(
            "stacksampler_samples",
            "CPU samples kept",
            self.samples.clone(),
        );
        r.register(
            "stacksampler_lost_samples",
            "CPU samples lost (ring buffer full, undecodable)",
            self.lost_samples.clone(),
        );
        r.register(
            "stacksampler_goroutines_created",
            "Goroutines the process created (runtime.newproc1, counted by a uprobe)",
            self.goroutines_created.clone(),
        );
        r.register(
            "stacksampler_stack_growth",
            "Goroutine stack growths of the process (runtime.copystack to a larger stack)",
            self.stack_growths.clone(),
        );
        r.register(
            "stacksampler_findings",
            "Findings of the last interval by kind (runaway_recursion, pileup)",
            self.findings.clone(),
        );
        r.register(
            "stacksampler_profiles_dropped",
            "Interval profiles dropped because the export queue was full",
            self.profiles_dropped.clone(),
        );
        r.register(
            "stacksampler_exported_profiles",
            "Profiles an exporter delivered",
            self.exported.clone(),
        );
        r.register(
            "stacksampler_export_failures",
            "Failed deliveries (each try) of an exporter",
            self.export_failures.clone(),
        );
        r.register(
            "stacksampler_export_dropped_profiles",
            "Profiles an exporter dropped: its queue was full, or every try failed",
            self.export_dropped.clone(),
        );
        r.register(
            "stacksampler_targets",
            "Processes the agent samples now",
            self.targets.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "CPU time the agent used (user and system), seconds",
            self.cpu_seconds.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the agent, bytes",
            self.resident_bytes.clone(),
        );
        r
    }

    /// The series of one process (removed when it is dropped).
    pub fn target(&self, facts: &TargetFacts) -> TargetMetrics {
        self.targets.inc();
        TargetMetrics {
            labels: ProcessLabels {
                pid: facts.pid,
                service: facts.service.clone(),
            },
            metrics: self.clone(),
            states: Vec::new(),
            kinds: Vec::new(),
            events_seen: KindCounts::default(),
        }
    }

    fn exporter(exporter: &str) -> ExporterLabels {
        ExporterLabels {
            exporter: exporter.to_owned(),
        }
    }

    /// `exporter` delivered a profile.
    pub fn exported(&self, exporter: &str) {
        self.exported.get_or_create(&Self::exporter(exporter)).inc();
    }

    /// A delivery of `exporter` failed.
    pub fn export_failed(&self, exporter: &str) {
        self.export_failures
            .get_or_create(&Self::exporter(exporter))
            .inc();
    }

    /// `exporter` dropped a profile.
    pub fn export_dropped(&self, exporter: &str) {
        self.export_dropped
            .get_or_create(&Self::exporter(exporter))
            .inc();
    }

    /// Reads the agent's own CPU time and resident memory into their metrics.
    fn update_self(&self) {
        if let Some(usage) = SelfUsage::now() {
            let delta = usage.cpu_seconds - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.resident_bytes
                .set(i64::try_from(usage.resident_bytes).unwrap_or(i64::MAX));
        }
    }
}

/// One process's series.
pub struct TargetMetrics {
    labels: ProcessLabels,
    metrics: Metrics,
    /// States and finding kinds with a series (each reads 0 while absent).
    states: Vec<GoroutineState>,
    kinds: Vec<String>,
    /// The runtime-event counts already added to the counters.
    events_seen: KindCounts,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl TargetMetrics {
    fn state_labels(&self, state: GoroutineState) -> StateLabels {
        StateLabels {
            pid: self.labels.pid,
            service: self.labels.service.clone(),
            state: state.name().to_owned(),
        }
    }

    fn kind_labels(&self, kind: &str) -> KindLabels {
        KindLabels {
            pid: self.labels.pid,
            service: self.labels.service.clone(),
            kind: kind.to_owned(),
        }
    }

    /// An interval ended with `facts`; `lost` samples were lost during it. `dump_findings`
    /// are what the goroutine read found (pile-ups of waiting goroutines, never on CPU).
    pub fn interval(&mut self, facts: &IntervalFacts, lost: u64, dump_findings: &[(&str, u64)]) {
        let m = &self.metrics;
        m.samples.get_or_create(&self.labels).inc_by(facts.samples);
        m.lost_samples.get_or_create(&self.labels).inc_by(lost);
        m.deepest_stack_frames
            .get_or_create(&self.labels)
            .set(gauge_value(facts.deepest_frames));
        if let Some(bytes) = facts.max_stack_bytes {
            m.max_stack_bytes
                .get_or_create(&self.labels)
                .set(gauge_value(bytes));
        }
        // A kind found by both the profile and the goroutine read counts once, at its larger.
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for (kind, n) in facts
            .findings
            .iter()
            .map(|(k, n)| (*k, *n))
            .chain(dump_findings.iter().copied())
        {
            let e = kinds.entry(kind.to_owned()).or_default();
            *e = (*e).max(n);
        }
        for kind in kinds.keys() {
            if !self.kinds.contains(kind) {
                self.kinds.push(kind.clone());
            }
        }
        // A kind seen before and absent now reads 0 (its series stays until the target goes).
        for kind in &self.kinds {
            let n = kinds.get(kind).copied().unwrap_or(0);
            m.findings
                .get_or_create(&self.kind_labels(kind))
                .set(gauge_value(n));
        }
    }

    /// The run's runtime-event counts since its start (cumulative): what is new since the
    /// last call goes into the counters.
    pub fn runtime_events(&mut self, counts: &KindCounts) {
        let m = &self.metrics;
        m.goroutines_created.get_or_create(&self.labels).inc_by(
            counts
                .goroutine_create
                .saturating_sub(self.events_seen.goroutine_create),
        );
        m.stack_growths.get_or_create(&self.labels).inc_by(
            counts
                .stack_growth
                .saturating_sub(self.events_seen.stack_growth),
        );
        self.events_seen = *counts;
    }

    /// The target's stack limit now.
    pub fn stack_limit(&self, bytes: Option<u64>) {
        if let Some(b) = bytes {
            self.metrics
                .stack_limit_bytes
                .get_or_create(&self.labels)
                .set(gauge_value(b));
        }
    }

    /// Reads every goroutine's state from the target's memory (as `dump` does) into the
    /// goroutine gauges; returns the kinds of what the read found (pile-ups). Nothing when the
    /// target is not a Go program or is gone.
    pub fn read_goroutines(&mut self) -> Vec<(&'static str, u64)> {
        let Ok(d) = dump::dump(dump::DumpOptions {
            pid: self.labels.pid,
        }) else {
            return Vec::new();
        };
        let mut by_state: BTreeMap<GoroutineState, u64> = BTreeMap::new();
        for g in d.goroutines.iter().filter(|g| !g.system) {
            *by_state.entry(g.state).or_default() += 1;
        }
        for state in by_state.keys() {
            if !self.states.contains(state) {
                self.states.push(*state);
            }
        }
        for state in &self.states {
            let n = by_state.get(state).copied().unwrap_or(0);
            self.metrics
                .goroutines
                .get_or_create(&self.state_labels(*state))
                .set(gauge_value(n));
        }
        count_kinds(d.findings.iter().map(|f| f.kind()))
    }

    /// An interval profile found the export queue full.
    pub fn dropped_profile(&self) {
        self.metrics
            .profiles_dropped
            .get_or_create(&self.labels)
            .inc();
    }
}

impl Drop for TargetMetrics {
    /// The process is no longer sampled: its series go.
    fn drop(&mut self) {
        let m = &self.metrics;
        m.targets.dec();
        for family in [
            &m.deepest_stack_frames,
            &m.max_stack_bytes,
            &m.stack_limit_bytes,
        ] {
            family.remove(&self.labels);
        }
        m.samples.remove(&self.labels);
        m.goroutines_created.remove(&self.labels);
        m.stack_growths.remove(&self.labels);
        m.lost_samples.remove(&self.labels);
        m.profiles_dropped.remove(&self.labels);
        for state in &self.states {
            m.goroutines.remove(&self.state_labels(*state));
        }
        for kind in &self.kinds {
            m.findings.remove(&self.kind_labels(kind));
        }
    }
}

/// The agent's own resource use.
#[derive(Clone, Copy, Debug)]
pub struct SelfUsage {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

impl SelfUsage {
    /// From getrusage (CPU) and `/proc/self/statm` (resident pages).
    pub fn now() -> Option<Self> {
        // SAFETY: getrusage writes one rusage into the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
            return None;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(Self {
            cpu_seconds: secs(ru.ru_utime) + secs(ru.ru_stime),
            resident_bytes: pages * u64::try_from(page).ok()?,
        })
    }
}

/// The content type of OpenMetrics text, what prometheus-client encodes.
const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Longest request head read; a scrape's is a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8192;
/// A client that has not sent its request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Error starting the endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds the metrics endpoint (before anything is attached: a bad address fails at once).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Serves `GET /metrics` on `listener` until dropped (on the current `LocalSet`).
///
/// A hand-written HTTP/1.1 responder: one path, GET only, one response per connection; an
/// HTTP server crate (hyper and its stack) would be most of the agent's dependencies for it.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let registry = Rc::new(metrics.registry());
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let (registry, metrics) = (registry.clone(), metrics.clone());
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(conn, &registry, &metrics)).await;
        });
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Index,
    NotFound,
    BadMethod,
}

fn route(head: &str) -> Route {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Route::Metrics,
        ("GET" | "HEAD", "/") => Route::Index,
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::BadMethod,
    }
}

async fn respond(
    mut conn: TcpStream,
    registry: &Registry,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_BYTES {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let (status, content_type, body) = match route(&head) {
        Route::Metrics => {
            metrics.update_self();
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, registry)
                .map_err(std::io::Error::other)?;
            ("200 OK", OPENMETRICS_TYPE, body)
        }
        Route::Index => (
            "200 OK",
            "text/plain; charset=utf-8",
            "stacksampler agent: metrics at /metrics\n".to_owned(),
        ),
        Route::NotFound => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        Route::BadMethod => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let head_only = head.starts_with("HEAD ");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if head_only { "" } else { body.as_str() }
    );
    conn.write_all(response.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(m: &Metrics) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &m.registry()).unwrap();
        s
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.0\r\n\r\n"), Route::Index);
        assert_eq!(route("GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
    }

    #[test]
    fn a_process_series_follow_intervals_and_go_with_it() {
        let m = Metrics::default();
        let mut t = m.target(&TargetFacts::example(42));
        let facts = IntervalFacts {
            samples: 10,
            deepest_frames: 3005,
            max_stack_bytes: Some(96_000),
            findings: vec![("runaway_recursion", 1)],
        };
        t.interval(&facts, 2, &[("pileup", 1)]);
        t.interval(
            &IntervalFacts {
                samples: 5,
                ..facts.clone()
            },
            0,
            &[],
        );
        t.stack_limit(Some(1 << 20));
        // Cumulative counts at two ticks: the counters hold the latest totals, not their sum.
        let mut counts = KindCounts {
            goroutine_create: 7,
            stack_growth: 3,
            ..KindCounts::default()
        };
        t.runtime_events(&counts);
        counts.goroutine_create = 12;
        t.runtime_events(&counts);
        let text = exposition(&m);
        for line in [
            "stacksampler_goroutines_created_total{pid=\"42\",service=\"svc\"} 12",
            "stacksampler_stack_growth_total{pid=\"42\",service=\"svc\"} 3",
            "stacksampler_samples_total{pid=\"42\",service=\"svc\"} 15",
            "stacksampler_lost_samples_total{pid=\"42\",service=\"svc\"} 2",
            "stacksampler_deepest_stack_frames{pid=\"42\",service=\"svc\"} 3005",
            "stacksampler_stack_bytes{pid=\"42\",service=\"svc\"} 96000",
            "stacksampler_stack_limit_bytes{pid=\"42\",service=\"svc\"} 1048576",
            "stacksampler_findings{pid=\"42\",service=\"svc\",kind=\"runaway_recursion\"} 1",
            "stacksampler_findings{pid=\"42\",service=\"svc\",kind=\"pileup\"} 0",
            "stacksampler_targets 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        drop(t);
        let text = exposition(&m);
        assert!(!text.contains("pid=\"42\""), "{text}");
        assert!(text.contains("stacksampler_targets 0"), "{text}");
    }

    #[test]
    fn own_usage_is_read() {
        let u = SelfUsage::now().expect("own usage");
        assert!(u.resident_bytes > 0);
        assert!(u.cpu_seconds >= 0.0);
    }
}
