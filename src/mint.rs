//! Stage 5: minting the issued token (rules §6, RFC 9068 profile).
//!
//! [`Minter::mint`] takes only a [`Grant`], so nothing unverified can be signed. The JOSE
//! header is fixed per key and token type and base64url-encoded when the key is loaded;
//! per token we pick the key whose turn it is, serialise the claims, draw a 128-bit `jti`
//! and sign once.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use thiserror::Error;

use crate::jose::b64_encode;
use std::sync::Arc;

use crate::keys::KeyError;
use crate::keys::ring::KeyStore;
use crate::oauth::TokenType;
use crate::policy::Grant;
use crate::token::ActorId;

/// Why minting failed: never the client's fault.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum MintError {
    /// Serialising the claims failed.
    #[error("claims serialisation failed")]
    Serialize,
    /// The random source or the signature failed.
    #[error("signing failed")]
    Crypto,
    /// No key of the ring may sign at this time (the clock went back before them all).
    #[error("no signing key for this time")]
    NoSigningKey,
}

impl MintError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            MintError::Serialize => "serialize",
            MintError::Crypto => "crypto",
            MintError::NoSigningKey => "no_signing_key",
        }
    }
}

impl From<KeyError> for MintError {
    fn from(_: KeyError) -> Self {
        MintError::Crypto
    }
}

/// A signed token and what the response says about it (RFC 8693 §2.2.1).
#[derive(Debug)]
pub struct IssuedToken {
    /// The compact JWS.
    pub access_token: String,
    /// `issued_token_type`.
    pub issued_token_type: TokenType,
    /// Seconds until `exp`.
    pub expires_in: u64,
    /// Granted scopes, space-separated (may be empty).
    pub scope: String,
    /// The token's `jti`, for the audit log.
    pub jti: String,
}

/// Signs grants with the signing key in force (see `keys::ring`).
pub struct Minter {
    issuer: String,
    keys: Arc<KeyStore>,
}

impl Minter {
    /// A minter for `issuer` signing with the keys of `keys`.
    pub fn new(issuer: String, keys: Arc<KeyStore>) -> Self {
        Self { issuer, keys }
    }

    /// The signing keys (the signer, and our published JWKS).
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.keys
    }

    /// Signs the token a grant describes.
    pub fn mint(&self, grant: &Grant) -> Result<IssuedToken, MintError> {
        let mut jti_bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti_bytes).map_err(|_| MintError::Crypto)?;
        let jti = b64_encode(&jti_bytes);
        let scope = grant.scope().join(" ");
        let claims = Claims {
            iss: &self.issuer,
            sub: grant.sub(),
            sub_iss: grant.sub_iss(),
            aud: Audience(grant.aud()),
            exp: grant.exp(),
            iat: grant.iat(),
            nbf: grant.iat(),
            jti: &jti,
            client_id: grant.client_id(),
            scope: &scope,
            act: (!grant.act().is_empty()).then_some(Act { chain: grant.act() }),
            cnf: grant.cnf_thumbprint().map(|t| Confirmation {
                x5t_s256: b64_encode(t),
            }),
            extra: grant.claims(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| MintError::Serialize)?;
        // The key whose turn it is at the grant's time (a ring switches on schedule).
        let ring = self.keys.current();
        let key = ring.signer(grant.iat()).ok_or(MintError::NoSigningKey)?;
        let typ = match grant.token_type() {
            TokenType::Jwt => TokenType::Jwt,
            _ => TokenType::AccessToken,
        };
        let header = key.header(typ == TokenType::AccessToken);
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 100);
        token.push_str(header);
        token.push('.');
        token.push_str(&b64_encode(&payload));
        let signature = key.key().sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&b64_encode(&signature));
        Ok(IssuedToken {
            access_token: token,
            issued_token_type: typ,
            expires_in: grant.exp().saturating_sub(grant.iat()),
            scope,
            jti,
        })
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    /// The subject's issuer (`policy::SUBJECT_ISSUER_CLAIM`), when the grant names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_iss: Option<&'a str>,
    aud: Audience<'a>,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Act<'a>>,
    /// RFC 8705 §3.1: the token is bound to the client certificate with this SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
    /// Passthrough claims (policy `claims`); the policy refuses reserved names, so none
    /// of them repeats a member above.
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, serde_json::Value>,
}

/// `cnf` (RFC 7800 §3.1) with the certificate thumbprint member of RFC 8705 §3.1.
#[derive(Serialize)]
struct Confirmation {
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

/// One audience as a string, several as an array (RFC 7519 §4.1.3).
struct Audience<'a>(&'a [String]);

impl Serialize for Audience<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

/// Nested `act` (RFC 8693 §4.1): identity only (`sub`, and `iss` where the grant's chain
/// has one: the policy decides it for the new actor, prior actors keep theirs), the
/// current actor outermost (rules 4 and 5).
struct Act<'a> {
    chain: &'a [ActorId],
}

impl Serialize for Act<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some((first, rest)) = self.chain.split_first() else {
            return s.serialize_map(Some(0))?.end();
        };
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("sub", &first.sub)?;
        if let Some(iss) = &first.iss {
            map.serialize_entry("iss", iss)?;
        }
        if !rest.is_empty() {
            map.serialize_entry("act", &Act { chain: rest })?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_nests_current_actor_outermost_with_identity_only() {
        let chain = vec![
            ActorId {
                sub: "orders-api".into(),
                iss: Some("https://idp".into()),
            },
            ActorId {
                sub: "bff".into(),
                iss: None,
            },
        ];
        let with_iss = serde_json::to_value(Act { chain: &chain }).unwrap();
        assert_eq!(
            with_iss,
            serde_json::json!({ "sub": "orders-api", "iss": "https://idp", "act": { "sub": "bff" } })
        );
    }

    #[test]
    fn audience_is_a_string_when_single() {
        let one = vec!["a".to_string()];
        let two = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            serde_json::to_value(Audience(&one)).unwrap(),
            serde_json::json!("a")
        );
        assert_eq!(
            serde_json::to_value(Audience(&two)).unwrap(),
            serde_json::json!(["a", "b"])
        );
    }
}
