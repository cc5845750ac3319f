//! The lifecycle of the tokens gleipnir issues: their lineage, and revocation that
//! follows it to every token derived from a revoked one, at any depth, on every replica
//! that shares the [`Store`].
//!
//! # Lineage
//!
//! Every issued token gets a lineage record (`lin:<jti>`), kept until its `exp` plus the
//! leeway (re-exchange accepts it that long). The record's references are the keys of
//! the revocation markers that would make the token inactive:
//!
//! - `rev:t:<jti>` of the token itself and of every gleipnir token it derives from (the
//!   references of the re-exchanged token's record, copied): revoking any of them
//!   revokes this one. The first of them is the *chain root*.
//! - `rev:u:…` of each upstream token it derives from, subject and actor, named by a
//!   SHA-256 of (`iss`, `jti`) and of (`iss`, SHA-256 of the token): never the token.
//! - `rev:s:…`, the SHA-256 of each upstream identity (`iss`, `sub`) in it (subject and
//!   actors), with the issue time of the token that brought it in: a marker written at
//!   or after that time ("logged out everywhere") revokes it, one written before does not.
//!
//! A cascade therefore never enumerates descendants: a descendant names its ancestors,
//! and introspection and re-exchange read the record and every marker it references in
//! one store call ([`Store::get_record`]). Markers live `tokens.max_ttl_seconds` plus the
//! leeway from when they are written: no token derived before then outlives that.
//!
//! When the root subject token came from an issuer with RFC 7662 introspection, the
//! record also keeps that token, sealed (AES-256-GCM under `store.seal_key`, the issuer's
//! name as associated data), so that introspection and re-exchange of anything derived
//! from it ask the issuer again (through the issuer's introspection cache, so at most
//! every `cache_seconds`): revoked upstream, it is inactive here within that time.
//!
//! # Tokens without lineage
//!
//! With a shared store (Redis), every token of the deployment has a record, so a token
//! without one is unknown: inactive, and refused for re-exchange. The in-process store
//! is per process: a token issued by another replica, or before a restart, has no
//! record here, and is judged by the marker of its own `jti` only (as every token was
//! before lineage existed); revocation then cascades only within the process that issued
//! the chain. Deployments of several replicas share a Redis.
//!
//! # When the store fails
//!
//! `store.on_unavailable = "fail_closed"` (the default): a check or a lineage write the
//! store cannot answer is [`LifecycleError::Unavailable`] (503): nothing is issued or
//! declared active that the store could not vouch for. `"fail_open"`: checks pass and
//! tokens are issued without a record; a token found without one is then judged by the
//! marker of its own `jti` only.
//!
//! # For other features
//!
//! [`Lifecycle::check`] is the one question "is this gleipnir token, and everything it
//! derives from, still good?": a cache of exchange results keyed by an incoming gleipnir
//! token (egress re-issue) asks it before serving a cached answer, and so drops it as
//! soon as any ancestor is revoked, on any replica.

pub mod endpoints;
mod seal;

use std::sync::Arc;

use aws_lc_rs::digest;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::config::OnUnavailable;
use crate::jose::b64_encode;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
pub use seal::Sealer;

/// Why a token's lifecycle check or record failed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleError {
    /// No lineage record: not a token this deployment issued, or its record expired.
    #[error("no lineage recorded for the token")]
    Unknown,
    /// The token or something it derives from was revoked.
    #[error("revoked, or derived from a revoked token")]
    Revoked,
    /// The issuer of the root upstream token says it is no longer active.
    #[error("root upstream token no longer active")]
    UpstreamInactive,
    /// The issuer of the root upstream token could not be asked.
    #[error("root upstream token could not be re-checked")]
    UpstreamUnavailable,
    /// The store did not answer, and the deployment fails closed.
    #[error("store: {0}")]
    Unavailable(StoreError),
}

impl LifecycleError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleError::Unknown => "lineage_unknown",
            LifecycleError::Revoked => "revoked",
            LifecycleError::UpstreamInactive => "upstream_inactive",
            LifecycleError::UpstreamUnavailable => "upstream_unavailable",
            LifecycleError::Unavailable(_) => "store_unavailable",
        }
    }
}

