//! The client registry: every configured client, with what policy and minting see of it
//! ([`RegisteredClient`]) and how it proves itself (`Credential`, one variant per
//! method). Built once at start-up: secrets resolved, key files and trust anchors read,
//! key caches made (their keepers run as background tasks).

use std::collections::HashMap;
use std::sync::Arc;

use super::RegisteredClient;
use super::keys::{ClientKeys, KeyFile};
use super::kubernetes::KubernetesBinding;
use super::private_key_jwt::ClientKey;
use super::secret::SecretDigest;
use super::self_signed::RegisteredCertificates;
use super::spiffe::SpiffeBinding;
use super::tls_client_auth::PkiBinding;
use super::{AuthMethod, Task};
use crate::clock::Clock;
use crate::config::{
    BundleSource, ClientConfig, ClientCredential, Config, ConfigError, JwksLocation, JwksSource,
    WorkloadIssuerConfig, WorkloadKind,
};
use crate::jose::JwsAlgorithm;
use crate::upstream::jwks::{JwksCache, KeyFormat, KeySource};

/// How a registered client proves itself: exactly one method per client.
pub(crate) enum Credential {
    /// A shared secret (`client_secret_basic` or `client_secret_post`), kept as its digest.
    Secret(SecretDigest),
    /// Its own key pair (`private_key_jwt`).
    PrivateKeyJwt(ClientKey),
    /// A Kubernetes service account of a trusted cluster.
    Kubernetes(KubernetesBinding),
    /// A SPIFFE ID of a trusted trust domain, by JWT-SVID.
    Spiffe(SpiffeBinding),
    /// A certificate chaining to its trust anchors, bound to one name.
    TlsClientAuth(PkiBinding),
    /// One of its registered certificates.
    SelfSignedTls(RegisteredCertificates),
}

/// One registered client.
pub(crate) struct Registered {
    pub(crate) client: Arc<RegisteredClient>,
    pub(crate) credential: Credential,
}

/// The keys of one workload issuer, shared by its clients.
pub(crate) struct WorkloadKeys {
    pub(crate) config: WorkloadIssuerConfig,
    pub(crate) keys: Arc<ClientKeys>,
}

/// Every registered client by id, and by the (`iss`, `sub`) its assertions carry.
pub(crate) struct ClientRegistry {
    clients: HashMap<String, Registered>,
    /// `(iss, sub)` of the assertions a client presents → its id. `iss` is empty for
    /// JWT-SVIDs, whose `iss` is optional: their SPIFFE ID alone names them.
    by_assertion: HashMap<(String, String), String>,
    /// The tasks of the keys (keepers, file watches), taken once.
    tasks: std::sync::Mutex<Vec<Task>>,
}

