//! `[[clients]]`: the registered clients, their secrets and the names they go by in
//! tokens.

use std::collections::HashSet;

use serde::Deserialize;

use super::secret::RawSecret;
use super::{ConfigError, SecretSource, Source};

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    id: String,
    secret: RawSecret,
    audiences: Option<Vec<String>>,
    actor_sub: Option<String>,
}

/// Every `[[clients]]` entry, ids unique.
pub(super) fn validate(
    raw: Vec<RawClient>,
    src: &Source,
) -> Result<Vec<ClientConfig>, ConfigError> {
    let mut ids = HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, client)| client.validate(i, &mut ids, src))
        .collect()
}

impl RawClient {
    /// One client; `ids` holds the ids of the clients before it.
    fn validate(
        self,
        index: usize,
        ids: &mut HashSet<String>,
        src: &Source,
    ) -> Result<ClientConfig, ConfigError> {
        let name = if self.id.is_empty() {
            index.to_string()
        } else {
            self.id.clone()
        };
        let err = |f: &str, reason: &str| src.error(&format!("clients[{name}].{f}"), reason);
        if self.id.is_empty() || self.id.chars().any(char::is_control) {
            return Err(err("id", "must be non-empty, without control characters"));
        }
        if !ids.insert(self.id.clone()) {
            return Err(err("id", "duplicate client id"));
        }
        let secret = self
            .secret
            .validate(src.base)
            .map_err(|r| err("secret", &r))?;
        let audiences = self.audiences.unwrap_or_else(|| vec![self.id.clone()]);
        if audiences.iter().any(|a| a == "*") {
            return Err(err(
                "audiences",
                "\"*\" is not a wildcard here: list the exact aud values that name this client",
            ));
        }
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err(err("audiences", "must list non-empty values"));
        }
        let actor_sub = self.actor_sub.unwrap_or_else(|| self.id.clone());
        if actor_sub.is_empty() {
            return Err(err("actor_sub", "must not be empty"));
        }
        Ok(ClientConfig {
            id: self.id,
            secret,
            audiences,
            actor_sub,
        })
    }
}