/// A token's lineage as recorded, once checked clean.
#[derive(Debug, Clone)]
pub struct Lineage {
    refs: Vec<String>,
    since: Vec<Option<u64>>,
    root: String,
    upstream: Option<SealedUpstream>,
}

impl Lineage {
    /// The chain root: the `jti` of the first gleipnir token of the chain.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The sealed root upstream token to re-check, with its issuer.
    pub fn upstream(&self) -> Option<&SealedUpstream> {
        self.upstream.as_ref()
    }
}

/// An upstream token kept sealed for re-introspection, and the issuer to ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedUpstream {
    /// The issuer's configured name.
    pub issuer: String,
    /// nonce ‖ ciphertext ‖ tag, base64url.
    pub sealed: String,
}

/// The record as stored (JSON): everything but the references, which the store keeps.
#[derive(Serialize, Deserialize)]
struct Stored {
    root: String,
    /// Per reference: `None`, any marker revokes; `Some(t)`, a marker at or after `t`.
    since: Vec<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<SealedUpstream>,
}

/// Where a new token comes from, gathered by the exchange from its verified tokens.
#[derive(Debug, Default)]
pub struct Provenance {
    /// The `jti` of the re-exchanged gleipnir token, when the subject token is ours.
    pub parent: Option<String>,
    /// Marker keys of the upstream tokens used (any marker revokes).
    pub tokens: Vec<String>,
    /// Marker keys of the upstream identities used (markers from the issue time on).
    pub identities: Vec<String>,
    /// The upstream subject token to keep sealed for re-introspection.
    pub recheck: Option<(String, Zeroizing<String>)>,
}

impl Provenance {
    /// Notes an upstream token (`iss`, its `jti` if any, the token itself) and the
    /// identity (`iss`, `sub`) it carries.
    pub fn upstream(&mut self, iss: &str, jti: Option<&str>, token: &str, sub: &str) {
        self.tokens.extend(upstream_token_keys(iss, jti, token));
        self.identities.push(identity_key(iss, sub));
    }
}

/// `lin:<jti>`: the lineage record of our token `jti`.
pub fn lineage_key(jti: &str) -> String {
    format!("lin:{jti}")
}

/// `rev:t:<jti>`: the marker of our token `jti` (and, through lineage, its descendants).
pub fn token_key(jti: &str) -> String {
    format!("rev:t:{jti}")
}

/// SHA-256 of the parts, each ended by a NUL (so that no two lists hash alike), base64url.
fn digest_of(parts: &[&[u8]]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(part);
        context.update(&[0]);
    }
    b64_encode(context.finish().as_ref())
}

