//! Assembly: every long-lived part built once from the [`Config`], no globals.
//!
//! `App::build` does all the start-up I/O (key file, secrets from env or files, policy
//! files) and fails with a [`ConfigError`] naming the field, before any port is bound.
//! It returns what it built ([`Built`]): the [`App`] that answers requests, the
//! listeners' [`Limits`] and the [`Background`] work the service needs (key keepers,
//! reload watches). It starts no task and opens no socket; `server::run` does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::audit::RefusalLog;
use crate::client_auth::{AuthMethod, ClientAuthenticator};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::exchange::{Exchanger, Support};
use crate::keys::jwks_document;
use crate::keys::ring::KeyStore;
use crate::lifecycle::Lifecycle;
use crate::lifecycle::endpoints::{Admin, AdminRevocation};
use crate::metrics::{Metrics, Snapshot};
use crate::mint::Minter;
use crate::oauth::{GRANT_TYPE_TOKEN_EXCHANGE, TokenType};
use crate::policy::PolicyStore;
use crate::ratelimit::RateLimiter;
use crate::server::Limits;
use crate::store::Store;
use crate::token::TokenValidator;
use crate::upstream::jwks::JwksCache;

/// Everything [`App::build`] built.
pub struct Built {
    /// What answers requests.
    pub app: App,
    /// The listeners' limits.
    pub limits: Limits,
    /// What must run beside the listeners.
    pub background: Background,
}

/// The long-running work of the service, started by `server::run`: one keeper per
/// upstream issuer's JWKS, and the watches that reload the policy and the signing keys
/// when their files change.
pub struct Background {
    /// The upstream issuers' key caches, each kept by its own task.
    pub keepers: Vec<Arc<JwksCache>>,
    /// The policy in force (watched).
    pub policy: Arc<PolicyStore>,
    /// Our signing keys (watched).
    pub keys: Arc<KeyStore>,
    /// The audit stream's refusal windows (closed by a periodic flush).
    pub refusals: Arc<RefusalLog>,
    /// Client authentication's key keepers and key-file watches.
    pub client_keys: Vec<crate::client_auth::Task>,
}

impl Background {
    /// Spawns every task; they run until aborted.
    pub fn spawn(self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = self
            .keepers
            .into_iter()
            .map(|cache| tokio::spawn(async move { cache.keep().await }))
            .collect();
        tasks.push(tokio::spawn(self.policy.watch()));
        tasks.push(tokio::spawn(self.keys.watch()));
        tasks.push(tokio::spawn(self.refusals.run()));
        tasks.extend(self.client_keys.into_iter().map(tokio::spawn));
        tasks
    }
}

/// The running service's parts.
pub struct App {
    exchanger: Exchanger,
    /// The forward-auth endpoint, when `[forward_auth]` configures one.
    forward_auth: Option<crate::egress::forward_auth::ForwardAuth>,
    policy: Arc<PolicyStore>,
    keys: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    clock: Clock,
    started_at: u64,
    max_body_bytes: usize,
    /// One permit per byte of request body buffered at once (`server.max_buffered_body_bytes`).
    body_budget: tokio::sync::Semaphore,
    /// Set once shutdown has begun: readiness fails from then on.
    draining: std::sync::atomic::AtomicBool,
    metadata: serde_json::Map<String, serde_json::Value>,
    /// `max-age` of our JWKS and metadata documents (see [`App::documents_max_age`]).
    documents_max_age: u64,
    /// The shared store (lineage, revocation, rate limits; replay caches may use it).
    store: Store,
    /// The admin listener's revocation endpoint, when configured.
    admin_revocation: Admin,
}

/// How long others may cache our JWKS and metadata, at most: they change only with a key
/// reload or a restart, and resource servers refetch on an unknown `kid`.
const DOCUMENTS_MAX_AGE: u64 = 300;

