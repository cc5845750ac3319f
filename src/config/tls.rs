//! `[tls]`: where the public listener's certificate and key are. The files themselves are
//! read by `server::tls::Tls::load`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Checker, bounded};

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
    pub(super) fn validate(self, cx: &mut Checker) -> Option<TlsConfig> {
        let cert_file = cx.check("tls.cert_file", pem_file(&self.cert_file));
        let key_file = cx.check("tls.key_file", pem_file(&self.key_file));
        let watch_seconds = cx.check(
            "tls.watch_seconds",
            bounded(self.watch_seconds, DEFAULT_TLS_WATCH, 0, 3600),
        );
        let handshake_timeout_seconds = cx.check(
            "tls.handshake_timeout_seconds",
            bounded(
                self.handshake_timeout_seconds,
                DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                1,
                60,
            ),
        );
        Some(TlsConfig {
            cert_file: cx.base.join(cert_file?),
            key_file: cx.base.join(key_file?),
            watch_seconds: watch_seconds?,
            handshake_timeout_seconds: handshake_timeout_seconds?,
        })
    }
}

fn pem_file(name: &str) -> Result<&str, String> {
    if name.is_empty() {
        return Err("must name a PEM file".into());
    }
    Ok(name)
}
