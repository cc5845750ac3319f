//! Stage 2: client authentication (EXCHANGE-RULES §3, RFC 6749 §2.3.1).
//!
//! `client_secret_basic` and `client_secret_post`; using both at once is refused. Secrets
//! are held as SHA-256 digests and compared in constant time; an unknown client id costs
//! the same comparison as a known one. The result, [`AuthenticatedClient`], can only be
//! built here. Which clients may exchange, and how, is the policy's business.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine as _;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::config::{ClientConfig, ConfigError};
use crate::oauth::form::{self, FormBody};

/// Why client authentication failed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthError {
    /// No client credentials at all (RFC 8693 §5 allows it; we do not).
    #[error("no client credentials")]
    MissingCredentials,
    /// An Authorization header that is not well-formed HTTP Basic.
    #[error("malformed Authorization header")]
    MalformedBasic,
    /// An Authorization scheme other than Basic.
    #[error("unsupported Authorization scheme")]
    UnsupportedScheme,
    /// Credentials in the header and the body at once (RFC 6749 §2.3).
    #[error("more than one client authentication method")]
    MultipleMethods,
    /// `client_id` in the body differs from the one in the header.
    #[error("client_id in body differs from Authorization header")]
    ClientIdMismatch,
    /// A body `client_secret` without a `client_id`.
    #[error("client_secret without client_id")]
    SecretWithoutId,
    /// `client_id` or `client_secret` repeated in the body.
    #[error("repeated client credential parameter")]
    RepeatedParameter,
    /// No such client.
    #[error("unknown client")]
    UnknownClient,
    /// The secret does not match.
    #[error("wrong client secret")]
    WrongSecret,
}

impl ClientAuthError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthError::MissingCredentials => "missing_credentials",
            ClientAuthError::MalformedBasic => "malformed_basic",
            ClientAuthError::UnsupportedScheme => "unsupported_scheme",
            ClientAuthError::MultipleMethods => "multiple_methods",
            ClientAuthError::ClientIdMismatch => "client_id_mismatch",
            ClientAuthError::SecretWithoutId => "secret_without_id",
            ClientAuthError::RepeatedParameter => "repeated_parameter",
            ClientAuthError::UnknownClient => "unknown_client",
            ClientAuthError::WrongSecret => "wrong_secret",
        }
    }
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the body.
    ClientSecretPost,
    /// Not authenticated: named by an operator for a dry run (`gleipnir policy explain`,
    /// `gleipnir policy test`), which mints nothing.
    DryRun,
}

impl AuthMethod {
    /// The RFC 8414 / RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::DryRun => "dry_run",
        }
    }
}

/// A registered client, as policy and minting see it.
#[derive(Debug)]
pub struct RegisteredClient {
    id: String,
    audiences: Vec<String>,
    actor_sub: String,
}

impl RegisteredClient {
    /// `client_id`.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// `aud` values that name this client in subject tokens.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
    /// The `sub` of this client's own actor tokens.
    pub fn actor_sub(&self) -> &str {
        &self.actor_sub
    }
}

/// Proof that the request came from this client. Only [`ClientAuthenticator`] builds one.
#[derive(Debug)]
pub struct AuthenticatedClient {
    client: Arc<RegisteredClient>,
    method: AuthMethod,
}

impl AuthenticatedClient {
    /// The client.
    pub fn client(&self) -> &RegisteredClient {
        &self.client
    }
    /// `client_id`.
    pub fn id(&self) -> &str {
        &self.client.id
    }
    /// How it authenticated.
    pub fn method(&self) -> AuthMethod {
        self.method
    }
}

struct Entry {
    client: Arc<RegisteredClient>,
    secret_digest: Zeroizing<[u8; 32]>,
}

/// The client registry and the authentication methods.
pub struct ClientAuthenticator {
    clients: HashMap<String, Entry>,
    dummy_digest: [u8; 32],
}