/// SHA-256 of a token, base64url: how an upstream token without `jti` is named (and how
/// an operator names it to the admin endpoint).
pub fn token_sha256(token: &str) -> String {
    b64_encode(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

/// The marker of an upstream token named by its `jti`.
pub fn upstream_jti_key(iss: &str, jti: &str) -> String {
    format!(
        "rev:u:{}",
        digest_of(&[iss.as_bytes(), b"jti", jti.as_bytes()])
    )
}

/// The marker of an upstream token named by its SHA-256 ([`token_sha256`]).
pub fn upstream_hash_key(iss: &str, sha256: &str) -> String {
    format!(
        "rev:u:{}",
        digest_of(&[iss.as_bytes(), b"sha256", sha256.as_bytes()])
    )
}

/// The markers of an upstream token: by its `jti` when it has one, and by its hash.
fn upstream_token_keys(iss: &str, jti: Option<&str>, token: &str) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    if let Some(jti) = jti {
        keys.push(upstream_jti_key(iss, jti));
    }
    keys.push(upstream_hash_key(iss, &token_sha256(token)));
    keys
}

/// The marker of an upstream identity (`iss`, `sub`): "logged out everywhere".
pub fn identity_key(iss: &str, sub: &str) -> String {
    format!("rev:s:{}", digest_of(&[iss.as_bytes(), sub.as_bytes()]))
}

/// Lineage records and revocation markers in the shared store.
pub struct Lifecycle {
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    on_unavailable: OnUnavailable,
    /// How long a marker lives: the longest token lifetime plus the leeway.
    marker_lifetime: u64,
    leeway: u64,
    sealer: Sealer,
    /// The store is shared by every replica: a token without a record is unknown.
    lineage_required: bool,
}

impl Lifecycle {
    /// Lineage and revocation in `store`.
    pub fn new(
        store: Store,
        clock: Clock,
        metrics: Arc<Metrics>,
        on_unavailable: OnUnavailable,
        (max_ttl, leeway): (u64, u64),
        sealer: Sealer,
    ) -> Self {
        Self {
            clock,
            metrics,
            on_unavailable,
            marker_lifetime: max_ttl.saturating_add(leeway).max(1),
            leeway,
            sealer,
            lineage_required: matches!(store, Store::Redis(_)),
            store,
        }
    }

    /// The store (shared with rate limits and replay caches).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics (revocations are counted there).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A store failure, as the deployment chose to take it: `Err` when failing closed.
    fn failed<T>(&self, e: StoreError, open: T) -> Result<T, LifecycleError> {
        tracing::warn!(error = e.as_str(), "lifecycle store call failed");
        match self.on_unavailable {
            OnUnavailable::FailClosed => Err(LifecycleError::Unavailable(e)),
            OnUnavailable::FailOpen => Ok(open),
        }
    }

    /// Whether our token `jti`, and everything it derives from, is still good: its record
    /// exists and no marker it references revokes it, read in one store call. The
    /// question egress's re-issue cache asks before serving (see the module docs). The
    /// root upstream token is not re-checked here ([`Self::recheck_upstream`] does).
    pub async fn check(&self, jti: &str) -> Result<Option<Lineage>, LifecycleError> {
        let record = match self.store.get_record(&lineage_key(jti)).await {
            Ok(record) => record,
            Err(e) => return self.failed(e, None),
        };
        let Some(record) = record else {
            // Shared and failing closed: every token has a record, so this one is unknown.
            // Otherwise it may come from another process or an outage (module docs).
            return match (self.lineage_required, self.on_unavailable) {
                (true, OnUnavailable::FailClosed) => Err(LifecycleError::Unknown),
                _ => self.own_marker_only(jti).await,
            };
        };
        let stored: Stored =
            serde_json::from_slice(&record.value).map_err(|_| LifecycleError::Unknown)?;
        let refs: Vec<String> = record.refs.iter().map(|(k, _)| k.clone()).collect();
        for ((_, marker), since) in record.refs.iter().zip(&stored.since) {
            if revokes(marker.as_ref(), *since) {
                return Err(LifecycleError::Revoked);
            }
        }
        Ok(Some(Lineage {
            refs,
            since: stored.since,
            root: stored.root,
            upstream: stored.upstream,
        }))
    }

    /// A token without a record that may still be good (module docs): only the marker
    /// of its own `jti` can say it is revoked.
    async fn own_marker_only(&self, jti: &str) -> Result<Option<Lineage>, LifecycleError> {
        match self.store.get(&token_key(jti)).await {
            Ok(Some(_)) => Err(LifecycleError::Revoked),
            Ok(None) => Ok(None),
            Err(e) => self.failed(e, None),
        }
    }

    /// The root upstream token of a lineage, unsealed for re-introspection (`None` when
    /// there is none or it cannot be unsealed: a record written under another key).
    pub fn unseal_upstream(&self, lineage: &Lineage) -> Option<(String, Zeroizing<String>)> {
        let upstream = lineage.upstream.as_ref()?;
        let token = self.sealer.open(&upstream.sealed, &upstream.issuer)?;
        Some((upstream.issuer.clone(), token))
    }

    /// Records the lineage of a newly issued token `jti` (issued at `iat`, expiring at
    /// `exp`), derived from `parent` (the checked lineage of a re-exchanged token of
    /// ours) and `provenance`. Failing closed, a failed write is an error: the token
    /// must not be handed out, since it could never be checked.
    pub async fn record(
        &self,
        jti: &str,
        (iat, exp): (u64, u64),
        parent: Option<&Lineage>,
        provenance: &Provenance,
    ) -> Result<(), LifecycleError> {
        let (refs, since, root, upstream) = self.lineage_of(jti, iat, parent, provenance);
        let stored = Stored {
            root,
            since,
            upstream,
        };
        let value = serde_json::to_vec(&stored).map_err(|_| LifecycleError::Unknown)?;
        let expires_at = exp.saturating_add(self.leeway).max(self.clock.now() + 1);
        match self
            .store
            .put_record(&lineage_key(jti), Bytes::from(value), &refs, expires_at)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => self.failed(e, ()),
        }
    }

    /// The references, their times, the chain root and the sealed upstream token of a
    /// new token's lineage.
    fn lineage_of(
        &self,
        jti: &str,
        iat: u64,
        parent: Option<&Lineage>,
        provenance: &Provenance,
    ) -> (
        Vec<String>,
        Vec<Option<u64>>,
        String,
        Option<SealedUpstream>,
    ) {
        let (mut refs, mut since) = match parent {
            Some(p) => (p.refs.clone(), p.since.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let mut add = |key: String, at: Option<u64>| {
            if !refs.contains(&key) {
                refs.push(key);
                since.push(at);
            }
        };
        // A re-exchanged token of ours without a record (module docs): its own marker is
        // all that is known of its lineage, and it is the root as far as we know.
        let unrecorded = parent
            .is_none()
            .then_some(provenance.parent.as_ref())
            .flatten();
        if let Some(parent_jti) = unrecorded {
            add(token_key(parent_jti), None);
        }
        add(token_key(jti), None);
        for key in &provenance.tokens {
            add(key.clone(), None);
        }
        for key in &provenance.identities {
            add(key.clone(), Some(iat));
        }
        let root = match (parent, unrecorded) {
            (Some(p), _) => p.root.clone(),
            (None, Some(parent_jti)) => parent_jti.clone(),
            (None, None) => jti.to_owned(),
        };
        let upstream = match parent {
            Some(p) => p.upstream.clone(),
            None => provenance.recheck.as_ref().and_then(|(issuer, token)| {
                let sealed = self.sealer.seal(token, issuer)?;
                Some(SealedUpstream {
                    issuer: issuer.clone(),
                    sealed,
                })
            }),
        };
        (refs, since, root, upstream)
    }

    /// Writes the revocation marker `key`, valued now, for `tokens.max_ttl_seconds` plus
    /// the leeway (or until `until`, when later); returns its expiry.
    pub async fn revoke(&self, key: &str, until: Option<u64>) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let expires_at = now
            .saturating_add(self.marker_lifetime)
            .max(until.unwrap_or(0));
        self.store
            .put(key, Bytes::from(now.to_string()), expires_at)
            .await?;
        Ok(expires_at)
    }
}

/// Whether the live `marker` (its value: when it was written) revokes a reference that
/// counts from `since` (`None`: from any time).
fn revokes(marker: Option<&Bytes>, since: Option<u64>) -> bool {
    let Some(marker) = marker else {
        return false;
    };
    let Some(since) = since else {
        return true;
    };
    // An unreadable time is taken as "now or later": revoked.
    std::str::from_utf8(marker)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .is_none_or(|at| at >= since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_markers_count_from_the_issue_time() {
        let at = |t: &str| Bytes::from(t.to_owned());
        assert!(!revokes(None, None));
        assert!(revokes(Some(&at("5")), None));
        assert!(revokes(Some(&at("10")), Some(10)));
        assert!(revokes(Some(&at("11")), Some(10)));
        assert!(!revokes(Some(&at("9")), Some(10)));
        assert!(revokes(Some(&at("garbage")), Some(10)));
    }

    #[test]
    fn keys_name_without_revealing() {
        let token = "opaque-token-value";
        let keys = upstream_token_keys("https://idp", Some("j1"), token);
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| !k.contains(token) && !k.contains("j1")));
        assert_eq!(keys[0], upstream_jti_key("https://idp", "j1"));
        assert_eq!(
            keys[1],
            upstream_hash_key("https://idp", &token_sha256(token))
        );
        // Parts are delimited: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(identity_key("ab", "c"), identity_key("a", "bc"));
        assert!(!identity_key("https://idp", "alice").contains("alice"));
    }
}
