//! What the decision reads, borrowed: the facts of a verified token ([`TokenFacts`]) and
//! of the authenticated client ([`ClientFacts`]). The rules in [`super::rules`] and the
//! policy-file checks in [`super::fields`] take these plain views, never the proof types,
//! so each can be unit-tested with values written by hand, and a change to the proof types
//! touches only the constructors here.
//!
//! This is the one place in the policy stage that reads `VerifiedToken` and
//! `AuthenticatedClient` (besides the public signatures of `admit` and `decide`).

use serde_json::{Map, Value};

use crate::client_auth::AuthenticatedClient;
use crate::config::IssuerId;
use crate::oauth::TokenType;
use crate::token::{ActorId, Role, VerifiedToken};

/// Every claim of a token as it carries it, parsed only when a rule asks: most exchanges
/// have no condition and no passthrough claim, and should not pay for the parse.
pub(super) trait Claims {
    /// The claims set as a JSON object.
    fn object(&self) -> Map<String, Value>;
}

impl<R: Role> Claims for VerifiedToken<R> {
    fn object(&self) -> Map<String, Value> {
        self.claims_object()
    }
}

/// Claims given directly (unit tests).
impl Claims for Map<String, Value> {
    fn object(&self) -> Map<String, Value> {
        self.clone()
    }
}

/// The facts of a subject or actor token that the rules read, borrowed from the token.
#[derive(Clone, Copy)]
pub(super) struct TokenFacts<'a> {
    /// Which configured issuer signed it.
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
    /// The facts of a verified token: borrows only, nothing parsed or copied.
    pub(super) fn of<R: Role>(token: &'a VerifiedToken<R>) -> Self {
        Self {
            issuer: token.issuer(),
            iss: token.iss(),
            sub: token.sub(),
            aud: token.aud(),
            client_id: token.client_id(),
            azp: token.azp(),
            act: token.act(),
            may_act: token.may_act(),
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

/// The identity facts of the authenticated client, borrowed from its registration.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientFacts<'a> {
    /// `client_id`.
    pub(super) id: &'a str,
    /// `aud` values that name this client in subject tokens.
    pub(super) audiences: &'a [String],
    /// The `sub` of this client's own actor tokens.
    pub(super) actor_sub: &'a str,
}

impl<'a> ClientFacts<'a> {
    /// The facts of an authenticated client.
    pub(super) fn of(client: &'a AuthenticatedClient) -> Self {
        Self {
            id: client.id(),
            audiences: client.client().audiences(),
            actor_sub: client.client().actor_sub(),
        }
    }
}
