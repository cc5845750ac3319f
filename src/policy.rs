//! Stage 4: the delegation decision (EXCHANGE-RULES §5).
//!
//! In two steps: [`PolicyEngine::admit`] checks, before any token is validated, that the
//! authenticated client may exchange in this mode, and returns an [`Admission`]; then
//! [`Admission::decide`] takes the verified tokens and returns a [`Grant`] (only this
//! module builds one) or the [`PolicyError`] that names the refused check. The rules marked "always enforced" in EXCHANGE-RULES §5 are code
//! here and no policy file can switch them off; the per-client policy (`policies/*.toml`,
//! compiled at start-up by [`file`]) decides modes, issuers, targets, scope ceiling, TTL
//! and depth within them.
//!
//! Identities in a chain are compared by `sub` alone: a match with any prior party is
//! treated as a cycle whatever the issuers, which can only refuse more, never less.

mod file;

use std::collections::{HashMap, HashSet};

use thiserror::Error;

use crate::client_auth::AuthenticatedClient;
use crate::config::{Config, ConfigError, IssuerId};
use crate::oauth::TokenType;
use crate::token::{Actor, ActorId, Subject, VerifiedToken};

pub use file::DEFAULT_TTL_SECONDS;

/// Why the policy refused an exchange. Each variant is one check.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PolicyError {
    /// The client has no policy or is disabled.
    #[error("client not enabled for token exchange")]
    ClientNotEnabled,
    /// No actor token, and the client may not impersonate.
    #[error("client may not impersonate")]
    ImpersonationNotAllowed,
    /// An actor token, and the client may not delegate.
    #[error("client may not delegate")]
    DelegationNotAllowed,
    /// The subject token's issuer is not accepted for this client.
    #[error("subject issuer not accepted for client")]
    SubjectIssuerNotAccepted,
    /// The actor token's issuer is not accepted for this client.
    #[error("actor issuer not accepted for client")]
    ActorIssuerNotAccepted,
    /// Rule 1: the actor token does not belong to the authenticated client.
    #[error("actor token not bound to client")]
    ActorNotBoundToClient,
    /// The actor token was issued by gleipnir itself: such a token names a subject and the
    /// client that asked for it, never an actor.
    #[error("actor token issued by gleipnir itself")]
    ActorTokenSelfIssued,
    /// The actor token itself carries `act`: it belongs to another chain.
    #[error("actor token carries its own delegation chain")]
    ActorTokenDelegated,
    /// Rule 2: the subject token does not name this client or actor as a party.
    #[error("subject token not bound to client")]
    SubjectNotBoundToClient,
    /// Rule 3: `may_act` does not name the actor.
    #[error("actor not permitted by may_act")]
    MayActMismatch,
    /// Rule 6: the actor is already in the chain.
    #[error("actor already in delegation chain")]
    ActorInChain,
    /// Rule 7: the resulting chain is deeper than allowed.
    #[error("delegation chain too deep")]
    ChainTooDeep,
    /// Rule 10: an audience or resource is not allowed for this client.
    #[error("target not allowed")]
    TargetNotAllowed,
    /// Rule 10: more targets than `max_audiences`.
    #[error("too many targets")]
    TooManyTargets,
    /// Rule 10: no target requested and no default audience.
    #[error("no target")]
    NoTarget,
    /// Rule 9: a requested scope is outside subject scope ∩ ceiling.
    #[error("scope not grantable")]
    ScopeNotGranted,
    /// Rule 8: the tokens leave no lifetime to grant.
    #[error("no lifetime left")]
    LifetimeExhausted,
}

impl PolicyError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyError::ClientNotEnabled => "client_not_enabled",
            PolicyError::ImpersonationNotAllowed => "impersonation_not_allowed",
            PolicyError::DelegationNotAllowed => "delegation_not_allowed",
            PolicyError::SubjectIssuerNotAccepted => "subject_issuer_not_accepted",
            PolicyError::ActorIssuerNotAccepted => "actor_issuer_not_accepted",
            PolicyError::ActorNotBoundToClient => "actor_not_bound_to_client",
            PolicyError::ActorTokenSelfIssued => "actor_token_self_issued",
            PolicyError::ActorTokenDelegated => "actor_token_delegated",
            PolicyError::SubjectNotBoundToClient => "subject_not_bound_to_client",
            PolicyError::MayActMismatch => "may_act_mismatch",
            PolicyError::ActorInChain => "actor_in_chain",
            PolicyError::ChainTooDeep => "chain_too_deep",
            PolicyError::TargetNotAllowed => "target_not_allowed",
            PolicyError::TooManyTargets => "too_many_targets",
            PolicyError::NoTarget => "no_target",
            PolicyError::ScopeNotGranted => "scope_not_granted",
            PolicyError::LifetimeExhausted => "lifetime_exhausted",
        }
    }
}