fn sha256(bytes: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

impl ClientAuthenticator {
    /// Resolves every client's secret (env, file) now, at start-up.
    pub fn new(clients: &[ClientConfig], origin: &str) -> Result<Self, ConfigError> {
        let mut map = HashMap::with_capacity(clients.len());
        for c in clients {
            let secret = c.secret.resolve().map_err(|reason| {
                ConfigError::new(origin, format!("clients[{}].secret", c.id), reason)
            })?;
            map.insert(
                c.id.clone(),
                Entry {
                    client: Arc::new(RegisteredClient {
                        id: c.id.clone(),
                        audiences: c.audiences.clone(),
                        actor_sub: c.actor_sub.clone(),
                    }),
                    secret_digest: sha256(secret.expose()),
                },
            );
        }
        let mut dummy_digest = [0u8; 32];
        aws_lc_rs::rand::fill(&mut dummy_digest)
            .map_err(|_| ConfigError::new(origin, "clients", "random source failed"))?;
        Ok(Self {
            clients: map,
            dummy_digest,
        })
    }

    /// The registered client `id`, unauthenticated, for a dry run that mints nothing
    /// (`exchange::dry_run`). Never reachable from a request.
    pub(crate) fn assume(&self, id: &str) -> Result<AuthenticatedClient, ClientAuthError> {
        let entry = self.clients.get(id).ok_or(ClientAuthError::UnknownClient)?;
        Ok(AuthenticatedClient {
            client: Arc::clone(&entry.client),
            method: AuthMethod::DryRun,
        })
    }

    /// Authenticates the request from its Authorization header value and body.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        form: &FormBody,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let body_id = form
            .single("client_id")
            .map_err(|_| ClientAuthError::RepeatedParameter)?;
        let body_secret = form
            .single("client_secret")
            .map_err(|_| ClientAuthError::RepeatedParameter)?;
        let (id, secret, method) = match authorization {
            Some(header) => {
                let (id, secret) = parse_basic(header)?;
                if body_secret.is_some() {
                    return Err(ClientAuthError::MultipleMethods);
                }
                if body_id.is_some_and(|b| b != id) {
                    return Err(ClientAuthError::ClientIdMismatch);
                }
                (id, secret, AuthMethod::ClientSecretBasic)
            }
            None => match (body_id, body_secret) {
                (Some(id), Some(secret)) => (
                    id.to_owned(),
                    Zeroizing::new(secret.to_owned()),
                    AuthMethod::ClientSecretPost,
                ),
                (None, Some(_)) => return Err(ClientAuthError::SecretWithoutId),
                (_, None) => return Err(ClientAuthError::MissingCredentials),
            },
        };
        let presented = sha256(secret.as_bytes());
        match self.clients.get(&id) {
            Some(entry) if bool::from(presented.ct_eq(&*entry.secret_digest)) => {
                Ok(AuthenticatedClient {
                    client: Arc::clone(&entry.client),
                    method,
                })
            }
            Some(_) => Err(ClientAuthError::WrongSecret),
            None => {
                // Same work as a known client, so timing does not reveal which ids exist.
                let _ = presented.ct_eq(&self.dummy_digest);
                Err(ClientAuthError::UnknownClient)
            }
        }
    }
}

