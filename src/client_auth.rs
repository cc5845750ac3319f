//! Stage 2: client authentication (RFC 6749 §2.3, RFC 7521/7523, RFC 8705).
//!
//! Every exchange is made by an authenticated client. One dispatch
//! ([`ClientAuthenticator::authenticate`]) reads which credentials a request presents,
//! finds the client in the registry (`registry.rs`) and hands the check to the file of
//! that method:
//!
//! - `secret.rs`: `client_secret_basic` and `client_secret_post` (RFC 6749 §2.3.1;
//!   digests compared in constant time);
//! - `private_key_jwt.rs`: a JWT the client signs with its own key (RFC 7523 §2.2, §3),
//!   single-use through the replay cache on the [`Store`];
//! - `kubernetes.rs` and `spiffe.rs`: federated assertions, a JWT issued to the workload
//!   by a third party gleipnir trusts (a cluster's service-account issuer, a SPIFFE trust
//!   domain), reusable until they expire;
//! - `tls_client_auth.rs` and `self_signed.rs`: the client's certificate (RFC 8705 §2),
//!   from the TLS connection or, behind a trusted proxy, its `x-forwarded-client-cert`
//!   header (`certificate.rs`).
//!
//! `assertion.rs` reads the JWT assertions (RFC 7521 §4.2 parameters, the strict claims),
//! `keys.rs` holds where a method's verification keys come from (inline, a watched
//! file, or a URL cached through [`crate::upstream`]).
//!
//! A client is registered with exactly one method. Credentials of another method are
//! refused as a failed authentication (401 `invalid_client`), credentials of two methods
//! at once as a malformed request (400 `invalid_request`, RFC 6749 §2.3: "MUST NOT use
//! more than one authentication method in each request"); each refusal names its reason
//! in the audit. The result, [`AuthenticatedClient`], can only be built by a method's
//! check here. [`NamedClient`] is a registered client named by an operator for a dry run,
//! never authenticated and never enough to mint. Which clients may exchange, and how, is
//! the policy's business.
//!
//! Adding a method: a file beside `secret.rs` that reads its credentials and checks them,
//! a variant of the registry's `Credential` (how the client is registered) and of
//! [`AuthMethod`], the arm of the dispatch, its settings in `config/clients.rs`, and its
//! errors in the one wire mapping (`error::to_wire`).

mod assertion;
mod certificate;
mod keys;
mod kubernetes;
mod private_key_jwt;
mod registry;
mod secret;
mod self_signed;
mod spiffe;
mod tls_client_auth;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use thiserror::Error;

use crate::clock::Clock;
use crate::config::{ClientCertificatesConfig, Config, ConfigError};
use crate::oauth::form::FormBody;
use crate::store::Store;
use certificate::Certificates;
use registry::{ClientRegistry, Credential, Registered};
use secret::SecretDigest;

pub use assertion::{JWT_BEARER, JWT_SPIFFE};

