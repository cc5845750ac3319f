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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::facts::Claims;
    use crate::policy::facts::testing::{party, refused, rule, strings, token};
    use crate::policy::{ConditionTest, Scalar};
    use PolicyError::*;

    fn header(impersonate: bool, delegate: bool) -> ClientHeader {
        ClientHeader {
            enabled: true,
            impersonate,
            delegate,
            subject_issuers: vec![IssuerId::upstream(0)],
            subject_token_types: Some(vec![TokenType::AccessToken]),
            actor_token_types: None,
            subject_namespace: None,
            reissue_cache: true,
            certificate_bound: false,
            rate_limit: None,
        }
    }

    fn subs(values: &[&str]) -> HashSet<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn mode_delegate_and_impersonate() {
        assert!(check_mode(&header(true, false), false).is_ok());
        assert!(check_mode(&header(false, true), true).is_ok());
        refused(
            check_mode(&header(true, false), true),
            DelegationNotAllowed,
            "request.actor_token",
        );
        refused(
            check_mode(&header(false, true), false),
            ImpersonationNotAllowed,
            "request.actor_token",
        );
    }

    #[test]
    fn token_types_are_those_listed_or_any() {
        let h = header(true, true);
        assert!(token_types_accepted(&h, TokenType::AccessToken, Some(TokenType::Jwt)).is_ok());
        let detail = refused(
            token_types_accepted(&h, TokenType::Jwt, None),
            SubjectTokenTypeNotAccepted,
            "request.subject_token_type",
        );
        assert_eq!(detail, "jwt is not in subject_token_types");
        let h = ClientHeader {
            actor_token_types: Some(vec![TokenType::AccessToken]),
            ..header(true, true)
        };
        refused(
            token_types_accepted(&h, TokenType::AccessToken, Some(TokenType::IdToken)),
            ActorTokenTypeNotAccepted,
            "request.actor_token_type",
        );
    }

    #[test]
    fn subject_and_actor_issuers_are_listed() {
        let listed = [IssuerId::upstream(0)];
        let other = [IssuerId::upstream(1)];
        let t = token("alice");
        assert!(subject_issuer_accepted(&listed, &t).is_ok());
        assert!(actor_issuer_accepted(&listed, &t).is_ok());
        let detail = refused(
            subject_issuer_accepted(&other, &t),
            SubjectIssuerNotAccepted,
            "subject_token.iss",
        );
        assert_eq!(detail, r#""https://idp.example" is not in subject_issuers"#);
        refused(
            actor_issuer_accepted(&other, &t),
            ActorIssuerNotAccepted,
            "actor_token.iss",
        );
    }

    #[test]
    fn actors_and_prior_actors_are_listed_or_any() {
        let allowed = subs(&["bff-sa"]);
        assert!(actor_allowed(None, &token("anyone")).is_ok());
        assert!(actor_allowed(Some(&allowed), &token("bff-sa")).is_ok());
        refused(
            actor_allowed(Some(&allowed), &token("alice")),
            ActorNotAllowed,
            "actor_token.sub",
        );

        let chain = [party("bff-sa", None), party("stranger", None)];
        assert!(prior_actors_allowed(None, &chain).is_ok());
        assert!(prior_actors_allowed(Some(&allowed), &[]).is_ok());
        assert!(prior_actors_allowed(Some(&allowed), &chain[..1]).is_ok());
        let detail = refused(
            prior_actors_allowed(Some(&allowed), &chain),
            PriorActorNotAllowed,
            "subject_token.act",
        );
        assert_eq!(detail, r#"prior actor "stranger" is not in prior_actors"#);
    }

    fn condition(token: TokenRole, claim: &str, test: ConditionTest) -> Condition {
        Condition {
            token,
            path: strings(&[claim]),
            test,
        }
    }

    fn claims(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    fn rule_with(conditions: Vec<Condition>, passthrough: &[&str]) -> Rule {
        Rule {
            claims: strings(passthrough),
            conditions,
            ..rule()
        }
    }

    /// Claims a rule must not read.
    struct Unread;

    impl Claims for Unread {
        fn object(&self) -> Map<String, Value> {
            panic!("claims parsed that no condition or passthrough claim reads")
        }
    }

    #[test]
    fn claims_are_parsed_only_when_read() {
        let unread = TokenFacts {
            claims: &Unread,
            ..token("alice")
        };
        let tenant = claims(r#"{"tenant":"acme"}"#);
        let read = TokenFacts {
            claims: &tenant,
            ..token("alice")
        };
        let none = rule_with(Vec::new(), &[]);
        assert!(matches!(
            claims_read(&none, &unread, Some(&unread)),
            (None, None)
        ));
        let passthrough = rule_with(Vec::new(), &["tenant"]);
        let (s, a) = claims_read(&passthrough, &read, Some(&unread));
        assert_eq!((s, a), (Some(tenant.clone()), None));
        let on_actor = rule_with(
            vec![condition(
                TokenRole::Actor,
                "tenant",
                ConditionTest::Present(true),
            )],
            &[],
        );
        let (s, a) = claims_read(&on_actor, &unread, Some(&read));
        assert_eq!((s, a), (None, Some(tenant.clone())));
        assert!(matches!(
            claims_read(&on_actor, &unread, None),
            (None, None)
        ));
    }

    #[test]
    fn conditions_must_all_hold() {
        let acme = ConditionTest::Equals(Scalar::Str("acme".into()));
        let conditions = [
            condition(TokenRole::Subject, "tenant", acme.clone()),
            condition(TokenRole::Actor, "tenant", acme),
        ];
        let good = claims(r#"{"tenant":"acme"}"#);
        let bad = claims(r#"{"tenant":"globex"}"#);
        assert!(conditions_hold(&conditions, Some(&good), Some(&good), true).is_ok());
        let detail = refused(
            conditions_hold(&conditions, Some(&bad), Some(&good), true),
            ConditionNotMet,
            "subject_token.tenant",
        );
        assert_eq!(
            detail,
            r#"the claim fails the condition: tenant equals "acme""#
        );
        refused(
            conditions_hold(&conditions, Some(&good), Some(&bad), true),
            ConditionNotMet,
            "actor_token.tenant",
        );
        let detail = refused(
            conditions_hold(&conditions, Some(&good), None, false),
            ConditionNotMet,
            "actor_token.tenant",
        );
        assert_eq!(
            detail,
            r#"no actor token was sent, so the condition: tenant equals "acme""#
        );
        assert!(conditions_hold(&[], None, None, false).is_ok());
    }

    #[test]
    fn passthrough_claims_copy_present_ones() {
        let subject = claims(r#"{"tenant":"acme","dept":null,"sub":"alice"}"#);
        let names = strings(&["tenant", "dept", "missing"]);
        let copied = passthrough_claims(&names, Some(&subject));
        assert_eq!(
            Value::Object(copied),
            serde_json::json!({ "tenant": "acme" })
        );
        assert!(passthrough_claims(&names, None).is_empty());
    }
}
