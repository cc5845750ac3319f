//! The HTTP side of the lifecycle endpoints: `POST /introspect` (RFC 7662) and
//! `POST /revoke` (RFC 7009) on the public listener, `POST /admin/revoke` on the admin
//! listener. Each reads the form as `/token` does (media type, size cap, deadline, the
//! shared body budget), refuses a repeated `Authorization` header, and leaves the rest to
//! `lifecycle::endpoints`.

use http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body;
use super::response::{self, Body};
use crate::app::App;
use crate::client_auth::{ClientAuthError, ClientRequest};
use crate::error::endpoint_to_wire;
use crate::http::{ClientCertificates, FORWARDED_CLIENT_CERT, Peer};
use crate::lifecycle::endpoints::{self, EndpointError, Revoked};
use crate::oauth::form::FormBody;

/// What a request to a lifecycle endpoint carries: its head and its form.
struct Read {
    parts: http::request::Parts,
    form: FormBody,
}

impl Read {
    /// The caller's credentials, as `/token` reads them: the one `Authorization` header,
    /// the connection's certificate, a forwarded certificate (believed only from a
    /// trusted proxy, by client authentication), the form.
    fn client(&self) -> ClientRequest<'_> {
        let headers = &self.parts.headers;
        ClientRequest {
            authorization: headers.get(AUTHORIZATION).map(HeaderValue::as_bytes),
            form: &self.form,
            peer: self.parts.extensions.get::<Peer>().map(|p| p.0.ip()),
            tls_certificates: self
                .parts
                .extensions
                .get::<ClientCertificates>()
                .map(|c| &*c.0),
            forwarded_certificate: headers
                .get(FORWARDED_CLIENT_CERT)
                .map(HeaderValue::as_bytes),
        }
    }

    /// The `Authorization` header (the admin listener's bearer secret).
    fn authorization(&self) -> Option<&[u8]> {
        self.parts
            .headers
            .get(AUTHORIZATION)
            .map(HeaderValue::as_bytes)
    }
}

/// The head and form of a request, or the refusal: as at /token (RFC 9110 §5.3), two
/// sets of credentials (or of forwarded certificates) are one too many.
async fn read(app: &App, request: Request<Incoming>) -> Result<Read, EndpointError> {
    let (parts, body) = request.into_parts();
    if parts.headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        return Err(EndpointError::Client(
            ClientAuthError::MultipleAuthorizationHeaders,
        ));
    }
    if parts
        .headers
        .get_all(FORWARDED_CLIENT_CERT)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(EndpointError::Client(
            ClientAuthError::MalformedForwardedCertificate,
        ));
    }
    let form = body::read_form(
        &parts.headers,
        body,
        app.max_body_bytes(),
        app.body_budget(),
    )
    .await
    .map_err(EndpointError::Body)?;
    Ok(Read { parts, form })
}

/// A JSON answer that must not be cached (it describes a token).
fn no_store(status: StatusCode, body: String) -> Response<Body> {
    let mut response = response::json(status, body);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn refused(error: &EndpointError, header_auth: bool) -> Response<Body> {
    response::error(&endpoint_to_wire(error, header_auth))
}

/// `POST /introspect`.
pub async fn introspect(app: &App, request: Request<Incoming>) -> Response<Body> {
    let read = match read(app, request).await {
        Ok(read) => read,
        Err(e) => {
            app.metrics().introspection(e.as_str());
            return refused(&e, false);
        }
    };
    let authorization = read.authorization();
    match endpoints::introspect(app.exchanger(), &read.client()).await {
        Ok(answer) => {
            let active = answer.get("active") == Some(&serde_json::Value::Bool(true));
            app.metrics()
                .introspection(if active { "active" } else { "inactive" });
            no_store(StatusCode::OK, answer.to_string())
        }
        Err(e) => {
            app.metrics().introspection(e.as_str());
            refused(&e, authorization.is_some())
        }
    }
}

/// `POST /revoke`: 200 with an empty object whether or not the token was live (RFC 7009
/// §2.2).
pub async fn revoke(app: &App, request: Request<Incoming>) -> Response<Body> {
    let read = match read(app, request).await {
        Ok(read) => read,
        Err(e) => return refused(&e, false),
    };
    let authorization = read.authorization();
    match endpoints::revoke(app.exchanger(), &read.client()).await {
        Ok(Revoked::Token | Revoked::Ignored) => no_store(StatusCode::OK, "{}".into()),
        Err(e) => refused(&e, authorization.is_some()),
    }
}

/// `POST /admin/revoke` (admin listener); 404 unless `[lifecycle] admin_secret` is set.
pub async fn admin_revoke(app: &App, request: Request<Incoming>) -> Response<Body> {
    let Some(admin) = app.admin_revocation() else {
        return response::not_found();
    };
    let read = match read(app, request).await {
        Ok(read) => read,
        Err(e) => return refused(&e, false),
    };
    match admin
        .revoke(app.exchanger(), read.authorization(), &read.form)
        .await
    {
        Ok(answer) => no_store(StatusCode::OK, answer.to_string()),
        Err(e) => {
            let mut response = refused(&e, false);
            if e == EndpointError::AdminUnauthorized {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}
