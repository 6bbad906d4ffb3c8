//! `--otlp URL`: each interval's profile pushed to an OpenTelemetry Collector (or any OTLP/HTTP
//! profiles receiver) as `POST URL/v1development/profiles`, `Content-Type:
//! application/x-protobuf`, the body an `ExportProfilesServiceRequest` made from the interval's
//! pprof ([`crate::otlp`]). Queued, retried and counted as every push is
//! ([`push`](super::push)).

use std::io::Read as _;

use flate2::read::GzDecoder;
use prost::Message as _;

use crate::{
    otlp::{self, ProcessResource},
    report::pprof::proto as pprof,
};

use super::{
    interval::IntervalProfile,
    push::{Backend, HttpUrl, Request},
};

/// The exporter's name in metrics.
pub const EXPORTER: &str = "otlp";
/// The OTLP/HTTP path of the profiles signal (still `v1development`).
pub const PROFILES_PATH: &str = "/v1development/profiles";

/// Where to push and the resource's host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpOptions {
    pub url: HttpUrl,
    /// The `host.name` resource attribute.
    pub host: String,
}

/// The export request body of `profile` (its gzipped pprof, converted).
pub fn request_body(opts: &OtlpOptions, profile: &IntervalProfile) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    GzDecoder::new(profile.pprof.as_slice())
        .read_to_end(&mut raw)
        .map_err(|e| format!("reading the interval's pprof: {e}"))?;
    let pprof = pprof::Profile::decode(raw.as_slice())
        .map_err(|e| format!("decoding the interval's pprof: {e}"))?;
    let process = ProcessResource {
        service: profile.service.clone(),
        pid: profile.pid,
        host: opts.host.clone(),
    };
    let request = otlp::export_request(&pprof, &process).map_err(|e| e.to_string())?;
    Ok(request.encode_to_vec())
}

impl Backend for OtlpOptions {
    const EXPORTER: &'static str = EXPORTER;

    fn authority(&self) -> &str {
        &self.url.authority
    }

    fn request(&self, profile: &IntervalProfile) -> Result<Request, String> {
        Ok(Request {
            path: format!("{}{PROFILES_PATH}", self.url.prefix),
            content_type: "application/x-protobuf",
            body: request_body(self, profile)?,
        })
    }
}
