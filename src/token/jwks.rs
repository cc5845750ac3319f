//! The keys of one upstream issuer, fetched from its `jwks_uri` and cached (EXCHANGE-RULES §4).
//!
//! Built here: fetch bounded in time (connect 2 s, total 5 s) and size (128 KiB, 64 keys),
//! no redirects, keys parsed one by one (unusable ones skipped), freshness from
//! `Cache-Control: max-age` clamped to [1 min, 1 h] (default 10 min), concurrent misses
//! sharing one fetch (moka's `try_get_with`), and an unknown `kid` causing at most one
//! refetch per cooldown (30 s) per issuer, shared by every waiter.
//!
//! Not built yet (the upstream-hardening issue): background refresh before expiry, and
//! serving the last good keys through an outage up to a maximum staleness. Until then an
//! expired entry is refetched on demand and a failed fetch answers 503.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;
use tokio::time::Instant;

use crate::jose::{JwsAlgorithm, KeySet, MAX_JWKS_BYTES};

const DEFAULT_TTL: Duration = Duration::from_secs(600);
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Minimum time between two fetches forced by an unknown `kid`.
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);

/// Why the keys could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// Connection refused, timed out, TLS failure.
    #[error("request failed: {0}")]
    Transport(String),
    /// The issuer answered with a status other than 200 (redirects are not followed).
    #[error("unexpected status {0}")]
    Status(u16),
    /// The body exceeded the size cap.
    #[error("JWKS larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The body is not a usable JWKS.
    #[error("{0}")]
    Malformed(String),
}

/// Keys as fetched, with when and for how long they are fresh.
pub struct FetchedKeys {
    /// The usable keys.
    pub keys: KeySet,
    fetched_at: Instant,
    ttl: Duration,
}

struct TtlFromCacheControl;

impl Expiry<(), Arc<FetchedKeys>> for TtlFromCacheControl {
    fn expire_after_create(
        &self,
        _key: &(),
        value: &Arc<FetchedKeys>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The JWKS of one issuer.
pub struct JwksCache {
    name: String,
    uri: reqwest::Url,
    algorithms: Vec<JwsAlgorithm>,
    http: reqwest::Client,
    cache: Cache<(), Arc<FetchedKeys>>,
    last_forced: Mutex<Option<Instant>>,
    has_keys: AtomicBool,
}

impl JwksCache {
    /// A cache for `uri`, keeping keys usable with `algorithms`.
    pub fn new(
        name: String,
        uri: reqwest::Url,
        algorithms: Vec<JwsAlgorithm>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            name,
            uri,
            algorithms,
            http,
            cache: Cache::builder()
                .max_capacity(1)
                .expire_after(TtlFromCacheControl)
                .build(),
            last_forced: Mutex::new(None),
            has_keys: AtomicBool::new(false),
        }
    }

    /// Whether keys were fetched successfully at least once (readiness).
    pub fn has_keys(&self) -> bool {
        self.has_keys.load(Ordering::Relaxed)
    }

    /// The current keys, fetching them when absent or expired. Concurrent callers share
    /// one fetch.
    pub async fn keys(&self) -> Result<Arc<FetchedKeys>, Arc<FetchError>> {
        self.cache.try_get_with((), self.fetch()).await
    }

    /// Called when a token names a `kid` that `seen` does not have. Refetches at most once
    /// per cooldown; within the cooldown, returns the current keys (joining a fetch in
    /// flight), so the caller looks the `kid` up once more and then refuses.
    pub async fn refresh_for_unknown_kid(
        &self,
        seen: &Arc<FetchedKeys>,
    ) -> Result<Arc<FetchedKeys>, Arc<FetchError>> {
        let force = {
            let mut last = self
                .last_forced
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let latest = last.map_or(seen.fetched_at, |l| l.max(seen.fetched_at));
            let due = latest.elapsed() >= UNKNOWN_KID_COOLDOWN;
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if force {
            tracing::info!(issuer = %self.name, "unknown kid: refetching JWKS");
            self.cache.invalidate(&()).await;
        }
        self.keys().await
    }

    async fn fetch(&self) -> Result<Arc<FetchedKeys>, FetchError> {
        let result = self.fetch_inner().await;
        match &result {
            Ok(f) => {
                self.has_keys.store(true, Ordering::Relaxed);
                tracing::info!(issuer = %self.name, keys = f.keys.len(), ttl_s = f.ttl.as_secs(), "JWKS fetched");
            }
            Err(e) => tracing::warn!(issuer = %self.name, error = %e, "JWKS fetch failed"),
        }
        result.map(Arc::new)
    }

    async fn fetch_inner(&self) -> Result<FetchedKeys, FetchError> {
        let mut response = self
            .http
            .get(self.uri.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| FetchError::Transport(e.without_url().to_string()))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let ttl = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map_or(DEFAULT_TTL, ttl_from_cache_control);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Transport(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let (keys, skipped) = KeySet::from_jwks(&body, &self.algorithms)
            .map_err(|e| FetchError::Malformed(e.to_string()))?;
        if skipped > 0 {
            tracing::warn!(issuer = %self.name, skipped, "JWKS keys skipped (unsupported or malformed)");
        }
        if keys.is_empty() {
            return Err(FetchError::Malformed("JWKS has no usable key".into()));
        }
        Ok(FetchedKeys {
            keys,
            fetched_at: Instant::now(),
            ttl,
        })
    }
}

/// `max-age` from a Cache-Control value, clamped; `no-cache`/`no-store` mean the minimum.
fn ttl_from_cache_control(value: &str) -> Duration {
    let mut ttl = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return MIN_TTL;
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            ttl = secs
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    ttl.map_or(DEFAULT_TTL, |t| t.clamp(MIN_TTL, MAX_TTL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_clamped() {
        assert_eq!(
            ttl_from_cache_control("public, max-age=300"),
            Duration::from_secs(300)
        );
        assert_eq!(ttl_from_cache_control("max-age=5"), MIN_TTL);
        assert_eq!(ttl_from_cache_control("max-age=999999"), MAX_TTL);
        assert_eq!(ttl_from_cache_control("no-store"), MIN_TTL);
        assert_eq!(ttl_from_cache_control("private"), DEFAULT_TTL);
        assert_eq!(ttl_from_cache_control("max-age=abc"), DEFAULT_TTL);
    }
}
