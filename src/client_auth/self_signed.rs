//! `self_signed_tls_client_auth` (RFC 8705 §2.2): the client presents one of the
//! certificates it registered (PEM, or the `x5c` of its JWKS), compared by SHA-256 of the
//! DER. No chain is built and no validity period read: the registration is the trust, as
//! with a public key. The handshake proved possession of the key.

use std::collections::HashSet;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;

use super::ClientAuthError;
use crate::config::CertificateSource;

/// The SHA-256 thumbprints of a client's registered certificates.
pub(crate) struct RegisteredCertificates(HashSet<[u8; 32]>);

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    x5c: Vec<String>,
}

impl RegisteredCertificates {
    /// Reads the registered certificates (start-up).
    pub(crate) fn load(source: &CertificateSource) -> Result<Self, String> {
        let ders: Vec<Vec<u8>> = match source {
            CertificateSource::PemFile(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                CertificateDer::pem_slice_iter(&pem)
                    .map(|c| c.map(|c| c.to_vec()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{}: not PEM: {e}", path.display()))?
            }
            CertificateSource::Jwks(json) => x5c(json.as_bytes())?,
            CertificateSource::JwksFile(path) => {
                x5c(&std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?)?
            }
        };
        if ders.is_empty() {
            return Err("no certificate registered".into());
        }
        Ok(Self(
            ders.iter().map(|d| crate::x509::thumbprint(d)).collect(),
        ))
    }

    /// Checks that the leaf of `chain` is registered; returns its thumbprint.
    pub(crate) fn verify(
        &self,
        chain: &[CertificateDer<'static>],
    ) -> Result<[u8; 32], ClientAuthError> {
        let leaf = chain.first().ok_or(ClientAuthError::NoClientCertificate)?;
        let thumbprint = crate::x509::thumbprint(leaf);
        if !self.0.contains(&thumbprint) {
            return Err(ClientAuthError::CertificateNotRegistered);
        }
        Ok(thumbprint)
    }
}

/// The first `x5c` certificate of every key of a JWKS (RFC 7517 §4.7: standard base64 DER).
fn x5c(json: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let jwks: Jwks = serde_json::from_slice(json).map_err(|e| format!("jwks: {e}"))?;
    jwks.keys
        .iter()
        .filter_map(|k| k.x5c.first())
        .map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("jwks: x5c is not base64: {e}"))
        })
        .collect()
}
