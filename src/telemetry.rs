//! Logging set-up, two streams:
//!
//! - the service log: `tracing` events to stderr as text or JSON (`--log-format`),
//!   filtered by `RUST_LOG` (default `info`);
//! - the audit log: the events of the `audit` target (one per exchange, see `audit`),
//!   always one flat JSON object per line on stdout, whatever `RUST_LOG` says, so a
//!   collector can keep them apart from the service log and parse them.
//!
//! Fields never carry a token or secret.

use tracing_subscriber::filter::{FilterExt as _, Targets};
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

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let not_audit = Targets::new()
        .with_target(AUDIT_TARGET, tracing::level_filters::LevelFilter::OFF)
        .with_default(tracing::level_filters::LevelFilter::TRACE);
    let service_filter = filter.and(not_audit);
    // Colour only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let service = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let service = match format {
        LogFormat::Text => service.with_filter(service_filter).boxed(),
        LogFormat::Json => service.json().with_filter(service_filter).boxed(),
    };
    let audit = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_writer(std::io::stdout)
        .with_filter(Targets::new().with_target(AUDIT_TARGET, tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(service)
        .with(audit)
        .try_init();
}
