//! `[reissue_cache]` and `[forward_auth]`: answering repeated exchanges from memory, and
//! the forward-auth endpoint for gateways (`egress`).

use serde::Deserialize;

use super::{Checker, bounded};
use crate::oauth::{TokenType, is_resource_uri, is_scope_token};

/// Default bytes the re-issue cache may hold (its entries' estimated size).
pub const DEFAULT_REISSUE_CACHE_BYTES: u64 = 8 * 1024 * 1024;
const DEFAULT_MIN_REMAINING_FRACTION: f64 = 0.5;
const DEFAULT_MIN_REMAINING_SECONDS: u64 = 30;
/// The forward-auth endpoint's path when `[forward_auth]` names none.
pub const DEFAULT_FORWARD_AUTH_PATH: &str = "/forward-auth";

/// `[reissue_cache]`: when an exchange may be answered with a token issued before.
#[derive(Debug, Clone, PartialEq)]
pub struct ReissueCacheConfig {
    /// Whether the cache is used at all (a client's policy can also switch it off).
    pub enabled: bool,
    /// The most bytes its entries may hold (estimated), evicting the least used beyond.
    pub max_bytes: u64,
    /// A token is handed out again only while at least this fraction of its lifetime
    /// remains.
    pub min_remaining_fraction: f64,
    /// ... and at least this many seconds.
    pub min_remaining_seconds: u64,
}

impl Default for ReissueCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: DEFAULT_REISSUE_CACHE_BYTES,
            min_remaining_fraction: DEFAULT_MIN_REMAINING_FRACTION,
            min_remaining_seconds: DEFAULT_MIN_REMAINING_SECONDS,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReissueCache {
    enabled: Option<bool>,
    max_bytes: Option<u64>,
    min_remaining_fraction: Option<f64>,
    min_remaining_seconds: Option<u64>,
}

impl RawReissueCache {
    /// The `[reissue_cache]` table with its defaults, every value within its bounds.
    pub(super) fn validate(self, cx: &mut Checker) -> Option<ReissueCacheConfig> {
        let max_bytes = cx.check(
            "reissue_cache.max_bytes",
            bounded(self.max_bytes, DEFAULT_REISSUE_CACHE_BYTES, 65_536, 1 << 30),
        );
        let fraction = self
            .min_remaining_fraction
            .unwrap_or(DEFAULT_MIN_REMAINING_FRACTION);
        let fraction = cx.check(
            "reissue_cache.min_remaining_fraction",
            if (0.0..=1.0).contains(&fraction) {
                Ok(fraction)
            } else {
                Err("must be between 0 and 1".into())
            },
        );
        let seconds = cx.check(
            "reissue_cache.min_remaining_seconds",
            bounded(
                self.min_remaining_seconds,
                DEFAULT_MIN_REMAINING_SECONDS,
                1,
                86_400,
            ),
        );
        Some(ReissueCacheConfig {
            enabled: self.enabled.unwrap_or(true),
            max_bytes: max_bytes?,
            min_remaining_fraction: fraction?,
            min_remaining_seconds: seconds?,
        })
    }
}

/// `[forward_auth]`: the endpoint gateways call with the original request's headers.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAuthConfig {
    /// Its path on the public listener; a request to `path/…` carries the original path
    /// after it (Envoy's `path_prefix`).
    pub path: String,
    /// The header with the calling proxy's own client credentials (the syntax of
    /// `Authorization`), lower case.
    pub client_auth_header: String,
    /// The header with the original request's token, lower case.
    pub subject_header: String,
    /// The scheme before the token in it (`Bearer`); `None`: the value is the token.
    pub subject_scheme: Option<String>,
    /// What the subject token is declared as.
    pub subject_token_type: TokenType,
    /// The header with the original request's host, lower case (absent: `Host`).
    pub host_header: String,
    /// The header with the original request's path (absent: the path after `path`).
    pub uri_header: String,
    /// The response header that carries `Bearer <token>` on a grant, lower case.
    pub response_header: String,
    /// The response header that carries the OAuth error code on a refusal, lower case.
    pub error_header: String,
    /// Which target an original request's host and path get, in file order.
    pub routes: Vec<ForwardRoute>,
}

