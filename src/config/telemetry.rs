//! `[telemetry.otlp]`: where traces are exported, if anywhere. Without the table nothing
//! is exported and no span is recorded (see `telemetry`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Checker;
use super::secret::{RawSecret, SecretSource};

/// The only protocol built: OTLP over HTTP with protobuf bodies.
pub const OTLP_HTTP_PROTOBUF: &str = "http/protobuf";
const DEFAULT_SERVICE_NAME: &str = "gleipnir";
const DEFAULT_TIMEOUT: u64 = 10;
const DEFAULT_QUEUE: usize = 2048;
/// Headers the exporter sets itself, or that would change how the body is read.
const RESERVED_HEADERS: [&str; 7] = [
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "host",
    "traceparent",
];

/// The `[telemetry]` table.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// Trace export over OTLP; `None`: traces are off.
    pub otlp: Option<OtlpConfig>,
}

/// `[telemetry.otlp]`: trace export to an OpenTelemetry collector.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The OTLP/HTTP traces URL (`…/v1/traces`).
    pub endpoint: reqwest::Url,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of traces recorded when the request carries no sampling decision.
    pub sampling_ratio: f64,
    /// Extra request headers (collector credentials), by lower-case name; resolved at
    /// start-up, never logged.
    pub headers: Vec<(String, SecretSource)>,
    /// Longest one export may take, retries included, in seconds.
    pub timeout_seconds: u64,
    /// Most spans held for export at once; beyond it spans are dropped and counted.
    pub max_queue_spans: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    otlp: Option<RawOtlp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlp {
    endpoint: String,
    protocol: Option<String>,
    service_name: Option<String>,
    sampling_ratio: Option<f64>,
    #[serde(default)]
    headers: BTreeMap<String, RawSecret>,
    timeout_seconds: Option<u64>,
    max_queue_spans: Option<usize>,
}

impl RawTelemetry {
    /// The `[telemetry]` table, every value checked.
    pub(super) fn validate(self, cx: &mut Checker) -> Option<TelemetryConfig> {
        match self.otlp {
            None => Some(TelemetryConfig::default()),
            Some(otlp) => otlp
                .validate(cx)
                .map(|otlp| TelemetryConfig { otlp: Some(otlp) }),
        }
    }
}

impl RawOtlp {
    fn validate(self, cx: &mut Checker) -> Option<OtlpConfig> {
        let endpoint = cx.check("telemetry.otlp.endpoint", traces_url(&self.endpoint));
        let protocol = self.protocol.as_deref().unwrap_or(OTLP_HTTP_PROTOBUF);
        if protocol != OTLP_HTTP_PROTOBUF {
            cx.error(
                "telemetry.otlp.protocol",
                "only \"http/protobuf\" is built (not grpc or http/json)",
            );
        }
        let service_name = self
            .service_name
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
        let service_name = cx.check(
            "telemetry.otlp.service_name",
            match service_name.len() {
                1..=255 if !service_name.chars().any(char::is_control) => Ok(service_name),
                _ => Err("1 to 255 characters, no control characters".into()),
            },
        );
        let ratio = self.sampling_ratio.unwrap_or(1.0);
        let sampling_ratio = cx.check(
            "telemetry.otlp.sampling_ratio",
            match (0.0..=1.0).contains(&ratio) {
                true => Ok(ratio),
                false => Err("must be between 0.0 and 1.0".into()),
            },
        );
        let mut headers = Vec::new();
        for (name, secret) in self.headers {
            let field = format!("telemetry.otlp.headers.{name}");
            let name = cx.check(&field, header_name(name));
            let source = cx.check(&field, secret.validate(cx.base));
            headers.extend(name.zip(source));
        }
        let timeout_seconds = cx.check(
            "telemetry.otlp.timeout_seconds",
            super::bounded(self.timeout_seconds, DEFAULT_TIMEOUT, 1, 60),
        );
        let max_queue_spans = cx.check(
            "telemetry.otlp.max_queue_spans",
            super::bounded(self.max_queue_spans, DEFAULT_QUEUE, 64, 65_536),
        );
        Some(OtlpConfig {
            endpoint: endpoint?,
            service_name: service_name?,
            sampling_ratio: sampling_ratio?,
            headers,
            timeout_seconds: timeout_seconds?,
            max_queue_spans: max_queue_spans?,
        })
        .filter(|_| protocol == OTLP_HTTP_PROTOBUF)
    }
}

/// An http(s) URL without credentials, query or fragment. A URL with no path is the
/// collector's base URL and gets the OTLP/HTTP traces path `/v1/traces`, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` does; any other path is used as written.
fn traces_url(value: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (use headers)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if url.path() == "/" {
        url.set_path("/v1/traces");
    }
    Ok(url)
}

fn header_name(name: String) -> Result<String, String> {
    let name = name.to_ascii_lowercase();
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err("not a valid header name".into());
    }
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err("set by the exporter itself".into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_gets_the_traces_path_and_others_are_kept() {
        let url = |v: &str| traces_url(v).map(|u| u.to_string());
        assert_eq!(
            url("http://collector:4318").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            url("https://otel.example/custom/traces").unwrap(),
            "https://otel.example/custom/traces"
        );
        assert!(url("grpc://collector:4317").is_err());
        assert!(url("http://user:pw@collector:4318").is_err());
        assert!(url("http://collector:4318/v1/traces?x=1").is_err());
        assert!(url("collector:4318").is_err());
    }

    #[test]
    fn header_names_are_checked_and_reserved_ones_refused() {
        assert_eq!(
            header_name("Authorization".into()).unwrap(),
            "authorization"
        );
        assert!(header_name("bad name".into()).is_err());
        assert!(header_name("Content-Type".into()).is_err());
        assert!(header_name("traceparent".into()).is_err());
    }
}
