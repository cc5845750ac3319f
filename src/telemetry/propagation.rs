//! W3C Trace Context (`traceparent`, `tracestate`): read from an incoming request as the
//! parent of its span, written on our upstream calls (JWKS, discovery, introspection) as
//! the context of the span that makes them.
//!
//! Both do nothing while the span is disabled, i.e. whenever traces are off
//! (`[telemetry.otlp]` absent): then nothing is parsed, and no `traceparent` is sent.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Makes the trace context of `headers`, when they carry a valid one, the parent of
/// `span` (W3C Trace Context §3.2: an invalid `traceparent` is ignored, and the span
/// starts a trace of its own). Call before the span is first entered.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
}

/// Adds the current span's trace context to `headers` (`traceparent`, and `tracestate`
/// when the trace carries one), so the upstream's own traces join ours.
pub fn inject_current(headers: &mut http::HeaderMap) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}
