//! The forward-auth endpoint (`[forward_auth]`): a gateway's authorization request,
//! read as a token-exchange request.
//!
//! Envoy's `ext_authz` (HTTP service), Istio's `envoyExtAuthzHttp` provider, nginx's
//! `auth_request` and Traefik's ForwardAuth all speak one pattern: for each request they
//! proxy, they send the original request's headers (not its body) to an authorization
//! service, may add headers of their own, and on a 2xx answer copy named headers of the
//! answer into the request they forward upstream; on 401 or 403 they refuse the original
//! request with that status. This module reads such a request:
//!
//! - **Who asks** is the proxy, authenticated as a registered client through the same
//!   dispatch as at `/token` ([`ClientAuthenticator::authenticate`](crate::client_auth::ClientAuthenticator::authenticate)),
//!   before anything else is read. Its credentials cannot travel in `Authorization`: the
//!   original request's token is there, and every one of these proxies forwards it. So
//!   the proxy's own credentials come in a header of their own, `client_auth_header`
//!   (default `x-gleipnir-client-authorization`), with the syntax of `Authorization`
//!   (`Basic base64(id:secret)`), which each proxy can set on its authorization request
//!   alone (nginx `proxy_set_header` in the `auth_request` location, Envoy
//!   `authorization_request.headers_to_add`, Istio `includeAdditionalHeadersInCheck`)
//!   and which therefore never reaches the upstream. A proxy sets it whatever the
//!   original request carried (`proxy_set_header` replaces; a repeated header is
//!   refused, so a client cannot smuggle one in beside the proxy's). Once other methods
//!   exist (mutual TLS, a forwarded client certificate), they authenticate the proxy the
//!   same way.
//! - **The subject token** is the original request's `Authorization: Bearer <token>`
//!   (`subject_header`, `subject_scheme`), declared as `subject_token_type` (default
//!   `access_token`). A forward-auth exchange has no actor token: the proxy's client is
//!   the acting party, as for any exchange without one (its policy needs
//!   `impersonate = true`).
//! - **The target** comes from the original request's host and path: the host from
//!   `host_header` (default `x-forwarded-host`; absent, the request's own `Host` or
//!   `:authority`, which Envoy keeps from the original request), the path from
//!   `uri_header` (default `x-forwarded-uri`; absent, what follows the endpoint's path,
//!   as Envoy's `path_prefix` sends it). The first route (`[[forward_auth.routes]]`)
//!   whose host matches exactly (a `*` route matches any host, after the exact ones) and
//!   whose `path_prefix` is the longest whole-segment prefix of the path gives the
//!   `audience`/`resource`, `scope` and requested token type. A path with `.` or `..`
//!   segments, empty segments, a `\`, or a percent-encoded byte a proxy decodes before
//!   routing (an unreserved character, `/`, `\`) is refused: the proxy routes on its own
//!   normalised reading of such a path, and a different reading here could put a token
//!   meant for one upstream into a request for another.
//!
//! From there the request is an exchange like any other ([`Exchanger::exchange_for_proxy`](crate::exchange::Exchanger::exchange_for_proxy)):
//! admission, the re-issue cache, validation, policy and minting, audited alike. What
//! the proxy is told is in `error::to_forward_auth`: 200 with `Authorization: Bearer
//! <token>` (`response_header`), 401 for a missing or bad subject token (with a
//! `WWW-Authenticate: Bearer` challenge the proxy passes on), 403 for every other
//! refusal (a wrong proxy credential included: a 401 would reach the end user as a
//! challenge for credentials that are not theirs), 503 when an issuer's keys are
//! unavailable; the OAuth error code in `error_header`. No refusal carries a token.

use http::HeaderMap;
use http::request::Parts;
use thiserror::Error;

use crate::client_auth::ClientAuthError;
use crate::config::{ForwardAuthConfig, ForwardRoute};
use crate::request::{PresentedToken, TokenExchangeRequest};

/// Why a forward-auth request could not be read as an exchange.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthError {
    /// The original request carried no subject token.
    #[error("no subject token in the original request")]
    MissingSubjectToken,
    /// The subject header is not `<scheme> <token>`.
    #[error("malformed subject token header")]
    MalformedSubjectHeader,
    /// The subject header appears more than once.
    #[error("subject token header repeated")]
    RepeatedSubjectHeader,
    /// The original host or path header appears more than once, or holds a list.
    #[error("original host or path given more than once")]
    RepeatedTargetHeader,
    /// No original host could be read.
    #[error("no original host")]
    MissingHost,
    /// The original path is not an absolute path, or holds dot segments or encoded
    /// separators.
    #[error("original path is ambiguous")]
    AmbiguousPath,
    /// No route matches the original host and path.
    #[error("no route for the original host and path")]
    NoRoute,
}

