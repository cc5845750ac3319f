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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Serialises forced refetches; holds when the last one started.
    refetch: tokio::sync::Mutex<Option<Instant>>,
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
            refetch: tokio::sync::Mutex::new(None),
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
    /// per cooldown; concurrent callers wait for that one fetch and share its result. The
    /// current keys stay in the cache until a fetch succeeds, so a refetch forced by a bad
    /// `kid` during an upstream outage never costs the keys that still work.
    pub async fn refresh_for_unknown_kid(&self, seen: &Arc<FetchedKeys>) -> Arc<FetchedKeys> {
        // Held across the fetch on purpose: this is the miss path, and the waiters queued
        // here are exactly the requests that should share the fetch's result.
        let mut last_forced = self.refetch.lock().await;
        let current = self
            .cache
            .get(&())
            .await
            .unwrap_or_else(|| Arc::clone(seen));
        if !Arc::ptr_eq(&current, seen) {
            return current; // refreshed while we waited
        }
        let latest = last_forced.map_or(current.fetched_at, |l| l.max(current.fetched_at));
        if latest.elapsed() < UNKNOWN_KID_COOLDOWN {
            return current;
        }
        *last_forced = Some(Instant::now());
        tracing::info!(issuer = %self.name, "unknown kid: refetching JWKS");
        match self.fetch().await {
            Ok(fresh) => {
                self.cache.insert((), Arc::clone(&fresh)).await;
                fresh
            }
            Err(_) => current,
        }
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
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route HTTP upstream on loopback answering `status` with `body`, counting requests.
    async fn upstream(status: u16, body: &'static str) -> (reqwest::Url, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = reqwest::Url::parse(&format!(
            "http://{}/jwks.json",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                // Slow enough that concurrent callers overlap with the fetch.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        (url, hits)
    }

    const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"new","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    /// Puts keys "fetched 31 s ago" in the cache, as if the cooldown had passed.
    async fn seeded(cache: &JwksCache) -> Arc<FetchedKeys> {
        let old = Arc::new(FetchedKeys {
            keys: KeySet::default(),
            fetched_at: Instant::now().checked_sub(Duration::from_secs(31)).unwrap(),
            ttl: DEFAULT_TTL,
        });
        cache.cache.insert((), Arc::clone(&old)).await;
        old
    }

    fn cache_for(url: reqwest::Url) -> JwksCache {
        JwksCache::new(
            "test".into(),
            url,
            JwsAlgorithm::DEFAULT_ALLOWED.to_vec(),
            reqwest::Client::new(),
        )
    }

    #[tokio::test]
    async fn failed_unknown_kid_refetch_keeps_the_last_good_keys() {
        let (url, hits) = upstream(500, "down").await;
        let cache = cache_for(url);
        let old = seeded(&cache).await;
        let after = cache.refresh_for_unknown_kid(&old).await;
        assert!(
            Arc::ptr_eq(&after, &old),
            "the failed refetch returns the keys we had"
        );
        assert!(
            Arc::ptr_eq(&cache.keys().await.unwrap(), &old),
            "and they are still cached"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_unknown_kids_share_one_refetch_then_cool_down() {
        let (url, hits) = upstream(200, JWKS).await;
        let cache = cache_for(url);
        let old = seeded(&cache).await;
        let results = join_all(
            (0..8)
                .map(|_| cache.refresh_for_unknown_kid(&old))
                .collect(),
        )
        .await;
        assert_eq!(hits.load(Ordering::SeqCst), 1, "eight waiters, one fetch");
        for fresh in &results {
            assert!(Arc::ptr_eq(fresh, &results[0]));
            assert!(!Arc::ptr_eq(fresh, &old));
        }
        assert_eq!(results[0].keys.len(), 1);
        // Within the cooldown, a new unknown kid causes no fetch.
        let again = cache.refresh_for_unknown_kid(&results[0]).await;
        assert!(Arc::ptr_eq(&again, &results[0]));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// Polls every future concurrently on this task (no extra crate for join_all).
    async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
        let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
        let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
                if output.is_none() {
                    match future.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *output = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        outputs.into_iter().flatten().collect()
    }

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
