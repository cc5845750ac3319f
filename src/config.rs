//! Configuration: one TOML file, parsed into raw serde structs (`deny_unknown_fields`),
//! then validated completely into an immutable [`Config`] (DESIGN.md habit 7).
//!
//! [`Config::from_toml`] is pure; [`Config::load`] reads the file. Everything that needs
//! the outside world (secrets from env or files, the key file, the policy directory) is
//! resolved by `App::build` (the TLS certificate and key by `server::tls::Tls::load`),
//! still before any port is bound. Every error names the file, the field and the reason.

mod secret;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub use secret::{Secret, SecretSource};

use crate::jose::JwsAlgorithm;
use crate::oauth::TokenType;

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
    /// TLS on the public listener (`[tls]`); `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
}

/// TLS on the public listener (`[tls]`). The files are read by `server::tls::Tls::load`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
    /// How often the files are checked for changes (0: never; SIGHUP still reloads).
    pub watch_seconds: u64,
    /// How long a client has to complete the TLS handshake.
    pub handshake_timeout_seconds: u64,
}

/// Listeners and request limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public listener (`/token`, `/.well-known/*`).
    pub listen: SocketAddr,
    /// The admin listener (`/livez`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Connections served at once, per listener.
    pub max_connections: usize,
    /// Seconds of silence after which a connection is closed.
    pub idle_timeout_seconds: u64,
    /// Seconds within which a request is answered, else 503.
    pub request_timeout_seconds: u64,
    /// Seconds in-flight requests get to finish after shutdown starts.
    pub shutdown_grace_seconds: u64,
}

/// Where the signing key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A PEM file (PKCS#8; SEC1 also accepted for ES256).
    File(PathBuf),
    /// A key directory with a schedule (`keys.toml`): rotation, see `keys::ring`.
    Dir {
        /// The directory.
        path: PathBuf,
        /// How long a new key must be published before it signs (checked on reload).
        publish_ahead_seconds: u64,
        /// How often the directory is checked for changes (0: never; SIGHUP reloads).
        watch_seconds: u64,
    },
    /// A key generated at start-up and never written down. Only `gleipnir dev` uses
    /// this; a config file cannot ask for it.
    Ephemeral,
}

/// The signing key.
#[derive(Debug, Clone)]
pub struct SigningConfig {
    /// ES256 (default) or EdDSA.
    pub algorithm: JwsAlgorithm,
    /// The private key.
    pub key: KeySource,
}

/// Token validation and issuance settings.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Largest subject/actor token accepted, checked before decoding.
    pub max_token_bytes: usize,
    /// Clock skew allowed on `exp`, `nbf`, `iat`, in seconds.
    pub leeway_seconds: u64,
    /// Upper bound for every client's `max_depth`.
    pub max_depth: usize,
    /// Upper bound for every client's `ttl_seconds`.
    pub max_ttl_seconds: u64,
}

/// Where policy files come from.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// Every `*.toml` file directly in this directory.
    Dir(PathBuf),
    /// Files compiled into the binary (`gleipnir dev`): (name, text).
    Embedded(Vec<(String, String)>),
}

/// How an issuer marks the kinds of token it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerProfile {
    /// RFC 9068: access tokens have header `typ` `at+jwt`.
    Rfc9068,
    /// Keycloak (and Red Hat build of Keycloak): every token has header `typ` `JWT`; the
    /// claim `typ` says `Bearer` (access), `ID`, `Refresh` or `Logout`. Realm issuer URLs
    /// (`…/realms/<realm>`); JWKS at `<issuer>/protocol/openid-connect/certs`.
    Keycloak,
}

/// Where an issuer's JWKS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// At this URL (configured, or derived from a Keycloak realm URL).
    Uri(reqwest::Url),
    /// At the `jwks_uri` of the issuer's own metadata (OpenID Connect Discovery §4, or
    /// RFC 8414 §3), whose `issuer` must equal the configured one.
    Discover,
}