impl App {
    /// Builds every part. Reads the key file, client secrets and policy files.
    pub fn build(config: &Config, clock: Clock) -> Result<Built, ConfigError> {
        let metrics = Arc::new(Metrics::new());
        let keys = Arc::new(load_keys(config, clock.clone(), Arc::clone(&metrics))?);
        let documents_max_age = documents_max_age(&config.signing.key);
        let http = crate::upstream::client().map_err(|e| {
            ConfigError::new(&config.origin, "issuers", format!("HTTP client: {e}"))
        })?;
        // The store is built once and shared: the private_key_jwt replay cache, lineage,
        // revocation markers and rate-limit counters (`[store]` decides the backend).
        let store = Store::from_config(
            &config.store,
            clock.clone(),
            Arc::clone(&metrics),
            &config.origin,
        )?;
        let clients = ClientAuthenticator::new(config, store.clone(), &http, clock.clone())?;
        let metadata = metadata(config, &clients);
        let policy = Arc::new(PolicyStore::load(config, Arc::clone(&metrics))?);
        let validator = TokenValidator::new(
            config,
            Arc::clone(&keys),
            &http,
            clock.clone(),
            Arc::clone(&metrics),
        )?;
        let refusals = Arc::new(RefusalLog::new(
            Duration::from_secs(config.server.audit_refusal_window_seconds),
            config.server.audit_refusal_max_keys,
        ));
        let background = Background {
            refusals: Arc::clone(&refusals),
            keepers: validator.keepers(),
            policy: Arc::clone(&policy),
            keys: Arc::clone(&keys),
            client_keys: clients.tasks(),
        };
        let minter = Minter::new(config.issuer.clone(), Arc::clone(&keys));
        let shared = shared_state(config, &store, &clock, &metrics, refusals)?;
        let exchanger = Exchanger::new(
            clients,
            validator,
            Arc::clone(&policy),
            minter,
            clock.clone(),
            Arc::clone(&metrics),
            shared,
        )
        .with_reissue_cache(crate::egress::cache::ReissueCache::new(
            &config.reissue_cache,
        ));
        let forward_auth = match &config.forward_auth {
            Some(section) => Some(
                crate::egress::forward_auth::ForwardAuth::new(section).ok_or_else(|| {
                    ConfigError::new(&config.origin, "forward_auth", "invalid header name")
                })?,
            ),
            None => None,
        };
        let app = App {
            exchanger,
            forward_auth,
            policy,
            keys,
            metrics,
            started_at: clock.now(),
            clock,
            max_body_bytes: config.server.max_body_bytes,
            body_budget: tokio::sync::Semaphore::new(config.server.max_buffered_body_bytes),
            draining: std::sync::atomic::AtomicBool::new(false),
            metadata,
            documents_max_age,
            store,
            admin_revocation: admin_revocation(config)?,
        };
        Ok(Built {
            app,
            limits: limits(config),
            background,
        })
    }

    /// The exchange pipeline.
    pub fn exchanger(&self) -> &Exchanger {
        &self.exchanger
    }

    /// The forward-auth endpoint, when configured.
    pub fn forward_auth(&self) -> Option<&crate::egress::forward_auth::ForwardAuth> {
        self.forward_auth.as_ref()
    }

    /// The shared store `[store]` configures (in-process by default, or Redis/Valkey):
    /// lineage, revocation markers and rate-limit counters live there, and so should any
    /// other state replicas must agree on (replay caches).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The admin listener's `POST /admin/revoke`, when `[lifecycle] admin_secret` is set.
    pub fn admin_revocation(&self) -> Option<&AdminRevocation> {
        self.admin_revocation.as_deref()
    }

    /// Reloads the policy and the signing key directory now (SIGHUP); what fails to load
    /// keeps the previous one in force.
    pub fn reload(&self) {
        let _ = self.policy.reload(true);
        let _ = self.keys.reload(true);
    }

    /// Largest accepted request body.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The byte budget every request body being read draws from.
    pub fn body_budget(&self) -> &tokio::sync::Semaphore {
        &self.body_budget
    }

    /// `GET /.well-known/jwks.json`: the keys the ring publishes now (they change on
    /// schedule, so this is built per request; JWKS requests are rare).
    pub fn jwks_document(&self) -> Bytes {
        let ring = self.keys.current();
        Bytes::from(jwks_document(&ring.published(self.clock.now())).to_string())
    }

    /// The `Cache-Control: max-age` of our JWKS and metadata: 5 minutes, and with a key
    /// directory at most half of `publish_ahead_seconds`, so that a key published ahead
    /// is in every cached copy before it signs.
    pub fn documents_max_age(&self) -> u64 {
        self.documents_max_age
    }

