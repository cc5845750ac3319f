//! The compact JWS path (RFC 7515 §7.1): the token split and decoded strictly, and the
//! signature verified with the key its issuer's key set binds to the algorithm (RFC 8725
//! §3.1: the algorithm comes from the key, never from the token alone).
//!
//! [`SignatureVerified`] is the witness that a signature verified; only
//! [`verify_with`] makes one, and a [`VerifiedToken`](super::VerifiedToken) of a JWS is
//! built only from it.

use std::ops::Deref;

use super::claims::{self, Claims};
use super::error::TokenError;
use super::issuers::{IssuerKeys, TrustedIssuer};
use crate::jose::jws::{CompactJws, HeaderError, JwsError, SignatureError};
use crate::jose::{KeySet, b64_decode};
use crate::upstream::jwks::CachedVerifyError;

/// A compact JWS, decoded, not yet trusted (the shared [`CompactJws`], whose header and
/// algorithm it shows).
pub(super) struct Jws<'t>(CompactJws<'t>);

impl<'t> Deref for Jws<'t> {
    type Target = CompactJws<'t>;

    fn deref(&self) -> &CompactJws<'t> {
        &self.0
    }
}

/// The signature of a [`Jws`] verified with a key of its issuer. The private field makes
/// [`Jws::verify_with`] its only maker.
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
    let jws = CompactJws::parse(token).map_err(|e| match e {
        JwsError::NotCompact => TokenError::NotCompactJws,
        JwsError::Header(HeaderError::Malformed) => TokenError::MalformedHeader,
        JwsError::Header(HeaderError::Crit) => TokenError::CritHeader,
        JwsError::Header(HeaderError::KeyInHeader) => TokenError::KeyInHeader,
        JwsError::UnsupportedAlgorithm => TokenError::UnsupportedAlgorithm,
    })?;
    let iss = claims::parse_iss(jws.payload())?;
    Ok((Jws(jws), iss))
}

impl Jws<'_> {
    /// Every claim, typed and strict: read only once the token is known genuine (or in
    /// an offline dry run).
    pub(super) fn claims(&self) -> Result<Claims, TokenError> {
        claims::parse_claims(self.payload())
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
            IssuerKeys::Remote(cache) => match cache.verify(&self.0).await {
                Ok(()) => Ok(SignatureVerified(())),
                Err(CachedVerifyError::Unavailable) => Err(TokenError::KeysUnavailable),
                Err(CachedVerifyError::Signature(e)) => Err(signature_error(e)),
            },
        }
    }

    /// The one place a [`SignatureVerified`] is made: the key `kid` names (or the only
    /// key for the algorithm) is bound to the token's algorithm and the signature
    /// verifies with it.
    fn verify_with(&self, keys: &KeySet) -> Result<SignatureVerified, TokenError> {
        self.0
            .verify_with(keys)
            .map(|()| SignatureVerified(()))
            .map_err(signature_error)
    }
}

fn signature_error(e: SignatureError) -> TokenError {
    match e {
        SignatureError::BadSignature => TokenError::BadSignature,
        SignatureError::UnknownKid => TokenError::UnknownKid,
        SignatureError::AlgorithmKeyMismatch => TokenError::AlgorithmKeyMismatch,
        SignatureError::KidRequired => TokenError::KidRequired,
    }
}
