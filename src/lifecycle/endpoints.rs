//! The lifecycle endpoints, without HTTP: `POST /introspect` (RFC 7662), `POST /revoke`
//! (RFC 7009) on the public listener, and the admin listener's `POST /admin/revoke`.
//!
//! Introspection and revocation authenticate the caller exactly as `/token` does (RFC
//! 7662 §2.1, RFC 7009 §2.1) and apply its policy's rate limit. A token is ours only if
//! its signature verifies with our keys: anything else (an upstream token, an opaque
//! string, a forged or expired token) is inactive, and revoking it is a no-op answered
//! 200 (RFC 7009 §2.2).
//!
//! Who may see what (RFC 7662 §4): only clients configured with `introspect = true` may
//! call `/introspect` (others get 403), and they see the claims of a token only when its
//! `aud` names them (one of their `audiences`) or it was issued to them (`client_id`):
//! for any other token the answer is `active: false`, exactly as for an unknown one
//! (§2.2), so introspection never tells a caller anything about a token it is not an
//! audience of.

use std::sync::Arc;

use aws_lc_rs::digest;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;
use thiserror::Error;

use super::{LifecycleError, identity_key, token_key, upstream_hash_key, upstream_jti_key};
use crate::client_auth::{AuthenticatedClient, ClientAuthError, ClientRequest};
use crate::exchange::Exchanger;
use crate::oauth::TokenType;
use crate::oauth::form::{BodyError, FormBody};
use crate::token::{Introspected, TokenError, VerifiedToken};

/// Why a lifecycle endpoint refused a request.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum EndpointError {
    /// The request body.
    #[error("request: {0}")]
    Body(BodyError),
    /// Client authentication.
    #[error("client authentication: {0}")]
    Client(ClientAuthError),
    /// No `token` parameter.
    #[error("no token parameter")]
    MissingToken,
    /// A parameter sent twice.
    #[error("repeated parameter")]
    RepeatedParameter,
    /// The client is not configured to introspect.
    #[error("client may not introspect")]
    NotAllowed,
    /// RFC 7009 §2.1: the token was issued to another client.
    #[error("token not issued to the client")]
    NotIssuedToClient,
    /// The store did not answer (failing closed).
    #[error("store unavailable")]
    Unavailable,
    /// The root upstream token's issuer could not be asked.
    #[error("upstream introspection unavailable")]
    UpstreamUnavailable,
    /// Over the client's rate limit; retry after this many seconds.
    #[error("rate limited")]
    RateLimited(u32),
    /// The admin bearer secret is missing or wrong.
    #[error("admin authentication failed")]
    AdminUnauthorized,
    /// The admin request does not name exactly one kind of target.
    #[error("no single revocation target")]
    AdminTarget,
    /// The admin request names an issuer that is not configured.
    #[error("unknown issuer")]
    UnknownIssuer,
}

impl EndpointError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointError::Body(e) => e.as_str(),
            EndpointError::Client(_) => "unauthenticated",
            EndpointError::MissingToken => "missing_token",
            EndpointError::RepeatedParameter => "repeated_parameter",
            EndpointError::NotAllowed => "not_allowed",
            EndpointError::NotIssuedToClient => "not_issued_to_client",
            EndpointError::Unavailable => "unavailable",
            EndpointError::UpstreamUnavailable => "upstream_unavailable",
            EndpointError::RateLimited(_) => "rate_limited",
            EndpointError::AdminUnauthorized => "admin_unauthorized",
            EndpointError::AdminTarget => "admin_target",
            EndpointError::UnknownIssuer => "unknown_issuer",
        }
    }
}

/// The longest identifier the admin endpoint takes (`sub`, `jti`, `chain_root`, …).
const MAX_ID_BYTES: usize = 1024;

