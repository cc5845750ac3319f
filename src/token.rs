//! Stage 3: subject and actor token validation (EXCHANGE-RULES §4, RFC 8725).
//!
//! [`TokenValidator::validate`] turns a compact JWS into a [`VerifiedToken<Role>`], which
//! only this module can build. The order is cheap-to-costly: size cap before decoding,
//! strict header (no `crit`, no key-carrying headers), strict claims, issuer by exact
//! `iss`, declared token type against the issuer and the `typ` header, the algorithm
//! from the issuer's allow-list and from the key (never from the token alone), time
//! against our clock, then the signature. Our own issuer is trusted with the keys we sign
//! with, so a token we issued can be exchanged again.

mod claims;
pub mod introspection;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use thiserror::Error;

pub use claims::ActorId;

use crate::clock::Clock;
use crate::config::{Config, ConfigError, IssuerId, IssuerProfile};
use crate::jose::{JwsAlgorithm, KeyLookup, KeySet, b64_decode};
use crate::keys::ring::KeyStore;
use crate::metrics::Metrics;
use crate::oauth::TokenType;
use crate::upstream::jwks::JwksCache;

/// Why a subject or actor token was refused. Each variant is one fact.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Larger than `tokens.max_token_bytes`, refused before decoding.
    #[error("token exceeds the size limit")]
    TooLarge,
    /// Not three base64url segments (a JWE or an opaque token, for instance).
    #[error("not a compact JWS")]
    NotCompactJws,
    /// The header is not the JSON we expect (or announces a JWE).
    #[error("malformed header")]
    MalformedHeader,
    /// The claims are not a JSON object (or repeat a member).
    #[error("malformed claims")]
    MalformedClaims,
    /// A `crit` header: we understand no extension (RFC 7515 §4.1.11).
    #[error("crit header present")]
    CritHeader,
    /// `jku`, `jwk`, `x5u` or `x5c`: keys are never taken from a token.
    #[error("key-carrying header present")]
    KeyInHeader,
    /// `alg` is `none`, an HMAC algorithm or unknown.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `alg` is not in this issuer's allow-list.
    #[error("algorithm not allowed for issuer")]
    AlgorithmNotAllowed,
    /// `iss` is not a configured issuer.
    #[error("untrusted issuer")]
    UnknownIssuer,
    /// `iss` is a configured issuer, but not one the client's policy accepts for this role.
    #[error("issuer not accepted for this client")]
    IssuerNotAccepted,
    /// The declared token type is not accepted from this issuer.
    #[error("token type not accepted from issuer")]
    TokenTypeNotAccepted,
    /// The `typ` header, or the `typ` claim some issuers use, does not fit the declared
    /// token type.
    #[error("typ does not match declared token type")]
    TypMismatch,
    /// No key of the issuer has this `kid`.
    #[error("unknown kid")]
    UnknownKid,
    /// No `kid`, and the issuer has several keys for the algorithm.
    #[error("kid required")]
    KidRequired,
    /// The key named by `kid` is not bound to the token's algorithm.
    #[error("algorithm does not match key")]
    AlgorithmKeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an impossible value.
    #[error("invalid claim {0}")]
    InvalidClaim(&'static str),
    /// `exp` is in the past beyond the leeway.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future beyond the leeway.
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is in the future beyond the leeway.
    #[error("issued in the future")]
    IssuedInFuture,
    /// Bound to a key (`cnf`) whose possession we cannot check.
    #[error("sender-constrained token")]
    SenderConstrained,
    /// Older than the issuer's maximum token age (by `iat`).
    #[error("older than the issuer's maximum token age")]
    TooOld,
    /// The issuer's keys could not be fetched and none are cached.
    #[error("issuer keys unavailable")]
    KeysUnavailable,
    /// The issuer's introspection endpoint says the token is not active.
    #[error("token not active")]
    Inactive,
    /// The introspection endpoint could not be used: fail closed.
    #[error("introspection unavailable")]
    IntrospectionUnavailable,
}

