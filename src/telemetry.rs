//! Logging set-up, two streams:
//!
//! - the service log: `tracing` events to stderr as text or JSON (`--log-format`),
//!   filtered by `RUST_LOG` (default `info`);
//! - the audit log: the events of the `audit` target (one per exchange, see `audit`),
//!   always one flat JSON object per line on stdout, whatever `RUST_LOG` says, so a
//!   collector can keep them apart from the service log and parse them (written by
//!   [`audit_line`], straight from the event's fields).
//!
//! Neither stream is written from a tokio worker: each has a bounded queue and a std
//! thread that does the blocking writes (`queue`), so a stalled reader (a full pipe, a
//! stuck log shipper) never stops the probes or any other request. When a queue is full,
//! service-log lines and refusal records are dropped, counted
//! (`gleipnir_log_records_dropped_total{stream}`) and reported by one line once writing
//! resumes; the record of a granted exchange is never dropped: the exchange waits for
//! room ([`audit_slot`]) within the request timeout.
//!
//! With `[telemetry.otlp]`, a third destination: the spans of [`SPAN_TARGET`] (one per
//! request on the public listener, one per pipeline stage, one per upstream call) are
//! exported as OpenTelemetry traces ([`otlp`]); the W3C trace context is read from
//! requests and sent on upstream calls ([`propagation`]). Without it no layer wants those
//! spans: each costs the check of a cached "never" at its call site, nothing is
//! recorded, and the service log never shows them either way.
//!
//! Fields never carry a token or secret.

mod audit_line;
pub mod otlp;
pub mod propagation;
mod queue;

