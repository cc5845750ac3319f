//! The always-enforced delegation rules, one function each, numbered as `policies/README.md`
//! ("Always enforced") numbers them. No policy field switches any of them off: a policy
//! only supplies the values some of them compare with (`max_depth`, `ttl_seconds`,
//! `scopes`, targets). [`Admission::decide`](super::Admission::decide) calls them in order;
//! each reads plain borrowed facts ([`TokenFacts`], [`ClientFacts`]) and returns a
//! [`Refusal`] naming the check and the claim it looked at, or what the rule grants.

use std::collections::HashSet;

use super::facts::{ClientFacts, TokenFacts};
use super::{PolicyError, Refusal, Rule, SubjectNamespace, Targets};
use crate::config::IssuerId;
use crate::oauth::TokenType;
use crate::token::ActorId;

/// Identity is (`iss`, `sub`) end to end: the issuer the issued token names for its
/// subject (claim `sub_iss`; our `iss` is ours, not the subject's), or `None`.
///
/// - A token gleipnir issued carries over the `sub_iss` it recorded, unchanged, whatever
///   the rule: a later hop never drops or rewrites which issuer vouched for the subject.
/// - Otherwise, where the client's policy sets `subject_namespace = "issuer_claim"`, the
///   subject token's issuer: its `iss`, or ours for a token of ours that recorded none
///   (we vouched for that subject; keeping it apart from any upstream's can only tell
///   more parties apart, never merge two).
/// - Otherwise nothing: the client has one subject issuer (the policy refuses several
///   without a namespace at load), and its `sub` values cannot collide with another's.
pub(super) fn subject_origin(
    subject: &TokenFacts<'_>,
    namespace: Option<SubjectNamespace>,
    own_issuer: &str,
) -> Option<String> {
    if subject.issuer == IssuerId::SELF
        && let Some(recorded) = subject.sub_iss
    {
        return Some(recorded.to_owned());
    }
    namespace.map(|SubjectNamespace::IssuerClaim| {
        if subject.issuer == IssuerId::SELF {
            own_issuer.to_owned()
        } else {
            subject.iss.to_owned()
        }
    })
}

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

/// Rule 1: an actor token is presented to the service it was minted for. Where its issuer
/// declares how its tokens name this STS (`sts_audiences`), its `aud` holds one of them; a
/// token for another service (or for none, `[]`, or a `"*"` we do not list) proves nothing
/// here: whoever received it could replay it as "I act" (RFC 8693 §2.1 leaves the actor
/// token's audience to the STS; RFC 7519 §4.1.3 says a recipient not named in `aud`
/// rejects the token). Without `sts_audiences`, `aud` is not read.
pub(super) fn actor_audience_is_sts(
    actor: &TokenFacts<'_>,
    sts_audiences: Option<&[String]>,
) -> Result<(), Refusal> {
    let Some(ours) = sts_audiences else {
        return Ok(());
    };
    if !actor.aud.iter().any(|a| ours.contains(a)) {
        return Err(Refusal::new(
            PolicyError::ActorAudienceMismatch,
            "actor_token.aud",
            format!(
                "aud [{}] names none of the issuer's sts_audiences [{}]",
                quoted_list(actor.aud),
                quoted_list(ours),
            ),
        ));
    }
    Ok(())
}

