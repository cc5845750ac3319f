//! `tls_client_auth` (RFC 8705 §2.1): the client's certificate chains to the trust
//! anchors registered for it (a CA bundle in PEM; a SPIFFE X.509 bundle works as one),
//! checked by rustls' WebPKI verifier on aws-lc-rs (path building, signatures, validity
//! at our clock's time, `clientAuth` extended key usage where the certificate has one),
//! and it carries the one name the client is bound to (§2.1.2): a URI SAN (a SPIFFE ID)
//! or a DNS SAN, or the subject DN as RFC 4514 renders it. The handshake proved that the
//! client holds the certificate's key (TLS CertificateVerify), or the trusted proxy that
//! forwarded it did.
//!
//! Trust is per client, so the listener cannot decide it during the handshake (the
//! client is known only from the request): the listener asks for an optional
//! certificate, checks the handshake signature, keeps the chain on the connection, and
//! the chain is judged here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::ClientAuthError;
use crate::config::SubjectName;

/// A client's trust anchors and the name it is bound to.
pub(crate) struct PkiBinding {
    verifier: Arc<dyn ClientCertVerifier>,
    subject: SubjectName,
}

impl PkiBinding {
    /// Reads the PEM trust anchors of `ca_file` (start-up).
    pub(crate) fn load(ca_file: &Path, subject: SubjectName) -> Result<Self, String> {
        let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&pem) {
            let der = der.map_err(|e| format!("{}: not PEM: {e}", ca_file.display()))?;
            roots
                .add(der)
                .map_err(|e| format!("{}: unusable trust anchor: {e}", ca_file.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "{}: no PEM CERTIFICATE in the file",
                ca_file.display()
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
        Ok(Self { verifier, subject })
    }

    /// Checks `chain` (leaf first) at `now`; returns the leaf's SHA-256 thumbprint.
    pub(crate) fn verify(
        &self,
        chain: &[CertificateDer<'static>],
        now: u64,
    ) -> Result<[u8; 32], ClientAuthError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or(ClientAuthError::NoClientCertificate)?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(now));
        self.verifier
            .verify_client_cert(leaf, intermediates, time)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. },
                ) => ClientAuthError::CertificateExpired,
                _ => ClientAuthError::CertificateUntrusted,
            })?;
        let names = crate::x509::names(leaf).ok_or(ClientAuthError::CertificateNameMismatch)?;
        let bound = match &self.subject {
            SubjectName::SanUri(uri) => names.uris.iter().any(|u| u == uri),
            SubjectName::SanDns(dns) => names.dns.iter().any(|d| d.eq_ignore_ascii_case(dns)),
            SubjectName::SubjectDn(dn) => &names.subject_dn == dn,
        };
        if !bound {
            return Err(ClientAuthError::CertificateNameMismatch);
        }
        Ok(crate::x509::thumbprint(leaf))
    }
}
