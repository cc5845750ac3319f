//! `[[issuers]]`: the upstream issuers whose tokens gleipnir accepts, how each marks its
//! token kinds, where its keys are, and how its opaque tokens are introspected.

use std::collections::HashSet;

use serde::Deserialize;

use super::secret::RawSecret;
use super::{Checker, SELF_ISSUER_NAME, SecretSource, bounded, non_empty};
use crate::jose::JwsAlgorithm;
use crate::oauth::TokenType;

const DEFAULT_MAX_STALENESS: u64 = 12 * 3600;
/// The default ceiling on an upstream token's lifetime: a day.
pub const DEFAULT_MAX_TOKEN_LIFETIME: u64 = 86_400;
/// The highest ceiling that may be configured: a year (and a leap day).
const MAX_MAX_TOKEN_LIFETIME: u64 = 366 * 86_400;
const HTTPS_ONLY: &str =
    "must be an https URL (http only with allow_http = true, for loopback tests)";

/// How an issuer marks the kinds of token it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerProfile {
    /// RFC 9068: access tokens have header `typ` `at+jwt`.
    Rfc9068,
    /// Keycloak (and Red Hat build of Keycloak): every token has header `typ` `JWT`; the
    /// claim `typ` says `Bearer` (access), `ID`, `Refresh` or `Logout`. Realm issuer URLs
    /// (`…/realms/<realm>`), whose metadata names the JWKS
    /// (`<issuer>/protocol/openid-connect/certs`); introspection at
    /// `<issuer>/protocol/openid-connect/token/introspect`.
    Keycloak,
}

