//! Stage 4: the delegation decision (rules §5).
//!
//! In two steps: [`PolicyEngine::admit`] checks, before any token is validated, that the
//! authenticated client may exchange in this mode and with these token types, and returns
//! an [`Admission`]; then [`Admission::decide`] takes the tokens and returns a
//! [`Decided`] (only this module builds one) or a [`Refusal`] that names the refused
//! check, the claim it looked at and the rule in force. Both are generic over the
//! [`Proofs`] the caller holds, and the decision code is the same for all: on an
//! exchange's verified proofs the decision is a [`Grant`], the only thing the minter
//! signs; on a dry run's it is a `Decided<Unverified>`. The always-enforced rules of
//! rules §5 are code here and no policy file can switch them off; the policy
//! files (`policies/*.toml`, compiled by `file.rs` into one `Rule` per client and subject
//! issuer) decide modes, issuers, token types, targets, scope ceilings, TTL, depth, which
//! actors may act, the members of `act`, passthrough claims and conditions within them.
//!
//! The decision is a short sequence of small named functions: the always-enforced rules
//! in `rules.rs`, the checks policy fields configure in `fields.rs`. Both read borrowed
//! views of the tokens and the client (`facts.rs`), built once in [`Admission::decide`],
//! so they are unit-tested without HTTP, keys or tokens.
//!
//! Identities in a chain are compared by `sub` alone: a match with any prior party is
//! treated as a cycle whatever the issuers, which can only refuse more, never less.
//!
//! [`PolicyStore`] holds the policy in force and swaps it whole on reload.

mod facts;
mod fields;
mod file;
mod rules;
pub mod store;

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::client_auth::{AuthenticatedClient, CertificateBinding, ClientProof, NamedClient};
use crate::config::{Config, ConfigError, IssuerId};
use crate::oauth::TokenType;
use crate::token::{Actor, ActorId, Checked, Role, Subject, VerifiedToken};
use facts::{ClientFacts, TokenFacts};

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
    type Client: ClientProof;
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
    /// Rule 1: the actor token's `aud` does not name this STS, where its issuer says how
    /// its tokens name us (`sts_audiences`): it was minted for another service.
    #[error("actor token not issued for this STS")]
    ActorAudienceMismatch,
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
    /// Policy `certificate_bound`: the client's tokens are bound to its certificate, and
    /// it authenticated without one.
    #[error("certificate required for certificate-bound tokens")]
    CertificateRequired,
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
            PolicyError::ActorAudienceMismatch => "actor_audience_mismatch",
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
            PolicyError::CertificateRequired => "certificate_required",
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
    /// The client's id.
    client: Arc<str>,
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
    subject_namespace: Option<SubjectNamespace>,
    /// Whether this client's grants may be answered again from the re-issue cache
    /// (`reissue_cache`, default true; `egress::cache`).
    reissue_cache: bool,
    /// Issued tokens are bound to the client's certificate (`cnf` `x5t#S256`, RFC 8705 §3).
    certificate_bound: bool,
    /// Policy `rate_limit`: requests per window, across replicas.
    rate_limit: Option<crate::ratelimit::RateLimit>,
}

/// How the subjects of a client's several subject issuers are kept apart in the tokens it
/// is issued (policy `subject_namespace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubjectNamespace {
    /// The issued token names the subject's issuer in the claim `sub_iss`.
    IssuerClaim,
}

/// The claim of an issued token that names its subject's issuer (`sub` is unchanged):
/// with it, (`sub_iss`, `sub`) is the subject's identity, as (`iss`, `sub`) was in the
/// subject token.
pub const SUBJECT_ISSUER_CLAIM: &str = "sub_iss";

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
    sub_iss: Option<String>,
    aud: Vec<String>,
    scope: Vec<String>,
    iat: u64,
    exp: u64,
    act: Vec<ActorId>,
    claims: Map<String, Value>,
    token_type: TokenType,
    rule: Arc<str>,
    /// SHA-256 of the client certificate the token is bound to (RFC 8705 §3.1).
    cnf: Option<[u8; 32]>,
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
    /// The subject's issuer ([`SUBJECT_ISSUER_CLAIM`]), when the issued token names it.
    pub fn sub_iss(&self) -> Option<&str> {
        self.sub_iss.as_deref()
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
    /// The SHA-256 thumbprint of the client certificate the issued token is bound to
    /// (`cnf` `x5t#S256`, RFC 8705 §3.1), when the policy binds it.
    pub fn cnf_thumbprint(&self) -> Option<&[u8; 32]> {
        self.cnf.as_ref()
    }
}

