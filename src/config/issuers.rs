//! `[[issuers]]`: the upstream issuers whose tokens gleipnir accepts, how each marks its
//! token kinds, where its keys are, and how its opaque tokens are introspected.

use std::collections::HashSet;

use serde::Deserialize;

use super::secret::RawSecret;
use super::{ConfigError, SELF_ISSUER_NAME, SecretSource, Source, bounded};
use crate::jose::JwsAlgorithm;
use crate::oauth::TokenType;

const DEFAULT_MAX_STALENESS: u64 = 12 * 3600;
const HTTPS_ONLY: &str =
    "must be an https URL (http only with allow_http = true, for loopback tests)";

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
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
    secret: RawSecret,
    cache_seconds: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// The names and `iss` values taken so far: each must be unique, and no upstream may
/// claim our own `iss`.
struct Taken {
    names: HashSet<String>,
    isses: HashSet<String>,
}

/// Every `[[issuers]]` entry, in file order. `own_issuer` is our own `iss`.
pub(super) fn validate(
    raw: Vec<RawIssuer>,
    own_issuer: &str,
    src: &Source,
) -> Result<Vec<IssuerConfig>, ConfigError> {
    let mut taken = Taken {
        names: HashSet::new(),
        isses: HashSet::from([own_issuer.to_owned()]),
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, issuer)| issuer.validate(i, &mut taken, src))
        .collect()
}

/// Names the fields of one issuer: `issuers[<name>].<field>` (the index while unnamed).
struct At(String);

impl At {
    fn error(&self, src: &Source, field: &str, reason: &str) -> ConfigError {
        src.error(&format!("issuers[{}].{field}", self.0), reason)
    }
}

impl RawIssuer {
    fn validate(
        self,
        index: usize,
        taken: &mut Taken,
        src: &Source,
    ) -> Result<IssuerConfig, ConfigError> {
        let at = At(if self.name.is_empty() {
            index.to_string()
        } else {
            self.name.clone()
        });
        let err = |field: &str, reason: &str| at.error(src, field, reason);
        self.check_identity(taken).map_err(|(f, r)| err(f, &r))?;
        let profile = match self.profile.as_deref() {
            None | Some("rfc9068") => IssuerProfile::Rfc9068,
            Some("keycloak") => IssuerProfile::Keycloak,
            Some(other) => {
                return Err(err(
                    "profile",
                    &format!("{other:?} is not one of rfc9068, keycloak"),
                ));
            }
        };
        let jwks = self.jwks(profile).map_err(|(f, r)| err(f, &r))?;
        let algorithms = algorithms(self.algorithms).map_err(|r| err("algorithms", &r))?;
        let token_types = token_types(self.token_types).map_err(|r| err("token_types", &r))?;
        let max_staleness_seconds = bounded(
            self.max_staleness_seconds,
            DEFAULT_MAX_STALENESS,
            60,
            7 * 86_400,
        )
        .map_err(|r| err("max_staleness_seconds", &r))?;
        let introspection = match self.introspection {
            None => None,
            Some(raw) => Some(
                raw.validate(&self.issuer, profile, self.allow_http, src)
                    .map_err(|(f, r)| err(&format!("introspection.{f}"), &r))?,
            ),
        };
        if self.max_token_age_seconds == Some(0) {
            return Err(err("max_token_age_seconds", "must be at least 1"));
        }
        Ok(IssuerConfig {
            name: self.name,
            issuer: self.issuer,
            profile,
            jwks,
            allow_http: self.allow_http,
            algorithms,
            token_types,
            required: self.required,
            max_staleness_seconds,
            max_token_age_seconds: self.max_token_age_seconds,
            introspection,
        })
    }

