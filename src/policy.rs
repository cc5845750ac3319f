//! Stage 4: the delegation decision (EXCHANGE-RULES §5).
//!
//! In two steps: [`PolicyEngine::admit`] checks, before any token is validated, that the
//! authenticated client may exchange in this mode and with these token types, and returns
//! an [`Admission`]; then [`Admission::decide`] takes the verified tokens and returns a
//! [`Grant`] (only this module builds one) or a [`Refusal`] that names the refused check,
//! the claim it looked at and the rule in force. The rules marked "always enforced" in
//! EXCHANGE-RULES §5 are code here and no policy file can switch them off; the policy
//! files (`policies/*.toml`, compiled by [`file`] into one [`Rule`] per client and subject
//! issuer) decide modes, issuers, token types, targets, scope ceilings, TTL, depth, which
//! actors may act, the members of `act`, passthrough claims and conditions within them.
//!
//! Identities in a chain are compared by `sub` alone: a match with any prior party is
//! treated as a cycle whatever the issuers, which can only refuse more, never less.
//!
//! [`PolicyStore`] holds the policy in force and swaps it whole on reload.

mod file;
pub mod store;

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::client_auth::{AuthenticatedClient, NamedClient, RegisteredClient};
use crate::config::{Config, ConfigError, IssuerId};
use crate::oauth::TokenType;
use crate::token::{Actor, ActorId, Checked, Role, Subject, VerifiedToken};

pub use file::{DEFAULT_TTL_SECONDS, RESERVED_CLAIMS};
pub use store::PolicyStore;

mod sealed {
    pub trait Sealed {}
}

/// What a decision is made on. A real exchange holds [`Verified`] proofs (an
/// authenticated client, tokens whose signature or introspection answer vouched for
/// them); a dry run holds [`Unverified`] ones (a client named by the operator, tokens
/// whose claims were checked, perhaps offline). The decision code is one and the same;
/// only the type of its result differs, and only a [`Grant`], decided on verified
/// proofs, can be minted.
pub trait Proofs: sealed::Sealed {
    /// What proves the client.
    type Client: AsRef<RegisteredClient>;
    /// What proves a token of role `R`.
    type Token<R: Role>: Borrow<Checked<R>>;
}

/// The proofs of a real exchange.
#[derive(Debug)]
pub enum Verified {}
/// The proofs of a dry run (`gleipnir policy explain`, `gleipnir policy test`).
#[derive(Debug)]
pub enum Unverified {}
impl sealed::Sealed for Verified {}
impl sealed::Sealed for Unverified {}
impl Proofs for Verified {
    type Client = AuthenticatedClient;
    type Token<R: Role> = VerifiedToken<R>;
}
impl Proofs for Unverified {
    type Client = NamedClient;
    type Token<R: Role> = Checked<R>;
}

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
    /// The declared `subject_token_type` is not one the client's policy accepts.
    #[error("subject token type not accepted for client")]
    SubjectTokenTypeNotAccepted,
    /// The declared `actor_token_type` is not one the client's policy accepts.
    #[error("actor token type not accepted for client")]
    ActorTokenTypeNotAccepted,
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
    /// Policy `actors`: the actor is not one the client's policy lets act.
    #[error("actor not allowed by policy")]
    ActorNotAllowed,
    /// Policy `prior_actors`: the subject token's chain holds an actor the policy does not
    /// let this client continue from.
    #[error("prior actor not allowed by policy")]
    PriorActorNotAllowed,
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
    /// Policy `conditions`: a condition on the subject or actor token's claims fails.
    #[error("policy condition not met")]
    ConditionNotMet,
    /// Rule 10: an audience or resource is not allowed for this client.
    #[error("target not allowed")]
    TargetNotAllowed,
    /// Rule 10: more targets than `max_audiences`.
    #[error("too many targets")]
    TooManyTargets,
    /// Rule 10: no target requested and no default audience.
    #[error("no target")]
    NoTarget,
    /// Rule 9: a requested scope is outside subject scope ∩ ceilings.
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
            PolicyError::SubjectTokenTypeNotAccepted => "subject_token_type_not_accepted",
            PolicyError::ActorTokenTypeNotAccepted => "actor_token_type_not_accepted",
            PolicyError::SubjectIssuerNotAccepted => "subject_issuer_not_accepted",
            PolicyError::ActorIssuerNotAccepted => "actor_issuer_not_accepted",
            PolicyError::ActorNotBoundToClient => "actor_not_bound_to_client",
            PolicyError::ActorTokenSelfIssued => "actor_token_self_issued",
            PolicyError::ActorTokenDelegated => "actor_token_delegated",
            PolicyError::ActorNotAllowed => "actor_not_allowed",
            PolicyError::PriorActorNotAllowed => "prior_actor_not_allowed",
            PolicyError::SubjectNotBoundToClient => "subject_not_bound_to_client",
            PolicyError::MayActMismatch => "may_act_mismatch",
            PolicyError::ActorInChain => "actor_in_chain",
            PolicyError::ChainTooDeep => "chain_too_deep",
            PolicyError::ConditionNotMet => "condition_not_met",
            PolicyError::TargetNotAllowed => "target_not_allowed",
            PolicyError::TooManyTargets => "too_many_targets",
            PolicyError::NoTarget => "no_target",
            PolicyError::ScopeNotGranted => "scope_not_granted",
            PolicyError::LifetimeExhausted => "lifetime_exhausted",
        }
    }
}

