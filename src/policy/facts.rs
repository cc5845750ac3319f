//! What the decision reads, borrowed: the facts of a checked token ([`TokenFacts`]) and
//! of the client ([`ClientFacts`]). The rules in [`super::rules`] and the
//! policy-file checks in [`super::fields`] take these plain views, never the proof types,
//! so each can be unit-tested with values written by hand, and a change to the proof types
//! touches only the constructors here.
//!
//! They are read from `Checked` tokens and a `RegisteredClient`, which every set of
//! proofs holds (`super::Proofs`): a dry run and an exchange decide on the same facts.

use serde_json::{Map, Value};

use crate::client_auth::RegisteredClient;
use crate::config::IssuerId;
use crate::oauth::TokenType;
use crate::token::{ActorId, Checked, Role};

/// Every claim of a token as it carries it, parsed only when a rule asks: most exchanges
/// have no condition and no passthrough claim, and should not pay for the parse.
pub(super) trait Claims {
    /// The claims set as a JSON object.
    fn object(&self) -> Map<String, Value>;
}

impl<R: Role> Claims for Checked<R> {
    fn object(&self) -> Map<String, Value> {
        self.claims_object()
    }
}

/// Claims given directly (unit tests).
#[cfg(test)]
impl Claims for Map<String, Value> {
    fn object(&self) -> Map<String, Value> {
        self.clone()
    }
}

/// The facts of a subject or actor token that the rules read, borrowed from the token.
#[derive(Clone, Copy)]
pub(super) struct TokenFacts<'a> {
    /// Which configured issuer it comes from.
    pub(super) issuer: IssuerId,
    /// `iss`.
    pub(super) iss: &'a str,
    /// `sub`.
    pub(super) sub: &'a str,
    /// `aud` values (empty when absent).
    pub(super) aud: &'a [String],
    /// `client_id`.
    pub(super) client_id: Option<&'a str>,
    /// `azp`.
    pub(super) azp: Option<&'a str>,
    /// The delegation chain already in the token, current actor first.
    pub(super) act: &'a [ActorId],
    /// `may_act`.
    pub(super) may_act: Option<&'a ActorId>,
    /// `sub_iss`, in a token gleipnir issued (`None` in upstream tokens).
    pub(super) sub_iss: Option<&'a str>,
    /// `exp`.
    pub(super) exp: u64,
    /// `scope`, split on spaces.
    pub(super) scope: &'a [String],
    /// The token type the request declared and the token proved.
    pub(super) token_type: TokenType,
    /// Every claim, parsed on demand (conditions and passthrough claims).
    pub(super) claims: &'a dyn Claims,
}

impl<'a> TokenFacts<'a> {
    /// The facts of a checked token: borrows only, nothing parsed or copied.
    pub(super) fn of<R: Role>(token: &'a Checked<R>) -> Self {
        Self {
            issuer: token.issuer(),
            iss: token.iss(),
            sub: token.sub(),
            aud: token.aud(),
            client_id: token.client_id(),
            azp: token.azp(),
            act: token.act(),
            may_act: token.may_act(),
            sub_iss: token.sub_iss(),
            exp: token.exp(),
            scope: token.scope(),
            token_type: token.token_type(),
            claims: token,
        }
    }

    /// The (`iss`, `sub`) identity as an actor entry.
    pub(super) fn identity(&self) -> ActorId {
        ActorId {
            sub: self.sub.to_owned(),
            iss: Some(self.iss.to_owned()),
        }
    }
}

/// The identity facts of the client, borrowed from its registration.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientFacts<'a> {
    /// `client_id`.
    pub(super) id: &'a str,
    /// `aud` values that name this client in subject tokens.
    pub(super) audiences: &'a [String],
    /// The `sub` of this client's own actor tokens.
    pub(super) actor_sub: &'a str,
    /// The issuer of the client's identity, when configured.
    pub(super) actor_iss: Option<&'a str>,
    /// The client authenticates as a workload identity (its `actor_sub`) other than its
    /// client id.
    pub(super) workload: bool,
}

impl<'a> ClientFacts<'a> {
    /// The facts of a registered client.
    pub(super) fn of(client: &'a RegisteredClient) -> Self {
        Self {
            id: client.id(),
            audiences: client.audiences(),
            actor_sub: client.actor_sub(),
            actor_iss: client.actor_iss(),
            workload: client.workload_identity().is_some(),
        }
    }
}

/// Facts written by hand, for the unit tests of the rules and checks.
#[cfg(test)]
pub(super) mod testing {
    use super::*;

    /// A token with no claims beyond its typed ones.
    pub(in crate::policy) struct NoClaims;

    impl Claims for NoClaims {
        fn object(&self) -> Map<String, Value> {
            Map::new()
        }
    }

    /// An access token of the first upstream issuer for `sub`, expiring at 2000, with no
    /// `aud`, `client_id`, `azp`, `act`, `may_act`, scope or other claims.
    pub(in crate::policy) fn token(sub: &'static str) -> TokenFacts<'static> {
        TokenFacts {
            issuer: IssuerId::upstream(0),
            iss: "https://idp.example",
            sub,
            aud: &[],
            client_id: None,
            azp: None,
            act: &[],
            may_act: None,
            sub_iss: None,
            exp: 2000,
            scope: &[],
            token_type: TokenType::AccessToken,
            claims: &NoClaims,
        }
    }

    /// Client `bff`, named in `aud` by `audiences`, acting as `bff-sa`.
    pub(in crate::policy) fn client(audiences: &[String]) -> ClientFacts<'_> {
        ClientFacts {
            id: "bff",
            audiences,
            actor_sub: "bff-sa",
            actor_iss: None,
            workload: false,
        }
    }

    pub(in crate::policy) fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    pub(in crate::policy) fn party(sub: &str, iss: Option<&str>) -> ActorId {
        ActorId {
            sub: sub.to_owned(),
            iss: iss.map(str::to_owned),
        }
    }

    /// A rule with every list empty and nothing optional set: no target, scope, actor
    /// issuer, condition or passthrough claim; `ttl_seconds` 300, `max_depth` 3.
    pub(in crate::policy) fn rule() -> crate::policy::Rule {
        crate::policy::Rule {
            id: "test.toml#clients.bff".into(),
            actor_issuers: Vec::new(),
            audiences: crate::policy::TargetSet::default(),
            resources: crate::policy::TargetSet::default(),
            audience_scopes: Vec::new(),
            resource_scopes: Vec::new(),
            default_audience: None,
            max_audiences: 1,
            scopes: std::collections::HashSet::new(),
            ttl_seconds: 300,
            max_depth: 3,
            actors: None,
            prior_actors: None,
            act_includes_iss: false,
            claims: Vec::new(),
            conditions: Vec::new(),
        }
    }

    /// Asserts `result` is a refusal by `check` that looked at `on`; returns its detail.
    #[track_caller]
    pub(in crate::policy) fn refused<T: std::fmt::Debug>(
        result: Result<T, crate::policy::Refusal>,
        check: crate::policy::PolicyError,
        on: &str,
    ) -> String {
        let refusal = result.unwrap_err();
        assert_eq!(
            (refusal.check, refusal.on.as_str()),
            (check, on),
            "{refusal}"
        );
        refusal.detail
    }
}
