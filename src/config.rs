//! Configuration: one TOML file, parsed into raw serde structs (`deny_unknown_fields`),
//! then validated completely into an immutable [`Config`].
//!
//! [`Config::from_toml`] is pure; [`Config::load`] reads the file. Everything that needs
//! the outside world (secrets from env or files, the key file, the policy directory) is
//! resolved by `App::build` (the TLS certificate and key by `server::tls::Tls::load`),
//! still before any port is bound. Every error names the file, the field and the reason,
//! and one run reports every problem of the file ([`ConfigErrors`]), not just the first.
//!
//! Each section of the file has its own module, holding its raw struct, its validated
//! type and the validator between them: `server`, `tls`, `signing`, `tokens`, `policy`,
//! `issuers`, `clients` (and `secret`, shared by the last two and `telemetry`), then
//! `telemetry`. Each records its problems
//! in a `Checker` and goes on; this module holds the top level and puts the sections
//! together.

mod clients;
mod egress;
mod issuers;
mod policy;
mod secret;
mod server;
mod signing;
mod store;
mod telemetry;
mod tls;
mod tokens;
mod workload;

use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

pub use clients::{
    CertificateSource, ClientConfig, ClientCredential, DEFAULT_ASSERTION_MAX_LIFETIME, JwksSource,
    PrivateKeyJwtConfig, SubjectName, spiffe_trust_domain,
};
pub use egress::{
    DEFAULT_FORWARD_AUTH_PATH, DEFAULT_REISSUE_CACHE_BYTES, ForwardAuthConfig, ForwardRoute,
    ReissueCacheConfig,
};
pub use issuers::{
    DEFAULT_MAX_TOKEN_LIFETIME, IntrospectionConfig, IssuerConfig, IssuerProfile, JwksLocation,
    url_allowed,
};
pub use policy::PolicySource;
pub use secret::{Secret, SecretSource};
pub use server::ServerConfig;
pub use signing::{KeySource, SigningConfig};
pub use store::{OnUnavailable, StoreBackend, StoreConfig};
pub use telemetry::{OTLP_HTTP_PROTOBUF, OtlpConfig, TelemetryConfig};
pub use tls::TlsConfig;
pub use tokens::TokenConfig;
pub use workload::{
    BundleSource, ClientCertificatesConfig, DEFAULT_FEDERATED_MAX_LIFETIME, WorkloadIssuerConfig,
    WorkloadKind,
};

use clients::RawClient;
use egress::{RawForwardAuth, RawReissueCache};
use issuers::RawIssuer;
use policy::RawPolicy;
use server::RawServer;
use signing::RawSigning;
use store::{RawLifecycle, RawStore};
use telemetry::RawTelemetry;
use tls::RawTls;
use tokens::RawTokens;
use workload::{RawClientCertificates, RawWorkloadIssuer};

