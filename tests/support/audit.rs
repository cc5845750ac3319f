//! Reading the server's audit records in tests. The client only sees an OAuth code and a
//! fixed description, which several checks share (`invalid_request` covers a dozen
//! refusals); the audit record names the exact check (`stage` and `reason`). Tests that
//! call [`capture`] before starting an STS can look a refusal's record up by the answer's
//! `x-request-id` and so prove a row was refused for the reason it names.
//!
//! The capture is a process-wide tracing subscriber (one per test binary), keeping the
//! `audit` target and the warnings of `gleipnir::upstream` (for tests of what an upstream
//! failure logs, [`warnings`]), as JSON lines in memory.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// A log writer into shared memory, for tests that read what was logged.
#[derive(Clone)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing audit records in this process. Idempotent; call it before starting
/// the STS whose records a test reads.
pub fn capture() {
    LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(move || Sink(Arc::clone(&sink)))
            .with_filter(
                Targets::new()
                    .with_target("audit", tracing::Level::INFO)
                    .with_target("gleipnir::upstream", tracing::Level::WARN),
            );
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .expect("no other global tracing subscriber in this test binary");
        lines
    });
}

/// Every event captured so far, as JSON.
fn events() -> Vec<Value> {
    let lines = LINES
        .get()
        .expect("support::audit::capture() must run before the STS starts");
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

/// The fields of the audit record of request `request_id`, if one was written.
pub fn record(request_id: &str) -> Option<Value> {
    events()
        .into_iter()
        .map(|event| event["fields"].clone())
        .find(|fields| fields["request_id"] == request_id)
}

/// `stage/reason` of a refused request (e.g. `policy/may_act_mismatch`), if it was audited.
pub fn refusal(request_id: &str) -> Option<String> {
    let fields = record(request_id)?;
    if fields["decision"] != "refused" {
        return Some(format!("not refused: {fields}"));
    }
    Some(format!(
        "{}/{}",
        fields["stage"].as_str().unwrap_or("?"),
        fields["reason"].as_str().unwrap_or("?")
    ))
}

/// The fields of every captured `gleipnir::upstream` warning with a field whose value
/// contains `needle` (a URL, say, to tell one test's issuer from another's).
pub fn warnings(needle: &str) -> Vec<Value> {
    events()
        .into_iter()
        .filter(|event| event["level"] == "WARN")
        .map(|event| event["fields"].clone())
        .filter(|fields| {
            fields.as_object().is_some_and(|f| {
                f.values()
                    .any(|v| v.as_str().is_some_and(|v| v.contains(needle)))
            })
        })
        .collect()
}