/// Why client authentication failed. Each variant is one fact; [`as_str`](Self::as_str)
/// is its stable name in the audit and the metrics.
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
    /// Credentials of two methods at once (RFC 6749 §2.3).
    #[error("more than one client authentication method")]
    MultipleMethods,
    /// `client_id` in the body differs from the one the credentials name.
    #[error("client_id in body differs from the credentials")]
    ClientIdMismatch,
    /// A body `client_secret` without a `client_id`.
    #[error("client_secret without client_id")]
    SecretWithoutId,
    /// A client credential parameter repeated in the body.
    #[error("repeated client credential parameter")]
    RepeatedParameter,
    /// No such client.
    #[error("unknown client")]
    UnknownClient,
    /// The secret does not match.
    #[error("wrong client secret")]
    WrongSecret,
    /// Credentials of a method the client is not registered for.
    #[error("client registered for another authentication method")]
    WrongMethod,
    /// `client_assertion` without `client_assertion_type`, or the reverse (RFC 7521 §4.2).
    #[error("client_assertion and client_assertion_type must come together")]
    AssertionTypeMissing,
    /// A `client_assertion_type` we do not support, or not the client's.
    #[error("unsupported client_assertion_type")]
    UnsupportedAssertionType,
    /// The assertion is not a compact JWS with a strict header and claims set.
    #[error("malformed client assertion")]
    MalformedAssertion,
    /// `alg` is `none`, an HMAC algorithm or unknown.
    #[error("unsupported assertion algorithm")]
    UnsupportedAlgorithm,
    /// `alg` is not one the client (or its issuer) may use.
    #[error("assertion algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No key of the client has this `kid`.
    #[error("unknown kid")]
    UnknownKid,
    /// No `kid`, and several keys fit.
    #[error("kid required")]
    KidRequired,
    /// The key `kid` names is not bound to the assertion's algorithm.
    #[error("algorithm does not match key")]
    AlgorithmKeyMismatch,
    /// The signature does not verify.
    #[error("bad assertion signature")]
    BadSignature,
    /// The keys could not be fetched (and none are cached), or a `kid` not held could not
    /// be looked up yet.
    #[error("client keys unavailable")]
    KeysUnavailable,
    /// `iss`/`sub` of a `private_key_jwt` assertion are not the client.
    #[error("assertion not for this client")]
    AssertionNotForClient,
    /// A federated assertion's `iss` is not the client's trusted cluster issuer.
    #[error("assertion issuer not trusted for this client")]
    UntrustedAssertionIssuer,
    /// `aud` is not exactly the value that names this server.
    #[error("assertion audience is not this server")]
    AudienceMismatch,
    /// A required claim is absent (`exp`, `jti`, `sub`, `aud`).
    #[error("assertion lacks a required claim")]
    MissingClaim,
    /// `exp` is past (beyond the leeway).
    #[error("assertion expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("assertion not yet valid")]
    NotYetValid,
    /// The assertion claims a lifetime above the maximum.
    #[error("assertion lifetime above the maximum")]
    LifetimeTooLong,
    /// A `private_key_jwt` `jti` already used while the assertion could still be valid.
    #[error("assertion replayed")]
    ReplayedAssertion,
    /// The replay cache could not record the `jti` (full): single use is not assured.
    #[error("replay cache unavailable")]
    ReplayCacheUnavailable,
    /// A Kubernetes token of another namespace.
    #[error("service account of another namespace")]
    NamespaceMismatch,
    /// A Kubernetes token of another service account.
    #[error("another service account")]
    ServiceAccountMismatch,
    /// A JWT-SVID of another trust domain.
    #[error("SPIFFE ID of another trust domain")]
    TrustDomainMismatch,
    /// A JWT-SVID of another workload of the trust domain.
    #[error("another SPIFFE ID")]
    SpiffeIdMismatch,
    /// A certificate-authenticated client sent no certificate.
    #[error("no client certificate")]
    NoClientCertificate,
    /// The certificate does not chain to the client's trust anchors.
    #[error("client certificate not trusted")]
    CertificateUntrusted,
    /// The certificate (or one of its chain) is expired or not yet valid.
    #[error("client certificate expired or not yet valid")]
    CertificateExpired,
    /// The certificate does not carry the name the client is bound to.
    #[error("client certificate names another subject")]
    CertificateNameMismatch,
    /// The self-signed certificate is not one the client registered.
    #[error("client certificate not registered")]
    CertificateNotRegistered,
    /// `x-forwarded-client-cert` from a peer that is not a trusted proxy.
    #[error("forwarded client certificate from an untrusted peer")]
    ForwardedCertificateUntrusted,
    /// `x-forwarded-client-cert` that cannot be read.
    #[error("malformed forwarded client certificate")]
    MalformedForwardedCertificate,
}

