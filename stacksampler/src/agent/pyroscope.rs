//! `--pyroscope URL`: each interval's pprof pushed to Pyroscope's HTTP ingest,
//! `POST URL/ingest?name=<service>.cpu{host=..,pid=..}&from=&until=&format=pprof&sampleRate=`.
//! Queued, retried and counted as every push is ([`push`](super::push)).

use std::{fmt::Write as _, time::UNIX_EPOCH};

use super::{
    interval::IntervalProfile,
    push::{Backend, HttpUrl, Request},
};

/// The exporter's name in metrics.
pub const EXPORTER: &str = "pyroscope";

/// What to push and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyroscopeOptions {
    pub url: HttpUrl,
    /// The `host` label (this host's name).
    pub host: String,
    /// Samples per second, for `sampleRate`.
    pub sample_rate: u64,
}

/// Percent-encodes `s` for a query value (RFC 3986 unreserved characters stay).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The request target for `profile`.
pub fn ingest_path(opts: &PyroscopeOptions, profile: &IntervalProfile) -> String {
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let name = format!(
        "{}.cpu{{host={},pid={}}}",
        profile.service, opts.host, profile.pid
    );
    format!(
        "{}/ingest?name={}&from={}&until={}&format=pprof&sampleRate={}&spyName=stacksampler",
        opts.url.prefix,
        query_escape(&name),
        secs(profile.start),
        secs(profile.end).max(secs(profile.start) + 1),
        opts.sample_rate
    )
}

impl Backend for PyroscopeOptions {
    const EXPORTER: &'static str = EXPORTER;

    fn authority(&self) -> &str {
        &self.url.authority
    }

    fn request(&self, profile: &IntervalProfile) -> Result<Request, String> {
        Ok(Request {
            path: ingest_path(self, profile),
            content_type: "application/octet-stream",
            body: profile.pprof.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_ingest_query_names_service_host_pid_and_times() {
        let opts = PyroscopeOptions {
            url: "http://h:4040/p".parse().unwrap(),
            host: "web 1".into(),
            sample_rate: 99,
        };
        let end = UNIX_EPOCH + Duration::from_secs(1_000_015);
        let profile = IntervalProfile {
            pid: 42,
            service: "api".into(),
            start: end - Duration::from_secs(15),
            end,
            pprof: Vec::new(),
            samples: 0,
        };
        assert_eq!(
            ingest_path(&opts, &profile),
            "/p/ingest?name=api.cpu%7Bhost%3Dweb%201%2Cpid%3D42%7D&from=1000000&until=1000015\
             &format=pprof&sampleRate=99&spyName=stacksampler"
        );
    }
}
