//! The trusted issuers, by exact `iss` (RFC 8725 §3.8): each with how its tokens are
//! verified (our own key ring, an upstream JWKS, introspection), its profile, algorithm
//! allow-list, token types, maximum token age and maximum token lifetime. Our own issuer is in the table with the
//! keys we sign with, so a token we issued can be exchanged again.

use std::collections::HashMap;
use std::sync::Arc;

use super::introspection::Introspector;
use super::proof::ClaimRules;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, IssuerId, IssuerProfile};
use crate::jose::JwsAlgorithm;
use crate::keys::ring::KeyStore;
use crate::oauth::TokenType;
use crate::upstream::jwks::JwksCache;

/// Where an issuer's verification keys come from.
pub(super) enum IssuerKeys {
    /// Our own keys, in memory: every key of the ring in force.
    Local(Arc<KeyStore>),
    /// An upstream issuer's JWKS.
    Remote(Arc<JwksCache>),
}

/// One issuer we trust, and how.
pub(super) struct TrustedIssuer {
    pub(super) id: IssuerId,
    /// Its name, as metrics label it.
    pub(super) label: Arc<str>,
    pub(super) introspector: Option<Introspector>,
    pub(super) profile: IssuerProfile,
    pub(super) max_token_age: Option<u64>,
    pub(super) max_token_lifetime: u64,
    pub(super) algorithms: Vec<JwsAlgorithm>,
    pub(super) token_types: Vec<TokenType>,
    pub(super) required: bool,
    pub(super) keys: IssuerKeys,
}

impl TrustedIssuer {
    /// The claim checks for this issuer's tokens.
    pub(super) fn claim_rules(&self, leeway: u64) -> ClaimRules {
        ClaimRules {
            leeway,
            max_token_age: self.max_token_age,
            max_lifetime: self.max_token_lifetime,
        }
    }
}

/// Builds the issuer table: our own issuer (with the keys of `own_keys`) and every
/// configured one, resolving introspection credentials now.
pub(super) fn table(
    config: &Config,
    own_keys: Arc<KeyStore>,
    http: &reqwest::Client,
    clock: &Clock,
) -> Result<HashMap<String, TrustedIssuer>, ConfigError> {
    let mut by_iss = HashMap::with_capacity(config.issuers.len() + 1);
    by_iss.insert(
        config.issuer.clone(),
        TrustedIssuer {
            id: IssuerId::SELF,
            label: Arc::from(crate::config::SELF_ISSUER_NAME),
            introspector: None,
            profile: IssuerProfile::Rfc9068,
            max_token_age: None,
            // Our own tokens live at most as long as we mint them for.
            max_token_lifetime: config.tokens.max_ttl_seconds,
            // The keys bind the algorithm; a ring may hold both kinds we sign with.
            algorithms: vec![JwsAlgorithm::Es256, JwsAlgorithm::EdDsa],
            token_types: vec![TokenType::AccessToken, TokenType::Jwt],
            required: false,
            keys: IssuerKeys::Local(own_keys),
        },
    );
    for (index, issuer) in config.issuers.iter().enumerate() {
        by_iss.insert(
            issuer.issuer.clone(),
            TrustedIssuer {
                id: IssuerId::upstream(index),
                label: Arc::from(issuer.name.as_str()),
                introspector: Introspector::new(issuer, http, clock.clone(), &config.origin)?,
                profile: issuer.profile,
                max_token_age: issuer.max_token_age_seconds,
                max_token_lifetime: issuer.max_token_lifetime_seconds,
                algorithms: issuer.algorithms.clone(),
                token_types: issuer.token_types.clone(),
                required: issuer.required,
                keys: IssuerKeys::Remote(Arc::new(JwksCache::new(
                    issuer,
                    http.clone(),
                    clock.clone(),
                ))),
            },
        );
    }
    Ok(by_iss)
}
