//! Trace export over OTLP/HTTP with protobuf bodies (`[telemetry.otlp]`).
//!
//! - The `tracing` spans of [`SPAN_TARGET`] become OpenTelemetry
//!   spans (`tracing-opentelemetry`), ended spans go to the SDK's batch processor, whose
//!   thread encodes them and hands each batch to the OTLP exporter.
//! - The exporter sends over our own `reqwest` client (rustls on aws-lc-rs, no
//!   redirects, a connect timeout of 2 s and the whole export within `timeout_seconds`),
//!   run on the service's tokio runtime: no second HTTP or TLS stack (no tonic, no gRPC).
//! - Bounded: at most `max_queue_spans` spans wait for export. A request never waits
//!   for the collector: a span that finds the queue full is dropped and counted
//!   (`gleipnir_trace_spans_dropped_total`), and a failed export loses its batch and is
//!   counted (`gleipnir_trace_export_failures_total`). Each streak (of drops, of failed
//!   exports) is logged once, as a warning naming the endpoint and the cause; the first
//!   export that succeeds after it says so.
//! - Collector credentials (`headers`) are resolved at start-up, sent marked sensitive,
//!   never logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};

use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use super::SPAN_TARGET;
use crate::config::{ConfigError, OtlpConfig};

/// How long after a span ends it is exported at the latest (or once a batch is full).
const EXPORT_DELAY: Duration = Duration::from_secs(2);
/// Spans per export request.
const BATCH_SPANS: usize = 512;
/// Largest collector answer read (it is an `ExportTraceServiceResponse`, a few bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long the process waits at exit for the spans still queued to be exported.
const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// Export counters since start, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TraceStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the export queue was full.
    pub dropped: u64,
    /// Export requests that failed (their spans are lost).
    pub failed_exports: u64,
}

#[derive(Debug, Default)]
struct Counters {
    /// Spans handed to the batch processor and not yet exported or lost.
    pending: AtomicUsize,
    exported: AtomicU64,
    dropped: AtomicU64,
    failed_exports: AtomicU64,
    /// Whether spans are being dropped (logged once per streak).
    dropping: AtomicBool,
    /// Whether the last export failed (logged once per streak).
    failing: AtomicBool,
}

static COUNTERS: std::sync::OnceLock<Arc<Counters>> = std::sync::OnceLock::new();

/// The export counters; `None` when traces are off.
pub fn stats() -> Option<TraceStats> {
    COUNTERS.get().map(|c| TraceStats {
        exported: c.exported.load(Ordering::Relaxed),
        dropped: c.dropped.load(Ordering::Relaxed),
        failed_exports: c.failed_exports.load(Ordering::Relaxed),
    })
}

/// The tracer provider; shutting it down exports what is queued, within a bound.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports the spans still queued (at most [`EXIT_FLUSH`]) and stops the exporter.
    /// Call while the runtime given to [`layer`] still runs.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown_with_timeout(EXIT_FLUSH);
    }
}

/// The layer that turns the spans of [`SPAN_TARGET`] (and nothing else) into
/// OpenTelemetry spans exported to `config`'s collector, and the provider to shut down at
/// exit. The exporter's requests run on `runtime`. Resolves the header secrets now.
pub fn layer<S>(
    config: &OtlpConfig,
    runtime: tokio::runtime::Handle,
    origin: &str,
) -> Result<(impl Layer<S>, Traces), ConfigError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let (tracer, traces) = tracer(config, runtime, origin)?;
    // Only what the spans say: no source location, thread, target or busy/idle times,
    // and no OpenTelemetry context activation (the context travels with the span).
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(Targets::new().with_target(SPAN_TARGET, tracing::Level::TRACE));
    Ok((layer, traces))
}