/// A refused exchange, explained: the check, what it looked at (a claim of a token, or a
/// request parameter), the facts, and the rule in force. For the audit log and `gleipnir
/// policy explain`; the client sees only the OAuth code of [`check`](Self::check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The check that refused.
    pub check: PolicyError,
    /// Where it looked: `subject_token.aud`, `actor_token.azp`, `request.audience`, ...
    pub on: String,
    /// What it found, in words. Identifiers and requested values only, never a token.
    pub detail: String,
    /// The rule in force (`file#clients.id[.by_issuer.name]`), once the client has one.
    pub rule: Option<Arc<str>>,
}

impl Refusal {
    fn new(check: PolicyError, on: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check,
            on: on.into(),
            detail: detail.into(),
            rule: None,
        }
    }

    fn under(mut self, rule: &Arc<str>) -> Self {
        self.rule = Some(Arc::clone(rule));
        self
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {}: {}", self.check.as_str(), self.on, self.detail)
    }
}

/// A value a condition compares a claim with: TOML string, integer or boolean.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum Scalar {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl Scalar {
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Scalar::Bool(b), Value::Bool(v)) => b == v,
            (Scalar::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
            (Scalar::Str(s), Value::String(v)) => s == v,
            _ => false,
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Which token a condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRole {
    Subject,
    Actor,
}

impl TokenRole {
    fn name(self) -> &'static str {
        match self {
            TokenRole::Subject => "subject_token",
            TokenRole::Actor => "actor_token",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum ConditionTest {
    /// The claim equals the value (for an array claim: one of its elements does).
    Equals(Scalar),
    /// The claim equals one of the values (for an array claim: one of its elements does).
    OneOf(Vec<Scalar>),
    /// The claim is there and not `null` (`true`), or it is not (`false`).
    Present(bool),
}

/// A condition on a claim of the subject or actor token.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    token: TokenRole,
    path: Vec<String>,
    test: ConditionTest,
}

impl Condition {
    fn holds(&self, claims: Option<&Map<String, Value>>) -> bool {
        let value = claims.and_then(|c| lookup(c, &self.path));
        let any = |value: &Value, f: &dyn Fn(&Value) -> bool| match value {
            Value::Array(items) => items.iter().any(f),
            v => f(v),
        };
        match (&self.test, value) {
            (ConditionTest::Present(want), v) => *want == v.is_some(),
            (_, None) => false,
            (ConditionTest::Equals(s), Some(v)) => any(v, &|x| s.matches(x)),
            (ConditionTest::OneOf(set), Some(v)) => any(v, &|x| set.iter().any(|s| s.matches(x))),
        }
    }

    fn describe(&self) -> String {
        let path = self.path.join(".");
        match &self.test {
            ConditionTest::Equals(s) => format!("{path} equals {s}"),
            ConditionTest::OneOf(set) => {
                let set: Vec<String> = set.iter().map(ToString::to_string).collect();
                format!("{path} one of [{}]", set.join(", "))
            }
            ConditionTest::Present(true) => format!("{path} present"),
            ConditionTest::Present(false) => format!("{path} absent"),
        }
    }
}

/// The claim at `path` (a `null` counts as absent).
fn lookup<'v>(claims: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    (!value.is_null()).then_some(value)
}

/// Allowed `audience` or `resource` values: exact entries, and patterns with one `*`.
///
/// A `*` stands for one or more characters among `a-z 0-9 - _`: a piece of one host label
/// or path segment, never a `.`, `/`, `:` or anything else that would let it reach into
/// another host or path, and never an upper-case letter (hosts compare case-insensitively:
/// `PAYMENTS` must not slip past an exact entry for `payments`).
/// `https://*.example.com/` admits `https://orders.example.com/` but neither
/// `https://evil.com/.example.com/` nor `https://a.b.example.com/`.
#[derive(Debug, Default)]
pub(crate) struct TargetSet {
    exact: HashMap<String, usize>,
    patterns: Vec<(String, String, usize)>,
}

impl TargetSet {
    /// `entries` as written in a policy; `uris` checks each (with `*` read as a letter) is
    /// an absolute URI without fragment (RFC 8707 §2).
    pub(crate) fn compile(entries: &[String], uris: bool) -> Result<Self, String> {
        let mut set = TargetSet::default();
        for (i, entry) in entries.iter().enumerate() {
            if entry.is_empty() {
                return Err("must not contain empty strings".into());
            }
            if uris && !crate::oauth::is_resource_uri(&entry.replace('*', "x")) {
                return Err(format!(
                    "{entry:?} is not an absolute URI without fragment (RFC 8707 §2)"
                ));
            }
            match entry.split_once('*') {
                None => {
                    set.exact.entry(entry.clone()).or_insert(i);
                }
                Some((prefix, suffix)) if !suffix.contains('*') => {
                    set.patterns.push((prefix.to_owned(), suffix.to_owned(), i));
                }
                Some(_) => return Err(format!("{entry:?}: at most one * per pattern")),
            }
        }
        Ok(set)
    }

    fn contains_exact(&self, value: &str) -> bool {
        self.exact.contains_key(value)
    }

    /// Every entry that admits `value`: its exact entry, and each pattern that matches.
    fn matching<'s>(&'s self, value: &'s str) -> impl Iterator<Item = usize> + 's {
        let exact = self.exact.get(value).copied();
        let patterns = self.patterns.iter().filter_map(move |(prefix, suffix, i)| {
            let middle = value.strip_prefix(prefix.as_str())?;
            let middle = middle.strip_suffix(suffix.as_str())?;
            let ok = !middle.is_empty()
                && middle.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            ok.then_some(*i)
        });
        exact.into_iter().chain(patterns)
    }
}

/// One client's compiled policy: the client-level fields, the rule for its subject
/// tokens, and refinements per subject issuer.
#[derive(Debug)]
pub(crate) struct ClientPolicy {
    id: Arc<str>,
    header: ClientHeader,
    base: Arc<Rule>,
    by_issuer: HashMap<IssuerId, Arc<Rule>>,
}

impl ClientPolicy {
    fn rule_for(&self, subject_issuer: IssuerId) -> &Rule {
        self.by_issuer.get(&subject_issuer).unwrap_or(&self.base)
    }
}

/// The client-level fields of a policy: modes, subject issuers and token types.
#[derive(Debug)]
pub(crate) struct ClientHeader {
    enabled: bool,
    impersonate: bool,
    delegate: bool,
    subject_issuers: Vec<IssuerId>,
    subject_token_types: Option<Vec<TokenType>>,
    actor_token_types: Option<Vec<TokenType>>,
}

/// What one (client, subject issuer) pair may do: every field merged from `[defaults]`,
/// the client's table and its `by_issuer` table, compiled into lookup tables.
#[derive(Debug)]
pub(crate) struct Rule {
    id: Arc<str>,
    actor_issuers: Vec<IssuerId>,
    audiences: TargetSet,
    resources: TargetSet,
    audience_scopes: Vec<Option<HashSet<String>>>,
    resource_scopes: Vec<Option<HashSet<String>>>,
    default_audience: Option<String>,
    max_audiences: usize,
    scopes: HashSet<String>,
    ttl_seconds: u64,
    max_depth: usize,
    actors: Option<HashSet<String>>,
    prior_actors: Option<HashSet<String>>,
    act_includes_iss: bool,
    claims: Vec<String>,
    conditions: Vec<Condition>,
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
/// Only [`Admission::decide`] builds one, and only on the proofs `P` names.
#[derive(Debug)]
pub struct Decided<P: Proofs> {
    client_id: String,
    sub: String,
    aud: Vec<String>,
    scope: Vec<String>,
    iat: u64,
    exp: u64,
    act: Vec<ActorId>,
    claims: Map<String, Value>,
    token_type: TokenType,
    rule: Arc<str>,
    proofs: PhantomData<P>,
}

/// A decision made on verified proofs: the only thing the minter signs.
///
/// A dry run's decision is a `Decided<Unverified>` and cannot be minted:
///
/// ```compile_fail
/// fn mint_a_dry_run(minter: &gleipnir::mint::Minter, d: &gleipnir::policy::Decided<gleipnir::policy::Unverified>) {
///     let _ = minter.mint(d);
/// }
/// ```
pub type Grant = Decided<Verified>;

impl<P: Proofs> Decided<P> {
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
    /// Claims copied from the subject token (policy `claims`), none of them reserved.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
    /// The token type to issue.
    pub fn token_type(&self) -> TokenType {
        self.token_type
    }
    /// Which policy rule allowed it (`file#clients.id[.by_issuer.name]`).
    pub fn rule(&self) -> &str {
        &self.rule
    }
    /// The same, shared (a metric label).
    pub fn rule_id(&self) -> &Arc<str> {
        &self.rule
    }
}

/// The compiled policies of every client.
#[derive(Debug)]
pub struct PolicyEngine {
    clients: HashMap<String, ClientPolicy>,
    own_issuer: String,
}

impl PolicyEngine {
    /// Compiles policy files given as (name, text), for the clients and issuers of
    /// `config`.
    pub fn compile(config: &Config, files: &[(String, String)]) -> Result<Self, ConfigError> {
        Ok(Self {
            clients: file::compile_files(config, files)?,
            own_issuer: config.issuer.clone(),
        })
    }

    /// The checks that need no token, made before any token is validated: the client has
    /// an enabled policy, may exchange in this mode (with an actor token or without), and
    /// accepts the declared token types. A refusal here costs no signature verification
    /// and cannot cause a JWKS fetch.
    pub fn admit<'a, P: Proofs>(
        &'a self,
        client: &'a P::Client,
        subject_type: TokenType,
        actor_type: Option<TokenType>,
    ) -> Result<Admission<'a, P>, Refusal> {
        let client = client.as_ref();
        let policy = self.clients.get(client.id()).ok_or_else(|| {
            Refusal::new(
                PolicyError::ClientNotEnabled,
                "client",
                format!("no policy names client {:?}", client.id()),
            )
        })?;
        if !policy.header.enabled {
            return Err(Refusal::new(
                PolicyError::ClientNotEnabled,
                "client",
                "the client's policy has enabled = false",
            )
            .under(&policy.id));
        }
        check_mode(policy, actor_type.is_some()).map_err(|r| r.under(&policy.id))?;
        let accepts = |types: &Option<Vec<TokenType>>, t: TokenType| {
            types.as_ref().is_none_or(|list| list.contains(&t))
        };
        if !accepts(&policy.header.subject_token_types, subject_type) {
            return Err(Refusal::new(
                PolicyError::SubjectTokenTypeNotAccepted,
                "request.subject_token_type",
                format!("{} is not in subject_token_types", subject_type.name()),
            )
            .under(&policy.id));
        }
        if let Some(t) = actor_type
            && !accepts(&policy.header.actor_token_types, t)
        {
            return Err(Refusal::new(
                PolicyError::ActorTokenTypeNotAccepted,
                "request.actor_token_type",
                format!("{} is not in actor_token_types", t.name()),
            )
            .under(&policy.id));
        }
        Ok(Admission {
            own_issuer: &self.own_issuer,
            client,
            policy,
            proofs: PhantomData,
        })
    }
}