/// Rule 1: the actor token represents the authenticated client itself: its `sub` is the
/// client's configured identity (`actor_sub`, and its `iss` is `actor_iss` where the
/// client's identity names its issuer), and its `client_id` and `azp`, when present, name
/// the client. `azp`/`client_id` alone say only to whom the token was
/// issued: an IdP such as Keycloak puts the client there on its users' tokens too, so
/// binding by them would let a client present one user's token as "acting" for another
/// (RFC 8693 §4.1: the actor is the party the actor token's subject identifies). They are
/// necessary, not sufficient: a token of the right `sub` issued to another client is the
/// other client's.
pub(super) fn actor_bound_to_client(
    actor: &TokenFacts<'_>,
    client: &ClientFacts<'_>,
) -> Result<(), Refusal> {
    let id = client.id;
    let names_client = |claim: Option<&str>| claim.is_none_or(|c| c == id);
    let bound = actor.sub == client.actor_sub
        && client.actor_iss.is_none_or(|iss| actor.iss == iss)
        && names_client(actor.client_id)
        && names_client(actor.azp);
    if !bound {
        return Err(Refusal::new(
            PolicyError::ActorNotBoundToClient,
            if client.actor_iss.is_some() {
                "actor_token.iss/sub/client_id/azp"
            } else {
                "actor_token.sub/client_id/azp"
            },
            format!(
                "sub {:?}{} (the client's actor identity is {:?}{}), client_id {}, azp {} (when present, must be {id:?})",
                actor.sub,
                client
                    .actor_iss
                    .map_or_else(String::new, |_| format!(" of {:?}", actor.iss)),
                client.actor_sub,
                client
                    .actor_iss
                    .map_or_else(String::new, |iss| format!(" of {iss:?}")),
                quoted_or_none(actor.client_id),
                quoted_or_none(actor.azp),
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
/// the client itself: (`actor_iss`, `actor_sub`) where its identity names its issuer (so
/// a `may_act` naming the client as its IdP knows it matches), otherwise `actor_sub` as
/// the STS (`own_issuer`) vouches for it.
pub(super) fn acting_party(
    actor: Option<&TokenFacts<'_>>,
    client: &ClientFacts<'_>,
    own_issuer: &str,
) -> ActorId {
    match actor {
        Some(actor) => actor.identity(),
        None => ActorId {
            sub: client.actor_sub.to_owned(),
            iss: Some(client.actor_iss.unwrap_or(own_issuer).to_owned()),
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

/// Rule 3, for a client with a workload identity: a subject token's `may_act` (without
/// `iss`) may name it by its client id as well as by that identity (its `actor_sub`).
/// The actor is then the client itself, with or without an actor token (rule 1 bound
/// any actor token to it), so the `may_act` names this exchange's actor.
pub(super) fn may_act_names_client_by_id(
    subject: &TokenFacts<'_>,
    client: &ClientFacts<'_>,
) -> bool {
    subject
        .may_act
        .is_some_and(|m| client.workload && m.iss.is_none() && m.sub == client.id)
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

/// `"a", "b"` (explanations).
fn quoted_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    quoted.join(", ")
}

/// `"value"`, or `none` for an absent claim (explanations).
fn quoted_or_none(value: Option<&str>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TargetSet;
    use crate::policy::facts::testing::{client, party, refused, rule, strings, token};
    use PolicyError::*;

    #[test]
    fn identity_the_subject_issuer_is_recorded_and_carried() {
        let ns = Some(SubjectNamespace::IssuerClaim);
        let sts = "https://sts.example";
        let upstream = token("alice");
        assert_eq!(subject_origin(&upstream, None, sts), None);
        assert_eq!(
            subject_origin(&upstream, ns, sts).as_deref(),
            Some("https://idp.example")
        );
        // An upstream's own sub_iss claim is not read (the token facts never hold it, and
        // the issuer is its iss).
        let claims_other = TokenFacts {
            sub_iss: Some("https://other.example"),
            ..upstream
        };
        assert_eq!(
            subject_origin(&claims_other, ns, sts).as_deref(),
            Some("https://idp.example")
        );
        // Our own token: what it recorded, unchanged, namespace or not.
        let ours_recorded = TokenFacts {
            issuer: IssuerId::SELF,
            iss: sts,
            sub_iss: Some("https://partners.example"),
            ..upstream
        };
        for namespace in [None, ns] {
            assert_eq!(
                subject_origin(&ours_recorded, namespace, sts).as_deref(),
                Some("https://partners.example")
            );
        }
        // Our own token that recorded none: ours, under a namespace; else nothing.
        let ours = TokenFacts {
            sub_iss: None,
            ..ours_recorded
        };
        assert_eq!(subject_origin(&ours, ns, sts).as_deref(), Some(sts));
        assert_eq!(subject_origin(&ours, None, sts), None);
    }

    #[test]
    fn rule1_self_issued_actor_tokens_are_refused() {
        let upstream = token("bff-sa");
        assert!(actor_not_self_issued(&upstream).is_ok());
        let own = TokenFacts {
            issuer: IssuerId::SELF,
            ..upstream
        };
        refused(
            actor_not_self_issued(&own),
            ActorTokenSelfIssued,
            "actor_token.iss",
        );
    }

    #[test]
    fn rule1_actor_token_is_the_client_itself() {
        let client = client(&[]);
        let own = token("bff-sa");
        let with_client_id = TokenFacts {
            client_id: Some("bff"),
            ..own
        };
        let with_azp = TokenFacts {
            azp: Some("bff"),
            ..own
        };
        let with_both = TokenFacts {
            client_id: Some("bff"),
            ..with_azp
        };
        for bound in [own, with_client_id, with_azp, with_both] {
            assert!(actor_bound_to_client(&bound, &client).is_ok());
        }
        let on = "actor_token.sub/client_id/azp";
        // azp or client_id naming the client is not enough: a user's token issued to the
        // client (Keycloak: azp = the client) is not the client.
        let user_by_azp = TokenFacts {
            azp: Some("bff"),
            ..token("bob")
        };
        let user_by_client_id = TokenFacts {
            client_id: Some("bff"),
            ..token("bob")
        };
        for user in [user_by_azp, user_by_client_id, token("mallory")] {
            refused(
                actor_bound_to_client(&user, &client),
                ActorNotBoundToClient,
                on,
            );
        }
        // The right sub issued to another client is the other client's.
        for other in [
            TokenFacts {
                azp: Some("other"),
                ..own
            },
            TokenFacts {
                client_id: Some("other"),
                ..with_azp
            },
        ] {
            refused(
                actor_bound_to_client(&other, &client),
                ActorNotBoundToClient,
                on,
            );
        }
        let detail = refused(
            actor_bound_to_client(&user_by_azp, &client),
            ActorNotBoundToClient,
            on,
        );
        assert_eq!(
            detail,
            r#"sub "bob" (the client's actor identity is "bff-sa"), client_id none, azp "bff" (when present, must be "bff")"#
        );
    }

    #[test]
    fn rule1_actor_token_aud_names_the_sts_where_the_issuer_says_how() {
        let ours = strings(&["https://sts.example", "gleipnir"]);
        let for_us = strings(&["orders-api", "gleipnir"]);
        let actor = TokenFacts {
            aud: &for_us,
            ..token("bff-sa")
        };
        assert!(actor_audience_is_sts(&actor, Some(&ours)).is_ok());
        // Without sts_audiences the actor token's aud is not read.
        assert!(actor_audience_is_sts(&token("bff-sa"), None).is_ok());
        let other = strings(&["orders-api"]);
        let star = strings(&["*"]);
        for aud in [&other[..], &star[..], &[]] {
            let actor = TokenFacts {
                aud,
                ..token("bff-sa")
            };
            refused(
                actor_audience_is_sts(&actor, Some(&ours)),
                ActorAudienceMismatch,
                "actor_token.aud",
            );
        }
        let actor = TokenFacts {
            aud: &other,
            ..token("bff-sa")
        };
        let detail = refused(
            actor_audience_is_sts(&actor, Some(&ours)),
            ActorAudienceMismatch,
            "actor_token.aud",
        );
        assert_eq!(
            detail,
            r#"aud ["orders-api"] names none of the issuer's sts_audiences ["https://sts.example", "gleipnir"]"#
        );
    }

    #[test]
    fn rule1_actor_tokens_carrying_act_are_refused() {
        assert!(actor_not_delegated(&token("bff-sa")).is_ok());
        let chain = [party("gateway", None)];
        let delegated = TokenFacts {
            act: &chain,
            ..token("bff-sa")
        };
        refused(
            actor_not_delegated(&delegated),
            ActorTokenDelegated,
            "actor_token.act",
        );
    }

    #[test]
    fn acting_party_is_the_actor_token_or_the_client() {
        let client = client(&[]);
        let actor = token("bff-sa");
        assert_eq!(
            acting_party(Some(&actor), &client, "https://sts.example"),
            party("bff-sa", Some("https://idp.example"))
        );
        assert_eq!(
            acting_party(None, &client, "https://sts.example"),
            party("bff-sa", Some("https://sts.example"))
        );
        // A client whose identity names its issuer acts as (actor_iss, actor_sub); with
        // an actor token, the token's identity is the actor whatever actor_iss says.
        let named = ClientFacts {
            actor_iss: Some("https://idp.example"),
            ..client
        };
        assert_eq!(
            acting_party(None, &named, "https://sts.example"),
            party("bff-sa", Some("https://idp.example"))
        );
        let other_idp = TokenFacts {
            iss: "https://other.example",
            ..actor
        };
        assert_eq!(
            acting_party(Some(&other_idp), &named, "https://sts.example"),
            party("bff-sa", Some("https://other.example"))
        );
    }

    #[test]
    fn rule3_may_act_with_iss_matches_the_client_by_its_actor_iss() {
        let may_act = party("bff-sa", Some("https://idp.example"));
        let subject = TokenFacts {
            may_act: Some(&may_act),
            ..token("alice")
        };
        let plain = client(&[]);
        let named = ClientFacts {
            actor_iss: Some("https://idp.example"),
            ..plain
        };
        let sts = "https://sts.example";
        // Without actor_iss the client acts as the STS's party: its IdP's name misses.
        refused(
            may_act_restricts(&subject, &acting_party(None, &plain, sts)),
            MayActMismatch,
            "subject_token.may_act",
        );
        assert_eq!(
            may_act_restricts(&subject, &acting_party(None, &named, sts)).ok(),
            Some(true)
        );
        // Rule 5 is untouched: act holds only the identity, iss only when configured.
        let acting = acting_party(None, &named, sts);
        assert_eq!(act_entry(acting.clone(), false), party("bff-sa", None));
        assert_eq!(act_entry(acting, true), may_act);
    }

    #[test]
    fn rule1_actor_iss_binds_the_actor_token_issuer_too() {
        let named = ClientFacts {
            actor_iss: Some("https://idp.example"),
            ..client(&[])
        };
        assert!(actor_bound_to_client(&token("bff-sa"), &named).is_ok());
        let other_idp = TokenFacts {
            iss: "https://other.example",
            ..token("bff-sa")
        };
        let detail = refused(
            actor_bound_to_client(&other_idp, &named),
            ActorNotBoundToClient,
            "actor_token.iss/sub/client_id/azp",
        );
        assert_eq!(
            detail,
            r#"sub "bff-sa" of "https://other.example" (the client's actor identity is "bff-sa" of "https://idp.example"), client_id none, azp none (when present, must be "bff")"#
        );
    }

    #[test]
    fn rule3_may_act_may_name_a_workload_client_by_its_id() {
        let mut subject = token("alice");
        let may_act = party("bff", None);
        subject.may_act = Some(&may_act);
        let audiences = strings(&["bff"]);
        let plain = client(&audiences);
        let workload = ClientFacts {
            workload: true,
            ..plain
        };
        assert!(may_act_names_client_by_id(&subject, &workload));
        assert!(
            !may_act_names_client_by_id(&subject, &plain),
            "only with workload identity"
        );
        let with_iss = party("bff", Some("https://sts.example"));
        subject.may_act = Some(&with_iss);
        assert!(!may_act_names_client_by_id(&subject, &workload));
        let other = party("orders-api", None);
        subject.may_act = Some(&other);
        assert!(!may_act_names_client_by_id(&subject, &workload));
    }

    #[test]
    fn rule3_may_act_restricts_the_actor() {
        let acting = party("bff-sa", Some("https://idp.example"));
        assert_eq!(
            may_act_restricts(&token("alice"), &acting).ok(),
            Some(false)
        );
        for named in [
            party("bff-sa", None),
            party("bff-sa", Some("https://idp.example")),
        ] {
            let subject = TokenFacts {
                may_act: Some(&named),
                ..token("alice")
            };
            assert_eq!(may_act_restricts(&subject, &acting).ok(), Some(true));
        }
        for other in [
            party("gateway", None),
            party("bff-sa", Some("https://other.example")),
        ] {
            let subject = TokenFacts {
                may_act: Some(&other),
                ..token("alice")
            };
            let detail = refused(
                may_act_restricts(&subject, &acting),
                MayActMismatch,
                "subject_token.may_act",
            );
            assert_eq!(detail, r#"may_act does not name the actor "bff-sa""#);
        }
        // A may_act that names an issuer is not met by an actor without one.
        let with_iss = party("bff-sa", Some("https://idp.example"));
        let subject = TokenFacts {
            may_act: Some(&with_iss),
            ..token("alice")
        };
        refused(
            may_act_restricts(&subject, &party("bff-sa", None)),
            MayActMismatch,
            "subject_token.may_act",
        );
    }

    #[test]
    fn rule2_subject_token_names_the_client() {
        let audiences = strings(&["bff", "https://bff.example"]);
        let client = client(&audiences);
        let aud = strings(&["https://bff.example"]);
        let bound = [
            TokenFacts {
                aud: &aud,
                ..token("alice")
            },
            TokenFacts {
                client_id: Some("bff"),
                ..token("alice")
            },
            TokenFacts {
                azp: Some("bff"),
                ..token("alice")
            },
        ];
        for subject in &bound {
            assert!(subject_bound_to_client(subject, &client, false).is_ok());
        }
        // may_act naming the actor binds too.
        assert!(subject_bound_to_client(&token("alice"), &client, true).is_ok());

        let other_aud = strings(&["orders-api"]);
        let unbound = TokenFacts {
            aud: &other_aud,
            client_id: Some("other"),
            azp: Some("other"),
            ..token("alice")
        };
        let detail = refused(
            subject_bound_to_client(&unbound, &client, false),
            SubjectNotBoundToClient,
            "subject_token.aud/client_id/azp/may_act",
        );
        assert_eq!(
            detail,
            r#"the subject token does not name client "bff" or its actor as a party"#
        );
    }

    #[test]
    fn rule2_id_tokens_bind_by_aud_only() {
        let audiences = strings(&["bff"]);
        let client = client(&audiences);
        let id_token = TokenFacts {
            token_type: TokenType::IdToken,
            azp: Some("bff"),
            client_id: Some("bff"),
            ..token("alice")
        };
        refused(
            subject_bound_to_client(&id_token, &client, true),
            SubjectNotBoundToClient,
            "subject_token.aud",
        );
        let aud = strings(&["bff"]);
        let to_client = TokenFacts {
            aud: &aud,
            ..id_token
        };
        assert!(subject_bound_to_client(&to_client, &client, false).is_ok());
    }

    #[test]
    fn rule6_no_cycles_compared_by_sub() {
        let prior = [party("gateway", Some("https://idp.example"))];
        let subject = TokenFacts {
            act: &prior,
            ..token("alice")
        };
        assert!(no_cycle(&subject, &party("bff-sa", None)).is_ok());
        for cycle in [
            party("alice", Some("https://other.example")),
            party("gateway", None),
        ] {
            let detail = refused(no_cycle(&subject, &cycle), ActorInChain, "actor_token.sub");
            assert!(detail.starts_with(&format!("{:?} is already", cycle.sub)));
        }
    }

    #[test]
    fn rule5_act_holds_iss_only_when_configured() {
        let acting = party("bff-sa", Some("https://idp.example"));
        assert_eq!(act_entry(acting.clone(), false), party("bff-sa", None));
        assert_eq!(act_entry(acting.clone(), true), acting);
    }

    #[test]
    fn rule4_new_actor_on_top_prior_actors_unchanged() {
        let prior = [
            party("gateway", Some("https://idp.example")),
            party("edge", None),
        ];
        let chain = carry_chain(Some(party("bff-sa", None)), &prior);
        assert_eq!(
            chain,
            [
                party("bff-sa", None),
                party("gateway", Some("https://idp.example")),
                party("edge", None)
            ]
        );
        // Without an actor token the chain is carried over as it is.
        assert_eq!(carry_chain(None, &prior), prior);
        assert!(carry_chain(None, &[]).is_empty());
    }

    #[test]
    fn rule7_depth_limit() {
        let chain = [party("a", None), party("b", None)];
        assert!(within_depth(&chain, 2).is_ok());
        let detail = refused(within_depth(&chain, 1), ChainTooDeep, "subject_token.act");
        assert_eq!(detail, "the chain would hold 2 actors; max_depth is 1");
        assert!(within_depth(&[], 1).is_ok());
    }

    #[test]
    fn rule8_lifetime_never_grows() {
        assert_eq!(lifetime(1000, 300, 5000, None).ok(), Some(1300));
        assert_eq!(lifetime(1000, 300, 1100, None).ok(), Some(1100));
        assert_eq!(lifetime(1000, 300, 5000, Some(1050)).ok(), Some(1050));
        assert_eq!(lifetime(1000, u64::MAX, 5000, None).ok(), Some(5000));
        for (subject_exp, actor_exp) in [(1000, None), (5000, Some(1000)), (900, Some(5000))] {
            refused(
                lifetime(1000, 300, subject_exp, actor_exp),
                LifetimeExhausted,
                "subject_token.exp/actor_token.exp",
            );
        }
    }

    fn scope_set(values: &[&str]) -> HashSet<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rule9_scope_never_widens() {
        let subject = strings(&["orders:read", "orders:write", "profile", "orders:read"]);
        let scopes = scope_set(&["orders:read", "orders:write", "admin"]);
        let ceiling = scope_set(&["orders:read"]);

        // Nothing requested: subject ∩ scopes ∩ ceilings, once each, in the subject's order.
        let granted = granted_scope(None, &subject, &scopes, &[]).unwrap();
        assert_eq!(granted, strings(&["orders:read", "orders:write"]));
        let granted = granted_scope(None, &subject, &scopes, &[&ceiling]).unwrap();
        assert_eq!(granted, strings(&["orders:read"]));

        let requested = strings(&["orders:write"]);
        let granted = granted_scope(Some(&requested), &subject, &scopes, &[]).unwrap();
        assert_eq!(granted, requested);

        for (asked, why) in [
            ("admin", "the subject token's scope"),
            ("profile", "the policy's scopes"),
            ("orders:write", "target_scopes of the requested target"),
        ] {
            let requested = strings(&["orders:read", asked]);
            let detail = refused(
                granted_scope(Some(&requested), &subject, &scopes, &[&ceiling]),
                ScopeNotGranted,
                "request.scope",
            );
            assert_eq!(detail, format!("{asked:?} is not in {why}"));
        }
    }

    /// A rule admitting audiences `orders-api` (ceiling `orders:read`) and `api-*`, and the
    /// resource `https://orders.example/` (ceiling `orders:write`).
    fn target_rule() -> Rule {
        Rule {
            audiences: TargetSet::compile(&strings(&["orders-api", "api-*"]), false).unwrap(),
            resources: TargetSet::compile(&strings(&["https://orders.example/"]), true).unwrap(),
            audience_scopes: vec![Some(scope_set(&["orders:read"])), None],
            resource_scopes: vec![Some(scope_set(&["orders:write"]))],
            max_audiences: 2,
            ..rule()
        }
    }

    fn targets<'a>(audiences: &'a [String], resources: &'a [String]) -> Targets<'a> {
        Targets {
            audiences,
            resources,
            scope: None,
            requested_token_type: TokenType::AccessToken,
        }
    }

    #[test]
    fn rule10_requested_targets_are_allow_listed() {
        let rule = target_rule();
        let (aud, ceilings) =
            choose_targets(&rule, targets(&strings(&["orders-api", "orders-api"]), &[])).unwrap();
        assert_eq!(aud, strings(&["orders-api"]));
        assert_eq!(ceilings, [&scope_set(&["orders:read"])]);

        let resource = strings(&["https://orders.example/"]);
        let (aud, ceilings) =
            choose_targets(&rule, targets(&strings(&["api-x"]), &resource)).unwrap();
        assert_eq!(aud, strings(&["api-x", "https://orders.example/"]));
        assert_eq!(ceilings, [&scope_set(&["orders:write"])]);

        let detail = refused(
            choose_targets(&rule, targets(&strings(&["billing"]), &[])),
            TargetNotAllowed,
            "request.audience",
        );
        assert_eq!(detail, r#""billing" is not allowed by audiences"#);
        // An audience entry does not admit the same value asked for as a resource.
        refused(
            choose_targets(&rule, targets(&[], &strings(&["orders-api"]))),
            TargetNotAllowed,
            "request.resource",
        );
        let three = strings(&["orders-api", "api-a", "api-b"]);
        let detail = refused(
            choose_targets(&rule, targets(&three, &[])),
            TooManyTargets,
            "request.audience/resource",
        );
        assert_eq!(detail, "3 targets; max_audiences is 2");
    }

    #[test]
    fn rule10_default_audience_or_no_target() {
        let rule = target_rule();
        refused(
            choose_targets(&rule, targets(&[], &[])),
            NoTarget,
            "request.audience/resource",
        );
        let rule = Rule {
            default_audience: Some("orders-api".into()),
            ..target_rule()
        };
        let (aud, ceilings) = choose_targets(&rule, targets(&[], &[])).unwrap();
        assert_eq!(aud, strings(&["orders-api"]));
        assert_eq!(ceilings.len(), 1);
    }

    #[test]
    fn rule10_ceilings_of_a_value_in_both_lists_apply_whichever_names_it() {
        let both = strings(&["https://orders.example/"]);
        let rule = Rule {
            audiences: TargetSet::compile(&both, false).unwrap(),
            audience_scopes: vec![Some(scope_set(&["a"]))],
            ..target_rule()
        };
        let (_, ceilings) = choose_targets(&rule, targets(&both, &[])).unwrap();
        assert_eq!(
            ceilings,
            [&scope_set(&["a"]), &scope_set(&["orders:write"])]
        );
    }

    #[test]
    fn rule11_issued_type_is_the_requested_one() {
        assert_eq!(issued_token_type(TokenType::Jwt), TokenType::Jwt);
        assert_eq!(
            issued_token_type(TokenType::AccessToken),
            TokenType::AccessToken
        );
    }
}