impl ClientAuthError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        use ClientAuthError::*;
        match self {
            MissingCredentials => "missing_credentials",
            MalformedBasic => "malformed_basic",
            UnsupportedScheme => "unsupported_scheme",
            MultipleAuthorizationHeaders => "multiple_authorization_headers",
            MultipleMethods => "multiple_methods",
            ClientIdMismatch => "client_id_mismatch",
            SecretWithoutId => "secret_without_id",
            RepeatedParameter => "repeated_parameter",
            UnknownClient => "unknown_client",
            WrongSecret => "wrong_secret",
            WrongMethod => "wrong_method",
            AssertionTypeMissing => "assertion_type_missing",
            UnsupportedAssertionType => "unsupported_assertion_type",
            MalformedAssertion => "malformed_assertion",
            UnsupportedAlgorithm => "unsupported_algorithm",
            AlgorithmNotAllowed => "algorithm_not_allowed",
            UnknownKid => "unknown_kid",
            KidRequired => "kid_required",
            AlgorithmKeyMismatch => "algorithm_key_mismatch",
            BadSignature => "bad_signature",
            KeysUnavailable => "keys_unavailable",
            AssertionNotForClient => "assertion_not_for_client",
            UntrustedAssertionIssuer => "untrusted_assertion_issuer",
            AudienceMismatch => "audience_mismatch",
            MissingClaim => "missing_claim",
            Expired => "expired",
            NotYetValid => "not_yet_valid",
            LifetimeTooLong => "lifetime_too_long",
            ReplayedAssertion => "replayed_assertion",
            ReplayCacheUnavailable => "replay_cache_unavailable",
            NamespaceMismatch => "namespace_mismatch",
            ServiceAccountMismatch => "service_account_mismatch",
            TrustDomainMismatch => "trust_domain_mismatch",
            SpiffeIdMismatch => "spiffe_id_mismatch",
            NoClientCertificate => "no_client_certificate",
            CertificateUntrusted => "certificate_untrusted",
            CertificateExpired => "certificate_expired",
            CertificateNameMismatch => "certificate_name_mismatch",
            CertificateNotRegistered => "certificate_not_registered",
            ForwardedCertificateUntrusted => "forwarded_certificate_untrusted",
            MalformedForwardedCertificate => "malformed_forwarded_certificate",
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
    /// A JWT signed with the client's own key (RFC 7523 §2.2).
    PrivateKeyJwt,
    /// A Kubernetes projected service-account token.
    KubernetesServiceAccount,
    /// A SPIFFE JWT-SVID.
    SpiffeJwt,
    /// A certificate chaining to the client's trust anchors (RFC 8705 §2.1).
    TlsClientAuth,
    /// A certificate the client registered (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// The RFC 8414 / RFC 7591 name (ours for the two federated assertions, which no
    /// registry names yet: they are RFC 7523 client assertions issued by a third party).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::KubernetesServiceAccount => "kubernetes_service_account_jwt",
            AuthMethod::SpiffeJwt => "spiffe_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
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
    identity: Option<String>,
    introspect: bool,
}

impl RegisteredClient {
    /// May call `POST /introspect` (configuration `introspect`).
    pub fn may_introspect(&self) -> bool {
        self.introspect
    }
    /// `client_id`.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// `aud` values that name this client in subject tokens.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }
    /// The `sub` of this client's own actor tokens (its workload identity, when it has
    /// one).
    pub fn actor_sub(&self) -> &str {
        &self.actor_sub
    }
    /// The issuer of the client's identity (`actor_iss`), when configured: its actor
    /// tokens come from it, and it names the client when the client acts without one.
    pub fn actor_iss(&self) -> Option<&str> {
        self.actor_iss.as_deref()
    }
    /// The workload identity it authenticates as (`system:serviceaccount:…`, a SPIFFE
    /// ID, its certificate's bound name), when that is not its client id.
    pub fn workload_identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }
}