    /// The name is a valid, unreserved, unique policy name; the `iss` is unique.
    fn check_identity(&self, taken: &mut Taken) -> Result<(), (&'static str, String)> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_name {
            return Err((
                "name",
                "must be non-empty letters, digits, '-' or '_'".into(),
            ));
        }
        if self.name == SELF_ISSUER_NAME {
            return Err((
                "name",
                "\"self\" is reserved for gleipnir's own issuer".into(),
            ));
        }
        if !taken.names.insert(self.name.clone()) {
            return Err(("name", "duplicate issuer name".into()));
        }
        if self.issuer.is_empty() {
            return Err(("issuer", "must not be empty".into()));
        }
        if !taken.isses.insert(self.issuer.clone()) {
            return Err((
                "issuer",
                "duplicate issuer (or equal to our own issuer)".into(),
            ));
        }
        Ok(())
    }

    /// Where the JWKS is: `jwks_uri`, the Keycloak realm's certs, or discovered from the
    /// issuer's metadata (OpenID Connect Discovery §4, RFC 8414 §3).
    fn jwks(&self, profile: IssuerProfile) -> Result<JwksLocation, (&'static str, String)> {
        let jwks_uri = match (&self.jwks_uri, profile) {
            (Some(uri), _) => Some(uri.clone()),
            (None, IssuerProfile::Keycloak) => {
                let realm = self.issuer.rsplit_once("/realms/").map(|(_, r)| r);
                if !realm.is_some_and(|r| !r.is_empty() && !r.contains('/')) {
                    return Err((
                        "issuer",
                        "a Keycloak issuer is a realm URL, https://<host>/realms/<realm> (or set jwks_uri)".into(),
                    ));
                }
                Some(format!("{}/protocol/openid-connect/certs", self.issuer))
            }
            (None, IssuerProfile::Rfc9068) => None,
        };
        match jwks_uri {
            Some(uri) => {
                let uri = reqwest::Url::parse(&uri)
                    .map_err(|e| ("jwks_uri", format!("not a URL: {e}")))?;
                if !url_allowed(&uri, self.allow_http) {
                    return Err(("jwks_uri", HTTPS_ONLY.into()));
                }
                Ok(JwksLocation::Uri(uri))
            }
            None => {
                // Discovery fetches the issuer's own metadata: the issuer is then a URL
                // we must be allowed to fetch.
                let issuer_url = reqwest::Url::parse(&self.issuer).map_err(|_| {
                    (
                        "jwks_uri",
                        "required unless the issuer is a URL its metadata can be discovered from"
                            .to_owned(),
                    )
                })?;
                if !url_allowed(&issuer_url, self.allow_http) {
                    return Err(("issuer", HTTPS_ONLY.into()));
                }
                Ok(JwksLocation::Discover)
            }
        }
    }
}

/// `algorithms`: asymmetric JWS algorithms only; default [`JwsAlgorithm::DEFAULT_ALLOWED`].
fn algorithms(names: Option<Vec<String>>) -> Result<Vec<JwsAlgorithm>, String> {
    match names {
        None => Ok(JwsAlgorithm::DEFAULT_ALLOWED.to_vec()),
        Some(names) if names.is_empty() => Err("must not be empty".into()),
        Some(names) => names
            .iter()
            .map(|n| {
                JwsAlgorithm::from_name(n).ok_or_else(|| {
                    format!("unsupported algorithm {n:?} (asymmetric JWS algorithms only)")
                })
            })
            .collect(),
    }
}

/// `token_types`: the kinds accepted as subject or actor token; default access tokens.
fn token_types(names: Option<Vec<String>>) -> Result<Vec<TokenType>, String> {
    match names {
        None => Ok(vec![TokenType::AccessToken]),
        Some(names) if names.is_empty() => Err("must not be empty".into()),
        Some(names) => names
            .iter()
            .map(|n| match TokenType::from_name(n) {
                Some(t @ (TokenType::AccessToken | TokenType::Jwt | TokenType::IdToken)) => Ok(t),
                _ => Err(format!("{n:?} is not one of access_token, jwt, id_token")),
            })
            .collect(),
    }
}

impl RawIntrospection {
    /// RFC 7662 introspection settings; the endpoint defaults to Keycloak's for a
    /// Keycloak issuer. Errors name the field under `introspection`.
    fn validate(
        self,
        issuer: &str,
        profile: IssuerProfile,
        allow_http: bool,
        src: &Source,
    ) -> Result<IntrospectionConfig, (&'static str, String)> {
        let endpoint = match (self.endpoint, profile) {
            (Some(e), _) => e,
            (None, IssuerProfile::Keycloak) => {
                format!("{issuer}/protocol/openid-connect/token/introspect")
            }
            (None, IssuerProfile::Rfc9068) => return Err(("endpoint", "required".into())),
        };
        let endpoint =
            reqwest::Url::parse(&endpoint).map_err(|e| ("endpoint", format!("not a URL: {e}")))?;
        if !url_allowed(&endpoint, allow_http) {
            return Err(("endpoint", HTTPS_ONLY.into()));
        }
        if self.client_id.is_empty() {
            return Err(("client_id", "must not be empty".into()));
        }
        Ok(IntrospectionConfig {
            endpoint,
            client_id: self.client_id,
            secret: self.secret.validate(src.base).map_err(|r| ("secret", r))?,
            cache_seconds: bounded(self.cache_seconds, 60, 1, 3600)
                .map_err(|r| ("cache_seconds", r))?,
        })
    }
}
