//! The re-issue cache: a granted exchange, answered again from memory.
//!
//! A gateway or sidecar asks for a token for the destination of every outbound request,
//! almost always with the same user token for the same destination. The cache hands back
//! the token issued for the first of those requests, and skips exactly the work whose
//! result is already proven by that grant: validating the subject and actor tokens
//! (signatures, claims), the policy's decision, and minting.
//!
//! **What a hit never skips.** The client is authenticated on every request, before the
//! lookup (a hit is keyed by the authenticated client id, so an unauthenticated caller
//! learns nothing from the cache). The request is parsed strictly, and the policy's
//! admission (the client has an enabled policy, may exchange in this mode, accepts
//! these token types, and has not switched the cache off with `reissue_cache = false`)
//! is checked against the policy in force, as for any exchange. Every hit is audited
//! (`decision: granted`, `cached: true`) and counted.
//!
//! **The key** is SHA-256 over every input that decides an exchange, each
//! length-prefixed so that no two different inputs share a byte string: the
//! authenticated client id and its authentication method; the subject token and its
//! declared type; whether there is an actor token, and it and its declared type; the
//! `audience` and `resource` values in order; the requested scope (as parsed, in order:
//! duplicates are removed when the request is read, so two requests that ask for the
//! same scope in the same order decide alike); the requested token type. Then two facts
//! of the service: the **policy generation** (one more at each applied reload) and the
//! **`kid` of the key that signs now**. Folding them into the key rather than clearing
//! the cache when they change is what makes it exact: an exchange decided under the old
//! policy that finishes after a reload inserts under the old generation, which no later
//! request looks up. (The cache is also emptied when a lookup first sees a new
//! generation or `kid`, to free the memory at once.) The cache holds no token input,
//! only the digest; it holds the issued token, and the facts its audit record needs.
//!
//! **When a hit is allowed**: while at least `min_remaining_fraction` of the issued
//! token's lifetime and at least `min_remaining_seconds` remain, and while every input
//! token's checks still hold ([`Checked::proven_until`](crate::token::Checked::proven_until):
//! its `exp`, its issuer's maximum age, and for an introspected token the end of the
//! introspection answer's reuse). The issued token's `exp` is never later than its
//! inputs' (rule 8), so no hit hands out a token past any input's `exp`.
//!
//! A hit also needs the issuers whose keys verified its input tokens to have usable keys
//! still (the exchange checks it, [`Entry::keys`]): past an issuer's
//! `max_staleness_seconds` its tokens fail closed (503), cached or not.
//!
//! **What a hit does not see**, and why that is acceptable: a key removed from an
//! upstream issuer's JWKS while others remain (a hit does not verify the subject token's
//! signature again). A hit only returns to the same authenticated client, for the same
//! input bytes, a token the service already issued to it, which it may still hold and use
//! until its `exp`: it widens nothing that client already has.
//!
//! **Revocation**: before a hit is handed out, the exchange asks the lineage of its token
//! (`Exchanger::lineage_clean`: its own `jti` and every ancestor, gleipnir tokens and
//! upstream ones, in one store call, and the root upstream token's issuer where that
//! issuer introspects). A revoked entry is dropped ([`ReissueCache::revoked`]) and the
//! exchange runs anew, meeting the revocation itself. Per-client rate limits count hits
//! like any other exchange (they run before the lookup).
//!
//! Bounded in bytes: a `moka` cache whose weigher is each entry's estimated size
//! (`[reissue_cache] max_bytes`, default 8 MiB), evicting the least recently used, and
//! dropping each entry when it can no longer be handed out. Two concurrent misses for
//! the same inputs both go through the pipeline, and the later grant replaces the
//! earlier one: no request ever waits for another.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use crate::audit::GrantRecord;
use crate::client_auth::AuthenticatedClient;
use crate::config::{IssuerId, ReissueCacheConfig};
use crate::exchange::Proven;
use crate::mint::IssuedToken;
use crate::oauth::TokenType;
use crate::request::TokenExchangeRequest;

/// Bytes counted per entry beyond its strings: the key, the `Arc`, moka's bookkeeping.
const ENTRY_OVERHEAD: usize = 256;