/// Proof that the request came from this client. Only a method's check in this module
/// builds one.
#[derive(Debug)]
pub struct AuthenticatedClient {
    client: Arc<RegisteredClient>,
    method: AuthMethod,
    /// SHA-256 of the certificate it authenticated with (RFC 8705 §3.1), if any.
    certificate: Option<[u8; 32]>,
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
    /// The SHA-256 thumbprint of the certificate it authenticated with, if it did.
    pub fn certificate_thumbprint(&self) -> Option<&[u8; 32]> {
        self.certificate.as_ref()
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

/// What a proof of the client says about the certificate it used, for binding issued
/// tokens to it (RFC 8705 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateBinding<'a> {
    /// Authenticated with this certificate (its SHA-256).
    Certificate(&'a [u8; 32]),
    /// Authenticated without a certificate.
    None,
    /// Not authenticated at all (a dry run): nothing is minted.
    NotAuthenticated,
}

/// A proof of the client, as the policy reads it.
pub trait ClientProof: AsRef<RegisteredClient> {
    /// The certificate the client authenticated with.
    fn certificate_binding(&self) -> CertificateBinding<'_>;
}

impl ClientProof for AuthenticatedClient {
    fn certificate_binding(&self) -> CertificateBinding<'_> {
        match &self.certificate {
            Some(thumbprint) => CertificateBinding::Certificate(thumbprint),
            None => CertificateBinding::None,
        }
    }
}

impl ClientProof for NamedClient {
    fn certificate_binding(&self) -> CertificateBinding<'_> {
        CertificateBinding::NotAuthenticated
    }
}

/// What a request carries that can authenticate its client: the Authorization header,
/// the form body, the connection's peer and TLS client certificate chain, and the
/// `x-forwarded-client-cert` header. Built by the HTTP edge of any endpoint that
/// authenticates clients.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    /// The (single) `Authorization` header value.
    pub authorization: Option<&'a [u8]>,
    /// The form body.
    pub form: &'a FormBody,
    /// The connection's peer address.
    pub peer: Option<IpAddr>,
    /// The TLS client certificate chain of the connection (leaf first), if any.
    pub tls_certificates: Option<&'a [CertificateDer<'static>]>,
    /// The `x-forwarded-client-cert` header value(s), believed only from a trusted proxy.
    pub forwarded_certificate: Option<&'a [u8]>,
}

/// What a check needs besides the client's registration.
pub(crate) struct Context<'a> {
    /// Our issuer identifier (RFC 8414), the `aud` of `private_key_jwt` assertions.
    pub(crate) issuer: &'a str,
    pub(crate) leeway: u64,
    pub(crate) now: u64,
    pub(crate) store: &'a Store,
}

/// A background task of the authenticator (key keepers, file watches).
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The client registry and the authentication methods.
pub struct ClientAuthenticator {
    registry: ClientRegistry,
    /// Compared against when the client is unknown, so that timing does not reveal which
    /// client ids exist.
    dummy_digest: SecretDigest,
    proxies: ClientCertificatesConfig,
    issuer: String,
    leeway: u64,
    clock: Clock,
    store: Store,
}

