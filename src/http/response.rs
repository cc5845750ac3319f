//! Building responses: JSON bodies with the headers RFC 6749 §5.1 asks for.

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::error::WireError;
use crate::mint::IssuedToken;

/// The response body type of every endpoint.
pub type Body = Full<Bytes>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

fn build(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

/// A JSON document (JWKS, metadata, probes).
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    build(status, body)
}

/// A public JSON document (our JWKS, our metadata) that caches may keep `max_age` seconds
/// (RFC 9111 §5.2.2.1); `no-cache` (revalidate every time) when it is 0.
pub fn document(body: impl Into<Bytes>, max_age: u64) -> Response<Body> {
    let mut response = build(StatusCode::OK, body);
    let value = match max_age {
        0 => NO_CACHE,
        age => HeaderValue::from_str(&format!("public, max-age={age}")).unwrap_or(NO_CACHE),
    };
    response.headers_mut().insert(CACHE_CONTROL, value);
    response
}

/// RFC 8693 §2.2.1 success response, not cacheable (RFC 6749 §5.1).
pub fn token(issued: &IssuedToken) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct TokenResponse<'a> {
        access_token: &'a str,
        issued_token_type: &'static str,
        token_type: &'static str,
        expires_in: u64,
        #[serde(skip_serializing_if = "str::is_empty")]
        scope: &'a str,
    }
    let body = serde_json::to_vec(&TokenResponse {
        access_token: &issued.access_token,
        issued_token_type: issued.issued_token_type.urn(),
        token_type: "Bearer",
        expires_in: issued.expires_in,
        scope: &issued.scope,
    })
    .unwrap_or_default();
    let mut response = build(StatusCode::OK, body);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert(PRAGMA, NO_CACHE);
    response
}

/// RFC 6749 §5.2 error response.
pub fn error(wire: &WireError) -> Response<Body> {
    let body =
        serde_json::json!({ "error": wire.code.as_str(), "error_description": wire.description });
    let mut response = build(wire.status, body.to_string());
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert(PRAGMA, NO_CACHE);
    if wire.www_authenticate {
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gleipnir\""),
        );
    }
    if let Some(seconds) = wire.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// A grant at the forward-auth endpoint: 200, `Bearer <token>` in `header` for the proxy
/// to put in the request it forwards, no body; never cached (RFC 6749 §5.1).
pub fn forward_granted(header: &http::HeaderName, issued: &IssuedToken) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert(PRAGMA, NO_CACHE);
    match HeaderValue::from_str(&format!("Bearer {}", issued.access_token)) {
        Ok(mut value) => {
            value.set_sensitive(true);
            headers.insert(header.clone(), value);
        }
        // A compact JWS is base64url and dots: always a valid header value.
        Err(_) => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    response
}

/// A refusal at the forward-auth endpoint: the error JSON of [`error`], the OAuth code in
/// `error_header` too (proxies copy headers, not bodies), and on 401 the Bearer
/// `challenge` (RFC 6750 §3), which proxies pass on to their client.
pub fn forward_refused(
    error_header: &http::HeaderName,
    wire: &WireError,
    challenge: &'static str,
) -> Response<Body> {
    let mut response = error(wire);
    let headers = response.headers_mut();
    headers.insert(
        error_header.clone(),
        HeaderValue::from_static(wire.code.as_str()),
    );
    if wire.status == StatusCode::UNAUTHORIZED {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

/// 404 for paths we do not serve.
pub fn not_found() -> Response<Body> {
    build(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
}

/// 405 with the methods the path allows.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = build(
        StatusCode::METHOD_NOT_ALLOWED,
        r#"{"error":"invalid_request","error_description":"method not allowed"}"#,
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}
