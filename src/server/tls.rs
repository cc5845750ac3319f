//! TLS on the public listener (`[tls]`): rustls with the aws-lc-rs provider, TLS 1.3 and
//! 1.2 only, ALPN `h2` and `http/1.1`, and a certificate that can be replaced while the
//! service runs.
//!
//! The certificate chain and private key in force sit in a `CertStore`, the rustls
//! certificate resolver of the listener: every new handshake takes the pair in force at
//! that moment, and connections already established keep theirs. A reload (SIGHUP, or a
//! change of the files' contents seen by the watch every `tls.watch_seconds`) reads both
//! files, checks them completely (PEM, a usable key, the key matches the leaf certificate,
//! the leaf's validity can be read) and only then swaps the pair; anything wrong keeps the
//! previous pair in force, logs the error naming the field, and counts a failed reload.
//! The watch compares contents, not modification times: Kubernetes updates a mounted
//! Secret by swapping a symlink, which leaves the files' own times alone.
//!
//! The handshake itself runs on the connection's task, bounded by
//! `tls.handshake_timeout_seconds` (and never longer than the header timeout, counted from
//! accept), so a client that connects and never completes it holds a connection slot for
//! that long at most.
//! Start-up reads and checks the same way before any port is bound, and a problem stops
//! the service with a [`ConfigError`] naming `tls.cert_file` or `tls.key_file`.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use crate::app::App;
use crate::config::{Config, ConfigError, TlsConfig};
use crate::metrics::Metrics;
use crate::reload::fingerprint;

/// ALPN protocols offered, in order of preference (RFC 7301; RFC 9113 §3.2 for `h2`).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

pub use crate::reload::Reloaded;

/// TLS for the public listener: the certificate in force and the acceptor using it.
pub struct Tls {
    certs: Arc<CertStore>,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    watch_seconds: u64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.certs.source.cert_file)
            .field("key_file", &self.certs.source.key_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks `[tls]`'s certificate and key (start-up: an error stops the
    /// service before any port is bound). `None` when the configuration has no `[tls]`.
    pub fn load(config: &Config) -> Result<Option<Arc<Tls>>, ConfigError> {
        config
            .tls
            .as_ref()
            .map(|tls| Self::from_config(tls, &config.origin).map(Arc::new))
            .transpose()
    }

    fn from_config(tls: &TlsConfig, origin: &str) -> Result<Tls, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = Arc::new(CertStore::load(Source {
            origin: origin.to_owned(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            provider: Arc::clone(&provider),
        })?);
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::new(origin, "tls", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            certs,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            handshake_timeout: Duration::from_secs(tls.handshake_timeout_seconds),
            watch_seconds: tls.watch_seconds,
        })
    }

    /// The not-after time of the leaf certificate in force, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.certs.not_after.load(Ordering::Relaxed)
    }

    /// Reads both files again and puts them in force for new connections (SIGHUP). With
    /// `force` false, files identical to the last ones read are skipped (the watch). A
    /// failure keeps the previous certificate, is logged and counted in `metrics`.
    pub fn reload(&self, force: bool, metrics: &Metrics) -> Result<Reloaded, ConfigError> {
        let result = self.certs.reload(force);
        match &result {
            Ok(Reloaded::Applied) => {
                metrics.tls_reload(true);
                metrics.tls_certificate_expiry(self.not_after());
                tracing::info!(
                    not_after = self.not_after(),
                    "TLS certificate reloaded: new connections use it"
                );
            }
            Ok(Reloaded::Unchanged) => {}
            Err(e) => {
                metrics.tls_reload(false);
                tracing::error!(
                    error = %e,
                    "TLS certificate reload failed: the previous certificate stays in force"
                );
            }
        }
        result
    }

    /// Checks the files every `tls.watch_seconds` and reloads them when their contents
    /// change. Runs until dropped; does nothing with a zero interval.
    pub async fn watch(self: Arc<Self>, app: Arc<App>) {
        let seconds = self.watch_seconds;
        crate::reload::watch(seconds, move || {
            let _ = self.reload(false, app.metrics());
        })
        .await;
    }

    /// The TLS handshake on an accepted connection, within the handshake timeout (and
    /// `header_timeout`, if shorter). A failure or a timeout is logged at debug (clients
    /// probing, scanners, a wrong protocol) and ends the connection: `None`.
    pub(super) async fn handshake(
        &self,
        stream: TcpStream,
        header_timeout: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let limit = self.handshake_timeout.min(header_timeout);
        match tokio::time::timeout(limit, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, ?peer, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(?peer, ?limit, "TLS handshake timed out");
                None
            }
        }
    }
}