impl ForwardAuthError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardAuthError::MissingSubjectToken => "missing_subject_token",
            ForwardAuthError::MalformedSubjectHeader => "malformed_subject_header",
            ForwardAuthError::RepeatedSubjectHeader => "repeated_subject_header",
            ForwardAuthError::RepeatedTargetHeader => "repeated_target_header",
            ForwardAuthError::MissingHost => "missing_host",
            ForwardAuthError::AmbiguousPath => "ambiguous_path",
            ForwardAuthError::NoRoute => "no_route",
        }
    }

    /// Whether it is about the subject token (401 rather than 403).
    pub fn is_about_subject(self) -> bool {
        match self {
            ForwardAuthError::MissingSubjectToken
            | ForwardAuthError::MalformedSubjectHeader
            | ForwardAuthError::RepeatedSubjectHeader => true,
            ForwardAuthError::RepeatedTargetHeader
            | ForwardAuthError::MissingHost
            | ForwardAuthError::AmbiguousPath
            | ForwardAuthError::NoRoute => false,
        }
    }
}

/// The endpoint, built from `[forward_auth]`.
#[derive(Debug)]
pub struct ForwardAuth {
    config: ForwardAuthConfig,
    response_header: http::HeaderName,
    error_header: http::HeaderName,
}

impl ForwardAuth {
    /// The endpoint `config` describes (its header names were checked at load).
    pub fn new(config: &ForwardAuthConfig) -> Option<Self> {
        Some(Self {
            response_header: http::HeaderName::from_bytes(config.response_header.as_bytes())
                .ok()?,
            error_header: http::HeaderName::from_bytes(config.error_header.as_bytes()).ok()?,
            config: config.clone(),
        })
    }

    /// Whether a request path is for this endpoint: its path, or its path followed by
    /// the original path (`/forward-auth/orders/1`).
    pub fn serves(&self, path: &str) -> bool {
        path.strip_prefix(self.config.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The header a grant's `Bearer <token>` goes in.
    pub fn response_header(&self) -> &http::HeaderName {
        &self.response_header
    }

    /// The header a refusal's OAuth error code goes in.
    pub fn error_header(&self) -> &http::HeaderName {
        &self.error_header
    }

    /// The proxy's own credentials (`client_auth_header`), for client authentication;
    /// more than one such header is refused as at `/token`.
    pub fn credentials<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<&'h [u8]>, ClientAuthError> {
        let mut values = headers
            .get_all(self.config.client_auth_header.as_str())
            .iter();
        let first = values.next().map(http::HeaderValue::as_bytes);
        match values.next() {
            Some(_) => Err(ClientAuthError::MultipleAuthorizationHeaders),
            None => Ok(first),
        }
    }

    /// The exchange the original request asks for: its subject token, and the target its
    /// host and path are routed to.
    pub fn request(&self, parts: &Parts) -> Result<TokenExchangeRequest, ForwardAuthError> {
        let token = self.subject_token(&parts.headers)?;
        let host = self.original_host(parts)?;
        let path = self.original_path(parts)?;
        let route = self.route(&host, &path).ok_or(ForwardAuthError::NoRoute)?;
        Ok(TokenExchangeRequest {
            subject: PresentedToken {
                token: token.to_owned(),
                token_type: self.config.subject_token_type,
            },
            actor: None,
            audiences: route.audiences.clone(),
            resources: route.resources.clone(),
            scope: route.scope.clone(),
            requested_token_type: route.requested_token_type,
        })
    }

    /// `<scheme> <token>` from the subject header (RFC 6750 §2.1 for `Bearer`; the scheme
    /// compared case-insensitively, RFC 9110 §11.1).
    fn subject_token<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, ForwardAuthError> {
        let value = single(headers, &self.config.subject_header)
            .map_err(|()| ForwardAuthError::RepeatedSubjectHeader)?
            .ok_or(ForwardAuthError::MissingSubjectToken)?;
        let value = value
            .to_str()
            .map_err(|_| ForwardAuthError::MalformedSubjectHeader)?;
        let token = match &self.config.subject_scheme {
            None => value,
            Some(scheme) => {
                let (given, token) = value
                    .split_once(' ')
                    .ok_or(ForwardAuthError::MalformedSubjectHeader)?;
                if !given.eq_ignore_ascii_case(scheme) {
                    return Err(ForwardAuthError::MalformedSubjectHeader);
                }
                token.trim_start_matches(' ')
            }
        };
        if token.is_empty() || token.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(ForwardAuthError::MalformedSubjectHeader);
        }
        Ok(token)
    }

