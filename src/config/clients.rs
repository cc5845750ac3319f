//! `[[clients]]`: the registered clients, their secrets and the names they go by in
//! tokens.

use std::collections::HashSet;

use serde::Deserialize;

use super::secret::RawSecret;
use super::{Checker, SecretSource, non_empty};

/// A registered client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `client_id`.
    pub id: String,
    /// The client secret's source.
    pub secret: SecretSource,
    /// `aud` values that name this client in subject tokens issued for it.
    pub audiences: Vec<String>,
    /// The `sub` of this client's own actor tokens.
    pub actor_sub: String,
    /// The issuer of the client's identity, when configured (an `[[issuers]]` issuer):
    /// its identity is then (`actor_iss`, `actor_sub`), for its actor tokens and when it
    /// acts without one. `None`: its actor tokens may come from any of its policy's actor
    /// issuers, and it acts without one as a party of ours (our `iss`).
    pub actor_iss: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    id: String,
    secret: RawSecret,
    audiences: Option<Vec<String>>,
    actor_sub: Option<String>,
    actor_iss: Option<String>,
}

/// `clients[*].actor_iss`: an upstream issuer's exact `iss`. Not our own: a client is
/// never vouched for by a token of ours, and leaving the field out already names us.
pub(super) fn check_actor_iss(
    clients: &[ClientConfig],
    own_issuer: &str,
    upstream: &[String],
    cx: &mut Checker,
) {
    for client in clients {
        let Some(iss) = &client.actor_iss else {
            continue;
        };
        let at = format!("clients[{}].actor_iss", client.id);
        if iss == own_issuer {
            cx.error(
                &at,
                "is our own issuer: leave actor_iss out for that (an actor token is never ours)",
            );
        } else if !upstream.contains(iss) {
            cx.error(&at, "must be the issuer of one of the [[issuers]]");
        }
    }
}

/// Every `[[clients]]` entry, ids unique.
pub(super) fn validate(raw: Vec<RawClient>, cx: &mut Checker) -> Option<Vec<ClientConfig>> {
    let mut ids = HashSet::new();
    // Every client is checked, the ones after a wrong one too.
    let clients: Vec<_> = raw
        .into_iter()
        .enumerate()
        .map(|(i, client)| client.validate(i, &mut ids, cx))
        .collect();
    clients.into_iter().collect()
}

impl RawClient {
    /// One client; `ids` holds the ids of the clients before it.
    fn validate(
        self,
        index: usize,
        ids: &mut HashSet<String>,
        cx: &mut Checker,
    ) -> Option<ClientConfig> {
        let name = if self.id.is_empty() {
            index.to_string()
        } else {
            self.id.clone()
        };
        let at = |f: &str| format!("clients[{name}].{f}");
        let well_formed = !self.id.is_empty() && !self.id.chars().any(char::is_control);
        let id = if !well_formed {
            cx.error(&at("id"), "must be non-empty, without control characters");
            None
        } else if !ids.insert(self.id.clone()) {
            cx.error(&at("id"), "duplicate client id");
            None
        } else {
            Some(self.id.clone())
        };
        let secret = cx.check(&at("secret"), self.secret.validate(cx.base));
        // audiences and actor_sub default to the id: when it is malformed, so would they
        // be, and that is already said.
        let audiences = match self.audiences {
            Some(audiences) => Some(audiences),
            None => well_formed.then(|| vec![self.id.clone()]),
        };
        let audiences = audiences.and_then(|a| cx.check(&at("audiences"), check_audiences(a)));
        let actor_sub = match self.actor_sub {
            Some(actor_sub) => Some(actor_sub),
            None => well_formed.then(|| self.id.clone()),
        };
        let actor_sub = actor_sub.and_then(|s| cx.check(&at("actor_sub"), non_empty(s)));
        Some(ClientConfig {
            id: id?,
            secret: secret?,
            audiences: audiences?,
            actor_sub: actor_sub?,
            actor_iss: self.actor_iss,
        })
    }
}

/// The exact `aud` values that name a client: some, none empty, no wildcard.
fn check_audiences(audiences: Vec<String>) -> Result<Vec<String>, String> {
    if audiences.iter().any(|a| a == "*") {
        return Err(
            "\"*\" is not a wildcard here: list the exact aud values that name this client".into(),
        );
    }
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err("must list non-empty values".into());
    }
    Ok(audiences)
}
