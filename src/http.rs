//! The HTTP edge: routing by (method, path) for the public and admin listeners. With
//! `server`, the only module that knows hyper. Handlers turn a request into a response;
//! they never fail (every error has its response).

pub mod body;
pub mod lifecycle;
pub mod request_id;
pub mod response;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::app::App;
use crate::audit::AuditRecord;
use crate::client_auth::{ClientAuthError, ClientRequest};
use crate::error::{ExchangeError, to_wire};
use crate::mint::IssuedToken;
use crate::oauth::form::FormBody;
use response::Body;

/// The connection's peer, put in each request's extensions by `server` (the audit
/// record's `peer`; behind a proxy, the proxy's address).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// The TLS client certificate chain of the connection (leaf first), put in each
/// request's extensions by `server` when the client sent one (RFC 8705 §2).
#[derive(Debug, Clone)]
pub struct ClientCertificates(pub std::sync::Arc<[rustls_pki_types::CertificateDer<'static>]>);

/// Envoy's header carrying the client certificate a proxy terminated TLS for.
pub const FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";

/// Request and response header carrying the request id also written to the logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The public listener: `/token` and the `/.well-known` documents (rules §1). Each
/// request gets its id ([`request_id`]) and its span, the root of the exchange's trace
/// or the child of the caller's (`traceparent`).
pub async fn public(app: &App, request: Request<Incoming>) -> Response<Body> {
    let request_id = request_id::of(request.headers());
    let span = request_span(&request, &request_id);
    let mut response = route(app, &request_id, request)
        .instrument(span.clone())
        .await;
    // An integer attribute (tracing-opentelemetry exports unsigned values as text).
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The span of a request on the public listener (OpenTelemetry HTTP server conventions:
/// named by method and route, never by a path the caller chose). `gleipnir.client_id` and
/// the `gleipnir.decision`/`refusal.*` fields are recorded by the exchange. Disabled,
/// and costing nothing, unless traces are exported.
fn request_span(request: &Request<Incoming>, request_id: &str) -> tracing::Span {
    let path = request.uri().path();
    let route = match path {
        "/token" | "/.well-known/jwks.json" | "/.well-known/oauth-authorization-server" => {
            Some(path)
        }
        _ => None,
    };
    let method = match *request.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE => {
            request.method().as_str()
        }
        Method::OPTIONS | Method::PATCH | Method::TRACE | Method::CONNECT => {
            request.method().as_str()
        }
        _ => "_OTHER",
    };
    let span = tracing::info_span!(
        target: crate::telemetry::SPAN_TARGET,
        "request",
        otel.name = %route.map_or_else(|| method.to_owned(), |r| format!("{method} {r}")),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        gleipnir.request_id = request_id,
        gleipnir.client_id = tracing::field::Empty,
        gleipnir.decision = tracing::field::Empty,
        gleipnir.refusal.stage = tracing::field::Empty,
        gleipnir.refusal.reason = tracing::field::Empty,
    );
    crate::telemetry::propagation::set_remote_parent(&span, request.headers());
    span
}

async fn route(app: &App, request_id: &str, request: Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/token") => token(app, request_id, request).await,
        (_, path) if app.forward_auth().is_some_and(|f| f.serves(path)) => {
            forward_auth(app, request_id, request).await
        }
        (_, "/token") => response::method_not_allowed("POST"),
        (&Method::POST, "/introspect") => lifecycle::introspect(app, request).await,
        (&Method::POST, "/revoke") => lifecycle::revoke(app, request).await,
        (_, "/introspect" | "/revoke") => response::method_not_allowed("POST"),
        (&Method::GET | &Method::HEAD, "/.well-known/jwks.json") => {
            response::document(app.jwks_document(), app.documents_max_age())
        }
        (&Method::GET | &Method::HEAD, "/.well-known/oauth-authorization-server") => {
            response::document(app.metadata_document(), app.documents_max_age())
        }
        (_, "/.well-known/jwks.json" | "/.well-known/oauth-authorization-server") => {
            response::method_not_allowed("GET, HEAD")
        }
        _ => response::not_found(),
    }
}

async fn token(app: &App, request_id: &str, request: Request<Incoming>) -> Response<Body> {
    // Latency is an interval, not wall time: a monotonic reading.
    let started = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let peer = parts.extensions.get::<Peer>().map(|p| p.0.ip());
    let mut authorizations = parts.headers.get_all(AUTHORIZATION).iter();
    let authorization = authorizations.next().map(HeaderValue::as_bytes);
    let mut forwarded = parts.headers.get_all(FORWARDED_CLIENT_CERT).iter();
    let forwarded_certificate = forwarded.next().map(HeaderValue::as_bytes);
    let certificates = parts.extensions.get::<ClientCertificates>();
    // RFC 9110 §5.3: a field may be repeated only when it is defined as a list, and
    // Authorization (§11.6.2) carries one set of credentials. Taking the first of two
    // would let whatever the client or a proxy put first decide who the caller is.
    // Refused before the body is read: client authentication comes first. The same for
    // two forwarded-certificate headers: a proxy writes one.
    let duplicate = if authorizations.next().is_some() {
        Some(ClientAuthError::MultipleAuthorizationHeaders)
    } else if forwarded.next().is_some() {
        Some(ClientAuthError::MalformedForwardedCertificate)
    } else {
        None
    };
    let (client_id, result) = if let Some(duplicate) = duplicate {
        let error = ExchangeError::Client(duplicate);
        (None, refused_at_edge(app, request_id, peer, error))
    } else {
        let read = body::read_form(
            &parts.headers,
            body,
            app.max_body_bytes(),
            app.body_budget(),
        );
        match read.await {
            Ok(form) => {
                let client = ClientRequest {
                    authorization,
                    form: &form,
                    peer,
                    tls_certificates: certificates.map(|c| &*c.0),
                    forwarded_certificate,
                };
                let exchanged = app.exchanger().exchange(request_id, &client).await;
                (exchanged.client_id, exchanged.result)
            }
            Err(e) => (
                None,
                refused_at_edge(app, request_id, peer, ExchangeError::Body(e)),
            ),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(issued) => {
            app.metrics().exchange("granted", client_id, seconds);
            response::token(&issued)
        }
        Err(error) => {
            let wire = to_wire(&error, authorization.is_some());
            app.metrics()
                .exchange(wire.code.as_str(), client_id, seconds);
            if wire.status.is_server_error() {
                tracing::error!(
                    request_id,
                    stage = error.stage(),
                    reason = error.reason(),
                    "exchange failed"
                );
            }
            response::error(&wire)
        }
    }
}

/// The forward-auth endpoint (`egress::forward_auth`): any method (proxies send the
/// original one), the original request's headers, no body read.
async fn forward_auth(app: &App, request_id: &str, request: Request<Incoming>) -> Response<Body> {
    let Some(endpoint) = app.forward_auth() else {
        return response::not_found();
    };
    let (parts, _body) = request.into_parts();
    let peer = parts.extensions.get::<Peer>().map(|p| p.0.ip());
    let certificates = parts.extensions.get::<ClientCertificates>();
    let result = match endpoint.credentials(&parts.headers) {
        Err(e) => refused_at_edge(app, request_id, peer, ExchangeError::Client(e)),
        Ok(credentials) => {
            let no_form = FormBody::default();
            // The proxy's own credentials: its header, or the certificate of its own
            // connection. An `x-forwarded-client-cert` here describes the original
            // request's client, not the proxy, so it never authenticates the proxy.
            let proxy = ClientRequest {
                authorization: credentials,
                form: &no_form,
                peer,
                tls_certificates: certificates.map(|c| &*c.0),
                forwarded_certificate: None,
            };
            let read = || Ok(endpoint.request(&parts)?);
            app.exchanger()
                .exchange_for_proxy(request_id, &proxy, read)
                .await
        }
    };
    match result {
        Ok(issued) => {
            app.metrics().forward_auth("granted");
            response::forward_granted(endpoint.response_header(), &issued)
        }
        Err(error) => {
            let wire = crate::error::to_forward_auth(&error);
            app.metrics().forward_auth(wire.code.as_str());
            if wire.status.is_server_error() {
                tracing::error!(
                    request_id,
                    stage = error.stage(),
                    reason = error.reason(),
                    "forward auth failed"
                );
            }
            response::forward_refused(endpoint.error_header(), &wire, bearer_challenge(&error))
        }
    }
}

/// The `WWW-Authenticate` challenge of a 401 at the forward-auth endpoint (RFC 6750
/// §3.1): without an error code when the request carried no token, `invalid_request`
/// for a malformed header, `invalid_token` for a token that failed its checks.
fn bearer_challenge(error: &ExchangeError) -> &'static str {
    use crate::egress::forward_auth::ForwardAuthError as F;
    match error {
        ExchangeError::ForwardAuth(F::MissingSubjectToken) => r#"Bearer realm="gleipnir""#,
        ExchangeError::ForwardAuth(F::MalformedSubjectHeader | F::RepeatedSubjectHeader) => {
            r#"Bearer realm="gleipnir", error="invalid_request""#
        }
        _ => r#"Bearer realm="gleipnir", error="invalid_token""#,
    }
}

/// A refusal made here, before the exchange pipeline runs: audited and counted as the
/// pipeline's own refusals are.
fn refused_at_edge(
    app: &App,
    request_id: &str,
    peer: Option<std::net::IpAddr>,
    error: ExchangeError,
) -> Result<IssuedToken, ExchangeError> {
    let audit = AuditRecord {
        peer,
        ..AuditRecord::default()
    };
    audit.refused(request_id, &error, app.exchanger().refusals());
    app.metrics().refusal(error.stage(), error.reason());
    Err(error)
}

/// The admin listener: liveness, readiness, metrics and the admin revocation (rules §1).
pub async fn admin(app: &App, request: Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/livez") => {
            response::json(StatusCode::OK, r#"{"status":"live"}"#)
        }
        (&Method::GET | &Method::HEAD, "/readyz") if app.is_draining() => {
            response::json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
        }
        (&Method::GET | &Method::HEAD, "/readyz") if app.is_ready() => {
            response::json(StatusCode::OK, r#"{"status":"ready"}"#)
        }
        (&Method::GET | &Method::HEAD, "/readyz") => {
            response::json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#)
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut r = Response::new(Body::from(app.metrics_text()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        (_, "/livez" | "/readyz" | "/metrics") => response::method_not_allowed("GET, HEAD"),
        (&Method::POST, "/admin/revoke") => lifecycle::admin_revoke(app, request).await,
        _ => response::not_found(),
    }
}
