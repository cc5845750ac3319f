//! `[tokens]`: limits on the tokens gleipnir accepts and issues.

use serde::Deserialize;

use super::{Checker, MAX_CHAIN_DEPTH, bounded};

const DEFAULT_MAX_TOKEN: usize = 16 * 1024;
const DEFAULT_LEEWAY: u64 = 30;
const DEFAULT_MAX_DEPTH: usize = 4;
const DEFAULT_MAX_TTL: u64 = 3600;

/// Token validation and issuance settings.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Largest subject/actor token accepted, checked before decoding.
    pub max_token_bytes: usize,
    /// Clock skew allowed on `exp`, `nbf`, `iat`, in seconds.
    pub leeway_seconds: u64,
    /// Upper bound for every client's `max_depth`.
    pub max_depth: usize,
    /// Upper bound for every client's `ttl_seconds`.
    pub max_ttl_seconds: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
    max_token_bytes: Option<usize>,
    leeway_seconds: Option<u64>,
    max_depth: Option<usize>,
    max_ttl_seconds: Option<u64>,
}

impl RawTokens {
    /// The `[tokens]` table with its defaults, every value within its bounds.
    pub(super) fn validate(self, cx: &mut Checker) -> Option<TokenConfig> {
        let max_token_bytes = cx.check(
            "tokens.max_token_bytes",
            bounded(self.max_token_bytes, DEFAULT_MAX_TOKEN, 1024, 64 * 1024),
        );
        let leeway_seconds = cx.check(
            "tokens.leeway_seconds",
            bounded(self.leeway_seconds, DEFAULT_LEEWAY, 0, 300),
        );
        let max_depth = cx.check(
            "tokens.max_depth",
            bounded(self.max_depth, DEFAULT_MAX_DEPTH, 1, MAX_CHAIN_DEPTH),
        );
        let max_ttl_seconds = cx.check(
            "tokens.max_ttl_seconds",
            bounded(self.max_ttl_seconds, DEFAULT_MAX_TTL, 1, 86_400),
        );
        Some(TokenConfig {
            max_token_bytes: max_token_bytes?,
            leeway_seconds: leeway_seconds?,
            max_depth: max_depth?,
            max_ttl_seconds: max_ttl_seconds?,
        })
    }
}
