//! The service's signing keys: loaded from a PEM file or a key directory (or generated for `gleipnir dev`),
//! used by `mint` to sign, published in our JWKS, and trusted by `token` so our own tokens
//! can be exchanged again (multi-hop delegation).
//!
//! The private key is parsed once into an aws-lc-rs key pair; the JOSE header and the
//! public JWK are computed here, at start-up, not per token. Key material never has a
//! `Debug` or `Display` form, and PEM/DER buffers are zeroized on drop.
//! Several keys on a schedule (rotation) are the [`ring`]: the signer, and the keys our
//! JWKS publishes, at any time.

pub mod ring;

use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::jose::{JwsAlgorithm, VerifyingKey, b64_encode};

/// Why a signing key could not be loaded, generated or used.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Only ES256 and EdDSA keys sign tokens.
    #[error("{0} cannot be used to sign tokens (supported: ES256, EdDSA)")]
    UnsupportedAlgorithm(&'static str),
    /// The key file could not be read.
    #[error("cannot read key file: {0}")]
    Read(std::io::Error),
    /// The file is not a PEM private key of the configured algorithm.
    #[error("not a PKCS#8 'PRIVATE KEY' (or SEC1 'EC PRIVATE KEY') PEM for {0}")]
    BadKey(&'static str),
    /// The file holds a private key, of another algorithm than the configured one.
    #[error("holds {found} key, but the configured algorithm is {configured}{hint}")]
    WrongAlgorithm {
        /// The configured algorithm.
        configured: &'static str,
        /// What the key is, with its article ("an EdDSA (Ed25519)", "an RSA").
        found: &'static str,
        /// What to do about it, when we can say.
        hint: &'static str,
    },
    /// The crypto library failed (random source, signing).
    #[error("cryptographic operation failed")]
    Crypto,
}

const HINT_ES256: &str = ": set signing.algorithm = \"ES256\", or create an EdDSA key with `gleipnir keygen --alg EdDSA`";
const HINT_EDDSA: &str =
    ": set signing.algorithm = \"EdDSA\", or create an ES256 key with `gleipnir keygen`";
const HINT_RSA: &str =
    " (gleipnir signs with ES256 or EdDSA only): create a key with `gleipnir keygen`";
const HINT_OTHER_EC: &str =
    " (gleipnir signs with ES256, on P-256, or EdDSA only): create a key with `gleipnir keygen`";

/// What a PKCS#8 key that is not one of `configured` is, when it is a key we can name.
fn wrong_algorithm(configured: JwsAlgorithm, der: &[u8]) -> Option<KeyError> {
    let is_ec = |alg| EcdsaKeyPair::from_pkcs8(alg, der).is_ok();
    let (found, hint) = if Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
        ("an EdDSA (Ed25519)", HINT_EDDSA)
    } else if is_ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING) {
        ("an ES256 (P-256)", HINT_ES256)
    } else if is_ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING) {
        ("a P-384 EC", HINT_OTHER_EC)
    } else if is_ec(&signature::ECDSA_P521_SHA512_FIXED_SIGNING) {
        ("a P-521 EC", HINT_OTHER_EC)
    } else if aws_lc_rs::rsa::KeyPair::from_pkcs8(der).is_ok() {
        ("an RSA", HINT_RSA)
    } else {
        return None;
    };
    // The configured algorithm's own key that failed to parse is not "wrong": say so as before.
    let same = matches!(
        (configured, found),
        (JwsAlgorithm::EdDsa, "an EdDSA (Ed25519)") | (JwsAlgorithm::Es256, "an ES256 (P-256)")
    );
    (!same).then_some(KeyError::WrongAlgorithm {
        configured: configured.as_str(),
        found,
        hint,
    })
}

/// Writes a private key file: created new (never overwriting), mode 0600 on Unix, synced;
/// removed again if the write fails, so no truncated key is left behind.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

/// A private signing key with its public parts precomputed.
pub struct SigningKey {
    alg: JwsAlgorithm,
    kid: String,
    pair: Pair,
    rng: SystemRandom,
    public_jwk: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn check_signing_alg(alg: JwsAlgorithm) -> Result<(), KeyError> {
    match alg {
        JwsAlgorithm::Es256 | JwsAlgorithm::EdDsa => Ok(()),
        other => Err(KeyError::UnsupportedAlgorithm(other.as_str())),
    }
}

/// Generates a new private key as PKCS#8 DER (`gleipnir keygen`, `gleipnir dev`).
pub fn generate_pkcs8(alg: JwsAlgorithm) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    check_signing_alg(alg)?;
    let rng = SystemRandom::new();
    let doc = match alg {
        JwsAlgorithm::EdDsa => {
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Crypto)?
        }
        _ => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Crypto)?,
    };
    Ok(Zeroizing::new(doc.as_ref().to_vec()))
}