/// An accepted connection: plain TCP, or TLS over it after the handshake.
pub(super) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, data),
            MaybeTls::Tls(s) => Pin::new(s).poll_write(cx, data),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The certificate chain and key in force: the listener's certificate resolver.
struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    /// Not-after of the leaf in force (Unix seconds).
    not_after: AtomicI64,
    /// SHA-256 of what the last read found (files in force, refused files, or the read
    /// error): a watch tick that finds the same does nothing, so a bad file is reported
    /// once, not every tick.
    seen: Mutex<[u8; 32]>,
    source: Source,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl CertStore {
    fn load(source: Source) -> Result<CertStore, ConfigError> {
        let files = source.read()?;
        let checked = source.check(&files)?;
        Ok(CertStore {
            current: RwLock::new(Arc::new(checked.key)),
            not_after: AtomicI64::new(checked.not_after),
            seen: Mutex::new(files.fingerprint()),
            source,
        })
    }

    fn reload(&self, force: bool) -> Result<Reloaded, ConfigError> {
        // Held to the end: two reloads (SIGHUP and the watch) never interleave, so the
        // files last read are the ones in force (or refused).
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = self.source.read();
        let print = match &files {
            Ok(files) => files.fingerprint(),
            Err(e) => fingerprint([e.to_string().as_bytes()]),
        };
        if !force && *seen == print {
            return Ok(Reloaded::Unchanged);
        }
        *seen = print;
        let checked = self.source.check(&files?)?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = Arc::new(checked.key);
        self.not_after.store(checked.not_after, Ordering::Relaxed);
        Ok(Reloaded::Applied)
    }
}

/// Where the certificate and key come from, and how they are checked.
struct Source {
    origin: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
}

/// The two files' bytes (the key's zeroized on drop).
struct Files {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl Files {
    fn fingerprint(&self) -> [u8; 32] {
        fingerprint([self.cert.as_slice(), self.key.as_slice()])
    }
}

/// A certificate and key, read and checked.
struct Checked {
    key: CertifiedKey,
    not_after: i64,
}

impl Source {
    fn error(&self, field: &str, path: &Path, reason: &dyn std::fmt::Display) -> ConfigError {
        ConfigError::new(&self.origin, field, format!("{}: {reason}", path.display()))
    }

    fn read(&self) -> Result<Files, ConfigError> {
        let cert = std::fs::read(&self.cert_file)
            .map_err(|e| self.error("tls.cert_file", &self.cert_file, &e))?;
        let key = std::fs::read(&self.key_file)
            .map(Zeroizing::new)
            .map_err(|e| self.error("tls.key_file", &self.key_file, &e))?;
        Ok(Files { cert, key })
    }

