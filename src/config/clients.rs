//! `[[clients]]`: the registered clients, how each proves who it is (exactly one method:
//! a shared secret, `private_key_jwt`, a Kubernetes service-account token, a SPIFFE
//! JWT-SVID, or a client certificate) and the names it goes by in tokens.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::secret::RawSecret;
use super::{Checker, SecretSource, bounded, issuers::url_allowed, non_empty};
use crate::jose::JwsAlgorithm;

/// Longest lifetime a `private_key_jwt` assertion may claim by default: 5 minutes. An
/// assertion is made for one request; a long-lived one is a stolen credential waiting.
pub const DEFAULT_ASSERTION_MAX_LIFETIME: u64 = 300;

/// A registered client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `client_id`.
    pub id: String,
    /// How it authenticates: exactly one method.
    pub credential: ClientCredential,
    /// The workload identity it authenticates as, when it is not the client id
    /// ([`ClientCredential::identity`]); kept when a dry run replaces the credential.
    pub identity: Option<String>,
    /// `aud` values that name this client in subject tokens issued for it.
    pub audiences: Vec<String>,
    /// The `sub` of this client's own actor tokens: the client id, or with workload
    /// identity the identity it authenticates as (see [`ClientCredential::identity`]).
    pub actor_sub: String,
    /// The issuer of the client's identity, when configured (an `[[issuers]]` issuer):
    /// its identity is then (`actor_iss`, `actor_sub`), for its actor tokens and when it
    /// acts without one. `None`: its actor tokens may come from any of its policy's actor
    /// issuers, and it acts without one as a party of ours (our `iss`).
    pub actor_iss: Option<String>,
    /// May call `POST /introspect` (a resource server). It sees the claims only of
    /// tokens whose `aud` names it (one of `audiences`) or that were issued to it.
    pub introspect: bool,
}

/// How a client proves who it is.
#[derive(Debug, Clone)]
pub enum ClientCredential {
    /// `client_secret_basic` / `client_secret_post` (RFC 6749 §2.3.1).
    Secret(SecretSource),
    /// `private_key_jwt` (RFC 7523 §2.2): a JWT the client signs with its own key.
    PrivateKeyJwt(PrivateKeyJwtConfig),
    /// A Kubernetes projected service-account token of a `[[workload_issuers]]` cluster.
    Kubernetes {
        /// The `[[workload_issuers]]` name of the cluster.
        issuer: String,
        /// The service account's namespace.
        namespace: String,
        /// The service account's name.
        service_account: String,
    },
    /// A SPIFFE JWT-SVID of a `[[workload_issuers]]` trust domain.
    Spiffe {
        /// The `[[workload_issuers]]` name of the trust domain.
        issuer: String,
        /// The exact SPIFFE ID (`spiffe://trust-domain/path`).
        spiffe_id: String,
    },
    /// `tls_client_auth` (RFC 8705 §2.1): a certificate chaining to `ca_file`, bound to
    /// one subject name.
    TlsClientAuth {
        /// PEM trust anchors (a SPIFFE X.509 bundle in PEM works as one).
        ca_file: PathBuf,
        /// The one name the certificate must carry.
        subject: SubjectName,
    },
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): one of the registered certificates.
    SelfSignedTlsClientAuth(CertificateSource),
}

/// The subject name a `tls_client_auth` certificate is bound to (RFC 8705 §2.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectName {
    /// `tls_client_auth_san_uri`: a URI SAN (a SPIFFE ID, for instance), compared exactly.
    SanUri(String),
    /// `tls_client_auth_san_dns`: a DNS SAN, compared without regard to ASCII case.
    SanDns(String),
    /// `tls_client_auth_subject_dn`: the subject DN as RFC 4514 renders it.
    SubjectDn(String),
}

impl SubjectName {
    /// The bound name's value.
    pub fn value(&self) -> &str {
        match self {
            SubjectName::SanUri(v) | SubjectName::SanDns(v) | SubjectName::SubjectDn(v) => v,
        }
    }
}

/// Where a `self_signed_tls_client_auth` client's certificates are registered.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// PEM certificates.
    PemFile(PathBuf),
    /// A JWKS whose keys carry the certificates in `x5c` (RFC 8705 §2.2), inline (JSON).
    Jwks(String),
    /// The same, in a file.
    JwksFile(PathBuf),
}

