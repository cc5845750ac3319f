//! `[server]`: the listeners and the request limits.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{Checker, bounded};

pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_MAX_BODY: usize = 64 * 1024;
const DEFAULT_MAX_BUFFERED_BODY: usize = 16 << 20;

/// Listeners and request limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public listener (`/token`, `/.well-known/*`).
    pub listen: SocketAddr,
    /// The admin listener (`/livez`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest request head accepted (request line and header fields), in bytes.
    pub max_header_bytes: usize,
    /// Connections served at once, per listener.
    pub max_connections: usize,
    /// Connections served at once on the admin listener (its own slots).
    pub admin_max_connections: usize,
    /// Seconds of silence after which a connection is closed.
    pub idle_timeout_seconds: u64,
    /// Seconds from accept within which a connection must send a whole request head
    /// (and, on HTTP/1.1, each later head within this long of its first byte).
    pub header_timeout_seconds: u64,
    /// Seconds within which a request is answered, else 503.
    pub request_timeout_seconds: u64,
    /// Seconds, after a shutdown signal, during which readiness fails but both listeners
    /// still serve.
    pub drain_seconds: u64,
    /// Seconds in-flight requests get to finish once accepting has stopped.
    pub shutdown_grace_seconds: u64,
    /// Requests served at once on the public listener, over all its connections (beyond
    /// it: 503 at once).
    pub max_requests_in_flight: usize,
    /// Bytes of request bodies buffered at once, over all requests (beyond it: 503).
    pub max_buffered_body_bytes: usize,
    /// Seconds over which identical refusals from one source are aggregated in the audit
    /// stream (the first written in full, the rest counted in one summary); 0: none.
    pub audit_refusal_window_seconds: u64,
    /// Most distinct refusal keys aggregated at once; beyond, one overflow bucket.
    pub audit_refusal_max_keys: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    max_body_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    admin_max_connections: Option<usize>,
    idle_timeout_seconds: Option<u64>,
    header_timeout_seconds: Option<u64>,
    request_timeout_seconds: Option<u64>,
    drain_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
    max_requests_in_flight: Option<usize>,
    max_buffered_body_bytes: Option<usize>,
    audit_refusal_window_seconds: Option<u64>,
    audit_refusal_max_keys: Option<usize>,
}

impl RawServer {
    /// The `[server]` table with its defaults, every value within its bounds.
    pub(super) fn validate(self, cx: &mut Checker) -> Option<ServerConfig> {
        let listen = cx.check(
            "server.listen",
            parse_addr(self.listen.as_deref().unwrap_or(DEFAULT_LISTEN)),
        );
        let admin_listen = cx.check(
            "server.admin_listen",
            parse_addr(self.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN)),
        );
        let max_body_bytes = cx.check(
            "server.max_body_bytes",
            bounded(self.max_body_bytes, DEFAULT_MAX_BODY, 1024, 1 << 20),
        );
        // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
        let max_header_bytes = cx.check(
            "server.max_header_bytes",
            bounded(self.max_header_bytes, 16 * 1024, 8 * 1024, 1 << 20),
        );
        let max_connections = cx.check(
            "server.max_connections",
            bounded(self.max_connections, 1024, 1, 1_000_000),
        );
        let admin_max_connections = cx.check(
            "server.admin_max_connections",
            bounded(self.admin_max_connections, 64, 1, 100_000),
        );
        let header_timeout_seconds = cx.check(
            "server.header_timeout_seconds",
            bounded(self.header_timeout_seconds, 5, 1, 300),
        );
        let idle_timeout_seconds = cx.check(
            "server.idle_timeout_seconds",
            bounded(self.idle_timeout_seconds, 60, 1, 3600),
        );
        let request_timeout_seconds = cx.check(
            "server.request_timeout_seconds",
            bounded(self.request_timeout_seconds, 30, 1, 300),
        );
        let drain_seconds = cx.check(
            "server.drain_seconds",
            bounded(self.drain_seconds, 5, 0, 300),
        );
        let shutdown_grace_seconds = cx.check(
            "server.shutdown_grace_seconds",
            bounded(self.shutdown_grace_seconds, 10, 0, 300),
        );
        let max_requests_in_flight = cx.check(
            "server.max_requests_in_flight",
            bounded(self.max_requests_in_flight, 256, 1, 100_000),
        );
        let max_buffered_body_bytes = cx.check(
            "server.max_buffered_body_bytes",
            buffered_body_budget(self.max_buffered_body_bytes, max_body_bytes),
        );
        let audit_refusal_window_seconds = cx.check(
            "server.audit_refusal_window_seconds",
            bounded(self.audit_refusal_window_seconds, 5, 0, 300),
        );
        let audit_refusal_max_keys = cx.check(
            "server.audit_refusal_max_keys",
            bounded(self.audit_refusal_max_keys, 1024, 1, 1_000_000),
        );
        Some(ServerConfig {
            listen: listen?,
            admin_listen: admin_listen?,
            max_body_bytes: max_body_bytes?,
            max_header_bytes: max_header_bytes?,
            max_connections: max_connections?,
            admin_max_connections: admin_max_connections?,
            idle_timeout_seconds: idle_timeout_seconds?,
            header_timeout_seconds: header_timeout_seconds?,
            request_timeout_seconds: request_timeout_seconds?,
            drain_seconds: drain_seconds?,
            shutdown_grace_seconds: shutdown_grace_seconds?,
            max_requests_in_flight: max_requests_in_flight?,
            max_buffered_body_bytes: max_buffered_body_bytes?,
            audit_refusal_window_seconds: audit_refusal_window_seconds?,
            audit_refusal_max_keys: audit_refusal_max_keys?,
        })
    }
}

/// `server.max_buffered_body_bytes`: within its bounds, and room for at least one body of
/// the largest size (`max_body`, when that field is valid).
fn buffered_body_budget(value: Option<usize>, max_body: Option<usize>) -> Result<usize, String> {
    let budget = bounded(value, DEFAULT_MAX_BUFFERED_BODY, 64 * 1024, 1 << 30)?;
    match max_body {
        Some(body) if budget < body => {
            Err(format!("must be at least server.max_body_bytes ({body})"))
        }
        _ => Ok(budget),
    }
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an address:port (e.g. 127.0.0.1:8080)"))
}
