//! The checks a policy file configures, one function each: modes and token types (made by
//! [`PolicyEngine::admit`](super::PolicyEngine::admit) before any token is validated),
//! subject and actor issuers, `actors`, `prior_actors`, `conditions` and passthrough
//! `claims`. Unlike the rules in [`super::rules`], each of these does only what its field
//! says, and a field left out admits everything it would check.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::facts::TokenFacts;
use super::{ClientHeader, Condition, PolicyError, Refusal, Rule, TokenRole};
use crate::config::IssuerId;
use crate::oauth::TokenType;
use crate::token::ActorId;

/// A token's claims, as a JSON object.
type ClaimSet = Map<String, Value>;

/// Policy `impersonate` / `delegate`: the client may exchange in this mode (with an actor
/// token: delegation; without: impersonation).
pub(super) fn check_mode(header: &ClientHeader, with_actor_token: bool) -> Result<(), Refusal> {
    match (with_actor_token, header.delegate, header.impersonate) {
        (true, false, _) => Err(Refusal::new(
            PolicyError::DelegationNotAllowed,
            "request.actor_token",
            "an actor token was sent and the policy has delegate = false",
        )),
        (false, _, false) => Err(Refusal::new(
            PolicyError::ImpersonationNotAllowed,
            "request.actor_token",
            "no actor token was sent and the policy has impersonate = false",
        )),
        _ => Ok(()),
    }
}

/// Policy `subject_token_types` / `actor_token_types`: the declared token types are ones
/// the client's policy accepts (all of them when the field is left out).
pub(super) fn token_types_accepted(
    header: &ClientHeader,
    subject_type: TokenType,
    actor_type: Option<TokenType>,
) -> Result<(), Refusal> {
    let accepts = |types: &Option<Vec<TokenType>>, t: TokenType| {
        types.as_ref().is_none_or(|list| list.contains(&t))
    };
    if !accepts(&header.subject_token_types, subject_type) {
        return Err(Refusal::new(
            PolicyError::SubjectTokenTypeNotAccepted,
            "request.subject_token_type",
            format!("{} is not in subject_token_types", subject_type.name()),
        ));
    }
    if let Some(t) = actor_type
        && !accepts(&header.actor_token_types, t)
    {
        return Err(Refusal::new(
            PolicyError::ActorTokenTypeNotAccepted,
            "request.actor_token_type",
            format!("{} is not in actor_token_types", t.name()),
        ));
    }
    Ok(())
}

/// Policy `subject_issuers`: the subject token's issuer is one the client accepts.
pub(super) fn subject_issuer_accepted(
    subject_issuers: &[IssuerId],
    subject: &TokenFacts<'_>,
) -> Result<(), Refusal> {
    if !subject_issuers.contains(&subject.issuer) {
        return Err(Refusal::new(
            PolicyError::SubjectIssuerNotAccepted,
            "subject_token.iss",
            format!("{:?} is not in subject_issuers", subject.iss),
        ));
    }
    Ok(())
}

/// Policy `actor_issuers`: the actor token's issuer is one the rule accepts.
pub(super) fn actor_issuer_accepted(
    actor_issuers: &[IssuerId],
    actor: &TokenFacts<'_>,
) -> Result<(), Refusal> {
    if !actor_issuers.contains(&actor.issuer) {
        return Err(Refusal::new(
            PolicyError::ActorIssuerNotAccepted,
            "actor_token.iss",
            format!("{:?} is not in actor_issuers", actor.iss),
        ));
    }
    Ok(())
}

/// Policy `actors`: the actor token's `sub` is one the rule lets act (any, when left out).
pub(super) fn actor_allowed(
    actors: Option<&HashSet<String>>,
    actor: &TokenFacts<'_>,
) -> Result<(), Refusal> {
    if let Some(actors) = actors
        && !actors.contains(actor.sub)
    {
        return Err(Refusal::new(
            PolicyError::ActorNotAllowed,
            "actor_token.sub",
            format!("{:?} is not in actors", actor.sub),
        ));
    }
    Ok(())
}

/// Policy `prior_actors`: which chains this client may continue: every actor already in
/// the subject token's `act` is listed (any, when left out).
pub(super) fn prior_actors_allowed(
    prior_actors: Option<&HashSet<String>>,
    act: &[ActorId],
) -> Result<(), Refusal> {
    if let Some(allowed) = prior_actors
        && let Some(stranger) = act.iter().find(|a| !allowed.contains(&a.sub))
    {
        return Err(Refusal::new(
            PolicyError::PriorActorNotAllowed,
            "subject_token.act",
            format!("prior actor {:?} is not in prior_actors", stranger.sub),
        ));
    }
    Ok(())
}

/// The claims of the subject token the rule reads (for its conditions or passthrough
/// claims) and of the actor token (for its conditions), parsed only when it reads them.
pub(super) fn claims_read(
    rule: &Rule,
    subject: &TokenFacts<'_>,
    actor: Option<&TokenFacts<'_>>,
) -> (Option<ClaimSet>, Option<ClaimSet>) {
    let needs = |role: TokenRole| rule.conditions.iter().any(|c| c.token == role);
    let subject_claims =
        (needs(TokenRole::Subject) || !rule.claims.is_empty()).then(|| subject.claims.object());
    let actor_claims = actor
        .filter(|_| needs(TokenRole::Actor))
        .map(|a| a.claims.object());
    (subject_claims, actor_claims)
}

/// Policy `conditions`: each holds on the claims as the tokens carry them (`actor_claims`
/// is `None` without an actor token, and then only an "absent" condition holds).
pub(super) fn conditions_hold(
    conditions: &[Condition],
    subject_claims: Option<&Map<String, Value>>,
    actor_claims: Option<&Map<String, Value>>,
    with_actor_token: bool,
) -> Result<(), Refusal> {
    for condition in conditions {
        let claims = match condition.token {
            TokenRole::Subject => subject_claims,
            TokenRole::Actor => actor_claims,
        };
        if !condition.holds(claims) {
            let what = if condition.token == TokenRole::Actor && !with_actor_token {
                "no actor token was sent, so".to_owned()
            } else {
                "the claim fails".to_owned()
            };
            return Err(Refusal::new(
                PolicyError::ConditionNotMet,
                format!("{}.{}", condition.token.name(), condition.path.join(".")),
                format!("{what} the condition: {}", condition.describe()),
            ));
        }
    }
    Ok(())
}

/// Policy `claims`: the passthrough claims, as the subject token carries them (absent or
/// `null` ones stay absent, as conditions read them).
pub(super) fn passthrough_claims(
    names: &[String],
    subject_claims: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut claims = Map::new();
    if let Some(subject_claims) = subject_claims {
        for name in names {
            if let Some(value) = subject_claims.get(name).filter(|v| !v.is_null()) {
                claims.insert(name.clone(), value.clone());
            }
        }
    }
    claims
}