/// The compiled policies of every client.
#[derive(Debug)]
pub struct PolicyEngine {
    /// Which compilation this is: 0 at start-up, one more at each applied reload. The
    /// re-issue cache keys on it, so no grant decided under one policy is answered again
    /// under another.
    generation: u64,
    clients: HashMap<String, ClientPolicy>,
    own_issuer: String,
    /// Per upstream issuer that sets `sts_audiences`: the `aud` values naming us.
    sts_audiences: HashMap<IssuerId, Vec<String>>,
}

impl PolicyEngine {
    /// Compiles policy files given as (name, text), for the clients and issuers of
    /// `config`.
    pub fn compile(config: &Config, files: &[(String, String)]) -> Result<Self, ConfigError> {
        Ok(Self {
            generation: 0,
            clients: file::compile_files(config, files)?,
            own_issuer: config.issuer.clone(),
            sts_audiences: config
                .issuers
                .iter()
                .enumerate()
                .filter_map(|(i, issuer)| {
                    let list = issuer.sts_audiences.clone()?;
                    Some((IssuerId::upstream(i), list))
                })
                .collect(),
        })
    }

    /// Which compilation of the policy files this is (0 at start-up, one more at each
    /// applied reload).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The rate limit of `client`'s policy, with the client's id (for the metric), if
    /// its policy sets one.
    pub fn rate_limit(&self, client: &str) -> Option<(Arc<str>, crate::ratelimit::RateLimit)> {
        let policy = self.clients.get(client)?;
        let limit = policy.header.rate_limit?;
        Some((Arc::clone(&policy.client), limit))
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
        let binding = client.certificate_binding();
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
        fields::check_mode(&policy.header, actor_type.is_some())
            .and_then(|()| fields::token_types_accepted(&policy.header, subject_type, actor_type))
            .map_err(|r| r.under(&policy.id))?;
        let cnf = certificate_binding(policy, binding)?;
        Ok(Admission {
            cnf,
            own_issuer: &self.own_issuer,
            sts_audiences: &self.sts_audiences,
            client: ClientFacts::of(client),
            policy,
            proofs: PhantomData,
        })
    }
}

/// Policy `certificate_bound` (RFC 8705 §3): the certificate the issued token is bound
/// to. A client authenticated without one is refused, never issued an unbound token; a
/// dry run (nothing minted) binds to none.
fn certificate_binding(
    policy: &ClientPolicy,
    binding: CertificateBinding<'_>,
) -> Result<Option<[u8; 32]>, Refusal> {
    match (policy.header.certificate_bound, binding) {
        (false, _) | (true, CertificateBinding::NotAuthenticated) => Ok(None),
        (true, CertificateBinding::Certificate(thumbprint)) => Ok(Some(*thumbprint)),
        (true, CertificateBinding::None) => Err(Refusal::new(
            PolicyError::CertificateRequired,
            "client",
            "the policy binds this client's tokens to its certificate (certificate_bound), and it authenticated without one",
        )
        .under(&policy.id)),
    }
}

/// A client admitted by [`PolicyEngine::admit`], awaiting its tokens (with proofs `P`).
pub struct Admission<'a, P: Proofs> {
    cnf: Option<[u8; 32]>,
    own_issuer: &'a str,
    sts_audiences: &'a HashMap<IssuerId, Vec<String>>,
    client: ClientFacts<'a>,
    policy: &'a ClientPolicy,
    proofs: PhantomData<P>,
}

