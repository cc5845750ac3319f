//! Stage 2: client authentication (RFC 6749 §2.3).
//!
//! Every exchange is made by an authenticated client. One dispatch
//! ([`ClientAuthenticator::authenticate`]) reads which credentials a request presents,
//! finds the client in the registry (`registry.rs`) and hands the check to the file of that method:
//! `secret.rs` for `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1;
//! digests compared in constant time). Presenting two methods at once is refused. The
//! result, [`AuthenticatedClient`], can only be built by a method's check here.
//! [`NamedClient`] is a registered client named by an operator for a dry run, never
//! authenticated and never enough to mint. Which clients may exchange, and how, is the
//! policy's business.
//!
//! Adding a method: a file beside `secret.rs` that reads its credentials and checks them,
//! a variant of the registry's `Credential` (how the client is registered), one of
//! `Presented` and of [`AuthMethod`], the arms of the dispatch, and its errors in the one
//! wire mapping (`error::to_wire`).

mod registry;
mod secret;

use std::sync::Arc;

use thiserror::Error;

use crate::config::{ClientConfig, ConfigError};
use crate::oauth::form::FormBody;
use registry::{ClientRegistry, Credential};
use secret::SecretDigest;

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
    /// More than one `Authorization` header: which one counts would be a guess.
    #[error("more than one Authorization header")]
    MultipleAuthorizationHeaders,
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
            ClientAuthError::MultipleAuthorizationHeaders => "multiple_authorization_headers",
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
}

impl AuthMethod {
    /// The RFC 8414 / RFC 7591 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// A registered client, as policy and minting see it.
#[derive(Debug)]
pub struct RegisteredClient {
    id: String,
    audiences: Vec<String>,
    actor_sub: String,
    actor_iss: Option<String>,
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
    /// The issuer of the client's identity (`actor_iss`), when configured: its actor
    /// tokens come from it, and it names the client when the client acts without one.
    pub fn actor_iss(&self) -> Option<&str> {
        self.actor_iss.as_deref()
    }
}

/// Proof that the request came from this client. Only a method's check in this module
/// builds one.
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

impl AsRef<RegisteredClient> for AuthenticatedClient {
    fn as_ref(&self) -> &RegisteredClient {
        &self.client
    }
}

/// A registered client named by an operator for a dry run (`gleipnir policy explain`,
/// `gleipnir policy test`): known, not authenticated. Nothing mints for one.
#[derive(Debug)]
pub struct NamedClient {
    client: Arc<RegisteredClient>,
}

impl NamedClient {
    /// The client.
    pub fn client(&self) -> &RegisteredClient {
        &self.client
    }
}

impl AsRef<RegisteredClient> for NamedClient {
    fn as_ref(&self) -> &RegisteredClient {
        &self.client
    }
}

/// The credentials a request presents, by method, before any is checked.
pub(crate) enum Presented {
    /// A client id and secret, in the Authorization header or in the body.
    Secret(secret::PresentedSecret),
}

/// The client registry and the authentication methods.
pub struct ClientAuthenticator {
    registry: ClientRegistry,
    /// Compared against when the client is unknown, so that timing does not reveal which
    /// client ids exist.
    dummy_digest: SecretDigest,
}

impl ClientAuthenticator {
    /// Registers every client, resolving its credentials (env, file) now, at start-up.
    pub fn new(clients: &[ClientConfig], origin: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            registry: ClientRegistry::new(clients, origin)?,
            dummy_digest: SecretDigest::random()
                .ok_or_else(|| ConfigError::new(origin, "clients", "random source failed"))?,
        })
    }

    /// The registered client `id`, unauthenticated, for a dry run that mints nothing.
    pub fn named(&self, id: &str) -> Result<NamedClient, ClientAuthError> {
        let registered = self
            .registry
            .get(id)
            .ok_or(ClientAuthError::UnknownClient)?;
        Ok(NamedClient {
            client: Arc::clone(&registered.client),
        })
    }

    /// Authenticates the request from its Authorization header value and body: reads
    /// which method it presents, then checks it against the client's registration.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        form: &FormBody,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        match secret::presented(authorization, form)? {
            Presented::Secret(presented) => match self.registry.get(presented.id()) {
                Some(registered) => match &registered.credential {
                    Credential::Secret(digest) => {
                        let method = presented.verify(digest)?;
                        Ok(AuthenticatedClient {
                            client: Arc::clone(&registered.client),
                            method,
                        })
                    }
                },
                None => {
                    // Same work as a known client, so timing does not reveal which ids exist.
                    let _ = presented.verify(&self.dummy_digest);
                    Err(ClientAuthError::UnknownClient)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use zeroize::Zeroizing;

    use super::*;
    use crate::config::SecretSource;

    fn authenticator() -> ClientAuthenticator {
        let clients = vec![ClientConfig {
            id: "bff app".into(),
            secret: SecretSource::Value(Zeroizing::new("s3cr:et+".into())),
            audiences: vec!["bff".into()],
            actor_sub: "bff".into(),
            actor_iss: None,
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