    /// `GET /.well-known/oauth-authorization-server` (the signing algorithms of the keys in
    /// force added per request: a key reload may change them).
    pub fn metadata_document(&self) -> Bytes {
        let ring = self.keys.current();
        let algorithms: Vec<&str> = ring.algorithms().iter().map(|a| a.as_str()).collect();
        let mut document = self.metadata.clone();
        document.insert(
            "token_signing_alg_values_supported".into(),
            algorithms.into(),
        );
        Bytes::from(serde_json::Value::Object(document).to_string())
    }

    /// The metrics, which the HTTP edge records into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `GET /metrics` (admin listener): the OpenMetrics text of everything.
    pub fn metrics_text(&self) -> String {
        let validator = self.exchanger.validator();
        let ring = self.keys.current();
        let now = self.clock.now();
        let signer = ring.signer(now);
        self.metrics.encode(Snapshot {
            ready: self.is_ready(),
            signing_key: signer.map_or((String::new(), "none"), |k| {
                (k.key().kid().to_owned(), k.key().alg().as_str())
            }),
            signing_key_loaded_at: signer
                .map_or(self.started_at, |k| k.not_before().max(self.started_at)),
            signing_keys_published: ring.published(now).len(),
            jwks: validator.jwks_stats(),
            introspection: validator.introspection_stats(),
            log_dropped: crate::telemetry::dropped(),
            reissue_cache: self.exchanger.reissue_cache().map(|c| c.stats()),
            store: {
                let store = self.exchanger.clients().store();
                store.entries().zip(store.capacity())
            },
            traces: crate::telemetry::otlp::stats(),
        })
    }

    /// Readiness: not shutting down, our key is loaded (it is, once built) and every
    /// required issuer's keys have been fetched.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.exchanger.validator().is_ready()
    }

    /// Shutdown has begun: `/readyz` answers 503 while requests are still served.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The signing keys the configuration names (`signing.key_file` or `signing.key_dir`).
fn load_keys(
    config: &Config,
    clock: Clock,
    metrics: Arc<Metrics>,
) -> Result<KeyStore, ConfigError> {
    // A key stays published after its successor took over until its last token has
    // expired: the longest lifetime plus the leeway verifiers allow.
    let retire_after = config
        .tokens
        .max_ttl_seconds
        .saturating_add(config.tokens.leeway_seconds);
    KeyStore::load(
        &config.signing.key,
        config.signing.algorithm,
        retire_after,
        clock,
        metrics,
        &config.origin,
    )
}

/// The JWKS a server with this configuration would publish now at
/// `/.well-known/jwks.json` (`gleipnir jwks`): public keys only. Reads the signing key
/// file or key directory and nothing else (no secret, no policy, no issuer).
pub fn published_jwks(config: &Config, clock: Clock) -> Result<serde_json::Value, ConfigError> {
    let now = clock.now();
    let keys = load_keys(config, clock, Arc::new(Metrics::new()))?;
    Ok(jwks_document(&keys.current().published(now)))
}

/// The lineage and revocation the store holds, and the rate limiter counting in it (with
/// the audit's refusal log, the pipeline's [`Support`]).
fn shared_state(
    config: &Config,
    store: &Store,
    clock: &Clock,
    metrics: &Arc<Metrics>,
    refusals: Arc<RefusalLog>,
) -> Result<Support, ConfigError> {
    let origin = &config.origin;
    let field = "store.seal_key";
    let sealer = match &config.store.seal_key {
        Some(source) => {
            let secret = source
                .resolve()
                .map_err(|r| ConfigError::new(origin, field, r))?;
            crate::lifecycle::Sealer::from_secret(secret.expose())
        }
        // Replicas must open each other's sealed upstream tokens: a shared store with an
        // introspecting issuer needs a shared key.
        None if matches!(store, Store::Redis(_))
            && config.issuers.iter().any(|i| i.introspection.is_some()) =>
        {
            Err("required with backend = \"redis\" when an issuer has introspection (every replica must open the upstream tokens kept for re-checking)".to_owned())
        }
        None => crate::lifecycle::Sealer::ephemeral(),
    }
    .map_err(|r| ConfigError::new(origin, field, r))?;
    let lifecycle = Lifecycle::new(
        store.clone(),
        clock.clone(),
        Arc::clone(metrics),
        config.store.on_unavailable,
        (config.tokens.max_ttl_seconds, config.tokens.leeway_seconds),
        sealer,
    );
    let limiter = RateLimiter::new(store.clone(), clock.clone(), Arc::clone(metrics));
    Ok(Support {
        refusals,
        lifecycle: Arc::new(lifecycle),
        limiter,
    })
}

