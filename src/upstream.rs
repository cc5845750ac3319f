//! Upstream fetching, a supporting module: gleipnir's calls to the issuers it trusts
//! (JWKS, discovery metadata, introspection). It holds the one HTTP client with its
//! limits ([`client`]), a response body read within a size cap, the backoff after
//! failures, and the per-issuer key cache ([`jwks`]). Token validation uses it, and so
//! can client authentication (keys of clients and of federated assertion issuers): it
//! imports no pipeline stage. Time is our clock's, in seconds.
//!
//! Each call has its span ([`call_span`]) and carries the W3C trace context of that span
//! ([`trace_headers`]), so that an issuer that traces joins our trace; both only when
//! traces are exported (`[telemetry.otlp]`). A call a request makes (introspection, the
//! JWKS refetch an unknown `kid` forces) is part of that request's trace; the keeper's
//! routine fetches, shared by every request, start traces of their own.

pub mod jwks;

use std::time::Duration;

use crate::jose::MAX_JWKS_BYTES;

/// The HTTP client for every upstream call: no redirects (a redirect could lead a fetch
/// anywhere), connect within 2 s and the whole exchange within 5 s, rustls with aws-lc-rs.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .user_agent(concat!("gleipnir/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// [`client`], also trusting the PEM certificates of `ca_file` (a Kubernetes cluster's
/// CA, for its API server's discovery and JWKS). Read now, at start-up.
pub fn client_with_ca(ca_file: &std::path::Path) -> Result<reqwest::Client, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", ca_file.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{}: no PEM CERTIFICATE in the file",
            ca_file.display()
        ));
    }
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .user_agent(concat!("gleipnir/", env!("CARGO_PKG_VERSION")));
    for certificate in certificates {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(describe)
}

/// The span of one upstream call, a child of the current span (OpenTelemetry HTTP
/// client conventions: `url.full` without query, fragment or credentials, which may
/// hold secrets). `name` says what the call is for (`jwks_fetch`, `discovery`,
/// `introspection`); `issuer` is the configured issuer's name.
pub fn call_span(
    name: &'static str,
    issuer: &str,
    method: &'static str,
    url: &str,
) -> tracing::Span {
    tracing::info_span!(
        target: crate::telemetry::SPAN_TARGET,
        "upstream",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        url.full = %without_secrets(url),
        gleipnir.issuer = issuer,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Notes in a call's span how it ended: the status it got, or why it failed.
pub fn note_outcome(span: &tracing::Span, status: Option<u16>, error: Option<&'static str>) {
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    if let Some(error) = error {
        span.record("error.type", error)
            .record("otel.status_code", "ERROR");
    }
}

/// The trace context of the current span, as request headers (empty when traces are off).
pub fn trace_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    crate::telemetry::propagation::inject_current(&mut headers);
    headers
}

/// `url` as a span may show it: scheme, host, port and path.
fn without_secrets(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => String::new(),
    }
}

/// What went wrong in an upstream call, with every cause under it ("error sending
/// request: client error (Connect): tcp connect error: Connection refused (os error
/// 111)"): reqwest's own message alone ("error sending request") names no cause. The URL
/// is left out; callers log it beside.
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest repeat their inner error in their own message sometimes.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Longest wait between two attempts after failures, in seconds.
pub const MAX_BACKOFF: u64 = 8;

/// Why a body could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Larger than [`MAX_JWKS_BYTES`] (declared or read).
    TooLarge,
    /// The connection failed while reading.
    Transport(String),
}

/// Reads a response body, refusing more than [`MAX_JWKS_BYTES`] (by `Content-Length`
/// before reading, and while reading).
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(describe(e)))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Consecutive failures, and when the last attempt ended: wait 1, 2, 4, then 8 s.
#[derive(Debug, Default)]
pub struct Backoff {
    last_end: Option<u64>,
    failures: u32,
}

impl Backoff {
    /// Whether the last failure is too recent to try again at `now`. A clock that moved
    /// backwards ends the wait rather than stretching it.
    pub fn backing_off(&self, now: u64) -> bool {
        let delay = 1u64
            .checked_shl(self.failures.saturating_sub(1))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        self.failures > 0
            && self
                .last_end
                .is_some_and(|end| now >= end && now < end.saturating_add(delay))
    }

    /// Failed attempts since the last success (0: not failing).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the last attempt failed.
    pub fn failing(&self) -> bool {
        self.failures > 0
    }

    /// An attempt ended at `now`, successfully or not.
    pub fn ended(&mut self, now: u64, succeeded: bool) {
        self.last_end = Some(now);
        self.failures = if succeeded {
            0
        } else {
            self.failures.saturating_add(1)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_shows_no_query_fragment_or_credentials_of_a_url() {
        assert_eq!(
            without_secrets("https://user:pw@idp.example/realms/x/certs?key=s3cret#f"),
            "https://idp.example/realms/x/certs"
        );
        assert_eq!(without_secrets("not a url"), "");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_on_success() {
        const NOW: u64 = 1_900_000_000;
        for (failures, delay) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (40, 8)] {
            let mut b = Backoff::default();
            for _ in 0..failures {
                b.ended(NOW, false);
            }
            assert!(b.backing_off(NOW + delay - 1), "{failures}");
            assert!(!b.backing_off(NOW + delay), "{failures}");
            assert!(!b.backing_off(NOW - 1), "clock stepped back");
            b.ended(NOW, true);
            assert!(!b.backing_off(NOW));
        }
        assert!(!Backoff::default().backing_off(NOW));
    }
}