/// A configuration problem: in which file, which field, and why.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{file}: {field}: {reason}")]
pub struct ConfigError {
    /// The file (or `<embedded>`).
    pub file: String,
    /// The field path, e.g. `issuers[corp].jwks_uri`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// A problem with `field` of `file`.
    pub fn new(
        file: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem found in a configuration, in the order the file is checked (its
/// sections as listed in the module docs, each field in file order). Never empty: one
/// run reports every independent mistake, so an operator fixes them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    first: ConfigError,
    rest: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The first problem: the one a check that stops at the first would have reported.
    pub fn first(&self) -> &ConfigError {
        &self.first
    }

    /// [`first`](Self::first), dropping the others (for callers that report one).
    pub fn into_first(self) -> ConfigError {
        self.first
    }

    /// Every problem, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    fn from_vec(errors: Vec<ConfigError>) -> Option<ConfigErrors> {
        let mut errors = errors.into_iter();
        let first = errors.next()?;
        Some(ConfigErrors {
            first,
            rest: errors.collect(),
        })
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(first: ConfigError) -> Self {
        ConfigErrors {
            first,
            rest: Vec::new(),
        }
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter =
        std::iter::Chain<std::iter::Once<&'a ConfigError>, std::slice::Iter<'a, ConfigError>>;

    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

/// One problem a line, each as a [`ConfigError`] shows itself.
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.first)?;
        for e in &self.rest {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Names an issuer whose tokens we accept: the service itself or a configured upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerId(u16);

impl IssuerId {
    /// gleipnir itself (its own tokens, for multi-hop re-exchange).
    pub const SELF: IssuerId = IssuerId(0);

    /// The upstream issuer at `index` of [`Config::issuers`].
    pub fn upstream(index: usize) -> IssuerId {
        IssuerId(u16::try_from(index + 1).unwrap_or(u16::MAX))
    }

    fn upstream_index(self) -> Option<usize> {
        usize::from(self.0).checked_sub(1)
    }
}

/// The name policies use for the service's own issuer.
pub const SELF_ISSUER_NAME: &str = "self";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for error messages.
    pub origin: String,
    /// Our `iss` value and the base URL of our endpoints.
    pub issuer: String,
    /// Listeners and request limits.
    pub server: ServerConfig,
    /// The signing key.
    pub signing: SigningConfig,
    /// Token validation and issuance settings.
    pub tokens: TokenConfig,
    /// Where the policy files are.
    pub policy: PolicySource,
    /// How often the policy directory is checked for changes (0: never; SIGHUP still
    /// reloads).
    pub policy_watch_seconds: u64,
    /// Upstream issuers we trust, in file order ([`IssuerId::upstream`]).
    pub issuers: Vec<IssuerConfig>,
    /// Registered clients.
    pub clients: Vec<ClientConfig>,
    /// Third parties whose assertions authenticate clients (`[[workload_issuers]]`).
    pub workload_issuers: Vec<WorkloadIssuerConfig>,
    /// Who may forward a client's certificate (`[client_certificates]`).
    pub client_certificates: ClientCertificatesConfig,
    /// TLS on the public listener (`[tls]`); `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// The re-issue cache (`[reissue_cache]`).
    pub reissue_cache: ReissueCacheConfig,
    /// The forward-auth endpoint (`[forward_auth]`); `None`: not served.
    pub forward_auth: Option<ForwardAuthConfig>,
    /// Where shared state lives (`[store]`, and `[lifecycle]`).
    pub store: StoreConfig,
    /// Trace export (`[telemetry]`).
    pub telemetry: TelemetryConfig,
}

/// Top-level keys and the sections of the file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: String,
    #[serde(default)]
    server: RawServer,
    signing: RawSigning,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    clients: Vec<RawClient>,
    tls: Option<RawTls>,
    #[serde(default)]
    reissue_cache: RawReissueCache,
    forward_auth: Option<RawForwardAuth>,
    #[serde(default)]
    workload_issuers: Vec<RawWorkloadIssuer>,
    #[serde(default)]
    client_certificates: RawClientCertificates,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    lifecycle: RawLifecycle,
    #[serde(default)]
    telemetry: RawTelemetry,
}

/// Hard ceiling on chain depth: `act` nesting deeper than this is refused at parse time.
pub const MAX_CHAIN_DEPTH: usize = 16;

/// What every section's validator needs: the file, to name it in errors, and its
/// directory, which anchors relative paths; and the problems found so far. A validator
/// records each problem and goes on, so that one run finds them all; it returns `None`
/// only when it has recorded why.
struct Checker<'a> {
    file: &'a str,
    base: &'a Path,
    found: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a str, base: &'a Path) -> Self {
        Checker {
            file,
            base,
            found: Vec::new(),
        }
    }

    /// Records a problem with `field`.
    fn error(&mut self, field: &str, reason: &str) {
        self.found.push(ConfigError::new(self.file, field, reason));
    }

