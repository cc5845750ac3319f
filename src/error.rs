//! The one mapping from internal errors to wire errors (RFC 6749 §5.2, RFC 8693 §2.2.2,
//! RFC 8707, rules §7). Exhaustive, without a catch-all arm: a new error variant
//! does not compile until someone decides what the client sees.
//!
//! The client gets the OAuth code and a short fixed description; the detail (which
//! claim, which issuer) goes to the log with the request id.

use http::StatusCode;
use thiserror::Error;

use crate::client_auth::ClientAuthError;
use crate::egress::forward_auth::ForwardAuthError;
use crate::lifecycle::LifecycleError;
use crate::lifecycle::endpoints::EndpointError;
use crate::mint::MintError;
use crate::oauth::ErrorCode;
use crate::oauth::form::BodyError;
use crate::policy::PolicyError;
use crate::request::RequestError;
use crate::token::TokenError;

/// Everything that can end an exchange early, by stage.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeError {
    /// The request body: media type, size, deadline, form encoding.
    #[error("request: {0}")]
    Body(#[from] BodyError),
    /// The token-exchange parameters.
    #[error("request: {0}")]
    Request(#[from] RequestError),
    /// Client authentication.
    #[error("client authentication: {0}")]
    Client(#[from] ClientAuthError),
    /// The subject token.
    #[error("subject_token: {0}")]
    Subject(TokenError),
    /// The actor token.
    #[error("actor_token: {0}")]
    Actor(TokenError),
    /// The delegation policy.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// Minting (a bug or a crypto failure).
    #[error("mint: {0}")]
    Mint(#[from] MintError),
    /// A gateway's forward-auth request (its subject token header, original host, path
    /// and route).
    #[error("forward auth: {0}")]
    ForwardAuth(#[from] ForwardAuthError),
    /// The re-exchanged token's lineage, or recording the new token's.
    #[error("lifecycle: {0}")]
    Lifecycle(LifecycleError),
    /// The client is over its rate limit; retry after this many seconds.
    #[error("rate limited")]
    RateLimited(u32),
}

impl ExchangeError {
    /// The stage, for logs and metric labels.
    pub fn stage(&self) -> &'static str {
        match self {
            // The body and its parameters are one stage to operators (metrics, audit).
            ExchangeError::Body(_) | ExchangeError::Request(_) => "request",
            ExchangeError::Client(_) => "client_auth",
            ExchangeError::Subject(_) => "subject_token",
            ExchangeError::Actor(_) => "actor_token",
            ExchangeError::Policy(_) => "policy",
            ExchangeError::Mint(_) => "mint",
            ExchangeError::ForwardAuth(_) => "forward_auth",
            ExchangeError::Lifecycle(_) => "lifecycle",
            ExchangeError::RateLimited(_) => "rate_limit",
        }
    }

    /// The refusal reason within the stage, for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ExchangeError::Body(e) => e.as_str(),
            ExchangeError::Request(e) => e.as_str(),
            ExchangeError::Client(e) => e.as_str(),
            ExchangeError::Subject(e) | ExchangeError::Actor(e) => e.as_str(),
            ExchangeError::Policy(e) => e.as_str(),
            ExchangeError::Mint(e) => e.as_str(),
            ExchangeError::ForwardAuth(e) => e.as_str(),
            ExchangeError::Lifecycle(e) => e.as_str(),
            ExchangeError::RateLimited(_) => "over_limit",
        }
    }
}

/// What the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error`.
    pub code: ErrorCode,
    /// `error_description`: fixed text, never data from the request.
    pub description: &'static str,
    /// Send `WWW-Authenticate: Basic` (RFC 6749 §5.2: 401 after header authentication).
    pub www_authenticate: bool,
    /// Send `Retry-After` with this many seconds.
    pub retry_after: Option<u32>,
}

