//! The two proofs a presented token can earn, per role.
//!
//! - [`Checked<R>`]: its issuer, declared type, `typ`, algorithm allow-list, claims and
//!   times were checked against our clock. Nothing says it is genuine: a dry run
//!   (`gleipnir policy explain --offline`, `gleipnir policy test`) works on these.
//! - [`VerifiedToken<R>`]: a `Checked<R>` whose signature verified with the issuer's key,
//!   or which the issuer's introspection endpoint said is active. It is built only from
//!   the witness of that check (`SignatureVerified`, `ActiveAnswer`), which only the
//!   JWS path and the introspection path can make. Only verified tokens reach a `Grant`,
//!   and so the minter.
//!
//! No boolean decides whether a signature was checked: the type says it.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use super::claims::{ActorId, Claims};
use super::error::TokenError;
use super::jws::SignatureVerified;
use super::opaque::ActiveAnswer;
use crate::config::IssuerId;
use crate::jose::jws::{TimeError, check_times};
use crate::oauth::TokenType;

mod sealed {
    pub trait Sealed {}
}

/// The role a token plays in an exchange.
pub trait Role: sealed::Sealed + Send + Sync + 'static {
    /// `subject` or `actor`, for metrics.
    const NAME: &'static str;
}
/// The subject token's role.
#[derive(Debug)]
pub enum Subject {}
/// The actor token's role.
#[derive(Debug)]
pub enum Actor {}
/// A token of ours presented for introspection or revocation (RFC 7662, RFC 7009).
#[derive(Debug)]
pub enum Introspected {}
impl sealed::Sealed for Subject {}
impl sealed::Sealed for Actor {}
impl sealed::Sealed for Introspected {}
impl Role for Introspected {
    const NAME: &'static str = "introspected";
}
impl Role for Subject {
    const NAME: &'static str = "subject";
}
impl Role for Actor {
    const NAME: &'static str = "actor";
}

/// What the token-independent checks of one token need to know.
pub(super) struct ClaimRules {
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    pub(super) leeway: u64,
    /// The issuer's maximum token age by `iat`, when it has one.
    pub(super) max_token_age: Option<u64>,
    /// The longest lifetime the issuer's tokens may claim.
    pub(super) max_lifetime: u64,
}

/// A token whose issuer, declared type, algorithm allow-list, claims and times were
/// checked. On its own it says nothing of the signature: on the JWS path the signature is
/// verified before these checks (so a forged token is refused as forged), and only a
/// dry run holds a `Checked` with no signature checked. Only the token module builds one.
#[derive(Debug)]
pub struct Checked<R: Role> {
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
    sub_iss: Option<String>,
    token_type: TokenType,
    raw: Arc<str>,
    /// The last second at which this token's checks are proven to hold (see
    /// [`Checked::proven_until`]).
    proven_until: u64,
    /// Whether its issuer's keys vouch for it (a JWS), rather than an introspection
    /// answer.
    by_keys: bool,
    role: PhantomData<R>,
}