impl<P: Proofs> Admission<'_, P> {
    /// Whether the client's policy lets its grants be answered again from the re-issue
    /// cache (`reissue_cache`).
    pub fn reissue_cache(&self) -> bool {
        self.policy.header.reissue_cache
    }

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
        let subject = TokenFacts::of(subject.borrow());
        let actor = actor.map(|a| TokenFacts::of(a.borrow()));
        self.decide_on(&subject, actor.as_ref(), targets, now)
    }

    /// The client-level checks, then the decision under the rule for the subject issuer.
    fn decide_on(
        &self,
        subject: &TokenFacts<'_>,
        actor: Option<&TokenFacts<'_>>,
        targets: Targets<'_>,
        now: u64,
    ) -> Result<Decided<P>, Refusal> {
        let policy = self.policy;
        // The mode was admitted for the request; the tokens must be the ones it announced.
        fields::check_mode(&policy.header, actor.is_some())
            .and_then(|()| fields::subject_issuer_accepted(&policy.header.subject_issuers, subject))
            .map_err(|r| r.under(&policy.id))?;
        let rule = policy.rule_for(subject.issuer);
        self.decide_under(rule, subject, actor, targets, now)
            .map_err(|r| r.under(&rule.id))
    }

    /// The checks of one rule, in the order `policies/README.md` gives ("Always
    /// enforced"), then the grant.
    fn decide_under(
        &self,
        rule: &Rule,
        subject: &TokenFacts<'_>,
        actor: Option<&TokenFacts<'_>>,
        targets: Targets<'_>,
        now: u64,
    ) -> Result<Decided<P>, Refusal> {
        let client = &self.client;
        if let Some(actor) = actor {
            rules::actor_not_self_issued(actor)?;
            fields::actor_issuer_accepted(&rule.actor_issuers, actor)?;
            let sts_audiences = self.sts_audiences.get(&actor.issuer).map(Vec::as_slice);
            rules::actor_audience_is_sts(actor, sts_audiences)?;
            rules::actor_bound_to_client(actor, client)?;
            rules::actor_not_delegated(actor)?;
            fields::actor_allowed(rule.actors.as_ref(), actor)?;
        }
        let acting = rules::acting_party(actor, client, self.own_issuer);
        let named_by_may_act = match rules::may_act_restricts(subject, &acting) {
            Err(_) if rules::may_act_names_client_by_id(subject, client) => true,
            other => other?,
        };
        rules::subject_bound_to_client(subject, client, named_by_may_act)?;
        fields::prior_actors_allowed(rule.prior_actors.as_ref(), subject.act)?;
        let new_actor = match actor {
            Some(_) => {
                rules::no_cycle(subject, &acting)?;
                Some(rules::act_entry(acting, rule.act_includes_iss))
            }
            None => None,
        };
        let chain = rules::carry_chain(new_actor, subject.act);
        rules::within_depth(&chain, rule.max_depth)?;
        let (subject_claims, actor_claims) = fields::claims_read(rule, subject, actor);
        fields::conditions_hold(
            &rule.conditions,
            subject_claims.as_ref(),
            actor_claims.as_ref(),
            actor.is_some(),
        )?;
        let (aud, ceilings) = rules::choose_targets(rule, targets)?;
        let scope = rules::granted_scope(targets.scope, subject.scope, &rule.scopes, &ceilings)?;
        let exp = rules::lifetime(now, rule.ttl_seconds, subject.exp, actor.map(|a| a.exp))?;
        Ok(Decided {
            proofs: PhantomData,
            client_id: client.id.to_owned(),
            sub: subject.sub.to_owned(),
            sub_iss: rules::subject_origin(
                subject,
                self.policy.header.subject_namespace,
                self.own_issuer,
            ),
            aud,
            scope,
            iat: now,
            exp,
            act: chain,
            claims: fields::passthrough_claims(&rule.claims, subject_claims.as_ref()),
            token_type: rules::issued_token_type(targets.requested_token_type),
            rule: Arc::clone(&rule.id),
            cnf: self.cnf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facts::testing::{client, party, refused, rule, strings, token};

    /// Decides for client `bff` (named by `aud` `bff`, acting as `bff-sa`, policy for
    /// subject tokens of the first upstream issuer) at time 1000.
    fn decide(
        delegate: bool,
        rule: Rule,
        subject: &TokenFacts<'_>,
        actor: Option<&TokenFacts<'_>>,
        requested_token_type: TokenType,
    ) -> Result<Decided<Unverified>, Refusal> {
        let audiences = strings(&["bff"]);
        let policy = ClientPolicy {
            id: "test.toml#clients.bff".into(),
            client: "bff".into(),
            header: ClientHeader {
                enabled: true,
                impersonate: true,
                delegate,
                subject_issuers: vec![IssuerId::upstream(0)],
                subject_token_types: None,
                actor_token_types: None,
                subject_namespace: None,
                reissue_cache: true,
                certificate_bound: false,
                rate_limit: None,
            },
            base: Arc::new(rule),
            by_issuer: HashMap::new(),
        };
        let sts_audiences = HashMap::new();
        let admission = Admission::<Unverified> {
            cnf: None,
            own_issuer: "https://sts.example",
            sts_audiences: &sts_audiences,
            client: client(&audiences),
            policy: &policy,
            proofs: PhantomData,
        };
        let targets = Targets {
            audiences: &[],
            resources: &[],
            scope: None,
            requested_token_type,
        };
        admission.decide_on(subject, actor, targets, 1000)
    }

    /// Admits actor tokens of the first upstream issuer, grants `orders:read` to
    /// `orders-api` by default.
    fn granting() -> Rule {
        Rule {
            actor_issuers: vec![IssuerId::upstream(0)],
            audiences: TargetSet::compile(&strings(&["orders-api"]), false).unwrap(),
            default_audience: Some("orders-api".into()),
            scopes: ["orders:read".to_owned()].into(),
            ..rule()
        }
    }

    #[test]
    fn a_decision_grants_chain_targets_scope_and_lifetime() {
        let aud = strings(&["bff"]);
        let scope = strings(&["orders:read", "profile"]);
        let prior = [party("gateway", Some("https://idp.example"))];
        let subject = TokenFacts {
            aud: &aud,
            scope: &scope,
            act: &prior,
            ..token("alice")
        };
        let actor = token("bff-sa");
        let grant = decide(true, granting(), &subject, Some(&actor), TokenType::Jwt).unwrap();
        assert_eq!(
            (grant.client_id(), grant.sub(), grant.aud(), grant.scope()),
            (
                "bff",
                "alice",
                &strings(&["orders-api"])[..],
                &strings(&["orders:read"])[..]
            )
        );
        assert_eq!((grant.iat(), grant.exp()), (1000, 1300));
        assert_eq!(
            grant.act(),
            [
                party("bff-sa", None),
                party("gateway", Some("https://idp.example"))
            ]
        );
        assert_eq!(grant.token_type(), TokenType::Jwt);
        assert_eq!(grant.rule(), "test.toml#clients.bff");
        assert!(grant.claims().is_empty());

        // Without an actor token the client acts, and the chain is carried over.
        let grant = decide(true, granting(), &subject, None, TokenType::AccessToken).unwrap();
        assert_eq!(grant.act(), prior);
    }

    #[test]
    fn the_first_failing_check_is_the_one_reported() {
        let aud = strings(&["bff"]);
        let bound = TokenFacts {
            aud: &aud,
            ..token("alice")
        };
        let unbound = token("alice");
        let chain = [party("x", None)];
        let stranger = TokenFacts {
            issuer: IssuerId::upstream(1),
            act: &chain,
            ..token("mallory")
        };
        let check = |delegate, subject: &TokenFacts<'_>, actor: &TokenFacts<'_>| {
            let rule = Rule {
                prior_actors: Some(HashSet::new()),
                max_depth: 1,
                ..granting()
            };
            let refusal = decide(delegate, rule, subject, Some(actor), TokenType::Jwt).unwrap_err();
            assert_eq!(refusal.rule.as_deref(), Some("test.toml#clients.bff"));
            refusal.check
        };
        // The mode, then the subject issuer, before anything the tokens say.
        let other_issuer = TokenFacts {
            issuer: IssuerId::upstream(1),
            ..unbound
        };
        assert_eq!(
            check(false, &other_issuer, &stranger),
            PolicyError::DelegationNotAllowed
        );
        assert_eq!(
            check(true, &other_issuer, &stranger),
            PolicyError::SubjectIssuerNotAccepted
        );
        // Then the actor token: self-issued, issuer, rule 1, its own chain, actors.
        let own = TokenFacts {
            issuer: IssuerId::SELF,
            ..stranger
        };
        assert_eq!(
            check(true, &unbound, &own),
            PolicyError::ActorTokenSelfIssued
        );
        assert_eq!(
            check(true, &unbound, &stranger),
            PolicyError::ActorIssuerNotAccepted
        );
        let unbound_actor = TokenFacts {
            issuer: IssuerId::upstream(0),
            ..stranger
        };
        assert_eq!(
            check(true, &unbound, &unbound_actor),
            PolicyError::ActorNotBoundToClient
        );
        let delegated = TokenFacts {
            sub: "bff-sa",
            ..unbound_actor
        };
        assert_eq!(
            check(true, &unbound, &delegated),
            PolicyError::ActorTokenDelegated
        );
        // Then rule 3 before rule 2, prior_actors, rule 6 before rule 7.
        let actor = token("bff-sa");
        let other = party("gateway", None);
        let may_act_other = TokenFacts {
            may_act: Some(&other),
            act: &chain,
            ..unbound
        };
        assert_eq!(
            check(true, &may_act_other, &actor),
            PolicyError::MayActMismatch
        );
        let unbound_with_chain = TokenFacts {
            act: &chain,
            ..unbound
        };
        assert_eq!(
            check(true, &unbound_with_chain, &actor),
            PolicyError::SubjectNotBoundToClient
        );
        let bound_with_chain = TokenFacts {
            act: &chain,
            ..bound
        };
        assert_eq!(
            check(true, &bound_with_chain, &actor),
            PolicyError::PriorActorNotAllowed
        );
        let two = [party("bff-sa", None), party("y", None)];
        let cycle_and_deep = TokenFacts { act: &two, ..bound };
        let rule = Rule {
            max_depth: 1,
            ..granting()
        };
        let refusal = decide(true, rule, &cycle_and_deep, Some(&actor), TokenType::Jwt);
        refused(refusal, PolicyError::ActorInChain, "actor_token.sub");
    }

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
