//! RFC 7662 introspection of upstream tokens (rules §4): opaque ones, and the JWTs of an
//! issuer configured with `check_jwts`.
//!
//! - gleipnir authenticates to the issuer's endpoint with its own credentials
//!   (`client_secret_basic`, RFC 6749 §2.3.1; the header is built once and marked
//!   sensitive) and POSTs `token` with the hint `access_token`; the shared client's limits
//!   apply (2 s connect, 5 s total, no redirects), and the answer is read up to 128 KiB.
//! - An `active` answer is a claims set: it goes through the same strict claim parser as
//!   a JWT's payload, and the validator then applies the same checks (`iss`, `typ`, times),
//!   plus `token_type` `Bearer`.
//! - Answers are cached by the SHA-256 of the token, never the token itself: `active`
//!   until min(`exp`, `cache_seconds`); inactive answers (and `unsupported_token_type`)
//!   and refused ones for [`BRIEF_SECONDS`], measured on our clock. Concurrent
//!   introspections of one token share one call (moka); the cache is bounded in bytes.
//! - Unreachable endpoint, a status other than 200, or an answer without a boolean
//!   `active`: fail closed (503), nothing cached, and the issuer's endpoint is left alone
//!   for a backoff (1, 2, 4, 8 s) during which its opaque tokens get 503 at once. At most
//!   [`MAX_IN_FLIGHT`] calls per issuer run at a time; beyond that, 503 at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use serde::Deserialize;
use tracing::Instrument as _;
use zeroize::Zeroizing;

use super::TokenError;
use super::claims::{Claims, parse_claims};
use crate::clock::Clock;
use crate::config::{ConfigError, IssuerConfig};
use crate::jose::JsonObject;
use crate::metrics::IntrospectionStats;
use crate::oauth::form;
use crate::upstream::{Backoff, read_capped};

/// How long an inactive or refused answer is reused.
pub const BRIEF_SECONDS: u64 = 10;
/// Most introspection calls per issuer at a time.
pub const MAX_IN_FLIGHT: usize = 16;
/// Bytes of answers kept per issuer (approximate: the size of the answers' JSON).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// What the issuer said about a token, and until when (our clock) we may reuse it.
#[derive(Debug)]
pub(super) struct Answer {
    /// The claims of an active token, or why the token is refused (`Inactive` included).
    pub outcome: Result<Claims, TokenError>,
    /// Until when the answer may be reused.
    pub(super) until: u64,
    weight: u32,
}

/// Introspects one issuer's opaque tokens.
pub struct Introspector {
    name: String,
    endpoint: reqwest::Url,
    authorization: http::HeaderValue,
    cache_seconds: u64,
    check_jwts: bool,
    http: reqwest::Client,
    clock: Clock,
    cache: moka::future::Cache<[u8; 32], Arc<Answer>>,
    in_flight: tokio::sync::Semaphore,
    backoff: Mutex<Backoff>,
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
        let bad = |reason: &str| ConfigError::new(origin, &field, reason);
        let secret = config.secret.resolve().map_err(|r| bad(&r))?;
        let secret = Zeroizing::new(
            String::from_utf8(secret.expose().to_vec()).map_err(|_| bad("secret is not UTF-8"))?,
        );
        // RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding.
        let credentials = Zeroizing::new(format!(
            "{}:{}",
            form::encode(&config.client_id),
            form::encode(&secret)
        ));
        let basic = Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
        ));
        let mut authorization = http::HeaderValue::from_str(&basic)
            .map_err(|_| bad("cannot form the Authorization header"))?;
        authorization.set_sensitive(true);
        Ok(Some(Self {
            name: issuer.name.clone(),
            endpoint: config.endpoint.clone(),
            authorization,
            cache_seconds: config.cache_seconds,
            check_jwts: config.check_jwts,
            http: http.clone(),
            clock,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_key, answer: &Arc<Answer>| answer.weight)
                // A memory bound only: reuse is decided by `until`, on our clock.
                .time_to_live(Duration::from_secs(config.cache_seconds.max(BRIEF_SECONDS)))
                .build(),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            backoff: Mutex::new(Backoff::default()),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }))
    }

    /// Whether the issuer's JWTs are introspected too, once their signature verified.
    pub fn checks_jwts(&self) -> bool {
        self.check_jwts
    }

    /// Counters for metrics.
    pub fn stats(&self) -> IntrospectionStats {
        IntrospectionStats {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
        }
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        if self.backoff().backing_off(self.clock.now()) {
            return Err(TokenError::IntrospectionUnavailable);
        }
        self.cache
            .try_get_with(key, async { self.call(token).await.map(Arc::new) })
            .await
            .map_err(|_| TokenError::IntrospectionUnavailable)
    }

    /// One call to the endpoint; `Err` means unavailable (nothing is cached).
    async fn call(&self, token: &str) -> Result<Answer, String> {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(format!(
                "more than {MAX_IN_FLIGHT} introspection calls in flight"
            ));
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let span =
            crate::upstream::call_span("introspection", &self.name, "POST", self.endpoint.as_str());
        let result = self.request(token, &span).instrument(span.clone()).await;
        if result.is_err() {
            crate::upstream::note_outcome(&span, None, Some("unavailable"));
        }
        self.backoff().ended(self.clock.now(), result.is_ok());
        if let Err(reason) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(issuer = %self.name, url = %self.endpoint, reason = %reason, "introspection failed");
        }
        result
    }

    /// The call itself, in `span`, carrying its trace context (never the token: it is in
    /// the body only).
    async fn request(&self, token: &str, span: &tracing::Span) -> Result<Answer, String> {
        let response = self
            .http
            .post(self.endpoint.clone())
            .headers(crate::upstream::trace_headers())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(format!(
                "token={}&token_type_hint=access_token",
                form::encode(token)
            ))
            .send()
            .await
            .map_err(crate::upstream::describe)?;
        let status = response.status();
        crate::upstream::note_outcome(span, Some(status.as_u16()), None);
        let json = read_capped(response).await.map_err(|e| format!("{e:?}"))?;
        let now = self.clock.now();
        let weight = u32::try_from(json.len())
            .unwrap_or(u32::MAX)
            .saturating_add(64);
        let brief = |outcome: Result<Claims, TokenError>| Answer {
            outcome,
            until: now.saturating_add(BRIEF_SECONDS),
            weight,
        };
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
        }
        if status == reqwest::StatusCode::BAD_REQUEST {
            // RFC 7662 §2.3: a token of a type the server does not introspect.
            return match serde_json::from_slice::<JsonObject<ErrorBody>>(&json) {
                Ok(JsonObject(e)) if e.error == "unsupported_token_type" => {
                    Ok(brief(Err(TokenError::Inactive)))
                }
                _ => Err("status 400".into()),
            };
        }
        if status != reqwest::StatusCode::OK {
            return Err(format!("status {}", status.as_u16()));
        }
        #[derive(Deserialize)]
        struct Head {
            active: bool,
        }
        let JsonObject(head) = serde_json::from_slice::<JsonObject<Head>>(&json)
            .map_err(|_| "not an introspection response (no boolean active)".to_owned())?;
        if !head.active {
            return Ok(brief(Err(TokenError::Inactive)));
        }
        let claims = match parse_claims(&json) {
            Ok(claims) => claims,
            Err(e) => return Ok(brief(Err(e))),
        };
        let Some(exp) = claims.exp else {
            return Ok(brief(Err(TokenError::MissingClaim("exp"))));
        };
        Ok(Answer {
            until: now.saturating_add(self.cache_seconds).min(exp),
            outcome: Ok(claims),
            weight,
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