/// Whether `url` may be fetched: https, or http where the issuer allows it.
pub fn url_allowed(url: &reqwest::Url, allow_http: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => allow_http,
        _ => false,
    }
}

/// An upstream issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Short name used in policies.
    pub name: String,
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// How it marks token kinds.
    pub profile: IssuerProfile,
    /// Where its JWKS is.
    pub jwks: JwksLocation,
    /// Whether plain-http URLs (JWKS, metadata) are allowed (loopback tests only).
    pub allow_http: bool,
    /// Algorithms accepted from it.
    pub algorithms: Vec<JwsAlgorithm>,
    /// Token types accepted from it as subject or actor token.
    pub token_types: Vec<TokenType>,
    /// Readiness waits for its keys.
    pub required: bool,
    /// How long after a successful fetch its keys may still be used while it is down.
    pub max_staleness_seconds: u64,
    /// When set, its tokens must carry `iat` and be at most this old, whatever their `exp`.
    pub max_token_age_seconds: Option<u64>,
    /// RFC 7662 introspection of its opaque tokens, when configured.
    pub introspection: Option<IntrospectionConfig>,
}

/// How gleipnir introspects an issuer's opaque tokens (RFC 7662).
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// The introspection endpoint.
    pub endpoint: reqwest::Url,
    /// gleipnir's own client id at the issuer.
    pub client_id: String,
    /// gleipnir's own client secret at the issuer.
    pub secret: SecretSource,
    /// Longest time an `active` answer is reused (never past the token's `exp`).
    pub cache_seconds: u64,
}

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