/// Where an issuer's JWKS is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksLocation {
    /// At this URL (configured).
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
    /// Longest lifetime its tokens may claim: `exp - iat`, or `exp - now` without `iat`.
    pub max_token_lifetime_seconds: u64,
    /// RFC 7662 introspection of its opaque tokens, when configured.
    pub introspection: Option<IntrospectionConfig>,
    /// The `aud` values by which its tokens name this STS. When set, its actor tokens must
    /// carry one of them (rule 1): a token minted for another service is not presented
    /// here as proof of who acts. `None`: any `aud` (the behaviour before the field).
    pub sts_audiences: Option<Vec<String>>,
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
    /// Whether the issuer's JWT access tokens are introspected too, once their signature
    /// verified: refused unless active (a logged-out session), judged by the answer's
    /// claims (a Keycloak lightweight access token carries its claims only there).
    pub check_jwts: bool,
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
    max_token_lifetime_seconds: Option<u64>,
    introspection: Option<RawIntrospection>,
    sts_audiences: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrospection {
    endpoint: Option<String>,
    client_id: String,
    secret: RawSecret,
    cache_seconds: Option<u64>,
    #[serde(default)]
    check_jwts: bool,
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

/// Every `[[issuers]]` entry, in file order. `own_issuer` is our own `iss`, `None` when
/// it is wrong (already said; an upstream equal to it is then not worth a second error).
pub(super) fn validate(
    raw: Vec<RawIssuer>,
    own_issuer: Option<&str>,
    cx: &mut Checker,
) -> Option<Vec<IssuerConfig>> {
    let mut taken = Taken {
        names: HashSet::new(),
        isses: own_issuer.map(str::to_owned).into_iter().collect(),
    };
    // Every issuer is checked, the ones after a wrong one too.
    let issuers: Vec<_> = raw
        .into_iter()
        .enumerate()
        .map(|(i, issuer)| issuer.validate(i, &mut taken, cx))
        .collect();
    issuers.into_iter().collect()
}

/// Names the fields of one issuer: `issuers[<name>].<field>` (the index while unnamed).
struct At(String);

impl At {
    fn field(&self, field: &str) -> String {
        format!("issuers[{}].{field}", self.0)
    }

    /// The value, or `None` with the problem recorded against the issuer's field.
    fn check<T>(&self, cx: &mut Checker, result: Result<T, (&str, String)>) -> Option<T> {
        result
            .map_err(|(field, reason)| cx.error(&self.field(field), &reason))
            .ok()
    }
}

impl RawIssuer {
    fn validate(self, index: usize, taken: &mut Taken, cx: &mut Checker) -> Option<IssuerConfig> {
        let at = At(if self.name.is_empty() {
            index.to_string()
        } else {
            self.name.clone()
        });
        let name = cx.check(&at.field("name"), taken.name(&self.name));
        let issuer = cx.check(&at.field("issuer"), taken.iss(&self.issuer));
        let profile = cx.check(&at.field("profile"), profile(self.profile.as_deref()));
        let jwks = at.check(cx, self.jwks(profile, issuer.is_some())).flatten();
        let algorithms = cx.check(&at.field("algorithms"), algorithms(self.algorithms));
        let token_types = cx.check(&at.field("token_types"), token_types(self.token_types));
        let max_staleness_seconds = cx.check(
            &at.field("max_staleness_seconds"),
            bounded(
                self.max_staleness_seconds,
                DEFAULT_MAX_STALENESS,
                60,
                7 * 86_400,
            ),
        );
        let max_token_lifetime_seconds = cx.check(
            &at.field("max_token_lifetime_seconds"),
            bounded(
                self.max_token_lifetime_seconds,
                DEFAULT_MAX_TOKEN_LIFETIME,
                60,
                MAX_MAX_TOKEN_LIFETIME,
            ),
        );
        let introspection = match self.introspection {
            None => Some(None),
            Some(raw) => {
                // The Keycloak endpoint is derived from the issuer: not from a wrong one.
                let upstream = (issuer.as_deref(), profile, self.allow_http);
                raw.validate(upstream, &at, cx).map(Some)
            }
        };
        let sts_audiences = match self.sts_audiences {
            None => Some(None),
            Some(list) => cx
                .check(&at.field("sts_audiences"), sts_audiences(list))
                .map(Some),
        };
        let max_token_age_seconds = match self.max_token_age_seconds {
            Some(0) => {
                cx.error(&at.field("max_token_age_seconds"), "must be at least 1");
                None
            }
            age => Some(age),
        };
        Some(IssuerConfig {
            name: name?,
            issuer: issuer?,
            profile: profile?,
            jwks: jwks?,
            allow_http: self.allow_http,
            algorithms: algorithms?,
            token_types: token_types?,
            required: self.required,
            max_staleness_seconds: max_staleness_seconds?,
            max_token_age_seconds: max_token_age_seconds?,
            max_token_lifetime_seconds: max_token_lifetime_seconds?,
            introspection: introspection?,
            sts_audiences: sts_audiences?,
        })
    }

    /// Where the JWKS is: `jwks_uri`, or discovered from the issuer's metadata (OpenID Connect Discovery §4, RFC 8414 §3). `Ok(None)`: cannot be
    /// told, the profile or the issuer being wrong (and already said so).
    fn jwks(
        &self,
        profile: Option<IssuerProfile>,
        issuer_ok: bool,
    ) -> Result<Option<JwksLocation>, (&'static str, String)> {
        let jwks_uri = match (&self.jwks_uri, profile) {
            (Some(uri), _) => uri.clone(),
            (None, None) => return Ok(None),
            (None, Some(_)) if !issuer_ok => return Ok(None),
            (None, Some(profile)) => {
                // A Keycloak issuer is a realm URL: the introspection endpoint is derived
                // from it.
                let realm = self.issuer.rsplit_once("/realms/").map(|(_, r)| r);
                if profile == IssuerProfile::Keycloak
                    && !realm.is_some_and(|r| !r.is_empty() && !r.contains('/'))
                {
                    return Err((
                        "issuer",
                        "a Keycloak issuer is a realm URL, https://<host>/realms/<realm>".into(),
                    ));
                }
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
                return Ok(Some(JwksLocation::Discover));
            }
        };
        let uri =
            reqwest::Url::parse(&jwks_uri).map_err(|e| ("jwks_uri", format!("not a URL: {e}")))?;
        if !url_allowed(&uri, self.allow_http) {
            return Err(("jwks_uri", HTTPS_ONLY.into()));
        }
        Ok(Some(JwksLocation::Uri(uri)))
    }
}

impl Taken {
    /// A valid, unreserved, unique policy name.
    fn name(&mut self, name: &str) -> Result<String, String> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err("must be non-empty letters, digits, '-' or '_'".into());
        }
        if name == SELF_ISSUER_NAME {
            return Err("\"self\" is reserved for gleipnir's own issuer".into());
        }
        if !self.names.insert(name.to_owned()) {
            return Err("duplicate issuer name".into());
        }
        Ok(name.to_owned())
    }

    /// A non-empty `iss`, unique and not our own.
    fn iss(&mut self, iss: &str) -> Result<String, String> {
        if iss.is_empty() {
            return Err("must not be empty".into());
        }
        if !self.isses.insert(iss.to_owned()) {
            return Err("duplicate issuer (or equal to our own issuer)".into());
        }
        Ok(iss.to_owned())
    }
}