/// One of our tokens, verified with our keys (any declared type: ours are `at+jwt` or
/// `JWT`), or why not.
async fn ours(
    exchanger: &Exchanger,
    token: &str,
) -> Result<VerifiedToken<Introspected>, TokenError> {
    let validator = exchanger.validator();
    // An empty accepted list: an upstream issuer's token is not accepted, and an opaque
    // one is not introspected anywhere.
    match validator.validate(token, TokenType::AccessToken, &[]).await {
        Err(TokenError::TypMismatch) => validator.validate(token, TokenType::Jwt, &[]).await,
        other => other,
    }
}

/// The authenticated caller, under its rate limit, and the `token` it names.
async fn caller<'f>(
    exchanger: &Exchanger,
    request: &ClientRequest<'f>,
) -> Result<(AuthenticatedClient, &'f str), EndpointError> {
    let client = exchanger
        .clients()
        .authenticate(request)
        .await
        .map_err(EndpointError::Client)?;
    exchanger
        .rate_limit(client.id())
        .await
        .map_err(|l| EndpointError::RateLimited(l.retry_after))?;
    let token = request
        .form
        .single("token")
        .map_err(|_| EndpointError::RepeatedParameter)?
        .ok_or(EndpointError::MissingToken)?;
    Ok((client, token))
}

/// `{"active": false}`.
pub fn inactive() -> Value {
    serde_json::json!({ "active": false })
}

/// RFC 7662 §2: the answer about `token` for an authenticated, allowed caller: the
/// token's claims with `active: true` (`act` included), or `active: false` when it is not
/// ours, expired, revoked or derived from something revoked, or the caller is not its
/// audience (§4).
pub async fn introspect(
    exchanger: &Exchanger,
    request: &ClientRequest<'_>,
) -> Result<Value, EndpointError> {
    let (client, token) = caller(exchanger, request).await?;
    if !client.client().may_introspect() {
        return Err(EndpointError::NotAllowed);
    }
    let Ok(verified) = ours(exchanger, token).await else {
        return Ok(inactive());
    };
    // RFC 7662 §2.2: expired is inactive, on our clock, without the leeway re-exchange
    // allows.
    let audience = client.client().audiences();
    let for_caller = verified.aud().iter().any(|a| audience.contains(a))
        || verified.client_id() == Some(client.id());
    if verified.exp() <= exchanger.now() || !for_caller {
        return Ok(inactive());
    }
    let jti = verified.jti().unwrap_or_default();
    match exchanger.lineage_clean(jti).await {
        Ok(_) => {}
        Err(
            LifecycleError::Unknown | LifecycleError::Revoked | LifecycleError::UpstreamInactive,
        ) => {
            return Ok(inactive());
        }
        Err(LifecycleError::UpstreamUnavailable) => {
            return Err(EndpointError::UpstreamUnavailable);
        }
        Err(LifecycleError::Unavailable(_)) => return Err(EndpointError::Unavailable),
    }
    let mut claims: Map<String, Value> = verified.claims_object();
    claims.insert("active".into(), Value::Bool(true));
    claims.insert("token_type".into(), Value::from("Bearer"));
    Ok(Value::Object(claims))
}

/// What `POST /revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The token (and so everything derived from it) is revoked.
    Token,
    /// The token is not a live token of ours: nothing to do (RFC 7009 §2.2).
    Ignored,
}

/// RFC 7009 §2.1: the caller revokes `token`, which must have been issued to it; the
/// marker of its `jti` revokes it and, through their lineage, every token derived from
/// it, on every replica that shares the store.
pub async fn revoke(
    exchanger: &Exchanger,
    request: &ClientRequest<'_>,
) -> Result<Revoked, EndpointError> {
    let (client, token) = caller(exchanger, request).await?;
    let Ok(verified) = ours(exchanger, token).await else {
        exchanger.lifecycle().metrics().revocation("ignored");
        return Ok(Revoked::Ignored);
    };
    if verified.client_id() != Some(client.id()) {
        return Err(EndpointError::NotIssuedToClient);
    }
    let jti = verified.jti().unwrap_or_default();
    exchanger
        .lifecycle()
        .revoke(&token_key(jti), Some(verified.exp().saturating_add(1)))
        .await
        .map_err(|_| EndpointError::Unavailable)?;
    exchanger.lifecycle().metrics().revocation("token");
    // Identifiers only: the client and the token's jti, never the token.
    tracing::info!(client_id = client.id(), jti, "token revoked by its client");
    Ok(Revoked::Token)
}

