//! Stage 3: subject and actor token validation (RFC 8725, RFC 9068, RFC 7662).
//!
//! A presented token earns one of two proofs ([`proof`]): [`Checked<R>`] when its issuer,
//! declared type, algorithm and claims pass, and [`VerifiedToken<R>`] when it is also
//! genuine. [`TokenValidator::validate`] returns the second, [`TokenValidator::check_unsigned`]
//! (dry runs only) the first; no flag chooses between them.
//!
//! The order: first what is needed to select and use a key, cheap-to-costly: size cap
//! before decoding, strict header (no `crit`, no key-carrying headers), strict claims,
//! issuer by exact `iss` (`issuers.rs`), the issuer accepted for the role, the algorithm
//! from the issuer's allow-list and from the key (never from the token alone). Then the
//! signature (`jws.rs`). Only then what the token says: declared token type against the
//! issuer and the token's kind (`kind.rs`), claims and times against our clock. A forged
//! token is so refused as forged, never as expired or mistyped: a refusal reason about
//! the claims of a token nobody signed would mask the forgery in the audit (the pattern
//! of CVE-2024-51744). A token that is not a compact JWS is introspected (`opaque.rs`).
//!
//! Parts: [`error`] (why a token is refused), [`proof`] (the proof types and the claim
//! checks), `issuers.rs` (the issuer table), `jws.rs`, `opaque.rs` and [`introspection`]
//! (the RFC 7662 client), `kind.rs`, and `claims` (the strict JSON decoders).

mod claims;
pub mod error;
pub mod introspection;
mod issuers;
mod jws;
mod kind;
mod opaque;
pub mod proof;

use std::collections::HashMap;
use std::sync::Arc;

pub use claims::ActorId;
pub use error::TokenError;
pub use proof::{Actor, Checked, Introspected, Role, Subject, VerifiedToken};

use crate::clock::Clock;
use crate::config::{Config, ConfigError, IssuerId, IssuerProfile};
use crate::jose::JwsAlgorithm;
use crate::keys::ring::KeyStore;
use crate::metrics::Metrics;
use crate::oauth::TokenType;
use crate::upstream::jwks::JwksCache;
use issuers::{IssuerKeys, TrustedIssuer};
use jws::Jws;
use kind::TokenKind;

/// Validates subject and actor tokens against the trusted issuers.
pub struct TokenValidator {
    by_iss: HashMap<String, TrustedIssuer>,
    metrics: Arc<Metrics>,
    unresolved: Arc<str>,
    clock: Clock,
    leeway: u64,
    max_bytes: usize,
}

/// A compact JWS that passed the checks needed to select and use a key: its signature is
/// still to be verified with `issuer`'s keys, and then its type and claims checked
/// ([`TokenValidator::check_claims`]).
struct Inspected<'v, 't> {
    issuer: &'v TrustedIssuer,
    jws: Jws<'t>,
}