/// RFC 7617 Basic credentials; id and secret are form-urlencoded inside (RFC 6749 §2.3.1).
fn parse_basic(header: &[u8]) -> Result<(String, Zeroizing<String>), ClientAuthError> {
    let header = std::str::from_utf8(header).map_err(|_| ClientAuthError::MalformedBasic)?;
    let (scheme, rest) = header
        .split_once(' ')
        .ok_or(ClientAuthError::UnsupportedScheme)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ClientAuthError::UnsupportedScheme);
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| ClientAuthError::MalformedBasic)?,
    );
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(ClientAuthError::MalformedBasic)?;
    let (id, secret) = (
        decoded.get(..colon).unwrap_or_default(),
        decoded.get(colon + 1..).unwrap_or_default(),
    );
    let id = form::decode(id).map_err(|_| ClientAuthError::MalformedBasic)?;
    let secret = Zeroizing::new(form::decode(secret).map_err(|_| ClientAuthError::MalformedBasic)?);
    if id.is_empty() || secret.is_empty() {
        return Err(ClientAuthError::MalformedBasic);
    }
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;

    fn authenticator() -> ClientAuthenticator {
        let clients = vec![ClientConfig {
            id: "bff app".into(),
            secret: SecretSource::Value(Zeroizing::new("s3cr:et+".into())),
            audiences: vec!["bff".into()],
            actor_sub: "bff".into(),
        }];
        ClientAuthenticator::new(&clients, "test").unwrap()
    }

    fn basic(raw: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
        .into_bytes()
    }

    fn form(body: &str) -> FormBody {
        FormBody::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let a = authenticator();
        let ok = a
            .authenticate(Some(&basic("bff+app:s3cr%3Aet%2B")), &form(""))
            .unwrap();
        assert_eq!(ok.id(), "bff app");
        assert_eq!(ok.method(), AuthMethod::ClientSecretBasic);
        let ok = a
            .authenticate(
                Some(&basic("bff+app:s3cr%3Aet%2B")),
                &form("client_id=bff+app"),
            )
            .unwrap();
        assert_eq!(ok.id(), "bff app");
    }

    #[test]
    fn post_credentials() {
        let a = authenticator();
        let ok = a
            .authenticate(None, &form("client_id=bff+app&client_secret=s3cr%3Aet%2B"))
            .unwrap();
        assert_eq!(ok.method(), AuthMethod::ClientSecretPost);
    }

    #[test]
    fn refusals() {
        let a = authenticator();
        let cases: &[(Option<Vec<u8>>, &str, ClientAuthError)] = &[
            (None, "", ClientAuthError::MissingCredentials),
            (
                None,
                "client_id=bff+app",
                ClientAuthError::MissingCredentials,
            ),
            (None, "client_secret=x", ClientAuthError::SecretWithoutId),
            (
                None,
                "client_id=bff+app&client_secret=wrong",
                ClientAuthError::WrongSecret,
            ),
            (
                None,
                "client_id=nobody&client_secret=s3cr%3Aet%2B",
                ClientAuthError::UnknownClient,
            ),
            (
                None,
                "client_id=a&client_id=b&client_secret=x",
                ClientAuthError::RepeatedParameter,
            ),
            (
                Some(basic("bff+app:s3cr%3Aet%2B")),
                "client_secret=s3cr%3Aet%2B",
                ClientAuthError::MultipleMethods,
            ),
            (
                Some(basic("bff+app:s3cr%3Aet%2B")),
                "client_id=other",
                ClientAuthError::ClientIdMismatch,
            ),
            (
                Some(basic("bff+app:wrong")),
                "",
                ClientAuthError::WrongSecret,
            ),
            (Some(basic("no-colon")), "", ClientAuthError::MalformedBasic),
            (Some(basic("bff%zz:x")), "", ClientAuthError::MalformedBasic),
            (Some(basic(":secret")), "", ClientAuthError::MalformedBasic),
            (Some(basic("bff+app:")), "", ClientAuthError::MalformedBasic),
            // Inside Basic, '&' is an ordinary character: no extra form fields smuggled in.
            (
                Some(basic("bff+app:s3cr%3Aet%2B&junk=1")),
                "",
                ClientAuthError::WrongSecret,
            ),
            (
                Some(b"Basic !!!".to_vec()),
                "",
                ClientAuthError::MalformedBasic,
            ),
            (
                Some(b"Bearer abc".to_vec()),
                "",
                ClientAuthError::UnsupportedScheme,
            ),
            (
                Some(b"Basic".to_vec()),
                "",
                ClientAuthError::UnsupportedScheme,
            ),
            (Some(vec![0xff, 0xfe]), "", ClientAuthError::MalformedBasic),
        ];
        for (header, body, want) in cases {
            let got = a.authenticate(header.as_deref(), &form(body)).unwrap_err();
            assert_eq!(got, *want, "{body} {header:?}");
        }
    }
}