/// One `[[forward_auth.routes]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardRoute {
    /// The original host, lower case without port, or `*` for any.
    pub host: String,
    /// The original path's prefix, matched on whole segments.
    pub path_prefix: String,
    /// `audience` values to request.
    pub audiences: Vec<String>,
    /// `resource` values to request.
    pub resources: Vec<String>,
    /// `scope` to request, split; `None`: none (the policy grants the intersection).
    pub scope: Option<Vec<String>>,
    /// `requested_token_type`.
    pub requested_token_type: TokenType,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwardAuth {
    path: Option<String>,
    client_auth_header: Option<String>,
    subject_header: Option<String>,
    subject_scheme: Option<String>,
    subject_token_type: Option<String>,
    host_header: Option<String>,
    uri_header: Option<String>,
    response_header: Option<String>,
    error_header: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: String,
    path_prefix: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
}

impl RawForwardAuth {
    /// The `[forward_auth]` table, every field checked.
    pub(super) fn validate(self, cx: &mut Checker) -> Option<ForwardAuthConfig> {
        let path = self
            .path
            .unwrap_or_else(|| DEFAULT_FORWARD_AUTH_PATH.to_owned());
        let path = cx.check("forward_auth.path", endpoint_path(path));
        let mut header = |field: &str, value: Option<String>, default: &str| {
            let name = format!("forward_auth.{field}");
            cx.check(&name, header_name(value.as_deref().unwrap_or(default)))
        };
        let client_auth_header = header(
            "client_auth_header",
            self.client_auth_header,
            "x-gleipnir-client-authorization",
        );
        let subject_header = header("subject_header", self.subject_header, "authorization");
        let host_header = header("host_header", self.host_header, "x-forwarded-host");
        let uri_header = header("uri_header", self.uri_header, "x-forwarded-uri");
        let response_header = header("response_header", self.response_header, "authorization");
        let error_header = header("error_header", self.error_header, "x-gleipnir-error");
        let subject_scheme = cx.check(
            "forward_auth.subject_scheme",
            scheme(self.subject_scheme.as_deref().unwrap_or("Bearer")),
        );
        let subject_token_type = cx.check(
            "forward_auth.subject_token_type",
            match self.subject_token_type.as_deref().map(TokenType::from_name) {
                None => Ok(TokenType::AccessToken),
                Some(Some(t @ (TokenType::AccessToken | TokenType::Jwt | TokenType::IdToken))) => {
                    Ok(t)
                }
                Some(_) => Err("must be access_token, jwt or id_token".into()),
            },
        );
        if let (Some(client), Some(subject)) = (&client_auth_header, &subject_header)
            && client == subject
        {
            cx.error(
                "forward_auth.client_auth_header",
                "must differ from subject_header: one header cannot carry both the proxy's credentials and the original request's token",
            );
        }
        let routes = validate_routes(self.routes, cx);
        Some(ForwardAuthConfig {
            path: path?,
            client_auth_header: client_auth_header?,
            subject_header: subject_header?,
            subject_scheme: subject_scheme?,
            subject_token_type: subject_token_type?,
            host_header: host_header?,
            uri_header: uri_header?,
            response_header: response_header?,
            error_header: error_header?,
            routes: routes?,
        })
    }
}

fn validate_routes(raw: Vec<RawRoute>, cx: &mut Checker) -> Option<Vec<ForwardRoute>> {
    if raw.is_empty() {
        cx.error(
            "forward_auth.routes",
            "at least one route is needed: no request could be given a target",
        );
        return None;
    }
    let mut routes = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, route) in raw.into_iter().enumerate() {
        match route.validate() {
            Ok(route) => {
                let twin = routes.iter().any(|r: &ForwardRoute| {
                    r.host == route.host && r.path_prefix == route.path_prefix
                });
                if twin {
                    cx.error(
                        &format!("forward_auth.routes[{i}]"),
                        "another route has the same host and path_prefix",
                    );
                    ok = false;
                }
                routes.push(route);
            }
            Err((field, reason)) => {
                cx.error(&format!("forward_auth.routes[{i}].{field}"), &reason);
                ok = false;
            }
        }
    }
    ok.then_some(routes)
}

