//! The client registry: every configured client, with what policy and minting see of it
//! ([`RegisteredClient`]) and how it proves itself (`Credential`). Nothing here assumes
//! that a client has a secret: the credential is one variant per method.

use std::collections::HashMap;
use std::sync::Arc;

use super::RegisteredClient;
use super::secret::SecretDigest;
use crate::config::{ClientConfig, ConfigError};

/// How a registered client proves itself: exactly one method per client.
pub(crate) enum Credential {
    /// A shared secret (`client_secret_basic` or `client_secret_post`), kept as its digest.
    Secret(SecretDigest),
}

/// One registered client.
pub(crate) struct Registered {
    pub(crate) client: Arc<RegisteredClient>,
    pub(crate) credential: Credential,
}

/// Every registered client by id.
pub(crate) struct ClientRegistry {
    clients: HashMap<String, Registered>,
}

impl ClientRegistry {
    /// Registers `clients`, resolving each secret (env, file) now, at start-up.
    pub(crate) fn new(clients: &[ClientConfig], origin: &str) -> Result<Self, ConfigError> {
        let mut map = HashMap::with_capacity(clients.len());
        for c in clients {
            let secret = c.secret.resolve().map_err(|reason| {
                ConfigError::new(origin, format!("clients[{}].secret", c.id), reason)
            })?;
            let client = Arc::new(RegisteredClient {
                id: c.id.clone(),
                audiences: c.audiences.clone(),
                actor_sub: c.actor_sub.clone(),
                actor_iss: c.actor_iss.clone(),
            });
            let credential = Credential::Secret(SecretDigest::of(secret.expose()));
            map.insert(c.id.clone(), Registered { client, credential });
        }
        Ok(Self { clients: map })
    }

    /// The client registered as `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Registered> {
        self.clients.get(id)
    }
}
