//! Per-client rate limits (policy `rate_limit`, rules §7, RFC 6585 §4): a sliding window
//! kept in the shared [`Store`], so every replica sharing it counts against one budget.
//!
//! The window: time is cut into windows of `seconds`; a request is admitted while the
//! count of the current window plus the previous window's count, weighted by the share of
//! it still inside the last `seconds`, stays under `requests`. Refused requests are not
//! counted (a client that backs off gets back in). The check and the count are one
//! atomic store call ([`Store::admit`]: a Lua script in Redis), and the answer to a
//! refused request says when the estimate will be back under the limit (`Retry-After`).
//!
//! When the store fails, the request is admitted (fail open) and the failure counted in
//! `gleipnir_store_calls_total`: a rate limit protects capacity, and refusing every
//! request while Redis is down would turn a store outage into an outage of every
//! exchange, including those no revocation check needs. Revocation, which protects
//! security, fails closed instead (see `lifecycle`).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{Store, Window};

/// A client's limit: at most `requests` per `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests admitted per window.
    pub requests: u64,
    /// The window, in seconds.
    pub seconds: u64,
}

/// A request over its client's limit: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// `Retry-After`, seconds.
    pub retry_after: u32,
}

/// Counts requests per client in the store.
pub struct RateLimiter {
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    /// A limiter counting in `store`.
    pub fn new(store: Store, clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            clock,
            metrics,
        }
    }

    /// Admits one request of `client` under `limit`, or says when to retry.
    pub async fn check(&self, client: &Arc<str>, limit: RateLimit) -> Result<(), RateLimited> {
        let seconds = limit.seconds.max(1);
        let now = self.clock.now();
        let window = now / seconds;
        let elapsed = now % seconds;
        let name = URL_SAFE_NO_PAD.encode(client.as_bytes());
        let current = format!("rl:{name}:{window}");
        let previous = format!("rl:{name}:{}", window.saturating_sub(1));
        let step = Window {
            current: &current,
            previous: &previous,
            previous_weight_milli: (seconds - elapsed).saturating_mul(1000) / seconds,
            limit: limit.requests,
            // Alive while it is the current window and then the previous one.
            expires_at: window.saturating_add(2).saturating_mul(seconds),
        };
        let admitted = match self.store.admit(&step).await {
            Ok(admitted) => admitted,
            // Fail open (module docs); the store call is counted as failed.
            Err(_) => return Ok(()),
        };
        if admitted.admitted {
            return Ok(());
        }
        self.metrics.rate_limited(client);
        Err(RateLimited {
            retry_after: retry_after(now, limit, admitted.current, admitted.previous),
        })
    }
}

/// Seconds from `now` until the weighted count (`current` this window, `previous` the
/// one before) is under the limit, if nothing else arrives: at least 1.
fn retry_after(now: u64, limit: RateLimit, current: u64, previous: u64) -> u32 {
    let seconds = limit.seconds.max(1);
    let window = now / seconds;
    for wait in 1..=seconds.saturating_mul(2) {
        let at = now.saturating_add(wait);
        let (cur, prev) = match (at / seconds).saturating_sub(window) {
            0 => (current, previous),
            1 => (0, current),
            _ => (0, 0),
        };
        let weight = (seconds - at % seconds).saturating_mul(1000) / seconds;
        if prev.saturating_mul(weight) / 1000 + cur < limit.requests {
            return u32::try_from(wait).unwrap_or(u32::MAX);
        }
    }
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_when_the_estimate_falls_under_the_limit() {
        let limit = RateLimit {
            requests: 10,
            seconds: 60,
        };
        // Full current window at its start: the previous is empty, so wait for the next
        // window, where the full one weighs (60 - e)/60 until 10 × that < 10: e ≥ 1.
        assert_eq!(retry_after(600, limit, 10, 0), 61);
        // Half way through with the previous window full: 5 + 10 × 30/60 = 10 now, and
        // 5 + ⌊10 × 29/60⌋ = 9 a second later.
        assert_eq!(retry_after(630, limit, 5, 10), 1);
        let per_second = RateLimit {
            requests: 2,
            seconds: 1,
        };
        // At 6 the full window 5 still weighs all of its 2; at 7 nothing counts.
        assert_eq!(retry_after(5, per_second, 2, 2), 2);
    }
}