impl TokenError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::NotCompactJws => "not_compact_jws",
            TokenError::MalformedHeader => "malformed_header",
            TokenError::MalformedClaims => "malformed_claims",
            TokenError::CritHeader => "crit_header",
            TokenError::KeyInHeader => "key_in_header",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::IssuerNotAccepted => "issuer_not_accepted",
            TokenError::TokenTypeNotAccepted => "token_type_not_accepted",
            TokenError::TypMismatch => "typ_mismatch",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::KidRequired => "kid_required",
            TokenError::AlgorithmKeyMismatch => "algorithm_key_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::InvalidClaim(_) => "invalid_claim",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::TooOld => "too_old",
            TokenError::SenderConstrained => "sender_constrained",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::Inactive => "inactive",
            TokenError::IntrospectionUnavailable => "introspection_unavailable",
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The role a token plays in an exchange.
pub trait Role: sealed::Sealed {
    /// `subject` or `actor`, for metrics.
    const NAME: &'static str;
}
/// The subject token's role.
#[derive(Debug)]
pub enum Subject {}
/// The actor token's role.
#[derive(Debug)]
pub enum Actor {}
impl sealed::Sealed for Subject {}
impl sealed::Sealed for Actor {}
impl Role for Subject {
    const NAME: &'static str = "subject";
}
impl Role for Actor {
    const NAME: &'static str = "actor";
}

/// A token whose signature, issuer, type and times were checked. Only
/// [`TokenValidator::validate`] builds one.
#[derive(Debug)]
pub struct VerifiedToken<R: Role> {
    issuer: IssuerId,
    iss: String,
    sub: String,
    exp: u64,
    aud: Vec<String>,
    scope: Vec<String>,
    client_id: Option<String>,
    azp: Option<String>,
    jti: Option<String>,
    act: Vec<ActorId>,
    may_act: Option<ActorId>,
    token_type: TokenType,
    raw: Arc<str>,
    role: PhantomData<R>,
}

impl<R: Role> VerifiedToken<R> {
    /// Which configured issuer signed it.
    pub fn issuer(&self) -> IssuerId {
        self.issuer
    }
    /// `iss`.
    pub fn iss(&self) -> &str {
        &self.iss
    }
    /// `sub`.
    pub fn sub(&self) -> &str {
        &self.sub
    }
    /// `exp`.
    pub fn exp(&self) -> u64 {
        self.exp
    }
    /// `aud` values (empty when absent).
    pub fn aud(&self) -> &[String] {
        &self.aud
    }
    /// `scope`, split on spaces.
    pub fn scope(&self) -> &[String] {
        &self.scope
    }
    /// `client_id` (RFC 9068 §2.2).
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }
    /// `azp` (OpenID Connect Core §2).
    pub fn azp(&self) -> Option<&str> {
        self.azp.as_deref()
    }
    /// `jti`.
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }
    /// The delegation chain already in the token, current actor first.
    pub fn act(&self) -> &[ActorId] {
        &self.act
    }
    /// `may_act` (RFC 8693 §4.4).
    pub fn may_act(&self) -> Option<&ActorId> {
        self.may_act.as_ref()
    }
    /// The token type the request declared and the token proved.
    pub fn token_type(&self) -> TokenType {
        self.token_type
    }
    /// Every claim, as the token carries it (policy conditions and passthrough claims).
    pub fn claims_object(&self) -> serde_json::Map<String, serde_json::Value> {
        // The text was parsed as a JSON object when the token was checked.
        serde_json::from_str(&self.raw).unwrap_or_default()
    }
    /// The (`iss`, `sub`) identity as an actor entry.
    pub fn identity(&self) -> ActorId {
        ActorId {
            sub: self.sub.clone(),
            iss: Some(self.iss.clone()),
        }
    }
}

enum IssuerKeys {
    /// Our own keys, in memory: every key of the ring in force.
    Local(Arc<KeyStore>),
    /// An upstream issuer's JWKS.
    Remote(Arc<JwksCache>),
}

struct TrustedIssuer {
    id: IssuerId,
    /// Its name, as metrics label it.
    label: Arc<str>,
    introspector: Option<introspection::Introspector>,
    profile: IssuerProfile,
    max_token_age: Option<u64>,
    algorithms: Vec<JwsAlgorithm>,
    token_types: Vec<TokenType>,
    required: bool,
    keys: IssuerKeys,
}