/// The tracer that exports to `config`'s collector, and its provider.
fn tracer(
    config: &OtlpConfig,
    runtime: tokio::runtime::Handle,
    origin: &str,
) -> Result<(opentelemetry_sdk::trace::SdkTracer, Traces), ConfigError> {
    let client = Client::new(config, runtime, origin)?;
    let bad = |reason: String| ConfigError::new(origin, "telemetry.otlp", reason);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.as_str())
        .with_timeout(Duration::from_secs(config.timeout_seconds))
        .build()
        .map_err(|e| bad(format!("OTLP exporter: {e}")))?;
    let counters = Arc::clone(COUNTERS.get_or_init(Arc::default));
    let exporter = Counted {
        inner: exporter,
        counters: Arc::clone(&counters),
        endpoint: config.endpoint.to_string(),
    };
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue_spans)
        .with_max_export_batch_size(BATCH_SPANS.min(config.max_queue_spans))
        .with_scheduled_delay(EXPORT_DELAY)
        .build();
    let processor = Bounded {
        inner: BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build(),
        counters,
        max_queue_spans: config.max_queue_spans,
    };
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // A sampling decision the caller made (the `traceparent` flag) is followed; a trace
    // that starts here is recorded with the configured probability.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("gleipnir");
    Ok((tracer, Traces { provider }))
}

/// The batch processor, behind a counter that keeps at most `max_queue_spans` spans
/// waiting: a span beyond it is dropped here, counted, and never blocks its request.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    counters: Arc<Counters>,
    max_queue_spans: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let c = &self.counters;
        if c.pending.fetch_add(1, Ordering::AcqRel) >= self.max_queue_spans {
            c.pending.fetch_sub(1, Ordering::AcqRel);
            c.dropped.fetch_add(1, Ordering::Relaxed);
            if !c.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_queue_spans = self.max_queue_spans,
                    "trace spans dropped: the export queue is full (counted in \
                     gleipnir_trace_spans_dropped_total; logged once until an export succeeds)"
                );
            }
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it exported and what it lost.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    counters: Arc<Counters>,
    endpoint: String,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        let c = &self.counters;
        c.pending.fetch_sub(spans, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                c.exported.fetch_add(spans as u64, Ordering::Relaxed);
                c.dropping.store(false, Ordering::Relaxed);
                if c.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "trace export succeeded again");
                }
            }
            Err(error) => {
                c.failed_exports.fetch_add(1, Ordering::Relaxed);
                if !c.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        error = %error,
                        spans,
                        "trace export failed (its spans are lost; counted in \
                         gleipnir_trace_export_failures_total; logged once until an export \
                         succeeds)"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: our reqwest client, its requests run on the service's
/// runtime (the batch processor's thread only waits for them), with the configured
/// headers added to each.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    headers: http::HeaderMap,
}

/// The configured collector headers, their secrets resolved (env, file) and marked
/// sensitive; `gleipnir check` resolves them too.
pub fn headers(config: &OtlpConfig, origin: &str) -> Result<http::HeaderMap, ConfigError> {
    let mut headers = http::HeaderMap::new();
    for (name, source) in &config.headers {
        let field = format!("telemetry.otlp.headers.{name}");
        let bad = |reason: &str| ConfigError::new(origin, &field, reason);
        let secret = source.resolve().map_err(|r| bad(&r))?;
        let mut value = http::HeaderValue::from_bytes(secret.expose())
            .map_err(|_| bad("not a valid header value"))?;
        value.set_sensitive(true);
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("not a valid header name"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

impl Client {
    fn new(
        config: &OtlpConfig,
        runtime: tokio::runtime::Handle,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let headers = headers(config, origin)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(config.timeout_seconds))
            .user_agent(concat!("gleipnir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::new(origin, "telemetry.otlp", format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            runtime,
            headers,
        })
    }

    async fn send(
        http: reqwest::Client,
        request: reqwest::Request,
    ) -> Result<Response<Bytes>, HttpError> {
        let mut response = http.execute(request).await?;
        let mut answer = Response::builder().status(response.status());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err("collector answer larger than 64 KiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(headers) = answer.headers_mut() {
            *headers = std::mem::take(response.headers_mut());
        }
        Ok(answer.body(Bytes::from(body))?)
    }
}

impl HttpClient for Client {
    // The signature `#[async_trait]` gives the trait's method.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let (mut parts, body) = request.into_parts();
        for (name, value) in &self.headers {
            parts.headers.insert(name, value.clone());
        }
        let request = reqwest::Request::try_from(Request::from_parts(parts, body));
        let http = self.http.clone();
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let task = runtime.spawn(Self::send(http, request?));
            task.await?
        })
    }
}