impl<R: Role> Checked<R> {
    /// The checks every token's claims get, signed or introspected: no `cnf`, `exp`
    /// required and `nbf`/`iat` checked against `now` with a leeway (RFC 7519
    /// §4.1.4–§4.1.6), the issuer's maximum lifetime and maximum age, and a non-empty
    /// `sub`.
    pub(super) fn check(
        issuer: IssuerId,
        claims: Claims,
        declared: TokenType,
        rules: &ClaimRules,
        now: u64,
    ) -> Result<Self, TokenError> {
        // RFC 7800 `cnf`: the token only counts in the hands of the key holder, and we
        // cannot check that a client holds it (no DPoP or mTLS proof here).
        if claims.sender_constrained {
            return Err(TokenError::SenderConstrained);
        }
        let exp = claims.exp.ok_or(TokenError::MissingClaim("exp"))?;
        let leeway = rules.leeway;
        check_times(exp, claims.nbf, claims.iat, leeway, rules.max_lifetime, now).map_err(|e| {
            match e {
                TimeError::Expired => TokenError::Expired,
                TimeError::NotYetValid => TokenError::NotYetValid,
                TimeError::IssuedInFuture => TokenError::IssuedInFuture,
                TimeError::LifetimeTooLong => TokenError::LifetimeTooLong,
            }
        })?;
        // An optional per-issuer bound on age, for issuers whose tokens live long; it
        // needs `iat`.
        let mut proven_until = exp;
        if let Some(max_age) = rules.max_token_age {
            let iat = claims.iat.ok_or(TokenError::MissingClaim("iat"))?;
            if now.saturating_sub(iat) > max_age.saturating_add(leeway) {
                return Err(TokenError::TooOld);
            }
            proven_until = proven_until.min(iat.saturating_add(max_age));
        }
        let sub = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingClaim("sub"))?;
        // Only our own tokens say whose subject they carry; an upstream's `sub_iss` is
        // just a claim of its own (its subject's issuer is its `iss`), neither read nor
        // type-checked.
        let sub_iss = match claims.sub_iss {
            Some(recorded) if issuer == IssuerId::SELF => Some(recorded?),
            _ => None,
        };
        Ok(Checked {
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
            sub_iss,
            token_type: declared,
            raw: claims.raw,
            proven_until,
            by_keys: true,
            role: PhantomData,
        })
    }

    /// Marks it as vouched for by an introspection answer, which holds only as long as it
    /// may be reused (`until`), rather than by its issuer's keys.
    pub(super) fn introspected(&mut self, until: u64) {
        self.proven_until = self.proven_until.min(until);
        self.by_keys = false;
    }

    /// The issuer whose keys vouch for it (a JWS), or `None` for a token an introspection
    /// answer vouched for. A result reused later (the re-issue cache) holds only while
    /// that issuer still has usable keys.
    pub fn keys_of(&self) -> Option<IssuerId> {
        self.by_keys.then_some(self.issuer)
    }

    /// Until when (Unix seconds, our clock, without leeway) what was checked stays true
    /// without checking again: the token's `exp`, its issuer's maximum age counted from
    /// `iat`, and for an introspected token the end of the answer's reuse
    /// (`cache_seconds`). The re-issue cache answers no exchange past it.
    pub fn proven_until(&self) -> u64 {
        self.proven_until
    }

    /// Which configured issuer it claims to come from.
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
    /// For a token gleipnir issued, its `sub_iss`: the issuer of its subject, when the
    /// token recorded it. `None` for upstream tokens, whose subject's issuer is `iss`.
    pub fn sub_iss(&self) -> Option<&str> {
        self.sub_iss.as_deref()
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
    /// The token type the request declared and the token's kind fits.
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

/// A [`Checked`] token that is also genuine: its signature verified with a key of its
/// issuer, or its issuer's introspection endpoint answered that it is active. It is built
/// only from the witness of that check, which only the JWS path
/// (`SignatureVerified`) and the introspection path (`ActiveAnswer`) can make, each
/// right after its check. Only these reach a `Grant`.
#[derive(Debug)]
pub struct VerifiedToken<R: Role> {
    checked: Checked<R>,
}

impl<R: Role> VerifiedToken<R> {
    /// A checked token whose signature verified.
    pub(super) fn signed(checked: Checked<R>, _: SignatureVerified) -> Self {
        Self { checked }
    }

    /// A checked token its issuer's introspection endpoint says is active.
    pub(super) fn introspected(checked: Checked<R>, _: ActiveAnswer) -> Self {
        Self { checked }
    }

    /// The checked claims, for code that needs no proof of genuineness (a dry run).
    pub fn into_checked(self) -> Checked<R> {
        self.checked
    }
}

impl<R: Role> Deref for VerifiedToken<R> {
    type Target = Checked<R>;

    fn deref(&self) -> &Checked<R> {
        &self.checked
    }
}

impl<R: Role> Borrow<Checked<R>> for VerifiedToken<R> {
    fn borrow(&self) -> &Checked<R> {
        &self.checked
    }
}