/// PEM-encodes PKCS#8 DER with the `PRIVATE KEY` label (RFC 7468 §10).
pub fn pkcs8_to_pem(der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut pem = Zeroizing::new(String::with_capacity(b64.len() + 64));
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

impl SigningKey {
    /// A fresh key that lives only in memory (`gleipnir dev`).
    pub fn ephemeral(alg: JwsAlgorithm) -> Result<Self, KeyError> {
        let der = generate_pkcs8(alg)?;
        Self::from_pkcs8(alg, &der)
    }

    /// Reads a PEM private key file.
    pub fn from_pem_file(alg: JwsAlgorithm, path: &Path) -> Result<Self, KeyError> {
        let pem = Zeroizing::new(std::fs::read(path).map_err(KeyError::Read)?);
        Self::from_pem(alg, &pem)
    }

    /// Parses a PEM private key: PKCS#8 for both algorithms, SEC1 also for ES256.
    pub fn from_pem(alg: JwsAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        check_signing_alg(alg)?;
        let bad = || KeyError::BadKey(alg.as_str());
        match PrivateKeyDer::from_pem_slice(pem).map_err(|_| bad())? {
            PrivateKeyDer::Pkcs8(der) => Self::from_pkcs8(alg, der.secret_pkcs8_der())
                .map_err(|e| wrong_algorithm(alg, der.secret_pkcs8_der()).unwrap_or(e)),
            PrivateKeyDer::Sec1(_) if alg == JwsAlgorithm::EdDsa => Err(KeyError::WrongAlgorithm {
                configured: alg.as_str(),
                found: "an EC (SEC1)",
                hint: HINT_ES256,
            }),
            PrivateKeyDer::Pkcs1(_) => Err(KeyError::WrongAlgorithm {
                configured: alg.as_str(),
                found: "an RSA (PKCS#1)",
                hint: HINT_RSA,
            }),
            PrivateKeyDer::Sec1(der) if alg == JwsAlgorithm::Es256 => {
                let pair = EcdsaKeyPair::from_private_key_der(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_sec1_der(),
                )
                .map_err(|_| bad())?;
                Self::from_pair(alg, Pair::Es256(pair))
            }
            _ => Err(bad()),
        }
    }

    /// Parses PKCS#8 DER.
    pub fn from_pkcs8(alg: JwsAlgorithm, der: &[u8]) -> Result<Self, KeyError> {
        check_signing_alg(alg)?;
        let bad = || KeyError::BadKey(alg.as_str());
        let pair = match alg {
            JwsAlgorithm::EdDsa => Pair::EdDsa(
                Ed25519KeyPair::from_pkcs8(der)
                    .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
                    .map_err(|_| bad())?,
            ),
            _ => Pair::Es256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(|_| bad())?,
            ),
        };
        Self::from_pair(alg, pair)
    }

    fn from_pair(alg: JwsAlgorithm, pair: Pair) -> Result<Self, KeyError> {
        // RFC 7638 thumbprint members, in lexicographic order, no whitespace.
        let (thumbprint_input, mut public_jwk) = match &pair {
            Pair::Es256(p) => {
                let point = p.public_key().as_ref();
                let (x, y) = match (point.get(1..33), point.get(33..65)) {
                    (Some(x), Some(y)) => (b64_encode(x), b64_encode(y)),
                    _ => return Err(KeyError::Crypto),
                };
                (
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
                )
            }
            Pair::EdDsa(p) => {
                let x = b64_encode(p.public_key().as_ref());
                (
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    json!({ "kty": "OKP", "crv": "Ed25519", "x": x }),
                )
            }
        };
        let kid = b64_encode(digest::digest(&digest::SHA256, thumbprint_input.as_bytes()).as_ref());
        if let Some(obj) = public_jwk.as_object_mut() {
            obj.insert("kid".into(), json!(kid));
            obj.insert("alg".into(), json!(alg.as_str()));
            obj.insert("use".into(), json!("sig"));
        }
        Ok(Self {
            alg,
            kid,
            pair,
            rng: SystemRandom::new(),
            public_jwk,
        })
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The key id: the RFC 7638 SHA-256 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (with `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    /// The public key, for verifying our own tokens when they come back as subjects.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let public = match &self.pair {
            Pair::Es256(p) => p.public_key().as_ref().to_vec(),
            Pair::EdDsa(p) => p.public_key().as_ref().to_vec(),
        };
        VerifyingKey::from_public_bytes(Some(self.kid.clone()), self.alg, &public)
            .map_err(|_| KeyError::Crypto)
    }

    /// Signs `message`: ES256 as the fixed-width `r || s` that JWS wants (RFC 7518 §3.4).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.pair {
            Pair::Es256(p) => p
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto),
            Pair::EdDsa(p) => Ok(p.sign(message).as_ref().to_vec()),
        }
    }
}

/// Our published JWKS document (RFC 7517 §5).
pub fn jwks_document(keys: &[&SigningKey]) -> serde_json::Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_through_their_own_public_key() {
        for alg in [JwsAlgorithm::Es256, JwsAlgorithm::EdDsa] {
            let pem = pkcs8_to_pem(&generate_pkcs8(alg).unwrap());
            let key = SigningKey::from_pem(alg, pem.as_bytes()).unwrap();
            let sig = key.sign(b"payload").unwrap();
            let verifier = key.verifying_key().unwrap();
            assert!(verifier.verify(b"payload", &sig), "{alg:?}");
            assert!(!verifier.verify(b"payload!", &sig), "{alg:?}");
            assert_eq!(key.public_jwk()["kid"], key.kid());
        }
    }

    #[test]
    fn wrong_algorithm_for_key_file_is_refused() {
        // The error says what the key is, and what to do.
        let refusal = |alg, der: &[u8]| {
            SigningKey::from_pem(alg, pkcs8_to_pem(der).as_bytes())
                .unwrap_err()
                .to_string()
        };
        let ed25519 = generate_pkcs8(JwsAlgorithm::EdDsa).unwrap();
        let p256 = generate_pkcs8(JwsAlgorithm::Es256).unwrap();
        let p384 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        let rsa = {
            use aws_lc_rs::encoding::AsDer as _;
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            pair.as_der().unwrap().as_ref().to_vec()
        };
        for (alg, der, want) in [
            (
                JwsAlgorithm::Es256,
                ed25519.as_ref(),
                "holds an EdDSA (Ed25519) key, but the configured algorithm is ES256: set signing.algorithm = \"EdDSA\"",
            ),
            (
                JwsAlgorithm::EdDsa,
                p256.as_ref(),
                "holds an ES256 (P-256) key, but the configured algorithm is EdDSA: set signing.algorithm = \"ES256\"",
            ),
            (
                JwsAlgorithm::Es256,
                p384.as_ref(),
                "holds a P-384 EC key, but the configured algorithm is ES256 (gleipnir signs with ES256, on P-256, or EdDSA only)",
            ),
            (
                JwsAlgorithm::EdDsa,
                rsa.as_slice(),
                "holds an RSA key, but the configured algorithm is EdDSA (gleipnir signs with ES256 or EdDSA only)",
            ),
        ] {
            let got = refusal(alg, der);
            assert!(got.starts_with(want), "{alg:?}: {got}");
        }
        // A PKCS#8 document that is no key at all is still "not a key for ES256".
        assert!(matches!(
            SigningKey::from_pem(
                JwsAlgorithm::Es256,
                pkcs8_to_pem(b"\x30\x03\x02\x01\x00").as_bytes()
            ),
            Err(KeyError::BadKey("ES256"))
        ));
        assert!(matches!(
            SigningKey::ephemeral(JwsAlgorithm::Rs256),
            Err(KeyError::UnsupportedAlgorithm("RS256"))
        ));
        assert!(SigningKey::from_pem(JwsAlgorithm::Es256, b"not pem").is_err());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 §3.1 gives an RSA example; for EC we check the canonical form instead:
        // the same public key always yields the same kid, a different key another.
        let der = generate_pkcs8(JwsAlgorithm::Es256).unwrap();
        let a = SigningKey::from_pkcs8(JwsAlgorithm::Es256, &der).unwrap();
        let b = SigningKey::from_pkcs8(JwsAlgorithm::Es256, &der).unwrap();
        let c = SigningKey::ephemeral(JwsAlgorithm::Es256).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_ne!(a.kid(), c.kid());
        assert_eq!(a.kid().len(), 43);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = SigningKey::ephemeral(JwsAlgorithm::Es256).unwrap();
        let printed = format!("{key:?}");
        assert!(printed.contains(key.kid()));
        assert!(!printed.contains("pair"));
    }
}