/// Validates subject and actor tokens against the trusted issuers.
pub struct TokenValidator {
    by_iss: HashMap<String, TrustedIssuer>,
    metrics: Arc<Metrics>,
    unresolved: Arc<str>,
    clock: Clock,
    leeway: u64,
    max_bytes: usize,
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
        let mut by_iss = HashMap::with_capacity(config.issuers.len() + 1);
        by_iss.insert(
            config.issuer.clone(),
            TrustedIssuer {
                id: IssuerId::SELF,
                label: Arc::from(crate::config::SELF_ISSUER_NAME),
                introspector: None,
                profile: IssuerProfile::Rfc9068,
                max_token_age: None,
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
                    introspector: introspection::Introspector::new(
                        issuer,
                        http,
                        clock.clone(),
                        &config.origin,
                    )?,
                    profile: issuer.profile,
                    max_token_age: issuer.max_token_age_seconds,
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
        Ok(Self {
            by_iss,
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

    /// Validates a token presented as `declared` (RFC 8693 §2.1 `*_token_type`).
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
        let result = self
            .validate_inner(token, declared, accepted, true, &mut resolved)
            .await;
        let outcome = match &result {
            Ok(_) => "valid",
            Err(e) => e.as_str(),
        };
        let issuer = resolved.as_ref().unwrap_or(&self.unresolved);
        self.metrics.validation(issuer, R::NAME, outcome);
        result
    }

    /// Every check of [`validate`](Self::validate) except the signature, for an offline
    /// dry run (`gleipnir policy explain --offline`, `gleipnir policy test`), which says
    /// so on every line it prints and mints nothing. No key is fetched; an opaque token
    /// (which only introspection could vouch for) is refused.
    pub(crate) async fn check_unsigned<R: Role>(
        &self,
        token: &str,
        declared: TokenType,
        accepted: &[IssuerId],
    ) -> Result<VerifiedToken<R>, TokenError> {
        self.validate_inner(token, declared, accepted, false, &mut None)
            .await
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

    /// [`validate`](Self::validate), noting in `resolved` which issuer the token was
    /// attributed to (for metrics); `verify` false skips the signature (and any
    /// introspection) for [`check_unsigned`](Self::check_unsigned).
    async fn validate_inner<R: Role>(
        &self,
        token: &str,
        declared: TokenType,
        accepted: &[IssuerId],
        verify: bool,
        resolved: &mut Option<Arc<str>>,
    ) -> Result<VerifiedToken<R>, TokenError> {
        if token.len() > self.max_bytes {
            return Err(TokenError::TooLarge);
        }
        let dots = token.bytes().filter(|&b| b == b'.').count();
        if dots != 2 {
            // A JWE (four dots) or anything whose first segment is a JOSE header is not
            // an opaque token: refuse it rather than hand it to an introspection endpoint.
            let first = token.split('.').next().and_then(b64_decode);
            if dots == 4 || first.is_some_and(|h| h.first() == Some(&b'{')) || !verify {
                return Err(TokenError::NotCompactJws);
            }
            return self
                .validate_opaque(token, declared, accepted, resolved)
                .await;
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotCompactJws);
        };
        let header = b64_decode(h64).ok_or(TokenError::NotCompactJws)?;
        let header = claims::parse_header(&header)?;
        let alg = JwsAlgorithm::from_name(&header.alg).ok_or(TokenError::UnsupportedAlgorithm)?;
        let payload = b64_decode(p64).ok_or(TokenError::NotCompactJws)?;
        let signature = b64_decode(s64).ok_or(TokenError::NotCompactJws)?;
        let claims = claims::parse_claims(&payload)?;

        // RFC 8725 §3.8: the issuer is matched exactly; it selects the keys.
        let issuer = self
            .by_iss
            .get(&claims.iss)
            .ok_or(TokenError::UnknownIssuer)?;
        *resolved = Some(Arc::clone(&issuer.label));
        // Before any key work: an upstream issuer this client may not use for this role
        // costs no fetch. (Our own issuer costs none; the policy explains its refusals.)
        if issuer.id != IssuerId::SELF && !accepted.contains(&issuer.id) {
            return Err(TokenError::IssuerNotAccepted);
        }
        if !issuer.token_types.contains(&declared) {
            return Err(TokenError::TokenTypeNotAccepted);
        }
        let kind = TokenKind {
            header_typ: header.typ.as_deref(),
            claim_typ: claims.typ.as_deref(),
            id_token_markers: claims.id_token_markers,
        };
        if !kind.fits(issuer.profile, declared) {
            return Err(TokenError::TypMismatch);
        }
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }

        let (exp, sub) = self.check_claims(issuer, &claims)?;
        if !verify {
            return Ok(verified_token(issuer.id, claims, exp, sub, declared));
        }

        // The signed input is the two first segments exactly as received (RFC 7515 §5.2).
        let signing_input = token
            .get(..h64.len() + 1 + p64.len())
            .ok_or(TokenError::NotCompactJws)?;
        let kid = header.kid.as_deref();
        let verified = match &issuer.keys {
            IssuerKeys::Local(store) => {
                let ring = store.current();
                let keys = ring
                    .verifying_keys(kid, self.clock.now())
                    .ok_or(TokenError::UnknownKid)?;
                verify_with(keys, kid, alg, signing_input, &signature)
            }
            IssuerKeys::Remote(cache) => {
                let fetched = cache.keys().await.ok_or(TokenError::KeysUnavailable)?;
                match verify_with(&fetched.keys, kid, alg, signing_input, &signature) {
                    Err(TokenError::UnknownKid) => {
                        let refreshed = cache.refresh_for_unknown_kid(&fetched).await;
                        verify_with(&refreshed.keys, kid, alg, signing_input, &signature)
                    }
                    other => other,
                }
            }
        };
        verified?;
        Ok(verified_token(issuer.id, claims, exp, sub, declared))
    }

    /// RFC 7662: an opaque access token, introspected at the one introspecting issuer among
    /// `accepted`. The answer's claims get the checks a JWT's get.
    async fn validate_opaque<R: Role>(
        &self,
        token: &str,
        declared: TokenType,
        accepted: &[IssuerId],
        resolved: &mut Option<Arc<str>>,
    ) -> Result<VerifiedToken<R>, TokenError> {
        let Some((issuer, introspector)) = self.by_iss.values().find_map(|i| {
            let introspector = i.introspector.as_ref()?;
            accepted.contains(&i.id).then_some((i, introspector))
        }) else {
            return Err(TokenError::NotCompactJws);
        };
        *resolved = Some(Arc::clone(&issuer.label));
        // Introspection vouches for access tokens only (an ID token is always a JWT).
        if declared != TokenType::AccessToken || !issuer.token_types.contains(&declared) {
            return Err(TokenError::TokenTypeNotAccepted);
        }
        let answer = introspector.introspect(token).await?;
        let mut claims = answer.outcome.clone()?;
        // RFC 7662 makes `sub` optional, and providers leave it out for client-credentials
        // tokens; RFC 9068 §2.2 says such a token's subject is the client. So an answer
        // without `sub` names its `client_id` (and without either, it is refused below).
        if claims.sub.is_none() {
            claims.sub.clone_from(&claims.client_id);
        }
        // The answer must come from the issuer we asked (RFC 7662 §2.2 `iss`).
        if self.by_iss.get(&claims.iss).map(|i| i.id) != Some(issuer.id) {
            return Err(TokenError::UnknownIssuer);
        }
        let kind = TokenKind {
            header_typ: None,
            claim_typ: claims.typ.as_deref(),
            id_token_markers: claims.id_token_markers,
        };
        if !kind.introspected_access_token(claims.token_type.as_deref()) {
            return Err(TokenError::TypMismatch);
        }
        let (exp, sub) = self.check_claims(issuer, &claims)?;
        Ok(verified_token(issuer.id, claims, exp, sub, declared))
    }

    /// The checks every token's claims get, signed or introspected: `exp` required and
    /// `nbf`/`iat` checked against our clock with a leeway (RFC 7519 §4.1.4–§4.1.6), the
    /// issuer's maximum age, and a non-empty `sub`. Returns (`exp`, `sub`).
    fn check_claims(
        &self,
        issuer: &TrustedIssuer,
        claims: &claims::Claims,
    ) -> Result<(u64, String), TokenError> {
        // RFC 7800 `cnf`: the token only counts in the hands of the key holder, and we
        // cannot check that a client holds it (no DPoP or mTLS proof here).
        if claims.sender_constrained {
            return Err(TokenError::SenderConstrained);
        }
        let now = self.clock.now();
        let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        if exp.saturating_add(self.leeway) <= now {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.leeway))
        {
            return Err(TokenError::IssuedInFuture);
        }
        // EXCHANGE-RULES §4: an optional per-issuer bound on age, for issuers whose tokens
        // live long; it needs `iat`.
        if let Some(max_age) = issuer.max_token_age {
            let iat = claims.iat.ok_or(TokenError::MissingClaim("iat"))?;
            if now.saturating_sub(iat) > max_age.saturating_add(self.leeway) {
                return Err(TokenError::TooOld);
            }
        }
        let sub = claims
            .sub
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingClaim("sub"))?;
        Ok((exp, sub))
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

fn verified_token<R: Role>(
    issuer: IssuerId,
    claims: claims::Claims,
    exp: u64,
    sub: String,
    declared: TokenType,
) -> VerifiedToken<R> {
    VerifiedToken {
        issuer,
        iss: claims.iss,
        sub,
        exp,
        aud: claims.aud,
        scope: claims.scope,
        client_id: claims.client_id,
        azp: claims.azp,
        jti: claims.jti,
        act: claims.act,
        may_act: claims.may_act,
        token_type: declared,
        raw: claims.raw,
        role: PhantomData,
    }
}

fn verify_with(
    keys: &KeySet,
    kid: Option<&str>,
    alg: JwsAlgorithm,
    input: &str,
    signature: &[u8],
) -> Result<(), TokenError> {
    match keys.find(kid, alg) {
        KeyLookup::Found(key) if key.verify(input.as_bytes(), signature) => Ok(()),
        KeyLookup::Found(_) => Err(TokenError::BadSignature),
        KeyLookup::UnknownKid => Err(TokenError::UnknownKid),
        KeyLookup::AlgorithmMismatch => Err(TokenError::AlgorithmKeyMismatch),
        KeyLookup::KidRequired => Err(TokenError::KidRequired),
    }
}

/// What a token says about its own kind.
struct TokenKind<'a> {
    /// The `typ` header (RFC 7515 §4.1.9).
    header_typ: Option<&'a str>,
    /// The `typ` claim Keycloak uses: `Bearer`, `ID`, `Refresh`, `Offline`, `Logout`.
    claim_typ: Option<&'a str>,
    /// `at_hash` or `c_hash`, which only ID tokens carry.
    id_token_markers: bool,
}

impl TokenKind<'_> {
    /// Whether the token may be accepted as `declared` from an issuer with `profile`
    /// (EXCHANGE-RULES §4 "what the request declares must match what the token is").
    ///
    /// Whatever the profile: refresh, offline and logout tokens are never accepted, and an
    /// ID token (by claim or by its hashes) is only ever an `id_token`. Then by type:
    /// an access token must be explicitly typed, `at+jwt` under RFC 9068 §2.1, or, from a
    /// Keycloak issuer, header `typ` `JWT` with claim `typ` `Bearer`; a `jwt` is any other
    /// JWT; an `id_token` has header `typ` `JWT` or none (and claim `ID` from Keycloak).
    fn fits(&self, profile: IssuerProfile, declared: TokenType) -> bool {
        let header_is = |want: &str| self.header_typ.is_some_and(|t| media_type_is(t, want));
        let claim_is = |want: &str| self.claim_typ.is_some_and(|c| c.eq_ignore_ascii_case(want));
        if claim_is("refresh") || claim_is("offline") || claim_is("logout") {
            return false;
        }
        // Keycloak's claim decides when present (its old access tokens carried `nonce`).
        let id_token = claim_is("id") || (self.id_token_markers && !claim_is("bearer"));
        match declared {
            TokenType::AccessToken => {
                !id_token
                    && match profile {
                        IssuerProfile::Rfc9068 => header_is("at+jwt"),
                        IssuerProfile::Keycloak => {
                            (header_is("jwt") || header_is("at+jwt")) && claim_is("bearer")
                        }
                    }
            }
            TokenType::Jwt => {
                !id_token && (self.header_typ.is_none() || header_is("jwt") || header_is("at+jwt"))
            }
            TokenType::IdToken => {
                (self.header_typ.is_none() || header_is("jwt"))
                    && !claim_is("bearer")
                    && (profile == IssuerProfile::Rfc9068 || claim_is("id"))
            }
            TokenType::RefreshToken | TokenType::Saml1 | TokenType::Saml2 => false,
        }
    }

