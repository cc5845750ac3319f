//! The opaque path (RFC 7662): a token that is not a compact JWS is introspected at the
//! one introspecting issuer the client's policy accepts for its role, and the answer's
//! claims get the checks a JWT's get.
//!
//! [`ActiveAnswer`] is the witness that the issuer said the token is active; only
//! [`TokenValidator::validate_opaque`] makes one, and a
//! [`VerifiedToken`](super::VerifiedToken) of an opaque token is built only from it.

use std::sync::Arc;

use super::TokenValidator;
use super::error::TokenError;
use super::kind::TokenKind;
use super::proof::{Checked, Role, VerifiedToken};
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
        let checked = Checked::check(
            issuer.id,
            claims,
            declared,
            &issuer.claim_rules(self.leeway),
            self.clock.now(),
        )?;
        Ok(VerifiedToken::introspected(checked, active))
    }
}
