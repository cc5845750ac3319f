//! `private_key_jwt` (RFC 7523 §2.2 and §3, OpenID Connect Core §9): the client signs a
//! short-lived JWT with its own key, and uses it once.
//!
//! - `iss` and `sub` are the client id (RFC 7523 §3 items 1–2).
//! - `aud` is exactly our issuer identifier, as a single string: not the token endpoint
//!   URL, not an array, whatever else it holds. An audience that any endpoint URL or an
//!   array satisfies is what the audience-injection attack on this method exploits: a
//!   malicious authorization server the client also talks to obtains from the client an
//!   assertion whose `aud` names (or includes) another server's endpoint, and presents
//!   it there as the client. Found in 2024–25 by researchers of the University of
//!   Stuttgart (Pedram Hosseyni, Ralf Küsters, Tim Würtele) while analysing OpenID
//!   Federation; the fix is the OpenID Connect Core errata (2025) and
//!   draft-ietf-oauth-rfc7523bis (updates RFC 7521, 7523 and 9126: the audience of a
//!   client assertion is the authorization server's issuer identifier, a single value).
//! - `exp` is required and the assertion's lifetime short (`max_lifetime_seconds`,
//!   default 5 min); `nbf` and `iat` are checked with the leeway.
//! - `jti` is required and never accepted twice while the assertion could still be valid
//!   (RFC 7523 §3 item 7): it is recorded in the replay cache ([`crate::store::Store`],
//!   in-process unless the store configuration says otherwise) until `exp` plus the
//!   leeway, keyed by a SHA-256 of (client id, `jti`) so an entry has a fixed size. Of
//!   two requests racing with one assertion exactly one wins. The cache is bounded and
//!   never evicts a live entry (that would allow a replay): when it is full the request
//!   is refused with 503, fail closed. Only assertions whose signature verified reach
//!   it, so only a holder of a client key can fill it.
//! - Algorithms as for upstream tokens (RFC 8725): `none` and HS* cannot be named, the
//!   client's allow-list applies, and the key binds the algorithm.

use std::sync::Arc;

use bytes::Bytes;

use super::assertion::{AssertionType, PresentedAssertion};
use super::keys::ClientKeys;
use super::{ClientAuthError, Context};
use crate::jose::JwsAlgorithm;
use crate::store::StoreError;

/// A `private_key_jwt` client's registration: its keys, algorithms and lifetime bound.
pub(crate) struct ClientKey {
    keys: Arc<ClientKeys>,
    algorithms: Vec<JwsAlgorithm>,
    max_lifetime: u64,
}

impl ClientKey {
    pub(crate) fn new(
        keys: Arc<ClientKeys>,
        algorithms: Vec<JwsAlgorithm>,
        max_lifetime: u64,
    ) -> Self {
        Self {
            keys,
            algorithms,
            max_lifetime,
        }
    }

    /// The algorithms its assertions may use.
    pub(crate) fn algorithms(&self) -> &[JwsAlgorithm] {
        &self.algorithms
    }
}

/// Checks `assertion` as client `id`'s `private_key_jwt`, and records its `jti`.
pub(crate) async fn verify(
    key: &ClientKey,
    id: &str,
    assertion: &PresentedAssertion<'_>,
    cx: &Context<'_>,
) -> Result<(), ClientAuthError> {
    if assertion.kind != AssertionType::JwtBearer {
        return Err(ClientAuthError::UnsupportedAssertionType);
    }
    // Before the signature: iss and sub name whose keys must verify it.
    if assertion.iss.as_deref() != Some(id) || assertion.sub != id {
        return Err(ClientAuthError::AssertionNotForClient);
    }
    if !key.algorithms.contains(&assertion.jws.alg) {
        return Err(ClientAuthError::AlgorithmNotAllowed);
    }
    key.keys.verify(&assertion.jws).await?;
    let claims = assertion.claims()?;
    claims.check_audience(cx.issuer, false)?;
    let exp = claims.check_times(cx.leeway, key.max_lifetime, cx.now)?;
    let jti = claims.jti()?;
    remember(id, jti, exp.saturating_add(cx.leeway), cx).await
}

/// Records (`id`, `jti`) until `until`: refused if already recorded (a replay), or if
/// the cache cannot record it.
async fn remember(
    id: &str,
    jti: &str,
    until: u64,
    cx: &Context<'_>,
) -> Result<(), ClientAuthError> {
    let key = replay_key(id, jti);
    match cx.store.set_if_absent(&key, Bytes::new(), until).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ClientAuthError::ReplayedAssertion),
        Err(StoreError::PastExpiry) => Err(ClientAuthError::Expired),
        // A store that cannot say whether the jti was seen fails closed: accepting would
        // let an assertion be replayed.
        Err(
            StoreError::Full
            | StoreError::NotACounter
            | StoreError::BadReference
            | StoreError::Unavailable
            | StoreError::Timeout,
        ) => Err(ClientAuthError::ReplayCacheUnavailable),
    }
}

/// The replay-cache key of (`id`, `jti`): fixed size whatever the client sends.
pub(crate) fn replay_key(id: &str, jti: &str) -> String {
    let print = crate::reload::fingerprint([id.as_bytes(), jti.as_bytes()]);
    let mut key = String::with_capacity(4 + 64);
    key.push_str("jti:");
    for b in print {
        key.push_str(&format!("{b:02x}"));
    }
    key
}