    /// Parses and checks a chain and key: PEM, a key aws-lc-rs can sign with, the key
    /// matching the leaf certificate's public key, the leaf's not-after readable.
    fn check(&self, files: &Files) -> Result<Checked, ConfigError> {
        let cert_error =
            |reason: &dyn std::fmt::Display| self.error("tls.cert_file", &self.cert_file, reason);
        let key_error =
            |reason: &dyn std::fmt::Display| self.error("tls.key_file", &self.key_file, reason);
        let chain = CertificateDer::pem_slice_iter(&files.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(&format!("not a PEM certificate chain: {e}")))?;
        let Some(leaf) = chain.first() else {
            return Err(cert_error(&"no PEM CERTIFICATE in the file"));
        };
        let not_after = not_after(leaf.as_ref()).ok_or_else(|| {
            cert_error(
                &"the first certificate is not an X.509 certificate whose validity can be read",
            )
        })?;
        let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| {
            key_error(&format!(
                "no PEM private key (PKCS#8, SEC1 or PKCS#1) in the file: {e}"
            ))
        })?;
        let signing = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(&format!("unusable private key: {e}")))?;
        let key = CertifiedKey::new(chain, signing);
        match key.keys_match() {
            Ok(()) => Ok(Checked { key, not_after }),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(key_error(&format!(
                    "does not match the certificate in {} (tls.cert_file)",
                    self.cert_file.display()
                )))
            }
            Err(rustls::Error::InconsistentKeys(_)) => Err(key_error(
                &"cannot be checked against the certificate (its public key is unknown)",
            )),
            Err(e) => Err(cert_error(&format!("unreadable certificate: {e}"))),
        }
    }
}

// ---- the leaf's not-after: a small DER walk (RFC 5280 §4.1) ---------------------------

/// One DER element: (tag, contents, what follows). Single-byte tags, definite lengths.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// `tbsCertificate.validity.notAfter` of a DER certificate, in Unix seconds.
///
/// ```text
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
///     version [0] EXPLICIT OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
///     issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time }, … }, … }
/// ```
fn not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    if let Some((0xa0, _, rest)) = der_element(tbs) {
        tbs = rest;
    }
    for expected in [0x02, SEQUENCE, SEQUENCE] {
        let (tag, _, rest) = der_element(tbs)?;
        if tag != expected {
            return None;
        }
        tbs = rest;
    }
    let (SEQUENCE, validity, _) = der_element(tbs)? else {
        return None;
    };
    let (_, _, rest) = der_element(validity)?;
    let (tag, time, _) = der_element(rest)?;
    asn1_time(tag, time)
}

/// RFC 5280 §4.1.2.5: UTCTime `YYMMDDHHMMSSZ` (years 1950–2049) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`, in Unix seconds.
fn asn1_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        text.get(range)?.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (0x18, 15) => (digits(0..4)?, 4),
        _ => return None,
    };
    if text.last() != Some(&b'Z') {
        return None;
    }
    let field = |i: usize| digits(rest + 2 * i..rest + 2 * i + 2);
    let (month, day, hour, minute, second) =
        (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_not_after(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_not_after_of_real_certificates() {
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
        for (year, month, day, expected) in [
            (2031, 6, 15, 1_939_248_000),
            (2049, 12, 31, 2_524_521_600),
            (2050, 1, 1, 2_524_608_000),
            (2100, 3, 1, 4_107_542_400),
        ] {
            let der = cert_with_not_after(year, month, day);
            assert_eq!(not_after(&der), Some(expected), "{year}-{month}-{day}");
        }
    }

    #[test]
    fn times_and_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(asn1_time(0x17, b"991231235959Z"), Some(946_684_799));
        assert_eq!(asn1_time(0x17, b"500101000000Z"), Some(-631_152_000));
        assert_eq!(asn1_time(0x18, b"20300317174640Z"), Some(1_900_000_000));
        for (tag, bad) in [
            (0x17, &b"991231235959"[..]),
            (0x17, b"991331235959Z"),
            (0x17, b"99123123595aZ"),
            (0x18, b"991231235959Z"),
            (0x04, b"991231235959Z"),
        ] {
            assert_eq!(
                asn1_time(tag, bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn truncated_or_foreign_der_is_refused_not_misread() {
        let der = cert_with_not_after(2031, 6, 15);
        for len in [0, 1, 2, 10, 40, der.len() / 2] {
            assert_eq!(not_after(&der[..len]), None, "{len} bytes");
        }
        assert_eq!(not_after(b"not a certificate"), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