const fn wire(status: StatusCode, code: ErrorCode, description: &'static str) -> WireError {
    WireError {
        status,
        code,
        description,
        www_authenticate: false,
        retry_after: None,
    }
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

/// Maps an exchange error to its wire form. `basic_auth_used` says whether the request
/// carried an Authorization header, which decides `WWW-Authenticate` on a 401.
pub fn to_wire(error: &ExchangeError, basic_auth_used: bool) -> WireError {
    use ErrorCode::*;
    match *error {
        ExchangeError::Body(e) => match e {
            BodyError::TooLarge => wire(
                StatusCode::PAYLOAD_TOO_LARGE,
                InvalidRequest,
                "request body too large",
            ),
            BodyError::Timeout => wire(
                StatusCode::REQUEST_TIMEOUT,
                InvalidRequest,
                "request body timed out",
            ),
            BodyError::Read => wire(BAD, InvalidRequest, "request body could not be read"),
            BodyError::UnsupportedContentType => wire(
                BAD,
                InvalidRequest,
                "content type must be application/x-www-form-urlencoded",
            ),
            BodyError::Malformed => wire(BAD, InvalidRequest, "malformed form body"),
            // Load shedding, not the client's fault: retry shortly (RFC 6749 §4.1.2.1's
            // temporarily_unavailable, with Retry-After as RFC 9110 §10.2.3 allows).
            BodyError::BudgetExhausted => WireError {
                retry_after: Some(1),
                ..wire(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TemporarilyUnavailable,
                    "too many request bodies in flight, retry later",
                )
            },
        },
        ExchangeError::Request(e) => match e {
            RequestError::RepeatedParameter(_) => {
                wire(BAD, InvalidRequest, "a parameter appears more than once")
            }
            RequestError::MissingParameter(_) => {
                wire(BAD, InvalidRequest, "a required parameter is missing")
            }
            RequestError::UnsupportedGrantType => wire(
                BAD,
                UnsupportedGrantType,
                "only token exchange is supported",
            ),
            RequestError::UnsupportedTokenType(_) => wire(
                BAD,
                InvalidRequest,
                "unsupported subject or actor token type",
            ),
            RequestError::ActorTypeWithoutToken => {
                wire(BAD, InvalidRequest, "actor_token_type requires actor_token")
            }
            RequestError::UnsupportedRequestedType => {
                wire(BAD, InvalidRequest, "unsupported requested_token_type")
            }
            RequestError::InvalidResource => wire(
                BAD,
                InvalidTarget,
                "resource must be an absolute URI without fragment",
            ),
            RequestError::MalformedScope => wire(BAD, InvalidScope, "malformed scope"),
            RequestError::TooManyScopes => wire(BAD, InvalidScope, "too many scope values"),
            RequestError::TooManyTargets => {
                wire(BAD, InvalidTarget, "too many audience and resource values")
            }
        },
        ExchangeError::Client(e) => {
            let unauthorized = |description| WireError {
                www_authenticate: basic_auth_used,
                ..wire(StatusCode::UNAUTHORIZED, InvalidClient, description)
            };
            client_wire(e, unauthorized)
        }
        ExchangeError::Subject(e) => token_wire(
            e,
            "subject_token is invalid",
            "subject_token is expired or not yet valid",
            "subject_token issuer not accepted for this client",
        ),
        ExchangeError::Actor(e) => token_wire(
            e,
            "actor_token is invalid",
            "actor_token is expired or not yet valid",
            "actor_token issuer not accepted for this client",
        ),
        ExchangeError::Policy(e) => match e {
            PolicyError::ClientNotEnabled => {
                wire(BAD, UnauthorizedClient, "client may not use token exchange")
            }
            PolicyError::ImpersonationNotAllowed => wire(
                BAD,
                UnauthorizedClient,
                "client may not exchange without an actor_token",
            ),
            PolicyError::DelegationNotAllowed => wire(
                BAD,
                UnauthorizedClient,
                "client may not exchange with an actor_token",
            ),
            PolicyError::SubjectTokenTypeNotAccepted => wire(
                BAD,
                InvalidRequest,
                "subject_token_type not accepted for this client",
            ),
            PolicyError::ActorTokenTypeNotAccepted => wire(
                BAD,
                InvalidRequest,
                "actor_token_type not accepted for this client",
            ),
            PolicyError::ActorNotAllowed => {
                wire(BAD, InvalidRequest, "actor not permitted for this client")
            }
            PolicyError::PriorActorNotAllowed => wire(
                BAD,
                InvalidRequest,
                "delegation chain not accepted for this client",
            ),
            PolicyError::ConditionNotMet => wire(
                BAD,
                InvalidRequest,
                "tokens do not meet this client's policy",
            ),
            PolicyError::SubjectIssuerNotAccepted => wire(
                BAD,
                InvalidRequest,
                "subject_token issuer not accepted for this client",
            ),
            PolicyError::ActorIssuerNotAccepted => wire(
                BAD,
                InvalidRequest,
                "actor_token issuer not accepted for this client",
            ),
            PolicyError::ActorNotBoundToClient => wire(
                BAD,
                InvalidRequest,
                "actor_token does not belong to the client",
            ),
            PolicyError::ActorAudienceMismatch => wire(
                BAD,
                InvalidRequest,
                "actor_token was not issued for this service",
            ),
            PolicyError::ActorTokenSelfIssued => wire(
                BAD,
                InvalidRequest,
                "actor_token must not be issued by this service",
            ),
            PolicyError::ActorTokenDelegated => wire(
                BAD,
                InvalidRequest,
                "actor_token must not carry a delegation chain",
            ),
            PolicyError::SubjectNotBoundToClient => wire(
                BAD,
                InvalidRequest,
                "subject_token was not issued to this client or actor",
            ),
            PolicyError::MayActMismatch => wire(
                BAD,
                InvalidRequest,
                "actor not permitted by subject_token may_act",
            ),
            PolicyError::ActorInChain => {
                wire(BAD, InvalidRequest, "actor already in the delegation chain")
            }
            PolicyError::ChainTooDeep => wire(BAD, InvalidRequest, "delegation chain too deep"),
            PolicyError::TargetNotAllowed => {
                wire(BAD, InvalidTarget, "audience or resource not allowed")
            }
            PolicyError::TooManyTargets => {
                wire(BAD, InvalidTarget, "too many audiences or resources")
            }
            PolicyError::NoTarget => wire(
                BAD,
                InvalidRequest,
                "no audience or resource requested and no default",
            ),
            PolicyError::ScopeNotGranted => wire(
                BAD,
                InvalidScope,
                "requested scope exceeds what may be granted",
            ),
            PolicyError::LifetimeExhausted => {
                wire(BAD, InvalidRequest, "presented tokens leave no lifetime")
            }
            PolicyError::CertificateRequired => wire(
                BAD,
                UnauthorizedClient,
                "client must authenticate with its certificate",
            ),
        },
        ExchangeError::Mint(e) => match e {
            MintError::Serialize | MintError::Crypto | MintError::NoSigningKey => wire(
                StatusCode::INTERNAL_SERVER_ERROR,
                ServerError,
                "internal error",
            ),
        },
        ExchangeError::ForwardAuth(e) => match e {
            ForwardAuthError::MissingSubjectToken => wire(
                BAD,
                InvalidRequest,
                "no subject token in the original request",
            ),
            ForwardAuthError::MalformedSubjectHeader => {
                wire(BAD, InvalidRequest, "malformed subject token header")
            }
            ForwardAuthError::RepeatedSubjectHeader => wire(
                BAD,
                InvalidRequest,
                "subject token header sent more than once",
            ),
            ForwardAuthError::RepeatedTargetHeader => wire(
                BAD,
                InvalidRequest,
                "original host or path sent more than once",
            ),
            ForwardAuthError::MissingHost => wire(BAD, InvalidRequest, "no original host"),
            ForwardAuthError::AmbiguousPath => {
                wire(BAD, InvalidRequest, "original path is ambiguous")
            }
            ForwardAuthError::NoRoute => wire(
                BAD,
                InvalidTarget,
                "no route for the original host and path",
            ),
        },
        ExchangeError::Lifecycle(e) => match e {
            LifecycleError::Unknown
            | LifecycleError::Revoked
            | LifecycleError::UpstreamInactive => {
                wire(BAD, InvalidRequest, "subject_token is revoked or unknown")
            }
            LifecycleError::UpstreamUnavailable => WireError {
                retry_after: Some(5),
                ..wire(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TemporarilyUnavailable,
                    "issuer introspection unavailable, retry later",
                )
            },
            LifecycleError::Unavailable(_) => store_unavailable(),
        },
        ExchangeError::RateLimited(seconds) => rate_limited(seconds),
    }
}

/// 503: the shared store did not answer and the deployment fails closed.
fn store_unavailable() -> WireError {
    WireError {
        retry_after: Some(5),
        ..wire(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TemporarilyUnavailable,
            "token state unavailable, retry later",
        )
    }
}

/// RFC 6585 §4: 429 with `Retry-After`; the code is RFC 6749's `temporarily_unavailable`.
fn rate_limited(seconds: u32) -> WireError {
    WireError {
        retry_after: Some(seconds),
        ..wire(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TemporarilyUnavailable,
            "client over its rate limit, retry later",
        )
    }
}

/// Maps an error of the introspection (RFC 7662), revocation (RFC 7009) and admin
/// revocation endpoints to its wire form. `basic_auth_used` as in [`to_wire`].
pub fn endpoint_to_wire(error: &EndpointError, basic_auth_used: bool) -> WireError {
    use ErrorCode::*;
    match *error {
        EndpointError::Body(e) => to_wire(&ExchangeError::Body(e), basic_auth_used),
        // RFC 7662 §2.1 and RFC 7009 §2.1: the caller authenticates as a client would at
        // the token endpoint, and is refused as it would be there.
        EndpointError::Client(e) => to_wire(&ExchangeError::Client(e), basic_auth_used),
        EndpointError::MissingToken => wire(BAD, InvalidRequest, "token is required"),
        EndpointError::RepeatedParameter => {
            wire(BAD, InvalidRequest, "a parameter appears more than once")
        }
        // RFC 7662 §4: only protected resources allowed to introspect may.
        EndpointError::NotAllowed => wire(
            StatusCode::FORBIDDEN,
            UnauthorizedClient,
            "client may not introspect tokens",
        ),
        // RFC 7009 §2.1: a client revokes only tokens issued to it.
        EndpointError::NotIssuedToClient => wire(
            BAD,
            UnauthorizedClient,
            "token was not issued to this client",
        ),
        EndpointError::Unavailable => store_unavailable(),
        EndpointError::UpstreamUnavailable => WireError {
            retry_after: Some(5),
            ..wire(
                StatusCode::SERVICE_UNAVAILABLE,
                TemporarilyUnavailable,
                "issuer introspection unavailable, retry later",
            )
        },
        EndpointError::RateLimited(seconds) => rate_limited(seconds),
        EndpointError::AdminUnauthorized => wire(
            StatusCode::UNAUTHORIZED,
            InvalidClient,
            "admin authentication failed",
        ),
        EndpointError::AdminTarget => wire(
            BAD,
            InvalidRequest,
            "name exactly one of: iss and sub, iss and jti, iss and token_sha256, chain_root",
        ),
        EndpointError::UnknownIssuer => wire(BAD, InvalidRequest, "iss is not a configured issuer"),
    }
}

/// What a gateway is told at the forward-auth endpoint: the OAuth code and description
/// of [`to_wire`], with the status a proxy acts on (rules §1). A proxy passes a 401 or
/// 403 on to its own client and treats anything else but 2xx as its own failure, so:
/// 401 for a missing or bad subject token (the end user's to fix), 403 for every other
/// refusal, including a wrong proxy credential (a 401 would reach the end user as a
/// challenge for credentials that are not theirs, which is also why no `Basic`
/// challenge is ever sent here), and 5xx as they are.
pub fn to_forward_auth(error: &ExchangeError) -> WireError {
    let wire = to_wire(error, false);
    let about_subject = match error {
        ExchangeError::Subject(_) => true,
        ExchangeError::ForwardAuth(e) => e.is_about_subject(),
        ExchangeError::Body(_)
        | ExchangeError::Request(_)
        | ExchangeError::Client(_)
        | ExchangeError::Actor(_)
        | ExchangeError::Policy(_)
        | ExchangeError::Mint(_)
        | ExchangeError::Lifecycle(_)
        | ExchangeError::RateLimited(_) => false,
    };
    let status = if wire.status.is_server_error() {
        wire.status
    } else if about_subject {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::FORBIDDEN
    };
    WireError {
        status,
        www_authenticate: false,
        ..wire
    }
}

/// Client authentication (RFC 6749 §5.2): a failed or missing authentication is 401
/// `invalid_client`, whatever the method (RFC 7521 §4.2.1 for assertions, RFC 8705 §2
/// for certificates); a request malformed as to its credentials (two methods at once,
/// repeated parameters) is 400 `invalid_request`; keys or a replay cache we cannot use
/// now are 503, not the client's fault.
fn client_wire(e: ClientAuthError, unauthorized: impl Fn(&'static str) -> WireError) -> WireError {
    use ErrorCode::*;
    let unavailable = |description| WireError {
        retry_after: Some(5),
        ..wire(
            StatusCode::SERVICE_UNAVAILABLE,
            TemporarilyUnavailable,
            description,
        )
    };
    match e {
        ClientAuthError::MissingCredentials => unauthorized("client authentication required"),
        ClientAuthError::MalformedBasic => unauthorized("malformed Basic credentials"),
        ClientAuthError::UnsupportedScheme => unauthorized("unsupported authentication scheme"),
        ClientAuthError::UnknownClient
        | ClientAuthError::WrongSecret
        | ClientAuthError::WrongMethod
        | ClientAuthError::UnsupportedAssertionType
        | ClientAuthError::MalformedAssertion
        | ClientAuthError::UnsupportedAlgorithm
        | ClientAuthError::AlgorithmNotAllowed
        | ClientAuthError::UnknownKid
        | ClientAuthError::KidRequired
        | ClientAuthError::AlgorithmKeyMismatch
        | ClientAuthError::BadSignature
        | ClientAuthError::AssertionNotForClient
        | ClientAuthError::UntrustedAssertionIssuer
        | ClientAuthError::AudienceMismatch
        | ClientAuthError::MissingClaim
        | ClientAuthError::Expired
        | ClientAuthError::NotYetValid
        | ClientAuthError::LifetimeTooLong
        | ClientAuthError::ReplayedAssertion
        | ClientAuthError::NamespaceMismatch
        | ClientAuthError::ServiceAccountMismatch
        | ClientAuthError::TrustDomainMismatch
        | ClientAuthError::SpiffeIdMismatch
        | ClientAuthError::NoClientCertificate
        | ClientAuthError::CertificateUntrusted
        | ClientAuthError::CertificateExpired
        | ClientAuthError::CertificateNameMismatch
        | ClientAuthError::CertificateNotRegistered
        | ClientAuthError::ForwardedCertificateUntrusted
        | ClientAuthError::MalformedForwardedCertificate => {
            unauthorized("client authentication failed")
        }
        ClientAuthError::KeysUnavailable => unavailable("client keys unavailable, retry later"),
        ClientAuthError::ReplayCacheUnavailable => {
            unavailable("client assertion cannot be checked now, retry later")
        }
        ClientAuthError::MultipleAuthorizationHeaders => {
            wire(BAD, InvalidRequest, "more than one Authorization header")
        }
        ClientAuthError::MultipleMethods => wire(
            BAD,
            InvalidRequest,
            "more than one client authentication method",
        ),
        ClientAuthError::ClientIdMismatch => {
            wire(BAD, InvalidRequest, "client_id does not match credentials")
        }
        ClientAuthError::SecretWithoutId => {
            wire(BAD, InvalidRequest, "client_secret without client_id")
        }
        ClientAuthError::RepeatedParameter => {
            wire(BAD, InvalidRequest, "a parameter appears more than once")
        }
        ClientAuthError::AssertionTypeMissing => wire(
            BAD,
            InvalidRequest,
            "client_assertion and client_assertion_type must be sent together",
        ),
    }
}

fn token_wire(
    e: TokenError,
    invalid: &'static str,
    expired: &'static str,
    not_accepted: &'static str,
) -> WireError {
    use ErrorCode::*;
    match e {
        TokenError::IssuerNotAccepted => wire(BAD, InvalidRequest, not_accepted),
        TokenError::IntrospectionUnavailable => WireError {
            retry_after: Some(5),
            ..wire(
                StatusCode::SERVICE_UNAVAILABLE,
                TemporarilyUnavailable,
                "issuer introspection unavailable, retry later",
            )
        },
        TokenError::KeysUnavailable => WireError {
            retry_after: Some(5),
            ..wire(
                StatusCode::SERVICE_UNAVAILABLE,
                TemporarilyUnavailable,
                "issuer keys unavailable, retry later",
            )
        },
        TokenError::Expired
        | TokenError::NotYetValid
        | TokenError::IssuedInFuture
        | TokenError::TooOld => wire(BAD, InvalidRequest, expired),
        TokenError::LifetimeTooLong => wire(BAD, InvalidRequest, invalid),
        TokenError::TooLarge
        | TokenError::NotCompactJws
        | TokenError::MalformedHeader
        | TokenError::MalformedClaims
        | TokenError::CritHeader
        | TokenError::KeyInHeader
        | TokenError::UnsupportedAlgorithm
        | TokenError::AlgorithmNotAllowed
        | TokenError::UnknownIssuer
        | TokenError::TokenTypeNotAccepted
        | TokenError::TypMismatch
        | TokenError::UnknownKid
        | TokenError::KidRequired
        | TokenError::AlgorithmKeyMismatch
        | TokenError::BadSignature
        | TokenError::MissingClaim(_)
        | TokenError::InvalidClaim(_)
        | TokenError::Inactive
        | TokenError::SenderConstrained => wire(BAD, InvalidRequest, invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn www_authenticate_only_after_header_authentication() {
        let e = ExchangeError::Client(ClientAuthError::WrongSecret);
        assert!(to_wire(&e, true).www_authenticate);
        assert!(!to_wire(&e, false).www_authenticate);
        assert_eq!(to_wire(&e, false).status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn unavailable_keys_are_503_with_retry_after() {
        let w = to_wire(&ExchangeError::Subject(TokenError::KeysUnavailable), false);
        assert_eq!(
            (w.status, w.code, w.retry_after),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TemporarilyUnavailable,
                Some(5)
            )
        );
    }
}