fn check_mode(policy: &ClientPolicy, with_actor_token: bool) -> Result<(), Refusal> {
    match (
        with_actor_token,
        policy.header.delegate,
        policy.header.impersonate,
    ) {
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

/// A client admitted by [`PolicyEngine::admit`], awaiting its tokens (with proofs `P`).
pub struct Admission<'a, P: Proofs> {
    own_issuer: &'a str,
    client: &'a RegisteredClient,
    policy: &'a ClientPolicy,
    proofs: PhantomData<P>,
}

impl<P: Proofs> Admission<'_, P> {
    /// The issuers whose tokens this client may present as subject token.
    pub fn subject_issuers(&self) -> &[IssuerId] {
        &self.policy.header.subject_issuers
    }

    /// The issuers whose tokens this client may present as actor token, with a subject
    /// token of `subject_issuer` (a `by_issuer` table may narrow or change them).
    pub fn actor_issuers(&self, subject_issuer: IssuerId) -> &[IssuerId] {
        &self.policy.rule_for(subject_issuer).actor_issuers
    }

    /// Decides the exchange at time `now`.
    pub fn decide(
        &self,
        subject: &P::Token<Subject>,
        actor: Option<&P::Token<Actor>>,
        targets: Targets<'_>,
        now: u64,
    ) -> Result<Decided<P>, Refusal> {
        let subject: &Checked<Subject> = subject.borrow();
        let actor: Option<&Checked<Actor>> = actor.map(Borrow::borrow);
        // The mode was admitted for the request; the tokens must be the ones it announced.
        check_mode(self.policy, actor.is_some()).map_err(|r| r.under(&self.policy.id))?;
        if !self
            .policy
            .header
            .subject_issuers
            .contains(&subject.issuer())
        {
            return Err(Refusal::new(
                PolicyError::SubjectIssuerNotAccepted,
                "subject_token.iss",
                format!("{:?} is not in subject_issuers", subject.iss()),
            )
            .under(&self.policy.id));
        }
        let rule = self.policy.rule_for(subject.issuer());
        self.decide_under(rule, subject, actor, targets, now)
            .map_err(|r| r.under(&rule.id))
    }

    fn decide_under(
        &self,
        rule: &Rule,
        subject: &Checked<Subject>,
        actor: Option<&Checked<Actor>>,
        targets: Targets<'_>,
        now: u64,
    ) -> Result<Decided<P>, Refusal> {
        let client = self.client;
        let id = client.id();
        // The actor of this exchange: the actor token's subject, or else the client itself,
        // whose identity the STS vouches for.
        let acting = match actor {
            Some(actor) => {
                // A token gleipnir issued names a subject and, in `client_id`, the client
                // that asked for it: it never proves who acts. Accepting one here would let
                // a client turn any token it was given into "that party acts" (rules 1-3).
                if actor.issuer() == IssuerId::SELF {
                    return Err(Refusal::new(
                        PolicyError::ActorTokenSelfIssued,
                        "actor_token.iss",
                        "the actor token was issued by gleipnir: it names a subject, not who holds it",
                    ));
                }
                if !rule.actor_issuers.contains(&actor.issuer()) {
                    return Err(Refusal::new(
                        PolicyError::ActorIssuerNotAccepted,
                        "actor_token.iss",
                        format!("{:?} is not in actor_issuers", actor.iss()),
                    ));
                }
                // Rule 1: the actor token belongs to the authenticated client.
                let bound = actor.client_id() == Some(id)
                    || actor.azp() == Some(id)
                    || actor.sub() == client.actor_sub();
                if !bound {
                    return Err(Refusal::new(
                        PolicyError::ActorNotBoundToClient,
                        "actor_token.client_id/azp/sub",
                        format!(
                            "client_id {}, azp {}: not client {id:?}; sub {:?}: not its actor identity {:?}",
                            quoted_or_none(actor.client_id()),
                            quoted_or_none(actor.azp()),
                            actor.sub(),
                            client.actor_sub(),
                        ),
                    ));
                }
                // An actor token that is itself delegated belongs to another chain.
                if !actor.act().is_empty() {
                    return Err(Refusal::new(
                        PolicyError::ActorTokenDelegated,
                        "actor_token.act",
                        "the actor token carries its own delegation chain",
                    ));
                }
                if let Some(actors) = &rule.actors
                    && !actors.contains(actor.sub())
                {
                    return Err(Refusal::new(
                        PolicyError::ActorNotAllowed,
                        "actor_token.sub",
                        format!("{:?} is not in actors", actor.sub()),
                    ));
                }
                actor.identity()
            }
            None => ActorId {
                sub: client.actor_sub().to_owned(),
                iss: Some(self.own_issuer.to_owned()),
            },
        };

        // Rule 3: may_act restricts who may act, whatever else allows it.
        let named_by_may_act = subject.may_act().map(|m| may_act_matches(m, &acting));
        if named_by_may_act == Some(false) {
            return Err(Refusal::new(
                PolicyError::MayActMismatch,
                "subject_token.may_act",
                format!("may_act does not name the actor {:?}", acting.sub),
            ));
        }
        // Rule 2: the subject token names this client (or this actor) as a party.
        let names_client = subject.aud().iter().any(|a| client.audiences().contains(a));
        let bound = names_client
            || subject.client_id() == Some(id)
            || subject.azp() == Some(id)
            || named_by_may_act == Some(true);
        // An ID token is issued to its audience (OIDC Core §2): only the client named in
        // its `aud` may present it, whatever its `azp` says.
        let id_token = subject.token_type() == TokenType::IdToken;
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

        // Policy prior_actors: which chains this client may continue.
        if let Some(allowed) = &rule.prior_actors
            && let Some(stranger) = subject.act().iter().find(|a| !allowed.contains(&a.sub))
        {
            return Err(Refusal::new(
                PolicyError::PriorActorNotAllowed,
                "subject_token.act",
                format!("prior actor {:?} is not in prior_actors", stranger.sub),
            ));
        }

        // Rules 4, 6, 7: the resulting chain.
        let chain: Vec<ActorId> = match actor {
            Some(_) => {
                let in_chain = acting.sub == subject.sub()
                    || subject.act().iter().any(|a| a.sub == acting.sub);
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
                // The new actor's `iss` goes into `act` only where the rule says so (rule 5);
                // prior actors are carried as received, `iss` included (rule 4: a later hop
                // never rewrites what an earlier one recorded).
                let mut new_actor = acting;
                if !rule.act_includes_iss {
                    new_actor.iss = None;
                }
                std::iter::once(new_actor)
                    .chain(subject.act().iter().cloned())
                    .collect()
            }
            None => subject.act().to_vec(),
        };
        if chain.len() > rule.max_depth {
            return Err(Refusal::new(
                PolicyError::ChainTooDeep,
                "subject_token.act",
                format!(
                    "the chain would hold {} actors; max_depth is {}",
                    chain.len(),
                    rule.max_depth
                ),
            ));
        }

        // Policy conditions, on the claims as the tokens carry them.
        let needs = |role: TokenRole| rule.conditions.iter().any(|c| c.token == role);
        let subject_claims =
            (needs(TokenRole::Subject) || !rule.claims.is_empty()).then(|| subject.claims_object());
        let actor_claims = actor
            .filter(|_| needs(TokenRole::Actor))
            .map(|t| t.claims_object());
        for condition in &rule.conditions {
            let claims = match condition.token {
                TokenRole::Subject => subject_claims.as_ref(),
                TokenRole::Actor => actor_claims.as_ref(),
            };
            if !condition.holds(claims) {
                let what = if condition.token == TokenRole::Actor && actor.is_none() {
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

        // Rule 10: targets.
        let (aud, ceilings) = choose_targets(rule, targets)?;

        // Rule 9: granted = requested ∩ subject scope ∩ ceilings; asking for more is refused.
        let grantable =
            |s: &String| rule.scopes.contains(s) && ceilings.iter().all(|c| c.contains(s));
        let scope = match targets.scope {
            Some(requested) => {
                if let Some(refused) = requested.iter().find(|r| !subject.scope().contains(r)) {
                    return Err(Refusal::new(
                        PolicyError::ScopeNotGranted,
                        "request.scope",
                        format!("{refused:?} is not in the subject token's scope"),
                    ));
                }
                if let Some(refused) = requested.iter().find(|r| !rule.scopes.contains(*r)) {
                    return Err(Refusal::new(
                        PolicyError::ScopeNotGranted,
                        "request.scope",
                        format!("{refused:?} is not in the policy's scopes"),
                    ));
                }
                if let Some(refused) = requested.iter().find(|r| !grantable(r)) {
                    return Err(Refusal::new(
                        PolicyError::ScopeNotGranted,
                        "request.scope",
                        format!("{refused:?} is not in target_scopes of the requested target"),
                    ));
                }
                requested.to_vec()
            }
            None => {
                let mut scope: Vec<String> = Vec::new();
                for s in subject.scope().iter().filter(|s| grantable(s)) {
                    if !scope.contains(s) {
                        scope.push(s.clone());
                    }
                }
                scope
            }
        };

        // Rule 8: lifetime never grows.
        let exp = [
            Some(now.saturating_add(rule.ttl_seconds)),
            Some(subject.exp()),
            actor.map(|a| a.exp()),
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

        // Passthrough claims, as the subject token carries them (absent or `null` ones stay
        // absent, as conditions read them).
        let mut claims = Map::new();
        if let Some(subject_claims) = &subject_claims {
            for name in &rule.claims {
                if let Some(value) = subject_claims.get(name).filter(|v| !v.is_null()) {
                    claims.insert(name.clone(), value.clone());
                }
            }
        }

        Ok(Decided {
            proofs: PhantomData,
            client_id: id.to_owned(),
            sub: subject.sub().to_owned(),
            aud,
            scope,
            iat: now,
            exp,
            act: chain,
            claims,
            token_type: targets.requested_token_type,
            rule: Arc::clone(&rule.id),
        })
    }
}

/// `"value"`, or `none` for an absent claim (explanations).
fn quoted_or_none(value: Option<&str>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"))
}

/// RFC 8693 §4.4: `may_act` names the party by `sub` (and `iss`, when it gives one).
fn may_act_matches(may_act: &ActorId, actor: &ActorId) -> bool {
    may_act.sub == actor.sub
        && may_act
            .iss
            .as_ref()
            .is_none_or(|iss| actor.iss.as_ref() == Some(iss))
}

/// The token's `aud` (rule 10) and the per-target scope ceilings that apply to it: for
/// each target, the ceiling of every entry of `audiences` or `resources` that admits it,
/// whichever parameter named it, so no other spelling of a request escapes a ceiling.
fn choose_targets<'r>(
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
    let mut ceilings = Vec::new();
    for value in &aud {
        for (set, scopes) in [
            (&rule.audiences, &rule.audience_scopes),
            (&rule.resources, &rule.resource_scopes),
        ] {
            ceilings.extend(set.matching(value).filter_map(|i| scopes.get(i)?.as_ref()));
        }
    }
    Ok((aud, ceilings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str], uris: bool) -> TargetSet {
        let entries: Vec<String> = entries.iter().map(|s| (*s).to_owned()).collect();
        TargetSet::compile(&entries, uris).unwrap()
    }

    #[test]
    fn target_patterns_match_one_label_or_segment_only() {
        let s = set(
            &["https://*.example.com/", "https://api.example.com/v1/*"],
            true,
        );
        let first = |v: &str| s.matching(v).next();
        assert_eq!(first("https://orders.example.com/"), Some(0));
        assert_eq!(first("https://api.example.com/v1/orders"), Some(1));
        for refused in [
            "https://evil.com/.example.com/",
            "https://a.b.example.com/",
            "https://.example.com/",
            "https://evil.com#.example.com/",
            "https://user@x.example.com/",
            "https://api.example.com/v1/a/b",
            "https://api.example.com/v1/",
            "https://api.example.com/v1/..",
            "https://ORDERS.example.com/",
        ] {
            assert_eq!(first(refused), None, "{refused}");
        }
    }

    #[test]
    fn every_admitting_entry_is_found_exact_first() {
        let s = set(&["api-*", "api-orders", "*-orders"], false);
        let all = |v: &str| s.matching(v).collect::<Vec<_>>();
        assert_eq!(all("api-orders"), [1, 0, 2]);
        assert_eq!(all("api-payments"), [0]);
        assert_eq!(all("other"), Vec::<usize>::new());
    }

    #[test]
    fn bad_patterns_are_refused() {
        let compile = |e: &str, uris| TargetSet::compile(&[e.to_owned()], uris);
        assert!(compile("a*b*c", false).is_err());
        assert!(compile("", false).is_err());
        assert!(compile("*", false).is_ok());
        assert!(compile("https://*.example.com/#frag", true).is_err());
        assert!(compile("relative/*", true).is_err());
    }

    #[test]
    fn conditions_on_scalars_arrays_and_paths() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"tenant":"acme","n":3,"ok":true,"groups":["a","b"],"nul":null,
                "realm_access":{"roles":["admin"]}}"#,
        )
        .unwrap();
        let c = |path: &[&str], test| Condition {
            token: TokenRole::Subject,
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            test,
        };
        let s = |v: &str| Scalar::Str(v.to_owned());
        use ConditionTest::*;
        let holds = [
            c(&["tenant"], Equals(s("acme"))),
            c(&["n"], Equals(Scalar::Int(3))),
            c(&["ok"], Equals(Scalar::Bool(true))),
            c(&["groups"], Equals(s("b"))),
            c(&["groups"], OneOf(vec![s("x"), s("a")])),
            c(&["realm_access", "roles"], Equals(s("admin"))),
            c(&["tenant"], Present(true)),
            c(&["missing"], Present(false)),
            c(&["nul"], Present(false)),
        ];
        for cond in holds {
            assert!(cond.holds(Some(&claims)), "{}", cond.describe());
        }
        let fails = [
            c(&["tenant"], Equals(s("globex"))),
            c(&["n"], Equals(s("3"))),
            c(&["ok"], Equals(s("true"))),
            c(&["groups"], OneOf(vec![s("x")])),
            c(&["realm_access", "roles", "admin"], Present(true)),
            c(&["missing"], Equals(s("x"))),
            c(&["tenant"], Present(false)),
            c(&["nul"], Present(true)),
        ];
        for cond in fails {
            assert!(!cond.holds(Some(&claims)), "{}", cond.describe());
        }
        // No token at all (an actor condition without an actor token): only "absent" holds.
        assert!(!c(&["tenant"], Present(true)).holds(None));
        assert!(c(&["tenant"], Present(false)).holds(None));
    }
}
