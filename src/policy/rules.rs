//! The always-enforced delegation rules, one function each, numbered as `policies/README.md`
//! ("Always enforced") numbers them. No policy field switches any of them off: a policy
//! only supplies the values some of them compare with (`max_depth`, `ttl_seconds`,
//! `scopes`, targets). [`Admission::decide`](super::Admission::decide) calls them in order;
//! each reads plain borrowed facts ([`TokenFacts`], [`ClientFacts`]) and returns a
//! [`Refusal`] naming the check and the claim it looked at, or what the rule grants.

use std::collections::HashSet;

use super::facts::{ClientFacts, TokenFacts};
use super::{PolicyError, Refusal, Rule, Targets};
use crate::config::IssuerId;
use crate::oauth::TokenType;
use crate::token::ActorId;

/// Rule 1: an actor token gleipnir issued is refused. Such a token names a subject and, in
/// `client_id`, the client that asked for it: it never proves who acts. Accepting one would
/// let a client turn any token it was given into "that party acts" (rules 1-3).
pub(super) fn actor_not_self_issued(actor: &TokenFacts<'_>) -> Result<(), Refusal> {
    if actor.issuer == IssuerId::SELF {
        return Err(Refusal::new(
            PolicyError::ActorTokenSelfIssued,
            "actor_token.iss",
            "the actor token was issued by gleipnir: it names a subject, not who holds it",
        ));
    }
    Ok(())
}

/// Rule 1: the actor token belongs to the authenticated client (its `client_id` or `azp`
/// is the client, or its `sub` is the client's actor identity).
pub(super) fn actor_bound_to_client(
    actor: &TokenFacts<'_>,
    client: &ClientFacts<'_>,
) -> Result<(), Refusal> {
    let id = client.id;
    let bound =
        actor.client_id == Some(id) || actor.azp == Some(id) || actor.sub == client.actor_sub;
    if !bound {
        return Err(Refusal::new(
            PolicyError::ActorNotBoundToClient,
            "actor_token.client_id/azp/sub",
            format!(
                "client_id {}, azp {}: not client {id:?}; sub {:?}: not its actor identity {:?}",
                quoted_or_none(actor.client_id),
                quoted_or_none(actor.azp),
                actor.sub,
                client.actor_sub,
            ),
        ));
    }
    Ok(())
}

/// Rule 1: an actor token that itself carries `act` is refused: it belongs to another
/// chain.
pub(super) fn actor_not_delegated(actor: &TokenFacts<'_>) -> Result<(), Refusal> {
    if !actor.act.is_empty() {
        return Err(Refusal::new(
            PolicyError::ActorTokenDelegated,
            "actor_token.act",
            "the actor token carries its own delegation chain",
        ));
    }
    Ok(())
}

/// Rules 1-3 compare with the actor of this exchange: the actor token's subject, or else
/// the client itself, whose identity the STS (`own_issuer`) vouches for.
pub(super) fn acting_party(
    actor: Option<&TokenFacts<'_>>,
    client: &ClientFacts<'_>,
    own_issuer: &str,
) -> ActorId {
    match actor {
        Some(actor) => actor.identity(),
        None => ActorId {
            sub: client.actor_sub.to_owned(),
            iss: Some(own_issuer.to_owned()),
        },
    }
}

