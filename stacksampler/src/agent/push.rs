//! Pushing each interval's profile to an HTTP backend (`--pyroscope`, `--otlp`).
//!
//! Each backend has a bounded queue of its own: a slow or failing server never delays
//! sampling; what does not fit is dropped and counted. A failed push is retried with
//! exponential backoff, then dropped; the agent says once when a server starts failing and
//! once when it recovers. The HTTP/1.1 client is hand-written (one POST, `Connection: close`,
//! plain HTTP to a collector on the host's network): the agent needs nothing more, and a client
//! crate would bring a second async runtime stack.

use std::{cell::Cell, rc::Rc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
};

use super::{AgentNotice, interval::IntervalProfile, metrics::Metrics};

/// Profiles waiting for one server, at most.
pub const QUEUE: usize = 32;
/// Tries per profile before it is dropped.
const ATTEMPTS: u32 = 4;
/// First wait between tries (doubled each time, at most [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// One request's time limit (connect, send, status line).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A server: `http://HOST:PORT[/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `HOST:PORT` to connect to.
    pub authority: String,
    /// Path before the backend's own path, without a trailing `/`.
    pub prefix: String,
}

impl std::str::FromStr for HttpUrl {
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

/// This host's name (the `host` label), `unknown` when unreadable.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// One POST a backend makes of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request target (path and query).
    pub path: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// A server the agent pushes profiles to.
pub trait Backend {
    /// The exporter's name in metrics and warnings.
    const EXPORTER: &'static str;
    /// `HOST:PORT` to connect to.
    fn authority(&self) -> &str;
    /// The request for `profile`; an error drops the profile (said once, counted).
    fn request(&self, profile: &IntervalProfile) -> Result<Request, String>;
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

/// One POST of `request` to `authority`; Ok on a 2xx answer.
async fn post(authority: &str, request: &Request) -> Result<(), PushError> {
    let exchange = async {
        let mut conn = TcpStream::connect(authority).await?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: stacksampler\r\n\
             Content-Type: {}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            request.path,
            request.content_type,
            request.body.len()
        );
        conn.write_all(head.as_bytes()).await?;
        conn.write_all(&request.body).await?;
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

/// Whether the server failed last time, to say each change once.
struct Health<'a, B: Backend> {
    backend: &'a B,
    notices: &'a mpsc::UnboundedSender<AgentNotice>,
    failing: bool,
}

impl<B: Backend> Health<'_, B> {
    fn ok(&mut self) {
        if self.failing {
            self.failing = false;
            let _ = self.notices.send(AgentNotice::Warning(format!(
                "{} at {} accepts profiles again",
                B::EXPORTER,
                self.backend.authority()
            )));
        }
    }

    fn failed(&mut self, error: &dyn std::fmt::Display) {
        if !self.failing {
            self.failing = true;
            let _ = self.notices.send(AgentNotice::Warning(format!(
                "{} at {}: {error}; retrying with backoff, dropping what does not fit",
                B::EXPORTER,
                self.backend.authority()
            )));
        }
    }
}

/// Pushes queued profiles until the queue closes. Once `stopping` is set a failed push is not
/// retried (the agent is stopping: the rest is tried once each).
pub async fn push_all<B: Backend>(
    backend: B,
    mut queue: mpsc::Receiver<IntervalProfile>,
    metrics: Metrics,
    notices: mpsc::UnboundedSender<AgentNotice>,
    stopping: Rc<Cell<bool>>,
) {
    let mut health = Health {
        backend: &backend,
        notices: &notices,
        failing: false,
    };
    while let Some(profile) = queue.recv().await {
        let request = match backend.request(&profile) {
            Ok(r) => r,
            Err(e) => {
                metrics.export_failed(B::EXPORTER);
                metrics.export_dropped(B::EXPORTER);
                let _ = notices.send(AgentNotice::Warning(format!(
                    "{}: pid {}: {e}; profile dropped",
                    B::EXPORTER,
                    profile.pid
                )));
                continue;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match post(backend.authority(), &request).await {
                Ok(()) => {
                    metrics.exported(B::EXPORTER);
                    health.ok();
                    break;
                }
                Err(e) => {
                    metrics.export_failed(B::EXPORTER);
                    health.failed(&e);
                    if attempt == ATTEMPTS || stopping.get() {
                        metrics.export_dropped(B::EXPORTER);
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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
        let u: HttpUrl = "http://127.0.0.1:4040".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.prefix.as_str()),
            ("127.0.0.1:4040", "")
        );
        let u: HttpUrl = "http://pyro/base/".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.prefix.as_str()),
            ("pyro:80", "/base")
        );
        assert!("https://x".parse::<HttpUrl>().is_err());
        assert!("http://".parse::<HttpUrl>().is_err());
    }
}