impl RawRoute {
    fn validate(self) -> Result<ForwardRoute, (&'static str, String)> {
        let host = self.host.to_ascii_lowercase();
        let host_ok = host == "*"
            || (!host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
                })
                && !host_has_port(&host));
        if !host_ok {
            return Err((
                "host",
                "must be a host name or IP address without port, or \"*\"".into(),
            ));
        }
        let path_prefix = self.path_prefix.unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') || path_prefix.contains(['?', '#', '%', '\\']) {
            return Err((
                "path_prefix",
                "must start with / and hold no ?, #, % or \\".into(),
            ));
        }
        if self.audiences.is_empty() && self.resources.is_empty() {
            return Err(("audiences", "a route needs audiences or resources".into()));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(("audiences", "must not contain empty strings".into()));
        }
        if !self.resources.iter().all(|r| is_resource_uri(r)) {
            return Err((
                "resources",
                "each must be an absolute URI without fragment (RFC 8707 §2)".into(),
            ));
        }
        let scope = match self.scope {
            None => None,
            Some(s) => {
                let tokens: Vec<String> = s
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
                if tokens.is_empty() || !tokens.iter().all(|t| is_scope_token(t)) {
                    return Err((
                        "scope",
                        "must be space-separated scope tokens (RFC 6749 §3.3)".into(),
                    ));
                }
                Some(tokens)
            }
        };
        let requested_token_type = match self.requested_token_type.as_deref() {
            None => TokenType::AccessToken,
            Some(name) => match TokenType::from_name(name) {
                Some(t @ (TokenType::AccessToken | TokenType::Jwt)) => t,
                _ => return Err(("requested_token_type", "must be access_token or jwt".into())),
            },
        };
        Ok(ForwardRoute {
            host,
            path_prefix: path_prefix.trim_end_matches('/').to_owned(),
            audiences: self.audiences,
            resources: self.resources,
            scope,
            requested_token_type,
        })
    }
}

/// Whether a host (as written in a route, lower case) ends in a port.
fn host_has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        // `[::1]` has colons inside brackets only.
        Some((before, _)) if host.starts_with('[') => before.ends_with(']'),
        Some(_) => true,
        None => false,
    }
}

/// The endpoint's path: absolute, plain characters, not one of the endpoints gleipnir
/// already serves.
fn endpoint_path(path: String) -> Result<String, String> {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'));
    if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') || !plain {
        return Err(
            "must start with /, not end with /, and hold only letters, digits and / - _ . ~".into(),
        );
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err("must not hold . or .. segments".into());
    }
    if path == "/token" || path.starts_with("/token/") || path.starts_with("/.well-known") {
        return Err("must not be /token or under /.well-known".into());
    }
    Ok(path)
}

/// A header name (RFC 9110 §5.1), lower case.
fn header_name(name: &str) -> Result<String, String> {
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(header) => Ok(header.as_str().to_owned()),
        Err(_) => Err(format!("{name:?} is not a header name")),
    }
}

/// The authentication scheme before the subject token; empty: none.
fn scheme(value: &str) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(Some(value.to_owned()))
    } else {
        Err("must be a scheme name such as Bearer, or empty".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths() {
        for good in ["/forward-auth", "/ext/authz", "/a.b_c~d"] {
            assert_eq!(endpoint_path(good.into()).as_deref(), Ok(good));
        }
        for bad in [
            "forward",
            "/",
            "/x/",
            "/token",
            "/token/x",
            "/.well-known/x",
            "/a/../b",
            "/a?b",
            "/a b",
            "/a%2f",
        ] {
            assert!(endpoint_path(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_hosts() {
        assert!(!host_has_port("orders.example"));
        assert!(host_has_port("orders.example:8080"));
        assert!(!host_has_port("[::1]"));
        assert!(host_has_port("[::1]:80"));
    }
}