impl ClientRegistry {
    /// Registers the clients of `config`, resolving every credential now, at start-up.
    pub(crate) fn new(
        config: &Config,
        http: &reqwest::Client,
        clock: &Clock,
    ) -> Result<Self, ConfigError> {
        let origin = config.origin.as_str();
        let mut tasks: Vec<Task> = Vec::new();
        let mut workload: HashMap<String, Arc<WorkloadKeys>> = HashMap::new();
        for w in &config.workload_issuers {
            let keys = workload_keys(w, http, clock, origin)?;
            tasks.extend(keys.tasks());
            let keys = Arc::new(WorkloadKeys {
                config: w.clone(),
                keys: Arc::new(keys),
            });
            workload.insert(w.name.clone(), keys);
        }
        let mut clients = HashMap::with_capacity(config.clients.len());
        let mut by_assertion = HashMap::new();
        for c in &config.clients {
            let at = |field: &str| format!("clients[{}].{field}", c.id);
            let credential = credential(c, &workload, http, clock, &mut tasks)
                .map_err(|(field, reason)| ConfigError::new(origin, at(field), reason))?;
            if let Some(key) = assertion_key(c, &workload)
                && let Some(other) = by_assertion.insert(key, c.id.clone())
            {
                return Err(ConfigError::new(
                    origin,
                    at("id"),
                    format!("authenticates as the same workload as client {other:?}"),
                ));
            }
            let client = Arc::new(RegisteredClient {
                id: c.id.clone(),
                audiences: c.audiences.clone(),
                actor_sub: c.actor_sub.clone(),
                actor_iss: c.actor_iss.clone(),
                identity: c.identity.clone(),
                introspect: c.introspect,
            });
            clients.insert(c.id.clone(), Registered { client, credential });
        }
        Ok(Self {
            clients,
            by_assertion,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// The client registered as `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&Registered> {
        self.clients.get(id)
    }

    /// The client whose assertions carry `iss` and `sub` (a JWT-SVID's SPIFFE ID alone).
    pub(crate) fn by_assertion(&self, iss: Option<&str>, sub: &str) -> Option<&Registered> {
        let key = (iss.unwrap_or_default().to_owned(), sub.to_owned());
        let id = self
            .by_assertion
            .get(&key)
            .or_else(|| self.by_assertion.get(&(String::new(), sub.to_owned())))?;
        self.clients.get(id)
    }

    /// The methods clients are registered with, each once, in a stable order.
    pub(crate) fn methods(&self) -> Vec<AuthMethod> {
        let all = [
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::PrivateKeyJwt,
            AuthMethod::KubernetesServiceAccount,
            AuthMethod::SpiffeJwt,
            AuthMethod::TlsClientAuth,
            AuthMethod::SelfSignedTlsClientAuth,
        ];
        all.into_iter()
            .filter(|m| {
                self.clients.values().any(|r| {
                    matches!(
                        (m, &r.credential),
                        (
                            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost,
                            Credential::Secret(_)
                        ) | (AuthMethod::PrivateKeyJwt, Credential::PrivateKeyJwt(_))
                            | (
                                AuthMethod::KubernetesServiceAccount,
                                Credential::Kubernetes(_)
                            )
                            | (AuthMethod::SpiffeJwt, Credential::Spiffe(_))
                            | (AuthMethod::TlsClientAuth, Credential::TlsClientAuth(_))
                            | (
                                AuthMethod::SelfSignedTlsClientAuth,
                                Credential::SelfSignedTls(_)
                            )
                    )
                })
            })
            .collect()
    }

    /// The algorithms JWT assertions may use, over every client that presents one.
    pub(crate) fn assertion_algorithms(&self) -> Vec<&'static str> {
        let mut seen: Vec<JwsAlgorithm> = Vec::new();
        for r in self.clients.values() {
            let algorithms = match &r.credential {
                Credential::PrivateKeyJwt(key) => key.algorithms(),
                Credential::Kubernetes(b) => &b.issuer.config.algorithms,
                Credential::Spiffe(b) => &b.issuer.config.algorithms,
                _ => continue,
            };
            seen.extend(
                algorithms
                    .iter()
                    .filter(|a| !seen.contains(a))
                    .collect::<Vec<_>>(),
            );
        }
        JwsAlgorithm::ALL
            .into_iter()
            .filter(|a| seen.contains(a))
            .map(JwsAlgorithm::as_str)
            .collect()
    }

    /// The key keepers and file watches, once (later calls get none).
    pub(crate) fn tasks(&self) -> Vec<Task> {
        std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The `(iss, sub)` a client's assertions carry, for finding it without `client_id`.
fn assertion_key(
    c: &ClientConfig,
    workload: &HashMap<String, Arc<WorkloadKeys>>,
) -> Option<(String, String)> {
    match &c.credential {
        ClientCredential::PrivateKeyJwt(_) => Some((c.id.clone(), c.id.clone())),
        ClientCredential::Kubernetes { issuer, .. } => {
            let iss = match &workload.get(issuer)?.config.kind {
                WorkloadKind::Kubernetes { issuer, .. } => issuer.clone(),
                WorkloadKind::Spiffe { .. } => return None,
            };
            Some((iss, c.identity.clone()?))
        }
        ClientCredential::Spiffe { spiffe_id, .. } => Some((String::new(), spiffe_id.clone())),
        _ => None,
    }
}

/// The credential of one client; errors name the field under the client.
fn credential(
    c: &ClientConfig,
    workload: &HashMap<String, Arc<WorkloadKeys>>,
    http: &reqwest::Client,
    clock: &Clock,
    tasks: &mut Vec<Task>,
) -> Result<Credential, (&'static str, String)> {
    let issuer_of = |name: &String| {
        workload
            .get(name)
            .cloned()
            .ok_or(("issuer", format!("no [[workload_issuers]] named {name:?}")))
    };
    Ok(match &c.credential {
        ClientCredential::Secret(source) => {
            let secret = source.resolve().map_err(|r| ("secret", r))?;
            Credential::Secret(SecretDigest::of(secret.expose()))
        }
        ClientCredential::PrivateKeyJwt(p) => {
            let keys = client_keys(&c.id, &p.keys, &p.algorithms, http, clock)
                .map_err(|r| ("private_key_jwt", r))?;
            tasks.extend(keys.tasks());
            Credential::PrivateKeyJwt(ClientKey::new(
                Arc::new(keys),
                p.algorithms.clone(),
                p.max_lifetime_seconds,
            ))
        }
        ClientCredential::Kubernetes {
            issuer,
            namespace,
            service_account,
        } => Credential::Kubernetes(KubernetesBinding {
            issuer: issuer_of(issuer).map_err(|(_, r)| ("kubernetes.issuer", r))?,
            namespace: namespace.clone(),
            service_account: service_account.clone(),
        }),
        ClientCredential::Spiffe { issuer, spiffe_id } => Credential::Spiffe(SpiffeBinding {
            issuer: issuer_of(issuer).map_err(|(_, r)| ("spiffe.issuer", r))?,
            spiffe_id: spiffe_id.clone(),
        }),
        ClientCredential::TlsClientAuth { ca_file, subject } => Credential::TlsClientAuth(
            PkiBinding::load(ca_file, subject.clone())
                .map_err(|r| ("tls_client_auth.ca_file", r))?,
        ),
        ClientCredential::SelfSignedTlsClientAuth(source) => Credential::SelfSignedTls(
            RegisteredCertificates::load(source).map_err(|r| ("self_signed_tls_client_auth", r))?,
        ),
    })
}

/// A `private_key_jwt` client's keys: inline, a watched file, or a cached URL.
fn client_keys(
    id: &str,
    source: &JwksSource,
    algorithms: &[JwsAlgorithm],
    http: &reqwest::Client,
    clock: &Clock,
) -> Result<ClientKeys, String> {
    match source {
        JwksSource::Inline(json) => ClientKeys::inline(json.as_bytes(), algorithms),
        JwksSource::File(path) => Ok(ClientKeys::File(Arc::new(KeyFile::load(
            path.clone(),
            KeyFormat::Jwks,
            algorithms.to_vec(),
        )?))),
        JwksSource::Uri { uri, allow_http } => {
            Ok(ClientKeys::Remote(Arc::new(JwksCache::from_source(
                KeySource {
                    name: format!("client:{id}"),
                    issuer: String::new(),
                    location: JwksLocation::Uri(uri.clone()),
                    allow_http: *allow_http,
                    algorithms: algorithms.to_vec(),
                    max_staleness: 12 * 3600,
                    bearer_token_file: None,
                    format: KeyFormat::Jwks,
                },
                http.clone(),
                clock.clone(),
            ))))
        }
    }
}

/// A workload issuer's keys: the cluster's JWKS (discovered or configured, with its
/// bearer token and CA), or the trust domain's bundle (file or endpoint).
fn workload_keys(
    w: &WorkloadIssuerConfig,
    http: &reqwest::Client,
    clock: &Clock,
    origin: &str,
) -> Result<ClientKeys, ConfigError> {
    let at = |field: &str| format!("workload_issuers[{}].{field}", w.name);
    let source = |issuer: String, location, bearer, format| KeySource {
        name: format!("workload:{}", w.name),
        issuer,
        location,
        allow_http: w.allow_http,
        algorithms: w.algorithms.clone(),
        max_staleness: w.max_staleness_seconds,
        bearer_token_file: bearer,
        format,
    };
    match &w.kind {
        WorkloadKind::Kubernetes {
            issuer,
            jwks,
            bearer_token_file,
            ca_file,
        } => {
            let http = match ca_file {
                Some(path) => crate::upstream::client_with_ca(path)
                    .map_err(|r| ConfigError::new(origin, at("ca_file"), r))?,
                None => http.clone(),
            };
            let source = source(
                issuer.clone(),
                jwks.clone(),
                bearer_token_file.clone(),
                KeyFormat::Jwks,
            );
            Ok(ClientKeys::Remote(Arc::new(JwksCache::from_source(
                source,
                http,
                clock.clone(),
            ))))
        }
        WorkloadKind::Spiffe { bundle, .. } => match bundle {
            BundleSource::File(path) => Ok(ClientKeys::File(Arc::new(
                KeyFile::load(path.clone(), KeyFormat::SpiffeBundle, w.algorithms.clone())
                    .map_err(|r| ConfigError::new(origin, at("bundle_file"), r))?,
            ))),
            BundleSource::Endpoint(url) => {
                let source = source(
                    String::new(),
                    JwksLocation::Uri(url.clone()),
                    None,
                    KeyFormat::SpiffeBundle,
                );
                Ok(ClientKeys::Remote(Arc::new(JwksCache::from_source(
                    source,
                    http.clone(),
                    clock.clone(),
                ))))
            }
        },
    }
}