    /// The original host, lower case, without port: `host_header`, else `Host`, else the
    /// request's authority (HTTP/2).
    fn original_host(&self, parts: &Parts) -> Result<String, ForwardAuthError> {
        let repeated = |()| ForwardAuthError::RepeatedTargetHeader;
        let value = match single(&parts.headers, &self.config.host_header).map_err(repeated)? {
            Some(v) => Some(v.to_str().map_err(|_| ForwardAuthError::MissingHost)?),
            None => match single(&parts.headers, "host").map_err(repeated)? {
                Some(v) => Some(v.to_str().map_err(|_| ForwardAuthError::MissingHost)?),
                None => parts.uri.authority().map(|a| a.as_str()),
            },
        };
        let value = value.ok_or(ForwardAuthError::MissingHost)?.trim();
        // A list (`a, b`, appended by proxies in a row) names no one host.
        if value.contains(',') {
            return Err(ForwardAuthError::RepeatedTargetHeader);
        }
        let host = without_port(value).to_ascii_lowercase();
        if host.is_empty() {
            return Err(ForwardAuthError::MissingHost);
        }
        Ok(host)
    }

    /// The original path (without query): `uri_header`, else what follows the endpoint's
    /// path in the request's own. Refused when a proxy could read it differently.
    fn original_path(&self, parts: &Parts) -> Result<String, ForwardAuthError> {
        let uri = match single(&parts.headers, &self.config.uri_header)
            .map_err(|()| ForwardAuthError::RepeatedTargetHeader)?
        {
            Some(v) => v.to_str().map_err(|_| ForwardAuthError::AmbiguousPath)?,
            None => {
                let rest = parts
                    .uri
                    .path_and_query()
                    .map_or("", |p| p.as_str())
                    .strip_prefix(self.config.path.as_str())
                    .unwrap_or("");
                if rest.is_empty() || rest.starts_with('?') {
                    return Ok("/".into());
                }
                rest
            }
        };
        let path = uri.split(['?', '#']).next().unwrap_or("");
        unambiguous(path)
            .then(|| path.to_owned())
            .ok_or(ForwardAuthError::AmbiguousPath)
    }

    /// The route for `host` and `path`: among the routes of that exact host, else those of
    /// `*`, the one with the longest `path_prefix` that is a whole-segment prefix.
    fn route(&self, host: &str, path: &str) -> Option<&ForwardRoute> {
        let best = |wanted: &str| {
            self.config
                .routes
                .iter()
                .filter(|r| r.host == wanted && segment_prefix(&r.path_prefix, path))
                .max_by_key(|r| r.path_prefix.len())
        };
        best(host).or_else(|| best("*"))
    }
}

/// The one value of header `name`: `Err` when it is repeated.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h http::HeaderValue>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

/// `host[:port]` or `[v6]:port` without the port.
fn without_port(value: &str) -> &str {
    if value.starts_with('[') {
        return value.split_inclusive(']').next().unwrap_or(value);
    }
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => value,
    }
}

/// An absolute path that every reader resolves alike: no `.` or `..` segment, no empty
/// segment (`//`, which proxies merge), no `\`, and no percent-encoded byte that a
/// proxy would decode before routing (an unreserved character, RFC 3986 §2.3, or `/`,
/// `\`); every `%` starts a valid escape.
fn unambiguous(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') || path.contains("//") {
        return false;
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    let bytes = path.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        if b != b'%' {
            return true;
        }
        let hex = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16));
        match (hex(i + 1), hex(i + 2)) {
            (Some(hi), Some(lo)) => {
                let decoded = u8::try_from(hi * 16 + lo).unwrap_or(0);
                !(decoded.is_ascii_alphanumeric() || b"-._~/\\".contains(&decoded))
            }
            _ => false,
        }
    })
}

/// Whether `prefix` (without a trailing `/`; empty for `/`) is `path` or a run of its
/// leading whole segments.
fn segment_prefix(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(without_port("orders.example:8443"), "orders.example");
        assert_eq!(without_port("orders.example"), "orders.example");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }

    #[test]
    fn paths_that_could_be_read_two_ways_are_refused() {
        for good in [
            "/",
            "/orders",
            "/orders/1",
            "/orders/a.b",
            "/a%20b",
            "/orders/",
            "/a%3Fb",
        ] {
            assert!(unambiguous(good), "{good}");
        }
        for bad in [
            "",
            "orders",
            "/orders/../admin",
            "/./orders",
            "/orders/..",
            "/a%2e%2e/b",
            "/a%2F../b",
            "/a\\b",
            "/a%5cb",
            "/%6frders",
            "/orders//admin",
            "/a%",
            "/a%zz",
            "/a%7e",
        ] {
            assert!(!unambiguous(bad), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(segment_prefix("", "/anything"));
        assert!(segment_prefix("/orders", "/orders"));
        assert!(segment_prefix("/orders", "/orders/1"));
        assert!(!segment_prefix("/orders", "/ordersx"));
        assert!(!segment_prefix("/orders", "/"));
    }
}
