//! The compact JWS path (RFC 7515 §7.1): the token split and decoded strictly, and the
//! signature verified with the key its issuer's key set binds to the algorithm (RFC 8725
//! §3.1: the algorithm comes from the key, never from the token alone).
//!
//! [`SignatureVerified`] is the witness that a signature verified; only
//! [`verify_with`] makes one, and a [`VerifiedToken`](super::VerifiedToken) of a JWS is
//! built only from it.

use super::claims::{self, Claims, Header};
use super::error::TokenError;
use super::issuers::{IssuerKeys, TrustedIssuer};
use crate::jose::{JwsAlgorithm, KeyLookup, KeySet, b64_decode};

/// A compact JWS, decoded, not yet trusted.
pub(super) struct Jws<'t> {
    pub(super) header: Header,
    pub(super) alg: JwsAlgorithm,
    /// The two first segments exactly as received: the signed input (RFC 7515 §5.2).
    signing_input: &'t str,
    signature: Vec<u8>,
    /// The claims set, decoded from base64url; its claims are judged only by
    /// [`Jws::claims`], once the signature verified (or in an offline dry run).
    payload: Vec<u8>,
}

/// The signature of a [`Jws`] verified with a key of its issuer. The private field makes
/// [`verify_with`] its only maker.
pub(super) struct SignatureVerified(());

/// Whether `token` is shaped as JOSE (a JWE's four dots, or a first segment that decodes
/// to a JSON object) without being a compact JWS: such a token is refused as malformed,
/// never handed to an introspection endpoint as if it were opaque.
pub(super) fn looks_like_jose(token: &str, dots: usize) -> bool {
    let first = token.split('.').next().and_then(b64_decode);
    dots == 4 || first.is_some_and(|h| h.first() == Some(&b'{'))
}

/// Splits and decodes a compact JWS with exactly two dots: strict header (no `crit`, no
/// key-carrying members), a known algorithm, and of the claims set only its structure and
/// `iss`, which selects the keys. Returns the JWS and its `iss`.
pub(super) fn parse(token: &str) -> Result<(Jws<'_>, String), TokenError> {
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotCompactJws);
    };
    let header = b64_decode(h64).ok_or(TokenError::NotCompactJws)?;
    let header = claims::parse_header(&header)?;
    let alg = JwsAlgorithm::from_name(&header.alg).ok_or(TokenError::UnsupportedAlgorithm)?;
    let payload = b64_decode(p64).ok_or(TokenError::NotCompactJws)?;
    let signature = b64_decode(s64).ok_or(TokenError::NotCompactJws)?;
    let iss = claims::parse_iss(&payload)?;
    let signing_input = token
        .get(..h64.len() + 1 + p64.len())
        .ok_or(TokenError::NotCompactJws)?;
    let jws = Jws {
        header,
        alg,
        signing_input,
        signature,
        payload,
    };
    Ok((jws, iss))
}

impl Jws<'_> {
    /// Every claim, typed and strict: read only once the token is known genuine (or in
    /// an offline dry run).
    pub(super) fn claims(&self) -> Result<Claims, TokenError> {
        claims::parse_claims(&self.payload)
    }

    /// Verifies the signature with `issuer`'s keys in force at `now`: our own ring, or
    /// the upstream JWKS (an unknown `kid` may force one refetch, under the cache's
    /// cooldown; still unknown in keys fetched after the token came: `UnknownKid`, else
    /// `KeysUnavailable`, see `upstream::jwks`).
    pub(super) async fn verify(
        &self,
        issuer: &TrustedIssuer,
        now: u64,
    ) -> Result<SignatureVerified, TokenError> {
        let kid = self.header.kid.as_deref();
        match &issuer.keys {
            IssuerKeys::Local(store) => {
                let ring = store.current();
                let keys = ring
                    .verifying_keys(kid, now)
                    .ok_or(TokenError::UnknownKid)?;
                self.verify_with(keys)
            }
            IssuerKeys::Remote(cache) => {
                let fetched = cache.keys().await.ok_or(TokenError::KeysUnavailable)?;
                match self.verify_with(&fetched.keys) {
                    Err(TokenError::UnknownKid) => {
                        let lacks_kid = |keys: &KeySet| {
                            matches!(keys.find(kid, self.alg), KeyLookup::UnknownKid)
                        };
                        let refreshed = cache.refresh_for_unknown_kid(&fetched, lacks_kid).await;
                        match self.verify_with(&refreshed.fetched.keys) {
                            // Not in keys fetched after the token came: not the issuer's.
                            // Otherwise it may be a key we could not fetch yet (cooldown,
                            // backoff, failed refetch): not the client's fault.
                            Err(TokenError::UnknownKid) if !refreshed.confirmed => {
                                Err(TokenError::KeysUnavailable)
                            }
                            other => other,
                        }
                    }
                    other => other,
                }
            }
        }
    }

    /// The one place a [`SignatureVerified`] is made: the key `kid` names (or the only
    /// key for the algorithm) is bound to the token's algorithm and the signature
    /// verifies with it.
    fn verify_with(&self, keys: &KeySet) -> Result<SignatureVerified, TokenError> {
        let input = self.signing_input.as_bytes();
        match keys.find(self.header.kid.as_deref(), self.alg) {
            KeyLookup::Found(key) if key.verify(input, &self.signature) => {
                Ok(SignatureVerified(()))
            }
            KeyLookup::Found(_) => Err(TokenError::BadSignature),
            KeyLookup::UnknownKid => Err(TokenError::UnknownKid),
            KeyLookup::AlgorithmMismatch => Err(TokenError::AlgorithmKeyMismatch),
            KeyLookup::KidRequired => Err(TokenError::KidRequired),
        }
    }
}