/// A `private_key_jwt` client's keys and limits.
#[derive(Debug, Clone)]
pub struct PrivateKeyJwtConfig {
    /// Where its public keys are.
    pub keys: JwksSource,
    /// The algorithms its assertions may use (RFC 8725 §3.1; `none` and HS* impossible).
    pub algorithms: Vec<JwsAlgorithm>,
    /// Longest lifetime an assertion may claim (`exp - iat`).
    pub max_lifetime_seconds: u64,
}

/// Where a client's JWKS is.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// In the configuration (JSON text of the JWKS).
    Inline(String),
    /// In a file, re-read when its contents change.
    File(PathBuf),
    /// At a URL, fetched and cached like an issuer's keys.
    Uri {
        /// The JWKS URL.
        uri: reqwest::Url,
        /// Plain http allowed (loopback tests).
        allow_http: bool,
    },
}

impl ClientCredential {
    /// The RFC 8414 / RFC 7591 name of the method (our own names for the two federated
    /// assertions, which no registry names yet).
    pub fn method_name(&self) -> &'static str {
        match self {
            ClientCredential::Secret(_) => "client_secret_basic",
            ClientCredential::PrivateKeyJwt(_) => "private_key_jwt",
            ClientCredential::Kubernetes { .. } => "kubernetes_service_account_jwt",
            ClientCredential::Spiffe { .. } => "spiffe_jwt",
            ClientCredential::TlsClientAuth { .. } => "tls_client_auth",
            ClientCredential::SelfSignedTlsClientAuth(_) => "self_signed_tls_client_auth",
        }
    }

    /// The workload identity the client authenticates as, which becomes its identity
    /// for actor binding: `system:serviceaccount:<ns>:<name>`, its SPIFFE ID, the name its
    /// certificate is bound to. `None` where it is the client id.
    pub fn identity(&self) -> Option<String> {
        match self {
            ClientCredential::Kubernetes {
                namespace,
                service_account,
                ..
            } => Some(format!(
                "system:serviceaccount:{namespace}:{service_account}"
            )),
            ClientCredential::Spiffe { spiffe_id, .. } => Some(spiffe_id.clone()),
            ClientCredential::TlsClientAuth { subject, .. } => Some(subject.value().to_owned()),
            ClientCredential::Secret(_)
            | ClientCredential::PrivateKeyJwt(_)
            | ClientCredential::SelfSignedTlsClientAuth(_) => None,
        }
    }

    /// Whether the client authenticates with a certificate (RFC 8705).
    pub fn uses_certificate(&self) -> bool {
        matches!(
            self,
            ClientCredential::TlsClientAuth { .. } | ClientCredential::SelfSignedTlsClientAuth(_)
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    id: String,
    secret: Option<RawSecret>,
    private_key_jwt: Option<RawPrivateKeyJwt>,
    kubernetes: Option<RawKubernetes>,
    spiffe: Option<RawSpiffe>,
    tls_client_auth: Option<RawTlsClientAuth>,
    self_signed_tls_client_auth: Option<RawSelfSigned>,
    audiences: Option<Vec<String>>,
    actor_sub: Option<String>,
    actor_iss: Option<String>,
    introspect: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivateKeyJwt {
    jwks: Option<toml::Value>,
    jwks_file: Option<String>,
    jwks_uri: Option<String>,
    #[serde(default)]
    allow_http: bool,
    algorithms: Option<Vec<String>>,
    max_lifetime_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    issuer: String,
    service_account: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpiffe {
    issuer: String,
    spiffe_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsClientAuth {
    ca_file: String,
    san_uri: Option<String>,
    san_dns: Option<String>,
    subject_dn: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelfSigned {
    cert_file: Option<String>,
    jwks: Option<toml::Value>,
    jwks_file: Option<String>,
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

/// `clients[*].kubernetes.issuer` / `spiffe.issuer`: a `[[workload_issuers]]` of that kind.
pub(super) fn check_workload_issuers(
    clients: &[ClientConfig],
    workload: &[super::WorkloadIssuerConfig],
    cx: &mut Checker,
) {
    for client in clients {
        let (field, name, kubernetes) = match &client.credential {
            ClientCredential::Kubernetes { issuer, .. } => ("kubernetes.issuer", issuer, true),
            ClientCredential::Spiffe { issuer, .. } => ("spiffe.issuer", issuer, false),
            _ => continue,
        };
        let found = workload.iter().find(|w| &w.name == name);
        let fits = found.is_some_and(|w| {
            matches!(w.kind, super::WorkloadKind::Kubernetes { .. }) == kubernetes
        });
        if !fits {
            let kind = if kubernetes { "kubernetes" } else { "spiffe" };
            cx.error(
                &format!("clients[{}].{field}", client.id),
                &format!("must name a [[workload_issuers]] entry of kind = \"{kind}\""),
            );
        }
        if let (ClientCredential::Spiffe { spiffe_id, .. }, Some(w)) = (&client.credential, found)
            && let super::WorkloadKind::Spiffe { trust_domain, .. } = &w.kind
            && spiffe_trust_domain(spiffe_id) != Some(trust_domain.as_str())
        {
            cx.error(
                &format!("clients[{}].spiffe.spiffe_id", client.id),
                &format!("must be in the trust domain {trust_domain:?} of its issuer"),
            );
        }
    }
}

/// The trust domain of a SPIFFE ID (`spiffe://<trust domain>/<path>`).
pub fn spiffe_trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let (domain, path) = rest.split_once('/')?;
    (!domain.is_empty() && !path.is_empty()).then_some(domain)
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
        let credential = self.credential(&name, cx);
        // audiences and actor_sub default to the id: when it is malformed, so would they
        // be, and that is already said.
        let audiences = match self.audiences {
            Some(audiences) => Some(audiences),
            None => well_formed.then(|| vec![self.id.clone()]),
        };
        let audiences = audiences.and_then(|a| cx.check(&at("audiences"), check_audiences(a)));
        let identity = credential.as_ref().and_then(ClientCredential::identity);
        let actor_sub = match (self.actor_sub, &identity) {
            (Some(sub), Some(identity)) if &sub != identity => {
                cx.error(
                    &at("actor_sub"),
                    &format!("the client authenticates as {identity:?}: that is its actor identity (leave actor_sub out)"),
                );
                None
            }
            (Some(sub), _) => Some(sub),
            (None, Some(identity)) => Some(identity.clone()),
            (None, None) => well_formed.then(|| self.id.clone()),
        };
        let actor_sub = actor_sub.and_then(|s| cx.check(&at("actor_sub"), non_empty(s)));
        Some(ClientConfig {
            id: id?,
            identity,
            credential: credential?,
            audiences: audiences?,
            actor_sub: actor_sub?,
            actor_iss: self.actor_iss,
            introspect: self.introspect.unwrap_or(false),
        })
    }

    /// The one authentication method the client declares.
    fn credential(&self, name: &str, cx: &mut Checker) -> Option<ClientCredential> {
        let at = |f: &str| format!("clients[{name}].{f}");
        let declared = [
            self.secret.is_some(),
            self.private_key_jwt.is_some(),
            self.kubernetes.is_some(),
            self.spiffe.is_some(),
            self.tls_client_auth.is_some(),
            self.self_signed_tls_client_auth.is_some(),
        ];
        if declared.iter().filter(|d| **d).count() != 1 {
            cx.error(
                &format!("clients[{name}]"),
                "set exactly one authentication method: secret, private_key_jwt, kubernetes, spiffe, tls_client_auth or self_signed_tls_client_auth",
            );
            return None;
        }
        let result = if let Some(secret) = &self.secret {
            return cx
                .check(&at("secret"), secret.validate_ref(cx.base))
                .map(ClientCredential::Secret);
        } else if let Some(p) = &self.private_key_jwt {
            p.validate(cx.base)
                .map_err(|(f, r)| (format!("private_key_jwt{f}"), r))
        } else if let Some(k) = &self.kubernetes {
            k.validate()
                .map_err(|r| ("kubernetes.service_account".to_owned(), r))
        } else if let Some(s) = &self.spiffe {
            match spiffe_trust_domain(&s.spiffe_id) {
                Some(_) => Ok(ClientCredential::Spiffe {
                    issuer: s.issuer.clone(),
                    spiffe_id: s.spiffe_id.clone(),
                }),
                None => Err((
                    "spiffe.spiffe_id".to_owned(),
                    "must be a SPIFFE ID, spiffe://<trust domain>/<path>".to_owned(),
                )),
            }
        } else if let Some(t) = &self.tls_client_auth {
            t.validate(cx.base)
                .map_err(|(f, r)| (format!("tls_client_auth.{f}"), r))
        } else if let Some(s) = &self.self_signed_tls_client_auth {
            s.validate(cx.base)
                .map_err(|r| ("self_signed_tls_client_auth".to_owned(), r))
        } else {
            return None;
        };
        result.map_err(|(f, r)| cx.error(&at(&f), &r)).ok()
    }
}

impl RawPrivateKeyJwt {
    fn validate(&self, base: &std::path::Path) -> Result<ClientCredential, (String, String)> {
        let keys = jwks_source(
            &self.jwks,
            &self.jwks_file,
            &self.jwks_uri,
            self.allow_http,
            base,
        )
        .map_err(|r| (String::new(), r))?;
        let algorithms = super::issuers::algorithms(self.algorithms.clone())
            .map_err(|r| (".algorithms".to_owned(), r))?;
        let max_lifetime_seconds = bounded(
            self.max_lifetime_seconds,
            DEFAULT_ASSERTION_MAX_LIFETIME,
            10,
            3600,
        )
        .map_err(|r| (".max_lifetime_seconds".to_owned(), r))?;
        Ok(ClientCredential::PrivateKeyJwt(PrivateKeyJwtConfig {
            keys,
            algorithms,
            max_lifetime_seconds,
        }))
    }
}

/// Exactly one of an inline JWKS, a JWKS file and a JWKS URL.
fn jwks_source(
    inline: &Option<toml::Value>,
    file: &Option<String>,
    uri: &Option<String>,
    allow_http: bool,
    base: &std::path::Path,
) -> Result<JwksSource, String> {
    match (inline, file, uri) {
        (Some(jwks), None, None) => serde_json::to_string(jwks)
            .map(JwksSource::Inline)
            .map_err(|e| format!("jwks: {e}")),
        (None, Some(f), None) if !f.is_empty() => Ok(JwksSource::File(base.join(f))),
        (None, None, Some(u)) => {
            let uri = reqwest::Url::parse(u).map_err(|e| format!("jwks_uri: not a URL: {e}"))?;
            if !url_allowed(&uri, allow_http) {
                return Err("jwks_uri: must be an https URL (http only with allow_http = true, for loopback tests)".into());
            }
            Ok(JwksSource::Uri { uri, allow_http })
        }
        _ => Err("set exactly one of jwks, jwks_file, jwks_uri".into()),
    }
}

impl RawKubernetes {
    fn validate(&self) -> Result<ClientCredential, String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        match self.service_account.split_once(':') {
            Some((ns, sa)) if name_ok(ns) && name_ok(sa) => Ok(ClientCredential::Kubernetes {
                issuer: self.issuer.clone(),
                namespace: ns.to_owned(),
                service_account: sa.to_owned(),
            }),
            _ => Err("must be <namespace>:<service account name> (Kubernetes names)".into()),
        }
    }
}

impl RawTlsClientAuth {
    fn validate(&self, base: &std::path::Path) -> Result<ClientCredential, (String, String)> {
        if self.ca_file.is_empty() {
            return Err(("ca_file".into(), "must name a PEM file".into()));
        }
        let subject = match (&self.san_uri, &self.san_dns, &self.subject_dn) {
            (Some(v), None, None) if !v.is_empty() => SubjectName::SanUri(v.clone()),
            (None, Some(v), None) if !v.is_empty() => SubjectName::SanDns(v.clone()),
            (None, None, Some(v)) if !v.is_empty() => SubjectName::SubjectDn(v.clone()),
            _ => {
                return Err((
                    "san_uri".into(),
                    "set exactly one of san_uri, san_dns, subject_dn (non-empty)".into(),
                ));
            }
        };
        Ok(ClientCredential::TlsClientAuth {
            ca_file: base.join(&self.ca_file),
            subject,
        })
    }
}

impl RawSelfSigned {
    fn validate(&self, base: &std::path::Path) -> Result<ClientCredential, String> {
        let source = match (&self.cert_file, &self.jwks, &self.jwks_file) {
            (Some(f), None, None) if !f.is_empty() => CertificateSource::PemFile(base.join(f)),
            (None, Some(jwks), None) => CertificateSource::Jwks(
                serde_json::to_string(jwks).map_err(|e| format!("jwks: {e}"))?,
            ),
            (None, None, Some(f)) if !f.is_empty() => CertificateSource::JwksFile(base.join(f)),
            _ => return Err("set exactly one of cert_file, jwks, jwks_file".into()),
        };
        Ok(ClientCredential::SelfSignedTlsClientAuth(source))
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
