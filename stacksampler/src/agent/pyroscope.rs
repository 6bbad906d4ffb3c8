//! `--pyroscope URL`: each interval's pprof pushed to Pyroscope's HTTP ingest,
//! `POST URL/ingest?name=<service>.cpu{host=..,pid=..}&from=&until=&format=pprof&sampleRate=`.
//!
//! Profiles wait in a bounded queue of their own: a slow or failing server never delays
//! sampling; what does not fit is dropped and counted. A failed push is retried with
//! exponential backoff, then dropped; the agent says once when the server starts failing and
//! once when it recovers.

use std::{
    cell::Cell,
    fmt::Write as _,
    rc::Rc,
    time::{Duration, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
};

use super::{AgentNotice, interval::IntervalProfile, metrics::Metrics};

/// Profiles waiting for the server, at most.
pub const QUEUE: usize = 32;
/// Tries per profile before it is dropped.
const ATTEMPTS: u32 = 4;
/// First wait between tries (doubled each time, at most [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// One request's time limit (connect, send, status line).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The exporter's name in metrics.
pub const EXPORTER: &str = "pyroscope";

/// A Pyroscope server: `http://HOST:PORT[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyroscopeUrl {
    /// `HOST:PORT` to connect to.
    pub authority: String,
    /// Path before `/ingest`, without a trailing `/`.
    pub prefix: String,
}

impl std::str::FromStr for PyroscopeUrl {
    type Err = String;

    /// Plain HTTP only (a collector or the server on the host's network).
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("{s:?}: only http:// URLs are supported"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let prefix = path.trim_end_matches('/');
        Ok(Self {
            authority,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
        })
    }
}

/// What to push and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyroscopeOptions {
    pub url: PyroscopeUrl,
    /// The `host` label (this host's name).
    pub host: String,
    /// Samples per second, for `sampleRate`.
    pub sample_rate: u64,
}

/// This host's name (the `host` label), `unknown` when unreadable.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
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

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("answered {0}")]
    Status(String),
}

/// One POST of `body` to `path`; Ok on a 2xx answer.
async fn post(authority: &str, path: &str, body: &[u8]) -> Result<(), PushError> {
    let exchange = async {
        let mut conn = TcpStream::connect(authority).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: stacksampler\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(body).await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 512];
        // The status line is enough.
        while !answer.contains(&b'\n') {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&answer);
        let status = line.lines().next().unwrap_or("").to_owned();
        match status.split_whitespace().nth(1) {
            Some(code) if code.starts_with('2') => Ok(()),
            _ => Err(PushError::Status(if status.is_empty() {
                "nothing".into()
            } else {
                status
            })),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| PushError::Timeout)?
}

/// Pushes queued profiles until the queue closes. Once `stopping` is set a failed push is not
/// retried (the agent is stopping: the rest is tried once each).
pub async fn push_all(
    opts: PyroscopeOptions,
    mut queue: mpsc::Receiver<IntervalProfile>,
    metrics: Metrics,
    notices: mpsc::UnboundedSender<AgentNotice>,
    stopping: Rc<Cell<bool>>,
) {
    let mut failing = false;
    while let Some(profile) = queue.recv().await {
        let path = ingest_path(&opts, &profile);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match post(&opts.url.authority, &path, &profile.pprof).await {
                Ok(()) => {
                    metrics.exported(EXPORTER);
                    if failing {
                        failing = false;
                        let _ = notices.send(AgentNotice::Warning(format!(
                            "pyroscope at {} accepts profiles again",
                            opts.url.authority
                        )));
                    }
                    break;
                }
                Err(e) => {
                    metrics.export_failed(EXPORTER);
                    if !failing {
                        failing = true;
                        let _ = notices.send(AgentNotice::Warning(format!(
                            "pyroscope at {}: {e}; retrying with backoff, dropping what does not fit",
                            opts.url.authority
                        )));
                    }
                    if attempt == ATTEMPTS || stopping.get() {
                        metrics.export_dropped(EXPORTER);
                        break;
                    } else {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_authority_and_prefix() {
        let u: PyroscopeUrl = "http://127.0.0.1:4040".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.prefix.as_str()),
            ("127.0.0.1:4040", "")
        );
        let u: PyroscopeUrl = "http://pyro/base/".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.prefix.as_str()),
            ("pyro:80", "/base")
        );
        assert!("https://x".parse::<PyroscopeUrl>().is_err());
        assert!("http://".parse::<PyroscopeUrl>().is_err());
    }

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
