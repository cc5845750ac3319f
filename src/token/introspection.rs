//! RFC 7662 introspection of opaque upstream tokens (EXCHANGE-RULES §4).
//!
//! - gleipnir authenticates to the issuer's endpoint with its own credentials
//!   (`client_secret_basic`, RFC 6749 §2.3.1) and POSTs `token` with the hint
//!   `access_token`; the shared client's limits apply (2 s connect, 5 s total, no
//!   redirects), and the answer is read up to 128 KiB.
//! - An `active` answer is a claims set: it goes through the same strict claim parser as
//!   a JWT's payload, and the validator then applies the same checks (`iss`, `typ`, times).
//! - Answers are cached by the SHA-256 of the token, never the token itself: `active`
//!   until min(`exp`, `cache_seconds`), inactive for [`INACTIVE_SECONDS`], measured on our
//!   clock. Concurrent introspections of one token share one call (moka).
//! - Unreachable endpoint, a status other than 200, or an answer without a boolean
//!   `active`: fail closed (503), nothing cached.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::TokenError;
use super::claims::{Claims, parse_claims};
use crate::clock::Clock;
use crate::config::{ConfigError, IssuerConfig};
use crate::jose::{JsonObject, MAX_JWKS_BYTES};
use crate::oauth::form;

/// How long an `active: false` answer is reused.
pub const INACTIVE_SECONDS: u64 = 10;
/// Most introspection answers kept.
const MAX_ENTRIES: u64 = 100_000;

/// What the issuer said about a token, and until when (our clock) we may reuse it.
#[derive(Debug)]
pub(super) struct Answer {
    /// The claims of an active token; `None` for an inactive one.
    pub claims: Option<Claims>,
    until: u64,
}

/// Why introspection gave no answer.
#[derive(Debug, Clone)]
enum Failure {
    /// Unreachable, non-200, or not an introspection response: fail closed.
    Unavailable(String),
    /// An active answer whose claims are malformed: the token is refused.
    Token(TokenError),
}

/// Introspection counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntrospectionStats {
    /// Calls to the endpoint.
    pub calls: u64,
    /// Calls that failed (unavailable).
    pub failures: u64,
    /// Answers served from the cache.
    pub cache_hits: u64,
}

/// Introspects one issuer's opaque tokens.
pub struct Introspector {
    name: String,
    endpoint: reqwest::Url,
    authorization: Zeroizing<String>,
    cache_seconds: u64,
    http: reqwest::Client,
    clock: Clock,
    cache: moka::future::Cache<[u8; 32], Arc<Answer>>,
    calls: AtomicU64,
    failures: AtomicU64,
    cache_hits: AtomicU64,
}

impl Introspector {
    /// The introspector of `issuer`, if it has introspection configured. Resolves the
    /// credentials now (start-up).
    pub fn new(
        issuer: &IssuerConfig,
        http: &reqwest::Client,
        clock: Clock,
        origin: &str,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(config) = &issuer.introspection else {
            return Ok(None);
        };
        let field = format!("issuers[{}].introspection.secret", issuer.name);
        let secret = config
            .secret
            .resolve()
            .map_err(|r| ConfigError::new(origin, &field, r))?;
        let secret = Zeroizing::new(
            String::from_utf8(secret.expose().to_vec())
                .map_err(|_| ConfigError::new(origin, &field, "secret is not UTF-8"))?,
        );
        // RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
        let credentials = Zeroizing::new(format!(
            "{}:{}",
            form::encode(&config.client_id),
            form::encode(&secret)
        ));
        let authorization = Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
        ));
        Ok(Some(Self {
            name: issuer.name.clone(),
            endpoint: config.endpoint.clone(),
            authorization,
            cache_seconds: config.cache_seconds,
            http: http.clone(),
            clock,
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                // A memory bound only: reuse is decided by `until`, on our clock.
                .time_to_live(Duration::from_secs(
                    config.cache_seconds.max(INACTIVE_SECONDS),
                ))
                .build(),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }))
    }

    /// Counters for metrics.
    pub fn stats(&self) -> IntrospectionStats {
        IntrospectionStats {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    /// What the issuer says about `token`, from the cache when still valid.
    pub(super) async fn introspect(&self, token: &str) -> Result<Arc<Answer>, TokenError> {
        let key = cache_key(token);
        if let Some(answer) = self.cache.get(&key).await {
            if self.clock.now() < answer.until {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(answer);
            }
            self.cache.invalidate(&key).await;
        }
        self.cache
            .try_get_with(key, async { self.call(token).await.map(Arc::new) })
            .await
            .map_err(|failure| match &*failure {
                Failure::Unavailable(_) => TokenError::IntrospectionUnavailable,
                Failure::Token(e) => *e,
            })
    }

    async fn call(&self, token: &str) -> Result<Answer, Failure> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.request(token).await;
        if let Err(Failure::Unavailable(reason)) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(issuer = %self.name, reason = %reason, "introspection failed");
        }
        result
    }

    async fn request(&self, token: &str) -> Result<Answer, Failure> {
        let unavailable = |e: reqwest::Error| Failure::Unavailable(e.without_url().to_string());
        let body = Zeroizing::new(format!(
            "token={}&token_type_hint=access_token",
            form::encode(token)
        ));
        let mut response = self
            .http
            .post(self.endpoint.clone())
            .header(http::header::AUTHORIZATION, self.authorization.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(unavailable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(Failure::Unavailable(format!(
                "status {}",
                response.status().as_u16()
            )));
        }
        let mut json = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if json.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(Failure::Unavailable("answer too large".into()));
            }
            json.extend_from_slice(&chunk);
        }
        #[derive(Deserialize)]
        struct Head {
            active: bool,
        }
        let JsonObject(head) = serde_json::from_slice::<JsonObject<Head>>(&json).map_err(|_| {
            Failure::Unavailable("not an introspection response (no boolean active)".into())
        })?;
        let now = self.clock.now();
        if !head.active {
            return Ok(Answer {
                claims: None,
                until: now.saturating_add(INACTIVE_SECONDS),
            });
        }
        let claims = parse_claims(&json).map_err(Failure::Token)?;
        let exp = claims
            .exp
            .ok_or(Failure::Token(TokenError::MissingClaim("exp")))?;
        Ok(Answer {
            until: now.saturating_add(self.cache_seconds).min(exp),
            claims: Some(claims),
        })
    }
}

/// The cache key: SHA-256 of the token, so the cache never holds a token.
fn cache_key(token: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_is_a_digest_not_the_token() {
        let key = cache_key("opaque-token-value");
        assert_ne!(&key[..18], b"opaque-token-value");
        assert_eq!(key, cache_key("opaque-token-value"));
        assert_ne!(key, cache_key("opaque-token-valuf"));
    }
}