impl ClientAuthenticator {
    /// Registers every client of `config`, resolving its credentials (secrets, key files,
    /// trust anchors) now, at start-up. `store` holds the `private_key_jwt` replay cache;
    /// `http` fetches client keys with the limits of every upstream call.
    pub fn new(
        config: &Config,
        store: Store,
        http: &reqwest::Client,
        clock: Clock,
    ) -> Result<Self, ConfigError> {
        let origin = &config.origin;
        Ok(Self {
            registry: ClientRegistry::new(config, http, &clock)?,
            dummy_digest: SecretDigest::random()
                .ok_or_else(|| ConfigError::new(origin, "clients", "random source failed"))?,
            proxies: config.client_certificates.clone(),
            issuer: config.issuer.clone(),
            leeway: config.tokens.leeway_seconds,
            clock,
            store,
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

    /// The store holding the replay cache (for metrics).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The methods clients are registered with, each once, in a stable order (RFC 8414
    /// `token_endpoint_auth_methods_supported`).
    pub fn methods(&self) -> Vec<AuthMethod> {
        self.registry.methods()
    }

    /// The algorithms JWT assertions may be signed with, over every client (RFC 8414
    /// `token_endpoint_auth_signing_alg_values_supported`).
    pub fn assertion_algorithms(&self) -> Vec<&'static str> {
        self.registry.assertion_algorithms()
    }

    /// The background work client keys need: one keeper per fetched key set, one watch
    /// per key file. Each runs until aborted.
    pub fn tasks(&self) -> Vec<Task> {
        self.registry.tasks()
    }

    /// Authenticates the request: reads which method it presents, finds the client, and
    /// checks the credentials against the client's registration (exactly one method per
    /// client and per request, RFC 6749 §2.3).
    pub async fn authenticate(
        &self,
        request: &ClientRequest<'_>,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let form = request.form;
        let body_id = form
            .single("client_id")
            .map_err(|_| ClientAuthError::RepeatedParameter)?;
        let secret = secret::presented(request.authorization, form)?;
        // Two methods at once is refused as such, whatever the second one is worth.
        if secret.is_some() && assertion::is_presented(form) {
            return Err(ClientAuthError::MultipleMethods);
        }
        let assertion = assertion::presented(form)?;
        let certificates = certificate::presented(request, &self.proxies);
        match (secret, assertion) {
            (Some(_), Some(_)) => Err(ClientAuthError::MultipleMethods),
            (Some(secret), None) => self.with_secret(&secret, &certificates),
            (None, Some(assertion)) => {
                self.with_assertion(body_id, &assertion, &certificates)
                    .await
            }
            (None, None) => self.with_certificate(body_id, &certificates),
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            issuer: &self.issuer,
            leeway: self.leeway,
            now: self.clock.now(),
            store: &self.store,
        }
    }

    /// A client id and secret: the client must be registered with a secret.
    fn with_secret(
        &self,
        presented: &secret::PresentedSecret,
        certificates: &Certificates,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let Some(registered) = self.registry.get(presented.id()) else {
            // Same work as a known client, so timing does not reveal which ids exist.
            let _ = presented.verify(&self.dummy_digest);
            return Err(ClientAuthError::UnknownClient);
        };
        match &registered.credential {
            Credential::Secret(digest) => {
                let method = presented.verify(digest)?;
                Ok(authenticated(registered, method, None))
            }
            other => Err(other_method(other, certificates)),
        }
    }

    /// A JWT client assertion: `private_key_jwt`, or a federated one.
    async fn with_assertion(
        &self,
        body_id: Option<&str>,
        assertion: &assertion::PresentedAssertion<'_>,
        certificates: &Certificates,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        // RFC 7521 §4.2: client_id is optional; when sent it names the client, otherwise
        // the assertion does (its iss and sub, which select the keys that must verify it).
        let registered = match body_id {
            Some(id) => self.registry.get(id),
            None => self
                .registry
                .by_assertion(assertion.iss.as_deref(), &assertion.sub),
        }
        .ok_or(ClientAuthError::UnknownClient)?;
        let cx = self.context();
        let id = registered.client.id.as_str();
        let (method, checked) = match &registered.credential {
            Credential::PrivateKeyJwt(key) => (
                AuthMethod::PrivateKeyJwt,
                private_key_jwt::verify(key, id, assertion, &cx).await,
            ),
            Credential::Kubernetes(binding) => (
                AuthMethod::KubernetesServiceAccount,
                kubernetes::verify(binding, assertion, &cx).await,
            ),
            Credential::Spiffe(binding) => (
                AuthMethod::SpiffeJwt,
                spiffe::verify(binding, assertion, &cx).await,
            ),
            other => return Err(other_method(other, certificates)),
        };
        checked.map(|()| authenticated(registered, method, None))
    }

    /// No secret and no assertion: a certificate-authenticated client names itself with
    /// `client_id` (RFC 8705 §2).
    fn with_certificate(
        &self,
        body_id: Option<&str>,
        certificates: &Certificates,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let id = body_id.ok_or(ClientAuthError::MissingCredentials)?;
        let registered = self
            .registry
            .get(id)
            .ok_or(ClientAuthError::UnknownClient)?;
        let (method, result) = match &registered.credential {
            Credential::TlsClientAuth(binding) => (
                AuthMethod::TlsClientAuth,
                certificates
                    .chain()
                    .and_then(|chain| binding.verify(chain, self.clock.now())),
            ),
            Credential::SelfSignedTls(registered_certs) => (
                AuthMethod::SelfSignedTlsClientAuth,
                certificates
                    .chain()
                    .and_then(|chain| registered_certs.verify(chain)),
            ),
            _ => return Err(ClientAuthError::MissingCredentials),
        };
        result.map(|thumbprint| authenticated(registered, method, Some(thumbprint)))
    }
}

fn authenticated(
    registered: &Registered,
    method: AuthMethod,
    certificate: Option<[u8; 32]>,
) -> AuthenticatedClient {
    AuthenticatedClient {
        client: Arc::clone(&registered.client),
        method,
        certificate,
    }
}

/// Credentials of one method for a client registered with `credential`: a certificate
/// client that also sent a certificate used two methods at once (400); otherwise the
/// credentials are simply not the client's (401).
fn other_method(credential: &Credential, certificates: &Certificates) -> ClientAuthError {
    let certificate_client = matches!(
        credential,
        Credential::TlsClientAuth(_) | Credential::SelfSignedTls(_)
    );
    if certificate_client && certificates.is_presented() {
        ClientAuthError::MultipleMethods
    } else {
        ClientAuthError::WrongMethod
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::clock::ManualClock;

    const CONFIG: &str = r#"
issuer = "https://sts.example"
[signing]
key_file = "k.pem"
[[clients]]
id = "bff app"
secret = { value = "s3cr:et+" }
actor_sub = "bff"
"#;

    fn authenticator() -> ClientAuthenticator {
        let config = Config::from_toml(CONFIG, std::path::Path::new("/t/gleipnir.toml")).unwrap();
        let clock = Clock::from(ManualClock::new(1_900_000_000));
        let store = Store::memory(10, clock.clone());
        ClientAuthenticator::new(&config, store, &reqwest::Client::new(), clock).unwrap()
    }

    fn basic(raw: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
        .into_bytes()
    }

    async fn authenticate(
        a: &ClientAuthenticator,
        header: Option<&[u8]>,
        body: &str,
    ) -> Result<AuthenticatedClient, ClientAuthError> {
        let form = FormBody::parse(body.as_bytes()).unwrap();
        let request = ClientRequest {
            authorization: header,
            form: &form,
            peer: None,
            tls_certificates: None,
            forwarded_certificate: None,
        };
        a.authenticate(&request).await
    }

    #[tokio::test]
    async fn secrets_by_basic_and_by_post() {
        let a = authenticator();
        let ok = authenticate(&a, Some(&basic("bff+app:s3cr%3Aet%2B")), "")
            .await
            .unwrap();
        assert_eq!(ok.id(), "bff app");
        assert_eq!(ok.method(), AuthMethod::ClientSecretBasic);
        assert_eq!(ok.certificate_thumbprint(), None);
        let ok = authenticate(
            &a,
            Some(&basic("bff+app:s3cr%3Aet%2B")),
            "client_id=bff+app",
        )
        .await
        .unwrap();
        assert_eq!(ok.id(), "bff app");
        let ok = authenticate(&a, None, "client_id=bff+app&client_secret=s3cr%3Aet%2B")
            .await
            .unwrap();
        assert_eq!(ok.method(), AuthMethod::ClientSecretPost);
    }

    #[tokio::test]
    async fn refusals() {
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
                "client_assertion=a.b.c&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
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
            let got = authenticate(&a, header.as_deref(), body).await.unwrap_err();
            assert_eq!(got, *want, "{body} {header:?}");
        }
    }

    #[test]
    fn a_secret_client_s_methods_are_the_secret_ones() {
        let a = authenticator();
        assert_eq!(
            a.methods(),
            [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost]
        );
        assert!(a.assertion_algorithms().is_empty());
    }
}
