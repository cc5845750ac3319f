//! `[server]`: the listeners and the request limits.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, Source, bounded};

pub(super) const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Listeners and request limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public listener (`/token`, `/.well-known/*`).
    pub listen: SocketAddr,
    /// The admin listener (`/livez`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Connections served at once, per listener.
    pub max_connections: usize,
    /// Seconds of silence after which a connection is closed.
    pub idle_timeout_seconds: u64,
    /// Seconds within which a request is answered, else 503.
    pub request_timeout_seconds: u64,
    /// Seconds in-flight requests get to finish after shutdown starts.
    pub shutdown_grace_seconds: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    idle_timeout_seconds: Option<u64>,
    request_timeout_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
}

impl RawServer {
    /// The `[server]` table with its defaults, every value within its bounds.
    pub(super) fn validate(self, src: &Source) -> Result<ServerConfig, ConfigError> {
        let err = |field: &'static str| move |r: String| src.error(field, &r);
        Ok(ServerConfig {
            listen: parse_addr(self.listen.as_deref().unwrap_or(DEFAULT_LISTEN))
                .map_err(err("server.listen"))?,
            admin_listen: parse_addr(self.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN))
                .map_err(err("server.admin_listen"))?,
            max_body_bytes: bounded(self.max_body_bytes, DEFAULT_MAX_BODY, 1024, 1 << 20)
                .map_err(err("server.max_body_bytes"))?,
            max_connections: bounded(self.max_connections, 1024, 1, 1_000_000)
                .map_err(err("server.max_connections"))?,
            idle_timeout_seconds: bounded(self.idle_timeout_seconds, 60, 1, 3600)
                .map_err(err("server.idle_timeout_seconds"))?,
            request_timeout_seconds: bounded(self.request_timeout_seconds, 30, 1, 300)
                .map_err(err("server.request_timeout_seconds"))?,
            shutdown_grace_seconds: bounded(self.shutdown_grace_seconds, 10, 0, 300)
                .map_err(err("server.shutdown_grace_seconds"))?,
        })
    }
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an address:port (e.g. 127.0.0.1:8080)"))
}