/// `profile`: how the issuer marks its token kinds; default RFC 9068.
fn profile(name: Option<&str>) -> Result<IssuerProfile, String> {
    match name {
        None | Some("rfc9068") => Ok(IssuerProfile::Rfc9068),
        Some("keycloak") => Ok(IssuerProfile::Keycloak),
        Some(other) => Err(format!("{other:?} is not one of rfc9068, keycloak")),
    }
}

/// `algorithms`: asymmetric JWS algorithms only; default [`JwsAlgorithm::DEFAULT_ALLOWED`].
pub(super) fn algorithms(names: Option<Vec<String>>) -> Result<Vec<JwsAlgorithm>, String> {
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

/// `sts_audiences`: the exact `aud` values that name this STS in the issuer's tokens:
/// some, none empty, no wildcard (a `"*"` would name every service, which is what the
/// field exists to refuse).
fn sts_audiences(list: Vec<String>) -> Result<Vec<String>, String> {
    if list.iter().any(|a| a == "*") {
        return Err(
            "\"*\" is not a wildcard here: list the exact aud values that name this STS".into(),
        );
    }
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err("must list non-empty values".into());
    }
    Ok(list)
}

/// What introspection needs of its issuer: the `iss` to derive a Keycloak endpoint from
/// (`None` when it is wrong), the profile (`None` when wrong) and `allow_http`.
type Upstream<'a> = (Option<&'a str>, Option<IssuerProfile>, bool);

impl RawIntrospection {
    /// RFC 7662 introspection settings; the endpoint defaults to Keycloak's for a
    /// Keycloak issuer. Errors name the field under `introspection`.
    fn validate(
        self,
        upstream: Upstream,
        at: &At,
        cx: &mut Checker,
    ) -> Option<IntrospectionConfig> {
        let (issuer, profile, allow_http) = upstream;
        let endpoint = match (self.endpoint, profile, issuer) {
            (Some(e), _, _) => Some(Ok(e)),
            (None, Some(IssuerProfile::Keycloak), Some(issuer)) => Some(Ok(format!(
                "{issuer}/protocol/openid-connect/token/introspect"
            ))),
            (None, Some(IssuerProfile::Rfc9068), _) => Some(Err("required".to_owned())),
            // The profile or the issuer is wrong, and already said so.
            (None, _, _) => None,
        };
        let endpoint = endpoint.and_then(|e| {
            cx.check(
                &at.field("introspection.endpoint"),
                e.and_then(|e| endpoint_url(&e, allow_http)),
            )
        });
        let client_id = cx.check(
            &at.field("introspection.client_id"),
            non_empty(self.client_id),
        );
        let secret = cx.check(
            &at.field("introspection.secret"),
            self.secret.validate(cx.base),
        );
        let cache_seconds = cx.check(
            &at.field("introspection.cache_seconds"),
            bounded(self.cache_seconds, 60, 1, 3600),
        );
        Some(IntrospectionConfig {
            endpoint: endpoint?,
            client_id: client_id?,
            secret: secret?,
            cache_seconds: cache_seconds?,
            check_jwts: self.check_jwts,
        })
    }
}

/// The introspection endpoint: a URL we may fetch.
fn endpoint_url(endpoint: &str, allow_http: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(endpoint).map_err(|e| format!("not a URL: {e}"))?;
    if !url_allowed(&url, allow_http) {
        return Err(HTTPS_ONLY.into());
    }
    Ok(url)
}