    /// An introspected token is an access token when the answer says `token_type`
    /// `Bearer` (RFC 7662 §2.2; a provider leaves it out or says `refresh_token` for other
    /// kinds, whatever `token_type_hint` asked) and nothing in it says otherwise.
    fn introspected_access_token(&self, token_type: Option<&str>) -> bool {
        let claim_is = |want: &str| self.claim_typ.is_some_and(|c| c.eq_ignore_ascii_case(want));
        token_type.is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
            && !self.id_token_markers
            && (self.claim_typ.is_none() || claim_is("bearer"))
    }
}

/// `typ` equals `want`, case-insensitively, with or without `application/` (RFC 7515
/// §4.1.9).
fn media_type_is(typ: &str, want: &str) -> bool {
    const PREFIX: &str = "application/";
    let unprefixed = match typ.get(..PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(PREFIX) => typ.get(PREFIX.len()..).unwrap_or_default(),
        _ => typ,
    };
    unprefixed.eq_ignore_ascii_case(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use IssuerProfile::{Keycloak, Rfc9068};
    use TokenType::{AccessToken as At, IdToken as Id, Jwt};

    fn fits(
        profile: IssuerProfile,
        header: Option<&str>,
        claim: Option<&str>,
        markers: bool,
        declared: TokenType,
    ) -> bool {
        TokenKind {
            header_typ: header,
            claim_typ: claim,
            id_token_markers: markers,
        }
        .fits(profile, declared)
    }

    /// (profile, header typ, claim typ, ID-token hashes, declared type, accepted)
    type Row = (
        IssuerProfile,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        TokenType,
        bool,
    );

    #[test]
    fn token_kinds() {
        let table: &[Row] = &[
            // RFC 9068 access tokens are explicitly typed.
            (Rfc9068, Some("at+jwt"), None, false, At, true),
            (Rfc9068, Some("application/AT+JWT"), None, false, At, true),
            (Rfc9068, Some("JWT"), None, false, At, false),
            (Rfc9068, None, None, false, At, false),
            (Rfc9068, Some("JWT"), Some("Bearer"), false, At, false),
            // Keycloak access tokens: header JWT and claim Bearer, both required.
            (Keycloak, Some("JWT"), Some("Bearer"), false, At, true),
            (Keycloak, Some("at+jwt"), Some("Bearer"), false, At, true),
            (Keycloak, Some("JWT"), None, false, At, false),
            (Keycloak, Some("JWT"), Some("ID"), false, At, false),
            // Generic JWTs: not an ID token, not a refresh/logout token.
            (Rfc9068, Some("JWT"), None, false, Jwt, true),
            (Rfc9068, None, None, false, Jwt, true),
            (Rfc9068, Some("logout+jwt"), None, false, Jwt, false),
            (Keycloak, Some("JWT"), Some("ID"), false, Jwt, false),
            (Rfc9068, Some("JWT"), None, true, Jwt, false),
            // Keycloak's claim decides: an old access token with a nonce is still Bearer.
            (Keycloak, Some("JWT"), Some("Bearer"), true, At, true),
            (Keycloak, Some("JWT"), Some("Bearer"), true, Jwt, true),
            (Rfc9068, Some("at+jwt"), None, true, At, false),
            // ID tokens.
            (Rfc9068, None, None, true, Id, true),
            (Rfc9068, Some("JWT"), Some("ID"), false, Id, true),
            (Rfc9068, Some("at+jwt"), None, false, Id, false),
            (Rfc9068, Some("JWT"), Some("Bearer"), false, Id, false),
            (Keycloak, Some("JWT"), Some("ID"), true, Id, true),
            (Keycloak, Some("JWT"), None, true, Id, false),
            // Never.
            (Keycloak, Some("JWT"), Some("Refresh"), false, Jwt, false),
            (Keycloak, Some("JWT"), Some("refresh"), false, At, false),
            (Keycloak, Some("JWT"), Some("Offline"), false, Id, false),
            (Rfc9068, Some("JWT"), Some("Logout"), false, Jwt, false),
            (
                Rfc9068,
                Some("JWT"),
                None,
                false,
                TokenType::RefreshToken,
                false,
            ),
        ];
        let introspected =
            |claim: Option<&'static str>, markers: bool, token_type: Option<&'static str>| {
                TokenKind {
                    header_typ: None,
                    claim_typ: claim,
                    id_token_markers: markers,
                }
                .introspected_access_token(token_type)
            };
        assert!(introspected(None, false, Some("Bearer")));
        assert!(introspected(Some("Bearer"), false, Some("bearer")));
        assert!(!introspected(None, false, None), "token_type required");
        assert!(!introspected(None, false, Some("refresh_token")));
        assert!(!introspected(None, false, Some("DPoP")));
        assert!(!introspected(Some("Refresh"), false, Some("Bearer")));
        assert!(!introspected(None, true, Some("Bearer")));
        for &(profile, header, claim, markers, declared, accepted) in table {
            assert_eq!(
                fits(profile, header, claim, markers, declared),
                accepted,
                "{profile:?} header={header:?} claim={claim:?} hashes={markers} as {declared:?}"
            );
        }
    }
}