/// The digest of an exchange's inputs: what the cache is keyed by, never the inputs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey")
    }
}

/// Everything that decides an exchange, as the pipeline has it after client
/// authentication and parsing.
pub struct Inputs<'a> {
    /// The authenticated client.
    pub client: &'a AuthenticatedClient,
    /// The parsed request.
    pub request: &'a TokenExchangeRequest,
    /// The generation of the policy deciding it.
    pub policy_generation: u64,
    /// The `kid` of the key that would sign it now.
    pub signing_kid: &'a str,
}

impl CacheKey {
    /// SHA-256 over every input byte that decides the exchange, each field
    /// length-prefixed (see the module doc for the list and why).
    pub fn of(inputs: &Inputs<'_>) -> Self {
        let mut d = Digest(digest::Context::new(&digest::SHA256));
        d.bytes(b"gleipnir reissue cache v1");
        d.number(inputs.policy_generation);
        d.bytes(inputs.signing_kid.as_bytes());
        d.bytes(inputs.client.id().as_bytes());
        d.bytes(inputs.client.method().as_str().as_bytes());
        // The certificate it authenticated with: a token bound to one certificate
        // (`cnf`, RFC 8705 §3) is never handed to the holder of another.
        match inputs.client.certificate_thumbprint() {
            None => d.number(0),
            Some(thumbprint) => {
                d.number(1);
                d.bytes(thumbprint);
            }
        }
        let request = inputs.request;
        d.bytes(request.subject.token_type.name().as_bytes());
        d.bytes(request.subject.token.as_bytes());
        match &request.actor {
            None => d.number(0),
            Some(actor) => {
                d.number(1);
                d.bytes(actor.token_type.name().as_bytes());
                d.bytes(actor.token.as_bytes());
            }
        }
        d.list(&request.audiences);
        d.list(&request.resources);
        match &request.scope {
            None => d.number(0),
            Some(scope) => {
                d.number(1);
                d.list(scope);
            }
        }
        d.bytes(request.requested_token_type.name().as_bytes());
        CacheKey(d.0.finish().as_ref().try_into().unwrap_or([0u8; 32]))
    }
}

/// A SHA-256 context fed with length-prefixed fields.
struct Digest(digest::Context);

impl Digest {
    fn number(&mut self, n: u64) {
        self.0.update(&n.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.number(u64::try_from(b.len()).unwrap_or(u64::MAX));
        self.0.update(b);
    }
    fn list(&mut self, items: &[String]) {
        self.number(u64::try_from(items.len()).unwrap_or(u64::MAX));
        for item in items {
            self.bytes(item.as_bytes());
        }
    }
}

/// A granted exchange, kept to be answered again.
#[derive(Debug)]
pub struct Entry {
    access_token: String,
    issued_token_type: TokenType,
    iat: u64,
    exp: u64,
    /// The last second at which enough of its lifetime remains.
    last_usable: u64,
    /// Its inputs' checks hold while the time is before this.
    proven_until: u64,
    /// The issuers whose keys vouched for its inputs.
    keys: [Option<IssuerId>; 2],
    /// The facts of its audit record, written again for each hit.
    record: GrantRecord,
    /// How long moka keeps it (from insertion, on moka's clock: a memory bound only).
    keep_for: Duration,
    weight: u32,
}

impl Entry {
    /// The issuers whose keys vouched for its subject and actor tokens: a hit also
    /// needs them usable now (the exchange checks).
    pub fn keys(&self) -> &[Option<IssuerId>; 2] {
        &self.keys
    }

    /// The audit record's facts.
    pub fn record(&self) -> &GrantRecord {
        &self.record
    }

    /// The token as the response gives it at `now`: the same token, with the time left.
    pub fn issued(&self, now: u64) -> IssuedToken {
        IssuedToken {
            access_token: self.access_token.clone(),
            issued_token_type: self.issued_token_type,
            expires_in: self.exp.saturating_sub(now),
            scope: self.record.scope.clone(),
            jti: self.record.jti.clone(),
        }
    }
}

struct Expiry;

impl moka::Expiry<CacheKey, Arc<Entry>> for Expiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.keep_for)
    }
}