/// `[lifecycle] admin_secret`, resolved, with the upstream issuers it may name.
fn admin_revocation(config: &Config) -> Result<Admin, ConfigError> {
    let Some(source) = &config.store.admin_secret else {
        return Ok(None);
    };
    let secret = source
        .resolve()
        .map_err(|r| ConfigError::new(&config.origin, "lifecycle.admin_secret", r))?;
    let issuers = config.issuers.iter().map(|i| i.issuer.clone()).collect();
    Ok(Some(Arc::new(AdminRevocation::new(
        secret.expose(),
        issuers,
    ))))
}

/// The listeners' limits, from `[server]`.
fn limits(config: &Config) -> Limits {
    Limits {
        max_connections: config.server.max_connections,
        idle_timeout: Duration::from_secs(config.server.idle_timeout_seconds),
        request_timeout: Duration::from_secs(config.server.request_timeout_seconds),
        header_timeout: Duration::from_secs(config.server.header_timeout_seconds),
        admin_max_connections: config.server.admin_max_connections,
        max_header_bytes: config.server.max_header_bytes,
        drain: Duration::from_secs(config.server.drain_seconds),
        shutdown_grace: Duration::from_secs(config.server.shutdown_grace_seconds),
        max_requests_in_flight: config.server.max_requests_in_flight,
    }
}

fn documents_max_age(key: &crate::config::KeySource) -> u64 {
    match key {
        crate::config::KeySource::Dir {
            publish_ahead_seconds,
            ..
        } => DOCUMENTS_MAX_AGE.min(publish_ahead_seconds / 2),
        _ => DOCUMENTS_MAX_AGE,
    }
}

/// RFC 8414 §2 authorization server metadata.
/// `token_signing_alg_values_supported` is added per request: a key reload may change it.
/// The client authentication fields say exactly what is configured: the methods clients
/// are registered with, the algorithms their JWT assertions may use (when some client
/// uses one), and RFC 8705 §3.3 `tls_client_certificate_bound_access_tokens` when some
/// client authenticates with a certificate (a policy may then bind its tokens).
fn metadata(
    config: &Config,
    clients: &ClientAuthenticator,
) -> serde_json::Map<String, serde_json::Value> {
    let presentable =
        [TokenType::AccessToken, TokenType::Jwt, TokenType::IdToken].map(TokenType::urn);
    let methods: Vec<&str> = clients
        .methods()
        .into_iter()
        .map(AuthMethod::as_str)
        .collect();
    let mtls = clients.methods().iter().any(|m| {
        matches!(
            m,
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
        )
    });
    let algorithms = clients.assertion_algorithms();
    let mut document = serde_json::json!({
        "issuer": config.issuer,
        "token_endpoint": config.token_endpoint(),
        "jwks_uri": config.jwks_uri(),
        "grant_types_supported": [GRANT_TYPE_TOKEN_EXCHANGE],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": methods,
        // RFC 8414 §2 (RFC 7662, RFC 7009): callers authenticate as at the token endpoint.
        "introspection_endpoint": config.introspection_endpoint(),
        "introspection_endpoint_auth_methods_supported": methods,
        "revocation_endpoint": config.revocation_endpoint(),
        "revocation_endpoint_auth_methods_supported": methods,
        // Not registered by RFC 8414; named after RFC 8693's parameters.
        "subject_token_types_supported": presentable,
        "actor_token_types_supported": presentable,
        "requested_token_types_supported": [TokenType::AccessToken.urn(), TokenType::Jwt.urn()],
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    if !algorithms.is_empty() {
        for endpoint in ["token", "introspection", "revocation"] {
            document.insert(
                format!("{endpoint}_endpoint_auth_signing_alg_values_supported"),
                algorithms.clone().into(),
            );
        }
    }
    if mtls {
        document.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            true.into(),
        );
    }
    document
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::KeySource;

    #[test]
    fn documents_are_cached_for_less_than_half_the_publication_lead() {
        assert_eq!(documents_max_age(&KeySource::File(PathBuf::new())), 300);
        let dir = |ahead| KeySource::Dir {
            path: PathBuf::new(),
            publish_ahead_seconds: ahead,
            watch_seconds: 2,
        };
        assert_eq!(documents_max_age(&dir(3600)), 300);
        assert_eq!(documents_max_age(&dir(120)), 60);
        assert_eq!(documents_max_age(&dir(0)), 0);
    }
}