use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::filter::{FilterExt as _, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The tracing target of audit records.
pub const AUDIT_TARGET: &str = "audit";

/// The tracing target of the spans exported as traces, and of nothing else.
pub const SPAN_TARGET: &str = "gleipnir::span";

pub use queue::Slot;

// The queues absorb a reader's hiccups; beyond them a stalled reader costs lines, not
// memory. A line is at most a few KiB (a refusal record about 300-700 B).
/// Ordinary (refused) audit records held while stdout is not read.
const AUDIT_QUEUE_LINES: usize = 2048;
/// Granted audit records held while stdout is not read; past them, exchanges wait.
const AUDIT_GRANTED_LINES: usize = 4096;
/// Service-log lines held while stderr is not read.
const SERVICE_QUEUE_LINES: usize = 2048;
/// How long the process waits at exit for the queued lines to be written.
const EXIT_FLUSH: Duration = Duration::from_secs(2);

static AUDIT: OnceLock<queue::LineQueue> = OnceLock::new();
static SERVICE: OnceLock<queue::LineQueue> = OnceLock::new();

/// Room in the audit stream for the record of a granted exchange, waited for without
/// blocking a thread; the caller writes the record with [`Slot::write`]. Without the
/// queues installed (tests and tools that log elsewhere) there is nothing to wait for.
pub async fn audit_slot() -> Slot {
    match AUDIT.get() {
        Some(queue) => queue.reserve().await,
        None => Slot::unqueued(),
    }
}

/// Lines dropped per stream since start because its reader stalled (for `/metrics`).
pub fn dropped() -> [(&'static str, u64); 2] {
    let count = |q: &OnceLock<queue::LineQueue>| q.get().map_or(0, queue::LineQueue::dropped);
    [("audit", count(&AUDIT)), ("service", count(&SERVICE))]
}

/// Held by `main`: dropping it writes out what is queued (within a bound), so the last
/// lines of a command are not lost at exit.
#[must_use = "dropping it at once would flush nothing at exit"]
#[derive(Debug)]
pub struct Flush(Option<otlp::Traces>);

impl Flush {
    /// Exports the spans still queued, within a bound, and stops trace export; call while
    /// the runtime the exporter runs on is still up (dropping the guard does it too).
    pub fn shutdown_traces(&mut self) {
        if let Some(traces) = self.0.take() {
            traces.shutdown();
        }
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shutdown_traces();
        for queue in [AUDIT.get(), SERVICE.get()].into_iter().flatten() {
            queue.flush(EXIT_FLUSH);
        }
    }
}

/// Starts the writer thread of `queue`, onto `out`; the writer the layer uses is the
/// queue, or, if no thread can be started, `fallback` written directly.
fn queued<W, F>(
    slot: &'static OnceLock<queue::LineQueue>,
    make: impl FnOnce() -> queue::LineQueue,
    out: F,
) -> BoxMakeWriter
where
    W: std::io::Write + 'static,
    F: Fn() -> W + Send + Sync + Clone + 'static,
{
    let queue = slot.get_or_init(make);
    let writer = out.clone();
    let started = std::thread::Builder::new()
        .name(format!("gleipnir-{}-log", queue.stream()))
        .spawn(move || queue.run(writer, report_dropped));
    match started {
        Ok(_) => BoxMakeWriter::new(queue::QueueWriter(queue)),
        Err(e) => {
            eprintln!(
                "warning: no {} log writer thread ({e}): writing directly",
                queue.stream()
            );
            BoxMakeWriter::new(out)
        }
    }
}

/// One line, once writing resumes, saying how many lines a stalled reader cost. The
/// audit stream's own consumers learn of the gap in it, and the service log says it too.
fn report_dropped(stream: &str, dropped: u64) {
    if stream == "audit" {
        tracing::warn!(
            target: AUDIT_TARGET,
            stream,
            dropped,
            "audit records dropped while stdout was not read (refusals only, never a grant)"
        );
    }
    tracing::warn!(
        stream,
        dropped,
        "log lines dropped while the output was not read"
    );
}

/// Installs the global subscriber and starts the two writer threads. Call once per
/// process, and keep the returned guard until exit.
pub fn init(format: LogFormat) -> Flush {
    let installed = init_with_traces(format, None, "-");
    installed.unwrap_or(Flush(None))
}

/// [`init`], and with `otlp` the export of traces to its collector, whose requests run on
/// the runtime of the handle given with it. Fails (before anything is installed) when a
/// header secret cannot be resolved or the exporter cannot be built.
pub fn init_with_traces(
    format: LogFormat,
    otlp: Option<(&crate::config::OtlpConfig, tokio::runtime::Handle)>,
    origin: &str,
) -> Result<Flush, crate::config::ConfigError> {
    let traces = match otlp {
        Some((config, runtime)) => Some(otlp::layer(config, runtime, origin)?),
        None => None,
    };
    let (layer, traces) = traces.unzip();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = Targets::new()
        .with_target(AUDIT_TARGET, tracing::level_filters::LevelFilter::OFF)
        .with_target(SPAN_TARGET, tracing::level_filters::LevelFilter::OFF)
        .with_default(tracing::level_filters::LevelFilter::TRACE);
    let service_filter = filter.and(not_audit);
    // Colour only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let service = tracing_subscriber::fmt::layer()
        .with_writer(queued(
            &SERVICE,
            || queue::LineQueue::new("service", SERVICE_QUEUE_LINES, 0),
            || std::io::BufWriter::new(std::io::stderr().lock()),
        ))
        .with_ansi(ansi);
    let service = match format {
        LogFormat::Text => service.with_filter(service_filter).boxed(),
        LogFormat::Json => service.json().with_filter(service_filter).boxed(),
    };
    let audit = audit_line::AuditLines::new(queued(
        &AUDIT,
        || queue::LineQueue::new("audit", AUDIT_QUEUE_LINES, AUDIT_GRANTED_LINES),
        || std::io::BufWriter::new(std::io::stdout().lock()),
    ))
    .with_filter(Targets::new().with_target(AUDIT_TARGET, tracing::Level::INFO));
    // An absent layer (`None`) is interested in every callsite, so unfiltered it would
    // have every span created, the request's and its stages', for nobody to read.
    let spans = match layer {
        Some(_) => Targets::new().with_target(SPAN_TARGET, tracing::Level::TRACE),
        None => Targets::new(),
    };
    let _ = tracing_subscriber::registry()
        .with(service)
        .with(audit)
        .with(layer.with_filter(spans))
        .try_init();
    Ok(Flush(traces))
}