/// The cache (see the module doc).
pub struct ReissueCache {
    config: ReissueCacheConfig,
    entries: moka::future::Cache<CacheKey, Arc<Entry>>,
    /// A fingerprint of the (policy generation, signing `kid`) last looked up under.
    epoch: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ReissueCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReissueCache")
    }
}

/// Counters and sizes, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Exchanges answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Entries held (approximate).
    pub entries: u64,
    /// Their estimated bytes (approximate).
    pub bytes: u64,
}

impl ReissueCache {
    /// The cache `config` describes; `None` when it is switched off.
    pub fn new(config: &ReissueCacheConfig) -> Option<Self> {
        if !config.enabled {
            return None;
        }
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_key, entry: &Arc<Entry>| entry.weight)
            .expire_after(Expiry)
            .build();
        Some(Self {
            config: config.clone(),
            entries,
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The key of `inputs`; empties the cache when the policy generation or the signing
    /// key differs from the last lookup's (their entries can never be hit again).
    pub fn key(&self, inputs: &Inputs<'_>) -> CacheKey {
        let mut d = Digest(digest::Context::new(&digest::SHA256));
        d.number(inputs.policy_generation);
        d.bytes(inputs.signing_kid.as_bytes());
        let print = d.0.finish();
        let epoch = print
            .as_ref()
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes);
        if self.epoch.swap(epoch, Ordering::Relaxed) != epoch {
            self.entries.invalidate_all();
        }
        CacheKey::of(inputs)
    }

    /// The entry for `key`, if it may be handed out at `now`: at least the configured
    /// share and number of seconds of the token's lifetime remain, and its inputs'
    /// checks still hold. Revocation is the caller's to check (see the module doc).
    pub async fn get(&self, key: &CacheKey, now: u64) -> Option<Arc<Entry>> {
        let found = self.entries.get(key).await.filter(|entry| {
            entry.iat <= now && now <= entry.last_usable && now < entry.proven_until
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Drops the entry under `key`, found revoked after [`get`](Self::get) handed it out:
    /// that lookup counts as a miss, not a hit.
    pub async fn revoked(&self, key: &CacheKey) {
        self.entries.invalidate(key).await;
        self.hits.fetch_sub(1, Ordering::Relaxed);
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps a grant to be answered again, unless it could never be. It may be handed out
    /// up to the issued token's `exp` less the configured minimum remaining (seconds, or
    /// share of its lifetime, whichever is more), and only before its inputs' checks stop
    /// holding (`proven_until`, exclusive, as `exp` is).
    pub async fn insert(
        &self,
        key: CacheKey,
        issued: &IssuedToken,
        iat: u64,
        proven: Proven,
        record: GrantRecord,
    ) {
        let proven_until = proven.until;
        let exp = record.exp;
        let lifetime = exp.saturating_sub(iat);
        // `fraction` of `lifetime`, rounded up: the share that must remain.
        let share = (self.config.min_remaining_fraction * lifetime as f64).ceil() as u64;
        let reserve = share.max(self.config.min_remaining_seconds);
        let last_usable = exp.saturating_sub(reserve);
        if last_usable < iat || exp <= reserve || proven_until <= iat {
            return;
        }
        let keep_until = last_usable.min(proven_until);
        let size = ENTRY_OVERHEAD + issued.access_token.len() + record.size();
        let entry = Entry {
            access_token: issued.access_token.clone(),
            issued_token_type: issued.issued_token_type,
            iat,
            exp,
            last_usable,
            proven_until,
            keys: proven.by_keys,
            keep_for: Duration::from_secs(keep_until.saturating_sub(iat).saturating_add(1)),
            weight: u32::try_from(size).unwrap_or(u32::MAX),
            record,
        };
        self.entries.insert(key, Arc::new(entry)).await;
    }

    /// Counters and sizes, for metrics.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
        }
    }

    /// Applies moka's pending evictions now (tests and benchmarks read exact sizes).
    pub async fn settle(&self) {
        self.entries.run_pending_tasks().await;
    }
}