/// Rule 3: `may_act` restricts who may act, whatever else allows it. Returns whether the
/// subject token's `may_act` names the actor (`false` when it has none), which binds the
/// subject token to the exchange (rule 2).
pub(super) fn may_act_restricts(
    subject: &TokenFacts<'_>,
    acting: &ActorId,
) -> Result<bool, Refusal> {
    match subject.may_act {
        Some(may_act) if !may_act_matches(may_act, acting) => Err(Refusal::new(
            PolicyError::MayActMismatch,
            "subject_token.may_act",
            format!("may_act does not name the actor {:?}", acting.sub),
        )),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// RFC 8693 §4.4: `may_act` names the party by `sub` (and `iss`, when it gives one).
fn may_act_matches(may_act: &ActorId, actor: &ActorId) -> bool {
    may_act.sub == actor.sub
        && may_act
            .iss
            .as_ref()
            .is_none_or(|iss| actor.iss.as_ref() == Some(iss))
}

/// Rule 2: the subject token names this client as a party (`aud` holds one of its
/// audiences, or `client_id` or `azp` is the client), or its `may_act` names the actor;
/// an ID token only by `aud`.
pub(super) fn subject_bound_to_client(
    subject: &TokenFacts<'_>,
    client: &ClientFacts<'_>,
    named_by_may_act: bool,
) -> Result<(), Refusal> {
    let id = client.id;
    let names_client = subject.aud.iter().any(|a| client.audiences.contains(a));
    let bound = names_client
        || subject.client_id == Some(id)
        || subject.azp == Some(id)
        || named_by_may_act;
    // An ID token is issued to its audience (OIDC Core §2): only the client named in its
    // `aud` may present it, whatever its `azp` says.
    let id_token = subject.token_type == TokenType::IdToken;
    if !bound || (id_token && !names_client) {
        return Err(Refusal::new(
            PolicyError::SubjectNotBoundToClient,
            if id_token {
                "subject_token.aud"
            } else {
                "subject_token.aud/client_id/azp/may_act"
            },
            format!("the subject token does not name client {id:?} or its actor as a party"),
        ));
    }
    Ok(())
}

/// Rule 6: no cycles: the new actor is neither the subject nor a prior actor (compared by
/// `sub` alone, whatever the issuers, which can only refuse more).
pub(super) fn no_cycle(subject: &TokenFacts<'_>, acting: &ActorId) -> Result<(), Refusal> {
    let in_chain = acting.sub == subject.sub || subject.act.iter().any(|a| a.sub == acting.sub);
    if in_chain {
        return Err(Refusal::new(
            PolicyError::ActorInChain,
            "actor_token.sub",
            format!(
                "{:?} is already the subject or an actor of the subject token's chain",
                acting.sub
            ),
        ));
    }
    Ok(())
}

/// Rule 5: `act` holds identity only: the new actor's `sub`, and its `iss` only where the
/// rule sets `act_includes_iss`.
pub(super) fn act_entry(mut acting: ActorId, act_includes_iss: bool) -> ActorId {
    if !act_includes_iss {
        acting.iss = None;
    }
    acting
}

/// Rule 4: chain preservation: the new actor (with an actor token) on top of the prior
/// actors, which are carried as received, `iss` included (a later hop never rewrites what
/// an earlier one recorded); without an actor token the chain is carried over unchanged.
pub(super) fn carry_chain(new_actor: Option<ActorId>, prior: &[ActorId]) -> Vec<ActorId> {
    new_actor.into_iter().chain(prior.iter().cloned()).collect()
}

/// Rule 7: depth limit: the resulting chain holds at most `max_depth` actors.
pub(super) fn within_depth(chain: &[ActorId], max_depth: usize) -> Result<(), Refusal> {
    if chain.len() > max_depth {
        return Err(Refusal::new(
            PolicyError::ChainTooDeep,
            "subject_token.act",
            format!(
                "the chain would hold {} actors; max_depth is {max_depth}",
                chain.len(),
            ),
        ));
    }
    Ok(())
}

/// Rule 8: lifetime never grows: `exp` = min(now + `ttl_seconds`, subject `exp`, actor
/// `exp`), refused when that leaves nothing.
pub(super) fn lifetime(
    now: u64,
    ttl_seconds: u64,
    subject_exp: u64,
    actor_exp: Option<u64>,
) -> Result<u64, Refusal> {
    let exp = [
        Some(now.saturating_add(ttl_seconds)),
        Some(subject_exp),
        actor_exp,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(now);
    if exp <= now {
        return Err(Refusal::new(
            PolicyError::LifetimeExhausted,
            "subject_token.exp/actor_token.exp",
            "the presented tokens expire now",
        ));
    }
    Ok(exp)
}

/// Rule 9: scope never widens: granted = requested ∩ subject scope ∩ the policy's `scopes`
/// ∩ the ceilings of the chosen targets; asking for more is refused. Without a requested
/// scope, every grantable scope of the subject token, once each, in its order.
pub(super) fn granted_scope(
    requested: Option<&[String]>,
    subject_scope: &[String],
    scopes: &HashSet<String>,
    ceilings: &[&HashSet<String>],
) -> Result<Vec<String>, Refusal> {
    let grantable = |s: &String| scopes.contains(s) && ceilings.iter().all(|c| c.contains(s));
    let Some(requested) = requested else {
        let mut scope: Vec<String> = Vec::new();
        for s in subject_scope.iter().filter(|s| grantable(s)) {
            if !scope.contains(s) {
                scope.push(s.clone());
            }
        }
        return Ok(scope);
    };
    let refuse = |refused: &String, why: &str| -> Result<Vec<String>, Refusal> {
        Err(Refusal::new(
            PolicyError::ScopeNotGranted,
            "request.scope",
            format!("{refused:?} is not in {why}"),
        ))
    };
    if let Some(refused) = requested.iter().find(|r| !subject_scope.contains(r)) {
        return refuse(refused, "the subject token's scope");
    }
    if let Some(refused) = requested.iter().find(|r| !scopes.contains(*r)) {
        return refuse(refused, "the policy's scopes");
    }
    if let Some(refused) = requested.iter().find(|r| !grantable(r)) {
        return refuse(refused, "target_scopes of the requested target");
    }
    Ok(requested.to_vec())
}

/// Rule 10: targets are allow-listed: the token's `aud` is the requested audiences and
/// resources, each admitted by the rule's `audiences` or `resources`, or else its
/// `default_audience`; at most `max_audiences` of them. Returns them with the scope
/// ceilings that apply ([`target_ceilings`]).
pub(super) fn choose_targets<'r>(
    rule: &'r Rule,
    targets: Targets<'_>,
) -> Result<(Vec<String>, Vec<&'r HashSet<String>>), Refusal> {
    let mut aud: Vec<String> = Vec::new();
    let lists = [
        (targets.audiences, &rule.audiences, "audience"),
        (targets.resources, &rule.resources, "resource"),
    ];
    for (requested, allowed, name) in lists {
        for value in requested {
            if allowed.matching(value).next().is_none() {
                return Err(Refusal::new(
                    PolicyError::TargetNotAllowed,
                    format!("request.{name}"),
                    format!("{value:?} is not allowed by {name}s"),
                ));
            }
            if !aud.contains(value) {
                aud.push(value.clone());
            }
        }
    }
    if aud.is_empty() {
        let default = rule.default_audience.clone().ok_or_else(|| {
            Refusal::new(
                PolicyError::NoTarget,
                "request.audience/resource",
                "none requested and the policy has no default_audience",
            )
        })?;
        aud.push(default);
    }
    if aud.len() > rule.max_audiences {
        return Err(Refusal::new(
            PolicyError::TooManyTargets,
            "request.audience/resource",
            format!(
                "{} targets; max_audiences is {}",
                aud.len(),
                rule.max_audiences
            ),
        ));
    }
    let ceilings = target_ceilings(rule, &aud);
    Ok((aud, ceilings))
}

/// Rule 10 (with rule 9): the scope ceilings of targets: for each, the ceiling of every
/// entry of `audiences` or `resources` that admits it, whichever parameter named it, so
/// no other spelling of a request escapes a ceiling.
fn target_ceilings<'r>(rule: &'r Rule, aud: &[String]) -> Vec<&'r HashSet<String>> {
    let mut ceilings = Vec::new();
    for value in aud {
        for (set, scopes) in [
            (&rule.audiences, &rule.audience_scopes),
            (&rule.resources, &rule.resource_scopes),
        ] {
            ceilings.extend(set.matching(value).filter_map(|i| scopes.get(i)?.as_ref()));
        }
    }
    ceilings
}

/// Rule 11: token types: the issued token is of the requested type (the request stage
/// admits only an access token or a `jwt`, never a refresh token).
pub(super) fn issued_token_type(requested: TokenType) -> TokenType {
    requested
}

/// `"value"`, or `none` for an absent claim (explanations).
fn quoted_or_none(value: Option<&str>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"))
}