/// One client's compiled policy.
#[derive(Debug)]
pub(crate) struct ClientPolicy {
    source: std::sync::Arc<str>,
    enabled: bool,
    impersonate: bool,
    delegate: bool,
    subject_issuers: Vec<IssuerId>,
    actor_issuers: Vec<IssuerId>,
    audiences: HashSet<String>,
    resources: HashSet<String>,
    default_audience: Option<String>,
    max_audiences: usize,
    scopes: HashSet<String>,
    ttl_seconds: u64,
    max_depth: usize,
}

/// What the client asked for, besides the tokens.
#[derive(Debug, Clone, Copy)]
pub struct Targets<'a> {
    /// `audience` values.
    pub audiences: &'a [String],
    /// `resource` values.
    pub resources: &'a [String],
    /// `scope`, when sent.
    pub scope: Option<&'a [String]>,
    /// `requested_token_type` (access_token or jwt; checked by the request stage).
    pub requested_token_type: TokenType,
}

/// An exchange the policy allowed: everything the minter needs, nothing it may change.
#[derive(Debug)]
pub struct Grant {
    client_id: String,
    sub: String,
    aud: Vec<String>,
    scope: Vec<String>,
    iat: u64,
    exp: u64,
    act: Vec<ActorId>,
    token_type: TokenType,
    rule: std::sync::Arc<str>,
}

impl Grant {
    /// The requesting client (`client_id` claim).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// The subject (`sub` claim), unchanged from the subject token.
    pub fn sub(&self) -> &str {
        &self.sub
    }
    /// The audiences (`aud` claim).
    pub fn aud(&self) -> &[String] {
        &self.aud
    }
    /// Granted scopes.
    pub fn scope(&self) -> &[String] {
        &self.scope
    }
    /// Issued-at (and not-before).
    pub fn iat(&self) -> u64 {
        self.iat
    }
    /// Expiry.
    pub fn exp(&self) -> u64 {
        self.exp
    }
    /// The delegation chain for `act`, current actor first; empty for none.
    pub fn act(&self) -> &[ActorId] {
        &self.act
    }
    /// The token type to issue.
    pub fn token_type(&self) -> TokenType {
        self.token_type
    }
    /// Which policy rule allowed it (`file#clients.id`).
    pub fn rule(&self) -> &str {
        &self.rule
    }
    /// The same, shared (a metric label).
    pub fn rule_id(&self) -> &std::sync::Arc<str> {
        &self.rule
    }
}

/// The compiled policies of every client.
pub struct PolicyEngine {
    clients: HashMap<String, ClientPolicy>,
    own_issuer: String,
}

impl PolicyEngine {
    /// Reads and compiles the policy files named by the configuration.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        Ok(Self {
            clients: file::load(config)?,
            own_issuer: config.issuer.clone(),
        })
    }

    /// The checks that need no token, made before any token is validated: the client has
    /// an enabled policy and may exchange in this mode (with an actor token or without).
    /// A refusal here costs no signature verification and cannot cause a JWKS fetch.
    pub fn admit<'a>(
        &'a self,
        client: &'a AuthenticatedClient,
        with_actor_token: bool,
    ) -> Result<Admission<'a>, PolicyError> {
        let policy = self
            .clients
            .get(client.id())
            .filter(|p| p.enabled)
            .ok_or(PolicyError::ClientNotEnabled)?;
        check_mode(policy, with_actor_token)?;
        Ok(Admission {
            own_issuer: &self.own_issuer,
            client,
            policy,
        })
    }
}

fn check_mode(policy: &ClientPolicy, with_actor_token: bool) -> Result<(), PolicyError> {
    match (with_actor_token, policy.delegate, policy.impersonate) {
        (true, false, _) => Err(PolicyError::DelegationNotAllowed),
        (false, _, false) => Err(PolicyError::ImpersonationNotAllowed),
        _ => Ok(()),
    }
}

/// A client admitted by [`PolicyEngine::admit`], awaiting its verified tokens.
pub struct Admission<'a> {
    own_issuer: &'a str,
    client: &'a AuthenticatedClient,
    policy: &'a ClientPolicy,
}

