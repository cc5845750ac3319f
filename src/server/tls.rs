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
//!
//! When some client authenticates with a certificate (RFC 8705), the listener asks every
//! client for an optional one and checks that the client holds its key (the handshake
//! signature); the chain is kept on the connection (`server` puts it in each request's
//! extensions) and judged per client by `client_auth` (see `OptionalClientCert`).

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
        let client_certificates = config
            .clients
            .iter()
            .any(|c| c.credential.uses_certificate());
        config
            .tls
            .as_ref()
            .map(|tls| Self::from_config(tls, &config.origin, client_certificates).map(Arc::new))
            .transpose()
    }

    /// With `client_certificates` (some client authenticates with one, RFC 8705), the
    /// listener asks every client for an optional certificate ([`OptionalClientCert`]).
    fn from_config(
        tls: &TlsConfig,
        origin: &str,
        client_certificates: bool,
    ) -> Result<Tls, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = Arc::new(CertStore::load(Source {
            origin: origin.to_owned(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            provider: Arc::clone(&provider),
        })?);
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::new(origin, "tls", e.to_string()))?;
        let builder = match client_certificates {
            true => builder.with_client_cert_verifier(Arc::new(OptionalClientCert {
                algorithms: provider.signature_verification_algorithms,
            })),
            false => builder.with_no_client_auth(),
        };
        let mut server =
            builder.with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
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

/// The listener's client-certificate policy when some client authenticates with a
/// certificate (RFC 8705 §2): every client is asked for one, none must send it, and a
/// certificate sent must be proven by the handshake signature (CertificateVerify),
/// checked here with aws-lc-rs. Whether the chain is trusted is not decided here: trust
/// anchors are per client, and the client is known only from its request, so the chain
/// is kept on the connection and judged by `client_auth` (`tls_client_auth`,
/// `self_signed_tls_client_auth`) against that client's registration.
#[derive(Debug)]
struct OptionalClientCert {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        // Judged per client, at the request (see the type's doc).
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
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
        let not_after = crate::x509::not_after(leaf.as_ref()).ok_or_else(|| {
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