// ---- raw file structs ------------------------------------------------------------------

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: String,
    key_file: String,
    watch_seconds: Option<u64>,
    handshake_timeout_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    idle_timeout_seconds: Option<u64>,
    request_timeout_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    algorithm: Option<String>,
    key_file: Option<String>,
    key_dir: Option<String>,
    publish_ahead_seconds: Option<u64>,
    watch_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    max_token_bytes: Option<usize>,
    leeway_seconds: Option<u64>,
    max_depth: Option<usize>,
    max_ttl_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: Option<String>,
    watch_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: String,
    issuer: String,
    jwks_uri: Option<String>,
    profile: Option<String>,
    algorithms: Option<Vec<String>>,
    token_types: Option<Vec<String>>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default = "default_true")]
    required: bool,
    max_staleness_seconds: Option<u64>,
    max_token_age_seconds: Option<u64>,
    introspection: Option<RawIntrospection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrospection {
    endpoint: Option<String>,
    client_id: String,
    secret: secret::RawSecret,
    cache_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: String,
    secret: secret::RawSecret,
    audiences: Option<Vec<String>>,
    actor_sub: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Defaults, with the bounds a value must stay within.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_MAX_BODY: usize = 64 * 1024;
const DEFAULT_MAX_TOKEN: usize = 16 * 1024;
const DEFAULT_LEEWAY: u64 = 30;
const DEFAULT_MAX_DEPTH: usize = 4;
const DEFAULT_MAX_TTL: u64 = 3600;
const DEFAULT_MAX_STALENESS: u64 = 12 * 3600;
const DEFAULT_POLICY_WATCH: u64 = 2;
const DEFAULT_TLS_WATCH: u64 = 2;
const DEFAULT_TLS_HANDSHAKE_TIMEOUT: u64 = 10;
const DEFAULT_PUBLISH_AHEAD: u64 = 3600;
/// Hard ceiling on chain depth: `act` nesting deeper than this is refused at parse time.
pub const MAX_CHAIN_DEPTH: usize = 16;

impl Config {
    /// Reads and validates a config file. Relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), "-", e.to_string()))?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates config text. `origin` names it in errors and anchors
    /// relative paths (its parent directory). Reads nothing.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let file = origin.display().to_string();
        let base = origin.parent().unwrap_or(Path::new("")).to_path_buf();
        let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(&file, text, &e))?;
        let err = |field: &str, reason: &str| ConfigError::new(&file, field, reason);

        let issuer = validate_issuer_url(&raw.issuer).map_err(|r| err("issuer", &r))?;

        let server = ServerConfig {
            listen: parse_addr(raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN))
                .map_err(|r| err("server.listen", &r))?,
            admin_listen: parse_addr(
                raw.server
                    .admin_listen
                    .as_deref()
                    .unwrap_or(DEFAULT_ADMIN_LISTEN),
            )
            .map_err(|r| err("server.admin_listen", &r))?,
            max_body_bytes: bounded(raw.server.max_body_bytes, DEFAULT_MAX_BODY, 1024, 1 << 20)
                .map_err(|r| err("server.max_body_bytes", &r))?,
            max_connections: bounded(raw.server.max_connections, 1024, 1, 1_000_000)
                .map_err(|r| err("server.max_connections", &r))?,
            idle_timeout_seconds: bounded(raw.server.idle_timeout_seconds, 60, 1, 3600)
                .map_err(|r| err("server.idle_timeout_seconds", &r))?,
            request_timeout_seconds: bounded(raw.server.request_timeout_seconds, 30, 1, 300)
                .map_err(|r| err("server.request_timeout_seconds", &r))?,
            shutdown_grace_seconds: bounded(raw.server.shutdown_grace_seconds, 10, 0, 300)
                .map_err(|r| err("server.shutdown_grace_seconds", &r))?,
        };

        let algorithm = match raw.signing.algorithm.as_deref() {
            None | Some("ES256") => JwsAlgorithm::Es256,
            Some("EdDSA") => JwsAlgorithm::EdDsa,
            Some(_) => return Err(err("signing.algorithm", "must be ES256 or EdDSA")),
        };
        let rotation_only =
            raw.signing.publish_ahead_seconds.is_some() || raw.signing.watch_seconds.is_some();
        let key = match (&raw.signing.key_file, &raw.signing.key_dir) {
            (Some(_), None) if rotation_only => {
                return Err(err(
                    "signing.publish_ahead_seconds",
                    "publish_ahead_seconds and watch_seconds go with key_dir (rotation), not key_file",
                ));
            }
            (Some(file), None) if file.is_empty() => {
                return Err(err("signing.key_file", "must name a PEM file"));
            }
            (Some(file), None) => KeySource::File(base.join(file)),
            (None, Some(dir)) if dir.is_empty() => {
                return Err(err("signing.key_dir", "must name a directory"));
            }
            (None, Some(dir)) => KeySource::Dir {
                path: base.join(dir),
                publish_ahead_seconds: bounded(
                    raw.signing.publish_ahead_seconds,
                    DEFAULT_PUBLISH_AHEAD,
                    0,
                    7 * 86_400,
                )
                .map_err(|r| err("signing.publish_ahead_seconds", &r))?,
                watch_seconds: bounded(raw.signing.watch_seconds, DEFAULT_POLICY_WATCH, 0, 3600)
                    .map_err(|r| err("signing.watch_seconds", &r))?,
            },
            (Some(_), Some(_)) => {
                return Err(err(
                    "signing.key_dir",
                    "give key_file (one key) or key_dir (rotation), not both",
                ));
            }
            (None, None) => {
                return Err(err(
                    "signing.key_file",
                    "required: a PEM file (or key_dir for rotation)",
                ));
            }
        };
        let signing = SigningConfig { algorithm, key };

        let tokens = TokenConfig {
            max_token_bytes: bounded(
                raw.tokens.max_token_bytes,
                DEFAULT_MAX_TOKEN,
                1024,
                64 * 1024,
            )
            .map_err(|r| err("tokens.max_token_bytes", &r))?,
            leeway_seconds: bounded(raw.tokens.leeway_seconds, DEFAULT_LEEWAY, 0, 300)
                .map_err(|r| err("tokens.leeway_seconds", &r))?,
            max_depth: bounded(raw.tokens.max_depth, DEFAULT_MAX_DEPTH, 1, MAX_CHAIN_DEPTH)
                .map_err(|r| err("tokens.max_depth", &r))?,
            max_ttl_seconds: bounded(raw.tokens.max_ttl_seconds, DEFAULT_MAX_TTL, 1, 86_400)
                .map_err(|r| err("tokens.max_ttl_seconds", &r))?,
        };

        let policy = PolicySource::Dir(base.join(raw.policy.dir.as_deref().unwrap_or("policies")));
        let policy_watch_seconds = bounded(raw.policy.watch_seconds, DEFAULT_POLICY_WATCH, 0, 3600)
            .map_err(|r| err("policy.watch_seconds", &r))?;

        let tls = match raw.tls {
            None => None,
            Some(tls) => {
                if tls.cert_file.is_empty() {
                    return Err(err("tls.cert_file", "must name a PEM file"));
                }
                if tls.key_file.is_empty() {
                    return Err(err("tls.key_file", "must name a PEM file"));
                }
                Some(TlsConfig {
                    cert_file: base.join(&tls.cert_file),
                    key_file: base.join(&tls.key_file),
                    watch_seconds: bounded(tls.watch_seconds, DEFAULT_TLS_WATCH, 0, 3600)
                        .map_err(|r| err("tls.watch_seconds", &r))?,
                    handshake_timeout_seconds: bounded(
                        tls.handshake_timeout_seconds,
                        DEFAULT_TLS_HANDSHAKE_TIMEOUT,
                        1,
                        60,
                    )
                    .map_err(|r| err("tls.handshake_timeout_seconds", &r))?,
                })
            }
        };

        let mut issuers = Vec::with_capacity(raw.issuers.len());
        let mut names = HashSet::new();
        let mut isses = HashSet::from([issuer.clone()]);
        for (i, raw_issuer) in raw.issuers.into_iter().enumerate() {
            let at = |f: &str| {
                format!(
                    "issuers[{}].{f}",
                    if raw_issuer.name.is_empty() {
                        i.to_string()
                    } else {
                        raw_issuer.name.clone()
                    }
                )
            };
            let valid_name = !raw_issuer.name.is_empty()
                && raw_issuer
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name {
                return Err(err(
                    &at("name"),
                    "must be non-empty letters, digits, '-' or '_'",
                ));
            }
            if raw_issuer.name == SELF_ISSUER_NAME {
                return Err(err(
                    &at("name"),
                    "\"self\" is reserved for gleipnir's own issuer",
                ));
            }
            if !names.insert(raw_issuer.name.clone()) {
                return Err(err(&at("name"), "duplicate issuer name"));
            }
            if raw_issuer.issuer.is_empty() {
                return Err(err(&at("issuer"), "must not be empty"));
            }
            if !isses.insert(raw_issuer.issuer.clone()) {
                return Err(err(
                    &at("issuer"),
                    "duplicate issuer (or equal to our own issuer)",
                ));
            }
            let profile = match raw_issuer.profile.as_deref() {
                None | Some("rfc9068") => IssuerProfile::Rfc9068,
                Some("keycloak") => IssuerProfile::Keycloak,
                Some(other) => {
                    return Err(err(
                        &at("profile"),
                        &format!("{other:?} is not one of rfc9068, keycloak"),
                    ));
                }
            };
            let jwks_uri = match (&raw_issuer.jwks_uri, profile) {
                (Some(uri), _) => Some(uri.clone()),
                (None, IssuerProfile::Keycloak) => {
                    let realm = raw_issuer.issuer.rsplit_once("/realms/").map(|(_, r)| r);
                    if !realm.is_some_and(|r| !r.is_empty() && !r.contains('/')) {
                        return Err(err(
                            &at("issuer"),
                            "a Keycloak issuer is a realm URL, https://<host>/realms/<realm> (or set jwks_uri)",
                        ));
                    }
                    Some(format!(
                        "{}/protocol/openid-connect/certs",
                        raw_issuer.issuer
                    ))
                }
                (None, IssuerProfile::Rfc9068) => None,
            };
            let https_only =
                "must be an https URL (http only with allow_http = true, for loopback tests)";
            let jwks = match jwks_uri {
                Some(uri) => {
                    let uri = reqwest::Url::parse(&uri)
                        .map_err(|e| err(&at("jwks_uri"), &format!("not a URL: {e}")))?;
                    if !url_allowed(&uri, raw_issuer.allow_http) {
                        return Err(err(&at("jwks_uri"), https_only));
                    }
                    JwksLocation::Uri(uri)
                }
                None => {
                    // Discovery fetches the issuer's own metadata: the issuer is then a URL
                    // we must be allowed to fetch.
                    let issuer_url = reqwest::Url::parse(&raw_issuer.issuer)
                        .map_err(|_| err(&at("jwks_uri"), "required unless the issuer is a URL its metadata can be discovered from"))?;
                    if !url_allowed(&issuer_url, raw_issuer.allow_http) {
                        return Err(err(&at("issuer"), https_only));
                    }
                    JwksLocation::Discover
                }
            };
            let algorithms = match raw_issuer.algorithms {
                None => JwsAlgorithm::DEFAULT_ALLOWED.to_vec(),
                Some(names) if names.is_empty() => {
                    return Err(err(&at("algorithms"), "must not be empty"));
                }
                Some(names) => names
                    .iter()
                    .map(|n| {
                        JwsAlgorithm::from_name(n).ok_or_else(|| {
                            err(
                                &at("algorithms"),
                                &format!(
                                    "unsupported algorithm {n:?} (asymmetric JWS algorithms only)"
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let token_types = match raw_issuer.token_types {
                None => vec![TokenType::AccessToken],
                Some(names) if names.is_empty() => {
                    return Err(err(&at("token_types"), "must not be empty"));
                }
                Some(names) => names
                    .iter()
                    .map(|n| match TokenType::from_name(n) {
                        Some(
                            t @ (TokenType::AccessToken | TokenType::Jwt | TokenType::IdToken),
                        ) => Ok(t),
                        _ => Err(err(
                            &at("token_types"),
                            &format!("{n:?} is not one of access_token, jwt, id_token"),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            };
            let max_staleness_seconds = bounded(
                raw_issuer.max_staleness_seconds,
                DEFAULT_MAX_STALENESS,
                60,
                7 * 86_400,
            )
            .map_err(|r| err(&at("max_staleness_seconds"), &r))?;
            let introspection = match raw_issuer.introspection {
                None => None,
                Some(raw) => {
                    let endpoint = match (raw.endpoint, profile) {
                        (Some(e), _) => e,
                        (None, IssuerProfile::Keycloak) => {
                            format!(
                                "{}/protocol/openid-connect/token/introspect",
                                raw_issuer.issuer
                            )
                        }
                        (None, IssuerProfile::Rfc9068) => {
                            return Err(err(&at("introspection.endpoint"), "required"));
                        }
                    };
                    let endpoint = reqwest::Url::parse(&endpoint).map_err(|e| {
                        err(&at("introspection.endpoint"), &format!("not a URL: {e}"))
                    })?;
                    if !url_allowed(&endpoint, raw_issuer.allow_http) {
                        return Err(err(&at("introspection.endpoint"), https_only));
                    }
                    if raw.client_id.is_empty() {
                        return Err(err(&at("introspection.client_id"), "must not be empty"));
                    }
                    Some(IntrospectionConfig {
                        endpoint,
                        client_id: raw.client_id,
                        secret: raw
                            .secret
                            .validate(&base)
                            .map_err(|r| err(&at("introspection.secret"), &r))?,
                        cache_seconds: bounded(raw.cache_seconds, 60, 1, 3600)
                            .map_err(|r| err(&at("introspection.cache_seconds"), &r))?,
                    })
                }
            };
            if raw_issuer.max_token_age_seconds == Some(0) {
                return Err(err(&at("max_token_age_seconds"), "must be at least 1"));
            }
            issuers.push(IssuerConfig {
                name: raw_issuer.name,
                issuer: raw_issuer.issuer,
                profile,
                jwks,
                allow_http: raw_issuer.allow_http,
                algorithms,
                token_types,
                required: raw_issuer.required,
                max_staleness_seconds,
                max_token_age_seconds: raw_issuer.max_token_age_seconds,
                introspection,
            });
        }

        let mut clients = Vec::with_capacity(raw.clients.len());
        let mut ids = HashSet::new();
        for (i, raw_client) in raw.clients.into_iter().enumerate() {
            let at = |f: &str| {
                format!(
                    "clients[{}].{f}",
                    if raw_client.id.is_empty() {
                        i.to_string()
                    } else {
                        raw_client.id.clone()
                    }
                )
            };
            if raw_client.id.is_empty() || raw_client.id.chars().any(char::is_control) {
                return Err(err(
                    &at("id"),
                    "must be non-empty, without control characters",
                ));
            }
            if !ids.insert(raw_client.id.clone()) {
                return Err(err(&at("id"), "duplicate client id"));
            }
            let secret = raw_client
                .secret
                .validate(&base)
                .map_err(|r| err(&at("secret"), &r))?;
            let audiences = raw_client
                .audiences
                .unwrap_or_else(|| vec![raw_client.id.clone()]);
            if audiences.iter().any(|a| a == "*") {
                return Err(err(
                    &at("audiences"),
                    "\"*\" is not a wildcard here: list the exact aud values that name this client",
                ));
            }
            if audiences.is_empty() || audiences.iter().any(String::is_empty) {
                return Err(err(&at("audiences"), "must list non-empty values"));
            }
            let actor_sub = raw_client
                .actor_sub
                .unwrap_or_else(|| raw_client.id.clone());
            if actor_sub.is_empty() {
                return Err(err(&at("actor_sub"), "must not be empty"));
            }
            clients.push(ClientConfig {
                id: raw_client.id,
                secret,
                audiences,
                actor_sub,
            });
        }

        Ok(Config {
            origin: file,
            issuer,
            server,
            signing,
            tokens,
            policy,
            policy_watch_seconds,
            issuers,
            clients,
            tls,
        })
    }

    /// This configuration for an offline dry run (`gleipnir policy test`, `policy explain
    /// --offline`), which neither authenticates, nor introspects, nor signs: an ephemeral
    /// signing key, and every secret replaced by a random one nobody knows, so no key file
    /// or secret needs to be present.
    pub fn for_offline_dry_run(&self) -> Config {
        let unknowable = || {
            let mut bytes = [0u8; 32];
            let _ = aws_lc_rs::rand::fill(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            SecretSource::Value(zeroize::Zeroizing::new(hex))
        };
        let mut config = self.clone();
        config.signing.key = KeySource::Ephemeral;
        for client in &mut config.clients {
            client.secret = unknowable();
        }
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

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an address:port (e.g. 127.0.0.1:8080)"))
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
    use super::*;

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

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/gleipnir/gleipnir.toml"))
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
    fn keycloak_profile_derives_the_realm_jwks_uri() {
        let kc = MINIMAL
            .replace("issuer = \"https://idp.example.com/realms/corp\"", "issuer = \"https://kc.example.com/realms/corp\"\nprofile = \"keycloak\"")
            .replace("jwks_uri = \"https://idp.example.com/realms/corp/protocol/openid-connect/certs\"\n", "");
        let c = parse(&kc).unwrap();
        assert_eq!(c.issuers[0].profile, IssuerProfile::Keycloak);
        assert_eq!(
            c.issuers[0].jwks,
            JwksLocation::Uri(
                reqwest::Url::parse(
                    "https://kc.example.com/realms/corp/protocol/openid-connect/certs"
                )
                .unwrap()
            )
        );
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
