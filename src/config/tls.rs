//! `[tls]`: where the public listener's certificate and key are. The files themselves are
//! read by `server::tls::Tls::load`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Source, bounded};

const DEFAULT_TLS_WATCH: u64 = 2;
const DEFAULT_TLS_HANDSHAKE_TIMEOUT: u64 = 10;

/// TLS on the public listener (`[tls]`). The files are read by `server::tls::Tls::load`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes (0: never; SIGHUP still reloads).
    pub watch_seconds: u64,
    /// How long a client has to complete the TLS handshake.
    pub handshake_timeout_seconds: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert_file: String,
    key_file: String,
    watch_seconds: Option<u64>,
    handshake_timeout_seconds: Option<u64>,
}

impl RawTls {
    /// The `[tls]` table: both files named (relative to the config's directory), the
    /// intervals within their bounds.
    pub(super) fn validate(self, src: &Source) -> Result<TlsConfig, ConfigError> {
        if self.cert_file.is_empty() {
            return Err(src.error("tls.cert_file", "must name a PEM file"));
        }
        if self.key_file.is_empty() {
            return Err(src.error("tls.key_file", "must name a PEM file"));
        }
        Ok(TlsConfig {
            cert_file: src.base.join(&self.cert_file),
            key_file: src.base.join(&self.key_file),
            watch_seconds: bounded(self.watch_seconds, DEFAULT_TLS_WATCH, 0, 3600)
                .map_err(|r| src.error("tls.watch_seconds", &r))?,
            handshake_timeout_seconds: bounded(
                self.handshake_timeout_seconds,
                DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                1,
                60,
            )
            .map_err(|r| src.error("tls.handshake_timeout_seconds", &r))?,
        })
    }
}