/// The admin revocation endpoint's credentials and the issuers it may name.
pub struct AdminRevocation {
    digest: [u8; 32],
    issuers: Vec<String>,
}

impl std::fmt::Debug for AdminRevocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminRevocation(<secret>)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

impl AdminRevocation {
    /// Checks `Authorization: Bearer <secret>` against `secret`; `issuers` are the
    /// configured upstream issuers' `iss` values.
    pub fn new(secret: &[u8], issuers: Vec<String>) -> Self {
        Self {
            digest: sha256(secret),
            issuers,
        }
    }

    /// The bearer secret, compared as SHA-256 digests in constant time.
    fn authenticate(&self, authorization: Option<&[u8]>) -> Result<(), EndpointError> {
        let presented = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .ok_or(EndpointError::AdminUnauthorized)?;
        match bool::from(sha256(presented).ct_eq(&self.digest)) {
            true => Ok(()),
            false => Err(EndpointError::AdminUnauthorized),
        }
    }

    /// `POST /admin/revoke`: writes the marker the form names, exactly one of
    /// `iss` + `sub` (the subject logged out everywhere: tokens derived from it issued
    /// until now), `iss` + `jti` or `iss` + `token_sha256` (an upstream token, by its
    /// `jti` or its SHA-256, base64url), or `chain_root` (one of our tokens, by `jti`, and
    /// everything derived from it). Returns what was revoked and until when the marker
    /// lives.
    pub async fn revoke(
        &self,
        exchanger: &Exchanger,
        authorization: Option<&[u8]>,
        form: &FormBody,
    ) -> Result<Value, EndpointError> {
        self.authenticate(authorization)?;
        let (kind, key) = self.target(form)?;
        let expires_at = exchanger
            .lifecycle()
            .revoke(&key, None)
            .await
            .map_err(|_| EndpointError::Unavailable)?;
        exchanger.lifecycle().metrics().revocation(kind);
        tracing::warn!(kind, "revoked by the admin endpoint");
        Ok(
            serde_json::json!({ "revoked": kind.trim_start_matches("admin_"), "expires_at": expires_at }),
        )
    }

    /// The marker the form names, and its kind (the metric label).
    fn target(&self, form: &FormBody) -> Result<(&'static str, String), EndpointError> {
        let field = |name: &'static str| -> Result<Option<&str>, EndpointError> {
            let value = form
                .single(name)
                .map_err(|_| EndpointError::RepeatedParameter)?;
            match value {
                Some(v) if v.len() > MAX_ID_BYTES => Err(EndpointError::AdminTarget),
                other => Ok(other),
            }
        };
        let (iss, sub, jti, hash, root) = (
            field("iss")?,
            field("sub")?,
            field("jti")?,
            field("token_sha256")?,
            field("chain_root")?,
        );
        if let Some(iss) = iss
            && !self.issuers.iter().any(|known| known == iss)
        {
            return Err(EndpointError::UnknownIssuer);
        }
        match (iss, sub, jti, hash, root) {
            (Some(iss), Some(sub), None, None, None) => {
                Ok(("admin_subject", identity_key(iss, sub)))
            }
            (Some(iss), None, Some(jti), None, None) => {
                Ok(("admin_upstream_token", upstream_jti_key(iss, jti)))
            }
            (Some(iss), None, None, Some(hash), None) => {
                Ok(("admin_upstream_token", upstream_hash_key(iss, hash)))
            }
            (None, None, None, None, Some(root)) => Ok(("admin_chain_root", token_key(root))),
            _ => Err(EndpointError::AdminTarget),
        }
    }
}

/// Shared by the App: the admin endpoint, when `[lifecycle] admin_secret` is set.
pub type Admin = Option<Arc<AdminRevocation>>;
