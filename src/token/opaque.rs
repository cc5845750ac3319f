//! The introspection paths (RFC 7662): a token that is not a compact JWS is introspected
//! at the one introspecting issuer the client's policy accepts for its role, and the
//! answer's claims get the checks a JWT's get; a JWT whose issuer introspects its JWTs
//! too (`check_jwts`) is introspected once its signature verified.
//!
//! [`ActiveAnswer`] is the witness that the issuer said the token is active; only
//! [`TokenValidator::validate_opaque`] makes one, and a
//! [`VerifiedToken`](super::VerifiedToken) of an opaque token is built only from it.

use std::sync::Arc;

use super::claims::Claims;
use super::error::TokenError;
use super::issuers::TrustedIssuer;
use super::kind::TokenKind;
use super::proof::{Checked, Role, VerifiedToken};
use super::{Inspected, TokenValidator};
use crate::config::IssuerId;
use crate::oauth::TokenType;

/// The issuer's introspection endpoint answered `active: true` for the token (RFC 7662
/// §2.2). The private field makes this module its only maker.
pub(super) struct ActiveAnswer(());

impl TokenValidator {
    /// Introspects an opaque access token at the one introspecting issuer among
    /// `accepted`, noting it in `resolved` (for metrics).
    pub(super) async fn validate_opaque<R: Role>(
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
        let active = ActiveAnswer(());
        // RFC 7662 makes `sub` optional, and providers leave it out for client-credentials
        // tokens; RFC 9068 §2.2 says such a token's subject is the client. So an answer
        // without `sub` names its `client_id` (and without either, it is refused below).
        if claims.sub.is_none() {
            claims.sub.clone_from(&claims.client_id);
        }
        let checked = self.check_answer(issuer, claims, declared, answer.until)?;
        Ok(VerifiedToken::introspected(checked, active))
    }

    /// A JWT of an issuer that introspects its JWTs too (`check_jwts`), its signature
    /// verified: its own type checked as [`check_claims`](Self::check_claims) does, then
    /// refused when expired (without a call), then introspected. It counts only while
    /// the issuer says it is active (RFC 7662 §2.2: a token whose session was logged out
    /// or that was revoked is not), and is judged by the answer's claims: a Keycloak
    /// lightweight access token carries `sub` and the rest only there. An answer without
    /// `sub` is refused here (no `client_id` fallback): the JWT named its subject, or
    /// the issuer must.
    pub(super) async fn check_introspected_jwt<R: Role>(
        &self,
        token: &str,
        inspected: Inspected<'_, '_>,
        declared: TokenType,
    ) -> Result<Checked<R>, TokenError> {
        let Inspected { issuer, jws } = inspected;
        let Some(introspector) = issuer.introspector.as_ref() else {
            return Err(TokenError::IntrospectionUnavailable);
        };
        let jwt = jws.claims()?;
        if !issuer.token_types.contains(&declared) {
            return Err(TokenError::TokenTypeNotAccepted);
        }
        let kind = TokenKind {
            header_typ: jws.header.typ.as_deref(),
            claim_typ: jwt.typ.as_deref(),
            id_token_markers: jwt.id_token_markers,
        };
        if !kind.fits(issuer.profile, declared) {
            return Err(TokenError::TypMismatch);
        }
        if jwt
            .exp
            .is_some_and(|exp| exp.saturating_add(self.leeway) <= self.clock.now())
        {
            return Err(TokenError::Expired);
        }
        let answer = introspector.introspect(token).await?;
        let claims = answer.outcome.clone()?;
        // The answer is about this token: it names the JWT's subject, if the JWT did.
        if jwt.sub.is_some() && claims.sub != jwt.sub {
            return Err(TokenError::InvalidClaim("sub"));
        }
        self.check_answer(issuer, claims, declared, answer.until)
    }

    /// The claims of an `active` introspection answer: from the issuer we asked (RFC
    /// 7662 §2.2 `iss`), an access token by what it says of itself, and then the checks
    /// every token's claims get. The issuer vouched for the token now, and for as long as
    /// we reuse its answer (`until`): what a re-issue cache may rely on ends there.
    fn check_answer<R: Role>(
        &self,
        issuer: &TrustedIssuer,
        claims: Claims,
        declared: TokenType,
        until: u64,
    ) -> Result<Checked<R>, TokenError> {
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
        let mut checked = Checked::check(
            issuer.id,
            claims,
            declared,
            &issuer.claim_rules(self.leeway),
            self.clock.now(),
        )?;
        checked.introspected(until);
        Ok(checked)
    }
}