impl TokenValidator {
    /// Builds the issuer table: our own issuer (with the keys of `own_keys`) and every
    /// configured one, resolving introspection credentials now.
    pub fn new(
        config: &Config,
        own_keys: Arc<KeyStore>,
        http: &reqwest::Client,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            by_iss: issuers::table(config, own_keys, http, &clock)?,
            metrics,
            unresolved: Arc::from("unresolved"),
            clock,
            leeway: config.tokens.leeway_seconds,
            max_bytes: config.tokens.max_token_bytes,
        })
    }

    /// Whether every required upstream issuer has keys to validate with now.
    pub fn is_ready(&self) -> bool {
        self.remote()
            .all(|(required, cache)| !required || cache.has_usable_keys())
    }

    /// Whether `issuer`'s keys are usable now (not older than its staleness bound): what
    /// a reused validation of a token it signed still needs. Our own keys always are.
    pub fn keys_usable(&self, issuer: IssuerId) -> bool {
        self.by_iss
            .values()
            .find(|i| i.id == issuer)
            .is_some_and(|i| match &i.keys {
                IssuerKeys::Local(_) => true,
                IssuerKeys::Remote(cache) => cache.has_usable_keys(),
            })
    }

    /// One keeper per upstream issuer, each fetching and refreshing that issuer's keys
    /// (see [`JwksCache::keep`]). Run each on its own task: a hung issuer delays no other.
    pub fn keepers(&self) -> Vec<Arc<JwksCache>> {
        self.remote().map(|(_, cache)| Arc::clone(cache)).collect()
    }

    /// Per-issuer JWKS counters, for metrics.
    pub fn jwks_stats(&self) -> Vec<(String, crate::metrics::JwksStats)> {
        self.remote()
            .map(|(_, cache)| (cache.name().to_owned(), cache.stats()))
            .collect()
    }

    fn remote(&self) -> impl Iterator<Item = (bool, &Arc<JwksCache>)> {
        self.by_iss.values().filter_map(|i| match &i.keys {
            IssuerKeys::Remote(cache) => Some((i.required, cache)),
            IssuerKeys::Local(_) => None,
        })
    }

    /// Validates a token presented as `declared` (RFC 8693 §2.1 `*_token_type`): every
    /// check, and then its signature, or its issuer's introspection answer.
    ///
    /// `accepted` are the issuers the client's policy accepts for this role: an opaque
    /// token (not a compact JWS) names no issuer, so it is introspected at the one of them
    /// that has introspection, and refused when there is none.
    pub async fn validate<R: Role>(
        &self,
        token: &str,
        declared: TokenType,
        accepted: &[IssuerId],
    ) -> Result<VerifiedToken<R>, TokenError> {
        let mut resolved = None;
        let result = match self.inspect(token, accepted, &mut resolved) {
            // The signature first: the claims of a token nobody signed are not reported.
            Ok(Some(inspected)) => match inspected
                .jws
                .verify(inspected.issuer, self.clock.now())
                .await
            {
                Ok(verified) => self
                    .check_signed(token, inspected, declared)
                    .await
                    .map(|checked| VerifiedToken::signed(checked, verified)),
                Err(e) => Err(e),
            },
            Ok(None) => {
                self.validate_opaque(token, declared, accepted, &mut resolved)
                    .await
            }
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(_) => "valid",
            Err(e) => e.as_str(),
        };
        let issuer = resolved.as_ref().unwrap_or(&self.unresolved);
        self.metrics.validation(issuer, R::NAME, outcome);
        result
    }

    /// Every check of [`validate`](Self::validate) but the one that proves the token
    /// genuine, for an offline dry run (`gleipnir policy explain --offline`, `gleipnir
    /// policy test`), which says so on every line it prints and mints nothing. No key is
    /// fetched; an opaque token (which only introspection could vouch for) is refused.
    pub fn check_unsigned<R: Role>(
        &self,
        token: &str,
        declared: TokenType,
        accepted: &[IssuerId],
    ) -> Result<Checked<R>, TokenError> {
        match self.inspect(token, accepted, &mut None)? {
            Some(inspected) => self.check_claims(inspected, declared),
            None => Err(TokenError::NotCompactJws),
        }
    }

    /// The header an unsigned test token of `iss` needs to pass the checks (the issuer's
    /// first algorithm; `typ` by its profile and the declared type), for `policy test`.
    pub(crate) fn unsigned_header(
        &self,
        iss: &str,
        declared: TokenType,
    ) -> Option<(JwsAlgorithm, &'static str)> {
        let issuer = self.by_iss.get(iss)?;
        let typ = match (declared, issuer.profile) {
            (TokenType::AccessToken, IssuerProfile::Rfc9068) => "at+jwt",
            _ => "JWT",
        };
        Some((*issuer.algorithms.first()?, typ))
    }

    /// The checks needed to select and use a key, noting in `resolved` which issuer the
    /// token was attributed to (for metrics). `None`: the token is not a compact JWS and
    /// not shaped as JOSE, so only introspection can vouch for it.
    fn inspect<'v, 't>(
        &'v self,
        token: &'t str,
        accepted: &[IssuerId],
        resolved: &mut Option<Arc<str>>,
    ) -> Result<Option<Inspected<'v, 't>>, TokenError> {
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLarge);
        }
        let dots = token.bytes().filter(|&b| b == b'.').count();
        if dots != 2 {
            return match jws::looks_like_jose(token, dots) {
                true => Err(TokenError::NotCompactJws),
                false => Ok(None),
            };
        }
        let (jws, iss) = jws::parse(token)?;
        // RFC 8725 §3.8: the issuer is matched exactly; it selects the keys.
        let issuer = self.by_iss.get(&iss).ok_or(TokenError::UnknownIssuer)?;
        *resolved = Some(Arc::clone(&issuer.label));
        // Before any key work: an upstream issuer this client may not use for this role
        // costs no fetch. (Our own issuer costs none; the policy explains its refusals.)
        if issuer.id != IssuerId::SELF && !accepted.contains(&issuer.id) {
            return Err(TokenError::IssuerNotAccepted);
        }
        // RFC 8725 §3.1: only algorithms this issuer is allowed to use select a key.
        if !issuer.algorithms.contains(&jws.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        Ok(Some(Inspected { issuer, jws }))
    }

    /// What a JWT whose signature verified says: from its claims, or, when its issuer
    /// introspects its JWTs (`check_jwts`), from the issuer's answer (an ID token, which
    /// introspection does not describe, always from its claims).
    async fn check_signed<R: Role>(
        &self,
        token: &str,
        inspected: Inspected<'_, '_>,
        declared: TokenType,
    ) -> Result<Checked<R>, TokenError> {
        let introspects = inspected
            .issuer
            .introspector
            .as_ref()
            .is_some_and(introspection::Introspector::checks_jwts);
        if introspects && declared != TokenType::IdToken {
            self.check_introspected_jwt(token, inspected, declared)
                .await
        } else {
            self.check_claims(inspected, declared)
        }
    }

    /// What the token says, checked once it is known genuine (or, in a dry run, once it
    /// passed [`inspect`](Self::inspect)): the declared type accepted from the issuer and
    /// fitting the token's kind (RFC 8725 §3.11), then its claims and times.
    fn check_claims<R: Role>(
        &self,
        inspected: Inspected<'_, '_>,
        declared: TokenType,
    ) -> Result<Checked<R>, TokenError> {
        let Inspected { issuer, jws } = inspected;
        let claims = jws.claims()?;
        if !issuer.token_types.contains(&declared) {
            return Err(TokenError::TokenTypeNotAccepted);
        }
        let kind = TokenKind {
            header_typ: jws.header.typ.as_deref(),
            claim_typ: claims.typ.as_deref(),
            id_token_markers: claims.id_token_markers,
        };
        if !kind.fits(issuer.profile, declared) {
            return Err(TokenError::TypMismatch);
        }
        let rules = issuer.claim_rules(self.leeway);
        Checked::check(issuer.id, claims, declared, &rules, self.clock.now())
    }

    /// Whether `issuer`'s introspection endpoint still says `token` is active (through its
    /// cache: asked again at most every `cache_seconds`), for tokens derived from it
    /// (`lifecycle`). `Inactive` when it says no, `IntrospectionUnavailable` when it
    /// cannot be asked, `UnknownIssuer` when the issuer has no introspection or the answer
    /// names another issuer.
    pub async fn still_active(&self, issuer: &str, token: &str) -> Result<(), TokenError> {
        let Some(trusted) = self.by_iss.values().find(|i| &*i.label == issuer) else {
            return Err(TokenError::UnknownIssuer);
        };
        let Some(introspector) = &trusted.introspector else {
            return Err(TokenError::UnknownIssuer);
        };
        let answer = introspector.introspect(token).await?;
        let claims = answer.outcome.as_ref().map_err(|e| *e)?;
        if self.by_iss.get(&claims.iss).map(|i| i.id) != Some(trusted.id) {
            return Err(TokenError::UnknownIssuer);
        }
        if claims.exp.is_none_or(|exp| exp <= self.clock.now()) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Whether `issuer` (a configured upstream) has introspection: its subject tokens
    /// are kept sealed in lineage for re-checking.
    pub fn introspects(&self, issuer: IssuerId) -> Option<&str> {
        self.by_iss
            .values()
            .find(|i| i.id == issuer && i.introspector.is_some())
            .map(|i| &*i.label)
    }

    /// Introspection counters per issuer, for metrics.
    pub fn introspection_stats(&self) -> Vec<(String, crate::metrics::IntrospectionStats)> {
        self.by_iss
            .values()
            .filter_map(|i| {
                i.introspector
                    .as_ref()
                    .map(|x| (i.label.to_string(), x.stats()))
            })
            .collect()
    }
}

/// Entry points for the coverage-guided fuzz targets (`fuzz/`), compiled only with the
/// `fuzzing` feature: the parsers behind [`TokenValidator::validate`], without an issuer
/// table.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    /// Splits and decodes a compact JWS: the strict header and claims parsers.
    pub fn parse_compact(token: &str) {
        if let Ok((jws, _)) = super::jws::parse(token) {
            let _ = jws.claims();
        }
    }
}