impl Admission<'_> {
    /// The issuers whose tokens this client may present as subject token.
    pub fn subject_issuers(&self) -> &[IssuerId] {
        &self.policy.subject_issuers
    }

    /// The issuers whose tokens this client may present as actor token.
    pub fn actor_issuers(&self) -> &[IssuerId] {
        &self.policy.actor_issuers
    }

    /// Decides the exchange at time `now`.
    pub fn decide(
        &self,
        subject: &VerifiedToken<Subject>,
        actor: Option<&VerifiedToken<Actor>>,
        targets: Targets<'_>,
        now: u64,
    ) -> Result<Grant, PolicyError> {
        let (client, policy) = (self.client, self.policy);
        // The mode was admitted for the request; the tokens must be the ones it announced.
        check_mode(policy, actor.is_some())?;
        if !policy.subject_issuers.contains(&subject.issuer()) {
            return Err(PolicyError::SubjectIssuerNotAccepted);
        }

        // The actor of this exchange: the actor token's subject, or else the client itself,
        // whose identity the STS vouches for.
        let acting = match actor {
            Some(actor) => {
                // A token gleipnir issued names a subject and, in `client_id`, the client
                // that asked for it: it never proves who acts. Accepting one here would let
                // a client turn any token it was given into "that party acts" (rules 1-3).
                if actor.issuer() == IssuerId::SELF {
                    return Err(PolicyError::ActorTokenSelfIssued);
                }
                if !policy.actor_issuers.contains(&actor.issuer()) {
                    return Err(PolicyError::ActorIssuerNotAccepted);
                }
                // Rule 1: the actor token belongs to the authenticated client.
                let id = client.id();
                let bound = actor.client_id() == Some(id)
                    || actor.azp() == Some(id)
                    || actor.sub() == client.client().actor_sub();
                if !bound {
                    return Err(PolicyError::ActorNotBoundToClient);
                }
                // An actor token that is itself delegated belongs to another chain.
                if !actor.act().is_empty() {
                    return Err(PolicyError::ActorTokenDelegated);
                }
                actor.identity()
            }
            None => ActorId {
                sub: client.client().actor_sub().to_owned(),
                iss: Some(self.own_issuer.to_owned()),
            },
        };

        // Rule 3: may_act restricts who may act, whatever else allows it.
        let named_by_may_act = subject.may_act().map(|m| may_act_matches(m, &acting));
        if named_by_may_act == Some(false) {
            return Err(PolicyError::MayActMismatch);
        }
        // Rule 2: the subject token names this client (or this actor) as a party.
        let id = client.id();
        let names_client = subject
            .aud()
            .iter()
            .any(|a| client.client().audiences().contains(a));
        let bound = names_client
            || subject.client_id() == Some(id)
            || subject.azp() == Some(id)
            || named_by_may_act == Some(true);
        if !bound {
            return Err(PolicyError::SubjectNotBoundToClient);
        }
        // An ID token is issued to its audience (OIDC Core §2): only the client named in
        // its `aud` may present it, whatever its `azp` says.
        if subject.token_type() == TokenType::IdToken && !names_client {
            return Err(PolicyError::SubjectNotBoundToClient);
        }

        // Rules 4, 6, 7: the resulting chain.
        let chain: Vec<ActorId> = match actor {
            Some(_) => {
                let in_chain = acting.sub == subject.sub()
                    || subject.act().iter().any(|a| a.sub == acting.sub);
                if in_chain {
                    return Err(PolicyError::ActorInChain);
                }
                std::iter::once(acting)
                    .chain(subject.act().iter().cloned())
                    .collect()
            }
            None => subject.act().to_vec(),
        };
        if chain.len() > policy.max_depth {
            return Err(PolicyError::ChainTooDeep);
        }

        // Rule 10: targets.
        let aud = choose_targets(policy, targets)?;

        // Rule 9: granted = requested ∩ subject scope ∩ ceiling; asking for more is refused.
        let available: Vec<&String> = subject
            .scope()
            .iter()
            .filter(|s| policy.scopes.contains(*s))
            .collect();
        let scope = match targets.scope {
            Some(requested) => {
                if !requested.iter().all(|r| available.contains(&r)) {
                    return Err(PolicyError::ScopeNotGranted);
                }
                requested.to_vec()
            }
            None => {
                let mut scope: Vec<String> = Vec::with_capacity(available.len());
                for s in available {
                    if !scope.contains(s) {
                        scope.push(s.clone());
                    }
                }
                scope
            }
        };

        // Rule 8: lifetime never grows.
        let exp = [
            Some(now.saturating_add(policy.ttl_seconds)),
            Some(subject.exp()),
            actor.map(VerifiedToken::exp),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now);
        if exp <= now {
            return Err(PolicyError::LifetimeExhausted);
        }

        Ok(Grant {
            client_id: id.to_owned(),
            sub: subject.sub().to_owned(),
            aud,
            scope,
            iat: now,
            exp,
            act: chain,
            token_type: targets.requested_token_type,
            rule: std::sync::Arc::clone(&policy.source),
        })
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

fn choose_targets(policy: &ClientPolicy, targets: Targets<'_>) -> Result<Vec<String>, PolicyError> {
    let mut aud: Vec<String> = Vec::new();
    for a in targets.audiences {
        if !policy.audiences.contains(a) {
            return Err(PolicyError::TargetNotAllowed);
        }
        if !aud.contains(a) {
            aud.push(a.clone());
        }
    }
    for r in targets.resources {
        if !policy.resources.contains(r) {
            return Err(PolicyError::TargetNotAllowed);
        }
        if !aud.contains(r) {
            aud.push(r.clone());
        }
    }
    if aud.is_empty() {
        aud.push(
            policy
                .default_audience
                .clone()
                .ok_or(PolicyError::NoTarget)?,
        );
    }
    if aud.len() > policy.max_audiences {
        return Err(PolicyError::TooManyTargets);
    }
    Ok(aud)
}
