//! The process-wide subscriber exactly as `gleipnir serve` installs it, in a test binary
//! of its own (it is global): without a trace exporter, no span is created at all, so
//! the request's span and its stages' cost nothing beyond a check of a cached interest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gleipnir::telemetry::{self, LogFormat, SPAN_TARGET};

#[test]
fn without_a_trace_exporter_no_span_is_created() {
    let _flush = telemetry::init(LogFormat::Json);
    let stage = tracing::info_span!(target: SPAN_TARGET, "stage", otel.name = "minting");
    assert!(stage.is_disabled(), "a stage span was created: {stage:?}");
    assert!(!tracing::enabled!(target: SPAN_TARGET, tracing::Level::INFO));
    // The audit stream is still on.
    assert!(tracing::enabled!(target: "audit", tracing::Level::INFO));
}