    /// The value, or `None` with the problem recorded against `field`.
    fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|reason| self.error(field, &reason)).ok()
    }

    /// The configuration, when nothing is wrong with it; else every problem found.
    fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        let file = self.file;
        match (value, ConfigErrors::from_vec(self.found)) {
            (Some(value), None) => Ok(value),
            (_, Some(errors)) => Err(errors),
            // Unreachable while every `None` comes with its recorded problem; should
            // that ever slip, refusing the file is still right.
            (None, None) => Err(ConfigError::new(file, "-", "invalid configuration").into()),
        }
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), "-", e.to_string()))?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates config text. `origin` names it in errors and anchors
    /// relative paths (its parent directory). Reads nothing.
    ///
    /// A TOML syntax error or an unknown field is the one error (nothing is validated
    /// then); otherwise every section is validated and every problem reported. A check
    /// that needs a value found wrong (an issuer's JWKS derived from its `issuer`, a
    /// client's default audience from its `id`) is skipped rather than reported again.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
        let file = origin.display().to_string();
        let base = origin.parent().unwrap_or(Path::new(""));
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(&file, text, &e))?;
        let mut cx = Checker::new(&file, base);
        let issuer = cx.check("issuer", validate_issuer_url(&raw.issuer));
        let server = raw.server.validate(&mut cx);
        let signing = raw.signing.validate(&mut cx);
        let tokens = raw.tokens.validate(&mut cx);
        let policy = raw.policy.validate(&mut cx);
        let tls = match raw.tls {
            None => Some(None),
            Some(tls) => tls.validate(&mut cx).map(Some),
        };
        let store = raw.store.validate(raw.lifecycle, &mut cx);
        let issuers = issuers::validate(raw.issuers, issuer.as_deref(), &mut cx);
        let clients = clients::validate(raw.clients, &mut cx);
        let reissue_cache = raw.reissue_cache.validate(&mut cx);
        let forward_auth = match raw.forward_auth {
            None => Some(None),
            Some(section) => section.validate(&mut cx).map(Some),
        };
        let workload_issuers = workload::validate(raw.workload_issuers, issuer.as_deref(), &mut cx);
        let client_certificates = raw.client_certificates.validate(&mut cx);
        if let (Some(own), Some(upstream), Some(clients)) = (&issuer, &issuers, &clients) {
            let isses: Vec<String> = upstream.iter().map(|i| i.issuer.clone()).collect();
            clients::check_actor_iss(clients, own, &isses, &mut cx);
        }
        if let (Some(clients), Some(workload)) = (&clients, &workload_issuers) {
            clients::check_workload_issuers(clients, workload, &mut cx);
        }
        let telemetry = raw.telemetry.validate(&mut cx);
        // A configuration only when every section validated.
        let config = (|| {
            let (policy, policy_watch_seconds) = policy?;
            Some(Config {
                origin: file.clone(),
                issuer: issuer?,
                server: server?,
                signing: signing?,
                tokens: tokens?,
                policy,
                policy_watch_seconds,
                issuers: issuers?,
                clients: clients?,
                tls: tls?,
                workload_issuers: workload_issuers?,
                client_certificates: client_certificates?,
                store: store?,
                telemetry: telemetry?,
                reissue_cache: reissue_cache?,
                forward_auth: forward_auth?,
            })
        })();
        cx.finish(config)
    }

    /// This configuration for an offline dry run (`gleipnir policy test`, `policy explain
    /// --offline`), which neither authenticates, nor introspects, nor signs: an ephemeral
    /// signing key, and every secret replaced by a random one nobody knows (every client
    /// credential too), so no key file or secret needs to be present.
    pub fn for_offline_dry_run(&self) -> Config {
        let unknowable = || {
            let mut bytes = [0u8; 32];
            let _ = aws_lc_rs::rand::fill(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            SecretSource::Value(zeroize::Zeroizing::new(hex))
        };
        let mut config = self.clone();
        config.signing.key = KeySource::Ephemeral;
        // Every client named by a secret nobody knows: the dry run authenticates no one,
        // so no key file, CA bundle or JWKS of a client needs to be there.
        for client in &mut config.clients {
            client.credential = ClientCredential::Secret(unknowable());
        }
        config.workload_issuers.clear();
        for issuer in &mut config.issuers {
            if let Some(introspection) = &mut issuer.introspection {
                introspection.secret = unknowable();
            }
        }
        config
    }

    /// The `iss` of the issuer a policy names (`self` or a configured name).
    pub fn issuer_iss(&self, name: &str) -> Option<&str> {
        if name == SELF_ISSUER_NAME {
            return Some(&self.issuer);
        }
        self.issuers
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.issuer.as_str())
    }

    /// The id of the issuer a policy names (`self` or a configured name).
    pub fn issuer_id(&self, name: &str) -> Option<IssuerId> {
        if name == SELF_ISSUER_NAME {
            return Some(IssuerId::SELF);
        }
        self.issuers
            .iter()
            .position(|i| i.name == name)
            .map(IssuerId::upstream)
    }

    /// The configuration of an upstream issuer (`None` for [`IssuerId::SELF`]).
    pub fn upstream(&self, id: IssuerId) -> Option<&IssuerConfig> {
        id.upstream_index().and_then(|i| self.issuers.get(i))
    }

    /// Our token endpoint URL (RFC 8414 `token_endpoint`).
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer.trim_end_matches('/'))
    }

    /// Our introspection endpoint URL (RFC 8414 `introspection_endpoint`).
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/introspect", self.issuer.trim_end_matches('/'))
    }

    /// Our revocation endpoint URL (RFC 8414 `revocation_endpoint`).
    pub fn revocation_endpoint(&self) -> String {
        format!("{}/revoke", self.issuer.trim_end_matches('/'))
    }

    /// Our JWKS URL (RFC 8414 `jwks_uri`).
    pub fn jwks_uri(&self) -> String {
        format!(
            "{}/.well-known/jwks.json",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// A TOML syntax or schema error, with the line it is on.
pub(crate) fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let mut reason = e.message().trim_end().to_string();
    if let Some(span) = e.span() {
        let line = text
            .get(..span.start)
            .map_or(1, |t| t.matches('\n').count() + 1);
        reason = format!("{reason} (line {line})");
    }
    ConfigError::new(file, "toml", reason)
}

/// RFC 8414 §2: the issuer is an https URL with no query or fragment. Plain http is
/// accepted for loopback hosts only (the sidecar and `gleipnir dev`).
fn validate_issuer_url(value: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(value).map_err(|e| format!("not a URL: {e}"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment (RFC 8414 §2)".into());
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Ok(value.to_string()),
        "http" if loopback => Ok(value.to_string()),
        _ => Err("must be an https URL (http only for localhost/127.0.0.1/[::1])".into()),
    }
}

fn non_empty(value: String) -> Result<String, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(value)
}

fn bounded<T: PartialOrd + Copy + std::fmt::Display>(
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, String> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::server::DEFAULT_LISTEN;
    use super::*;
    use crate::jose::JwsAlgorithm;
    use crate::oauth::TokenType;

    const MINIMAL: &str = r#"
issuer = "https://sts.example.com"
[signing]
key_file = "keys/signing.pem"
[[issuers]]
name = "corp"
issuer = "https://idp.example.com/realms/corp"
jwks_uri = "https://idp.example.com/realms/corp/protocol/openid-connect/certs"
[[clients]]
id = "bff"
secret = { env = "BFF_SECRET" }
"#;

    fn parse_all(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml(text, Path::new("/etc/gleipnir/gleipnir.toml"))
    }

    /// The config, or its one error: a single mistake is a single error, never followed
    /// by others it causes.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_all(text).map_err(|errors| {
            let all: Vec<_> = errors.iter().cloned().collect();
            assert_eq!(all.len(), 1, "one mistake, one error: {errors}");
            errors.into_first()
        })
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.max_body_bytes, 64 * 1024);
        assert_eq!(c.tokens.max_token_bytes, 16 * 1024);
        assert_eq!(c.tokens.leeway_seconds, 30);
        assert_eq!(c.tokens.max_depth, 4);
        assert_eq!(c.signing.algorithm, JwsAlgorithm::Es256);
        assert!(
            matches!(&c.signing.key, KeySource::File(p) if p == Path::new("/etc/gleipnir/keys/signing.pem"))
        );
        assert!(
            matches!(&c.policy, PolicySource::Dir(p) if p == Path::new("/etc/gleipnir/policies"))
        );
        let corp = &c.issuers[0];
        assert_eq!(corp.algorithms, JwsAlgorithm::DEFAULT_ALLOWED);
        assert_eq!(corp.token_types, [TokenType::AccessToken]);
        assert_eq!(corp.max_staleness_seconds, 12 * 3600);
        assert_eq!(corp.max_token_age_seconds, None);
        assert_eq!(corp.max_token_lifetime_seconds, 86_400);
        assert_eq!(c.clients[0].audiences, ["bff"]);
        assert_eq!(c.clients[0].actor_sub, "bff");
        assert_eq!(c.issuer_id("corp"), Some(IssuerId::upstream(0)));
        assert_eq!(c.issuer_id("self"), Some(IssuerId::SELF));
        assert_eq!(c.token_endpoint(), "https://sts.example.com/token");
    }

    #[test]
    fn errors_name_file_field_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "issuer = \"https://sts.example.com\"",
                "issuer = \"ftp://x\"",
                "issuer",
            ),
            (
                "issuer = \"https://sts.example.com\"",
                "issuer = \"https://x/?a=b\"",
                "issuer",
            ),
            (
                "issuer = \"https://sts.example.com\"",
                "issuer = \"http://sts.example.com\"",
                "issuer",
            ),
            (
                "key_file = \"keys/signing.pem\"",
                "key_file = \"k.pem\"\nalgorithm = \"HS256\"",
                "signing.algorithm",
            ),
            (
                "key_file = \"keys/signing.pem\"",
                "key_file = \"k.pem\"\nkey_dir = \"keys\"",
                "signing.key_dir",
            ),
            (
                "key_file = \"keys/signing.pem\"",
                "algorithm = \"ES256\"",
                "signing.key_file",
            ),
            (
                "key_file = \"keys/signing.pem\"",
                "key_file = \"k.pem\"\npublish_ahead_seconds = 60",
                "signing.publish_ahead_seconds",
            ),
            (
                "key_file = \"keys/signing.pem\"",
                "key_dir = \"keys\"\npublish_ahead_seconds = 99999999",
                "signing.publish_ahead_seconds",
            ),
            ("name = \"corp\"", "name = \"self\"", "issuers[self].name"),
            ("name = \"corp\"", "name = \"co rp\"", "issuers[co rp].name"),
            (
                "jwks_uri = \"https://idp",
                "jwks_uri = \"http://idp",
                "issuers[corp].jwks_uri",
            ),
            (
                "jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"",
                "jwks_uri = \"https://i/\"\nalgorithms = [\"HS256\"]",
                "issuers[corp].algorithms",
            ),
            (
                "jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"",
                "jwks_uri = \"https://i/\"\ntoken_types = [\"refresh_token\"]",
                "issuers[corp].token_types",
            ),
            (
                "secret = { env = \"BFF_SECRET\" }",
                "secret = { env = \"A\", value = \"b\" }",
                "clients[bff].secret",
            ),
            (
                "secret = { env = \"BFF_SECRET\" }",
                "secret = {}",
                "clients[bff].secret",
            ),
            (
                "[signing]",
                "[server]\nlisten = \"nowhere\"\n[signing]",
                "server.listen",
            ),
            (
                "[signing]",
                "[server]\nmax_body_bytes = 10\n[signing]",
                "server.max_body_bytes",
            ),
            (
                "[signing]",
                "[server]\nmax_requests_in_flight = 0\n[signing]",
                "server.max_requests_in_flight",
            ),
            (
                "[signing]",
                "[server]\ndrain_seconds = 301\n[signing]",
                "server.drain_seconds",
            ),
            (
                "[signing]",
                "[server]\nmax_header_bytes = 4096\n[signing]",
                "server.max_header_bytes",
            ),
            (
                "[signing]",
                "[server]\nheader_timeout_seconds = 0\n[signing]",
                "server.header_timeout_seconds",
            ),
            (
                "[signing]",
                "[server]\nadmin_max_connections = 0\n[signing]",
                "server.admin_max_connections",
            ),
            (
                "[signing]",
                "[server]\nmax_body_bytes = 131072\nmax_buffered_body_bytes = 65536\n[signing]",
                "server.max_buffered_body_bytes",
            ),
            (
                "[signing]",
                "[tokens]\nmax_depth = 0\n[signing]",
                "tokens.max_depth",
            ),
            (
                "[signing]",
                "[tokens]\nleeway_seconds = 3600\n[signing]",
                "tokens.leeway_seconds",
            ),
            (
                "secret = { env = \"BFF_SECRET\" }",
                "secret = { env = \"BFF_SECRET\" }\naudiences = [\"bff\", \"*\"]",
                "clients[bff].audiences",
            ),
            ("[signing]", "unknown_field = 1\n[signing]", "toml"),
        ];
        for (from, to, field) in cases {
            let text = MINIMAL.replacen(from, to, 1);
            assert_ne!(text, MINIMAL, "case {field} did not change the text");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.file, "/etc/gleipnir/gleipnir.toml");
            assert_eq!(&e.field, field, "{to}: {e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn keycloak_profile_discovers_the_realm_jwks_uri() {
        let kc = MINIMAL
            .replace("issuer = \"https://idp.example.com/realms/corp\"", "issuer = \"https://kc.example.com/realms/corp\"\nprofile = \"keycloak\"")
            .replace("jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"\n", "");
        let c = parse(&kc).unwrap();
        assert_eq!(c.issuers[0].profile, IssuerProfile::Keycloak);
        // From the realm's metadata, which lists its JWKS (and that metadata's `issuer`
        // must be the realm URL exactly).
        assert_eq!(c.issuers[0].jwks, JwksLocation::Discover);
        for bad in [
            "https://kc.example.com/auth",
            "https://kc.example.com/realms/",
            "https://kc.example.com/realms/a/b",
        ] {
            let text = kc.replace("https://kc.example.com/realms/corp", bad);
            assert_eq!(
                parse(&text).unwrap_err().field,
                "issuers[corp].issuer",
                "{bad}"
            );
        }
        let no_uri = MINIMAL.replace(
            "jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"\n",
            "",
        );
        // Without jwks_uri an RFC 9068 issuer's JWKS is discovered from its metadata...
        assert_eq!(
            parse(&no_uri).unwrap().issuers[0].jwks,
            JwksLocation::Discover
        );
        // ...which needs an issuer we may fetch from.
        let not_fetchable = no_uri.replace(
            "issuer = \"https://idp.example.com/realms/corp\"",
            "issuer = \"corp-idp\"",
        );
        assert_eq!(
            parse(&not_fetchable).unwrap_err().field,
            "issuers[corp].jwks_uri"
        );
        let plain_http = no_uri.replace(
            "issuer = \"https://idp.example.com",
            "issuer = \"http://idp.example.com",
        );
        assert_eq!(
            parse(&plain_http).unwrap_err().field,
            "issuers[corp].issuer"
        );
        let unknown = MINIMAL.replace(
            "jwks_uri = \"https",
            "profile = \"okta\"\njwks_uri = \"https",
        );
        assert_eq!(parse(&unknown).unwrap_err().field, "issuers[corp].profile");
    }

    #[test]
    fn actor_iss_names_an_upstream_issuer() {
        assert_eq!(parse(MINIMAL).unwrap().clients[0].actor_iss, None);
        let with = |iss: &str| {
            MINIMAL.replace(
                "secret = { env = \"BFF_SECRET\" }",
                &format!("secret = {{ env = \"BFF_SECRET\" }}\nactor_iss = {iss:?}"),
            )
        };
        let c = parse(&with("https://idp.example.com/realms/corp")).unwrap();
        assert_eq!(
            c.clients[0].actor_iss.as_deref(),
            Some("https://idp.example.com/realms/corp")
        );
        for bad in ["https://sts.example.com", "https://elsewhere.example", ""] {
            let e = parse(&with(bad)).unwrap_err();
            assert_eq!(e.field, "clients[bff].actor_iss", "{bad}: {e}");
        }
    }

    #[test]
    fn sts_audiences_are_exact_values() {
        assert_eq!(parse(MINIMAL).unwrap().issuers[0].sts_audiences, None);
        let with = |list: &str| {
            MINIMAL.replace(
                "[[clients]]",
                &format!("sts_audiences = {list}\n[[clients]]"),
            )
        };
        let c = parse(&with(r#"["https://sts.example.com", "gleipnir"]"#)).unwrap();
        assert_eq!(
            c.issuers[0].sts_audiences.as_deref(),
            Some(&["https://sts.example.com".to_owned(), "gleipnir".to_owned()][..])
        );
        for bad in ["[]", r#"["*"]"#, r#"["gleipnir", ""]"#] {
            assert_eq!(
                parse(&with(bad)).unwrap_err().field,
                "issuers[corp].sts_audiences",
                "{bad}"
            );
        }
    }

    #[test]
    fn introspection_settings() {
        let kc = MINIMAL.replace(
            "jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"",
            "profile = \"keycloak\"\n[issuers.introspection]\nclient_id = \"gleipnir\"\nsecret = { env = \"GLEIPNIR_IDP_SECRET\" }",
        );
        let c = parse(&kc).unwrap();
        let i = c.issuers[0].introspection.as_ref().unwrap();
        assert_eq!(
            i.endpoint.as_str(),
            "https://idp.example.com/realms/corp/protocol/openid-connect/token/introspect"
        );
        assert_eq!((i.client_id.as_str(), i.cache_seconds), ("gleipnir", 60));
        let generic = MINIMAL.replace(
            "[[clients]]",
            "[issuers.introspection]\nclient_id = \"gleipnir\"\nsecret = { value = \"s\" }\n[[clients]]",
        );
        assert_eq!(
            parse(&generic).unwrap_err().field,
            "issuers[corp].introspection.endpoint"
        );
        let plain = generic.replace(
            "client_id = \"gleipnir\"",
            "endpoint = \"http://idp/introspect\"\nclient_id = \"gleipnir\"",
        );
        assert_eq!(
            parse(&plain).unwrap_err().field,
            "issuers[corp].introspection.endpoint"
        );
        let zero = generic.replace(
            "client_id = \"gleipnir\"",
            "endpoint = \"https://idp/i\"\ncache_seconds = 0\nclient_id = \"gleipnir\"",
        );
        assert_eq!(
            parse(&zero).unwrap_err().field,
            "issuers[corp].introspection.cache_seconds"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let dup_issuer = format!(
            "{MINIMAL}\n[[issuers]]\nname = \"corp\"\nissuer = \"https://other\"\njwks_uri = \"https://other/jwks\"\n"
        );
        assert_eq!(parse(&dup_issuer).unwrap_err().field, "issuers[corp].name");
        let dup_iss = format!(
            "{MINIMAL}\n[[issuers]]\nname = \"corp2\"\nissuer = \"https://idp.example.com/realms/corp\"\njwks_uri = \"https://other/jwks\"\n"
        );
        assert_eq!(parse(&dup_iss).unwrap_err().field, "issuers[corp2].issuer");
        let dup_client =
            format!("{MINIMAL}\n[[clients]]\nid = \"bff\"\nsecret = {{ value = \"x\" }}\n");
        assert_eq!(parse(&dup_client).unwrap_err().field, "clients[bff].id");
    }

    #[test]
    fn unknown_field_error_gives_the_line() {
        let text = MINIMAL.replace("[[clients]]", "[[clients]]\nscret = 1");
        let line = text.lines().position(|l| l.starts_with("scret")).unwrap() + 1;
        let e = parse(&text).unwrap_err();
        assert!(e.reason.contains("scret"), "{e}");
        assert!(e.reason.ends_with(&format!("(line {line})")), "{e}");
    }

    #[test]
    fn tls_table_resolves_paths_and_checks_its_bounds() {
        assert!(
            parse(MINIMAL).unwrap().tls.is_none(),
            "plain HTTP by default"
        );
        let with = |lines: &str| format!("{MINIMAL}\n[tls]\n{lines}\n");
        let c = parse(&with(
            "cert_file = \"tls/chain.pem\"\nkey_file = \"/keys/tls.pem\"",
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/gleipnir/tls/chain.pem"));
        assert_eq!(tls.key_file, Path::new("/keys/tls.pem"));
        assert_eq!((tls.watch_seconds, tls.handshake_timeout_seconds), (2, 10));
        for (lines, field) in [
            ("cert_file = \"\"\nkey_file = \"k\"", "tls.cert_file"),
            ("cert_file = \"c\"\nkey_file = \"\"", "tls.key_file"),
            (
                "cert_file = \"c\"\nkey_file = \"k\"\nwatch_seconds = 3601",
                "tls.watch_seconds",
            ),
            (
                "cert_file = \"c\"\nkey_file = \"k\"\nhandshake_timeout_seconds = 0",
                "tls.handshake_timeout_seconds",
            ),
            ("cert_file = \"c\"", "toml"),
            (
                "cert_file = \"c\"\nkey_file = \"k\"\nca_file = \"x\"",
                "toml",
            ),
        ] {
            assert_eq!(parse(&with(lines)).unwrap_err().field, field, "{lines}");
        }
    }

    #[test]
    fn independent_mistakes_are_all_reported_in_one_run() {
        let text = MINIMAL
            .replace(
                "[signing]",
                "[server]\nlisten = \"nowhere\"\n[tokens]\nmax_depth = 0\n[signing]",
            )
            .replace("jwks_uri = \"https://idp", "jwks_uri = \"http://idp");
        let errors = parse_all(&text).unwrap_err();
        let file = "/etc/gleipnir/gleipnir.toml";
        let want = [
            ConfigError::new(
                file,
                "server.listen",
                "\"nowhere\" is not an address:port (e.g. 127.0.0.1:8080)",
            ),
            ConfigError::new(file, "tokens.max_depth", "must be between 1 and 16"),
            ConfigError::new(
                file,
                "issuers[corp].jwks_uri",
                "must be an https URL (http only with allow_http = true, for loopback tests)",
            ),
        ];
        assert_eq!(errors.iter().cloned().collect::<Vec<_>>(), want);
        assert_eq!(errors.first(), &want[0]);
        let lines: Vec<String> = want.iter().map(ToString::to_string).collect();
        assert_eq!(errors.to_string(), lines.join("\n"), "one error a line");
    }

    #[test]
    fn every_entry_and_field_is_checked_but_follow_ups_are_not_reported() {
        let fields = |text: &str| -> Vec<String> {
            let errors = parse_all(text).unwrap_err();
            errors.iter().map(|e| e.field.clone()).collect()
        };
        // Two wrong fields of one issuer, and a wrong second client after a wrong first.
        let text = MINIMAL
            .replace(
                "jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"",
                "jwks_uri = \"https://i/\"\nalgorithms = []\nmax_token_age_seconds = 0\nmax_token_lifetime_seconds = 59",
            )
            .replace("secret = { env = \"BFF_SECRET\" }", "secret = {}")
            + "[[clients]]\nid = \"bff\"\nsecret = { value = \"x\" }\naudiences = []\n";
        assert_eq!(
            fields(&text),
            [
                "issuers[corp].algorithms",
                "issuers[corp].max_token_lifetime_seconds",
                "issuers[corp].max_token_age_seconds",
                "clients[bff].secret",
                "clients[bff].id",
                "clients[bff].audiences",
            ]
        );
        // A wrong issuer value is not also reported as an undiscoverable JWKS, nor a wrong
        // profile as a missing introspection endpoint.
        let no_uri = MINIMAL.replace(
            "jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"\n",
            "",
        );
        let empty_issuer = no_uri.replace(
            "issuer = \"https://idp.example.com/realms/corp\"",
            "issuer = \"\"",
        );
        assert_eq!(fields(&empty_issuer), ["issuers[corp].issuer"]);
        let bad_profile = no_uri.replace(
            "[[clients]]",
            "profile = \"okta\"\n[issuers.introspection]\nclient_id = \"g\"\nsecret = { value = \"s\" }\n[[clients]]",
        );
        assert_eq!(fields(&bad_profile), ["issuers[corp].profile"]);
        // A malformed client id is not also reported through the audiences and actor_sub
        // that default to it.
        let bad_id = MINIMAL.replace("id = \"bff\"", "id = \"\"");
        assert_eq!(fields(&bad_id), ["clients[0].id"]);
        // An upstream equal to our own, wrong issuer is reported once, as ours.
        let own = MINIMAL
            .replace(
                "issuer = \"https://sts.example.com\"",
                "issuer = \"https://idp.example.com/realms/corp?x\"",
            )
            .replace(
                "issuer = \"https://idp.example.com/realms/corp\"\n",
                "issuer = \"https://idp.example.com/realms/corp?x\"\n",
            );
        assert_eq!(fields(&own), ["issuer"]);
    }

    #[test]
    fn each_client_has_exactly_one_method_and_its_workload_identity() {
        let client = |lines: &str| MINIMAL.replace("secret = { env = \"BFF_SECRET\" }", lines);
        let k8s = client(
            "kubernetes = { issuer = \"cluster\", service_account = \"shop:orders\" }",
        ) + "[[workload_issuers]]\nname = \"cluster\"\nkind = \"kubernetes\"\nissuer = \"https://k8s.example\"\n";
        let c = parse(&k8s).unwrap();
        assert_eq!(c.clients[0].actor_sub, "system:serviceaccount:shop:orders");
        assert_eq!(c.workload_issuers[0].audience, "https://sts.example.com");
        for (text, field) in [
            (client(""), "clients[bff]"),
            (
                client(
                    "secret = { value = \"x\" }\nprivate_key_jwt = { jwks_uri = \"https://c/jwks\" }",
                ),
                "clients[bff]",
            ),
            (
                client("private_key_jwt = { jwks_uri = \"http://c/jwks\" }"),
                "clients[bff].private_key_jwt",
            ),
            (
                client(
                    "private_key_jwt = { jwks_uri = \"https://c/jwks\", max_lifetime_seconds = 7200 }",
                ),
                "clients[bff].private_key_jwt.max_lifetime_seconds",
            ),
            (
                client("kubernetes = { issuer = \"nowhere\", service_account = \"shop:orders\" }"),
                "clients[bff].kubernetes.issuer",
            ),
            (
                client("kubernetes = { issuer = \"c\", service_account = \"orders\" }"),
                "clients[bff].kubernetes.service_account",
            ),
            (
                client("spiffe = { issuer = \"s\", spiffe_id = \"example.org/x\" }"),
                "clients[bff].spiffe.spiffe_id",
            ),
            (
                client("tls_client_auth = { ca_file = \"ca.pem\" }"),
                "clients[bff].tls_client_auth.san_uri",
            ),
            (
                k8s.replace(
                    "[[workload_issuers]]",
                    "actor_sub = \"orders\"\n[[workload_issuers]]",
                ),
                "clients[bff].actor_sub",
            ),
            (
                MINIMAL.to_owned() + "[client_certificates]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
                "client_certificates.trusted_proxies",
            ),
        ] {
            assert_eq!(parse(&text).unwrap_err().field, field, "{text}");
        }
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_otlp_table_is_checked() {
        assert!(parse(MINIMAL).unwrap().telemetry.otlp.is_none());
        let with = |lines: &str| format!("{MINIMAL}\n[telemetry.otlp]\n{lines}\n");
        let c = parse(&with(
            "endpoint = \"http://127.0.0.1:4318\"\nheaders = { Authorization = { env = \"OTLP_AUTH\" } }",
        ))
        .unwrap();
        let otlp = c.telemetry.otlp.unwrap();
        assert_eq!(otlp.endpoint.as_str(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(otlp.service_name, "gleipnir");
        assert_eq!((otlp.sampling_ratio, otlp.timeout_seconds), (1.0, 10));
        assert_eq!(otlp.max_queue_spans, 2048);
        assert_eq!(otlp.headers.len(), 1);
        assert_eq!(otlp.headers[0].0, "authorization");
        for (lines, field) in [
            ("endpoint = \"collector:4318\"", "telemetry.otlp.endpoint"),
            (
                "endpoint = \"http://c:4318\"\nprotocol = \"grpc\"",
                "telemetry.otlp.protocol",
            ),
            (
                "endpoint = \"http://c:4318\"\nsampling_ratio = 1.5",
                "telemetry.otlp.sampling_ratio",
            ),
            (
                "endpoint = \"http://c:4318\"\nservice_name = \"\"",
                "telemetry.otlp.service_name",
            ),
            (
                "endpoint = \"http://c:4318\"\ntimeout_seconds = 0",
                "telemetry.otlp.timeout_seconds",
            ),
            (
                "endpoint = \"http://c:4318\"\nmax_queue_spans = 1",
                "telemetry.otlp.max_queue_spans",
            ),
            (
                "endpoint = \"http://c:4318\"\nheaders = { host = { value = \"x\" } }",
                "telemetry.otlp.headers.host",
            ),
            (
                "endpoint = \"http://c:4318\"\nheaders = { x-key = {} }",
                "telemetry.otlp.headers.x-key",
            ),
            ("endpoint = \"http://c:4318\"\nbatch = 1", "toml"),
        ] {
            assert_eq!(parse(&with(lines)).unwrap_err().field, field, "{lines}");
        }
    }

    #[test]
    fn secret_sources_resolve_without_revealing_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "from-file\n").unwrap();
        let source = SecretSource::File(dir.path().join("s"));
        assert_eq!(source.resolve().unwrap().expose(), b"from-file");
        let missing = SecretSource::Env("GLEIPNIR_TEST_SURELY_UNSET".into());
        assert!(
            missing
                .resolve()
                .unwrap_err()
                .contains("GLEIPNIR_TEST_SURELY_UNSET")
        );
        let value = SecretSource::Value(zeroize::Zeroizing::new("hunter2".into()));
        assert!(!format!("{value:?}").contains("hunter2"));
    }
}
