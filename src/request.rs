//! Stage 1: the token-exchange request's parameters (RFC 8693 §2.1), read strictly from a
//! decoded form: required and forbidden parameters, repetition, token types, targets and
//! scope syntax. The transport (media type, size cap, deadline, encoding) is the edge's
//! business and fails with [`BodyError`](crate::oauth::form::BodyError) before this runs.

use std::collections::HashSet;

use thiserror::Error;

use crate::oauth::form::{FormBody, Repeated};
use crate::oauth::{GRANT_TYPE_TOKEN_EXCHANGE, TokenType, is_resource_uri, is_scope_token};

/// Most distinct scope tokens a request may ask for; more is refused, not truncated.
pub const MAX_SCOPES: usize = 64;
/// Most `audience` and `resource` values a request may send in all; policy caps what is
/// granted (`max_audiences`), this bounds the work of reading them.
pub const MAX_TARGETS: usize = 16;

/// Why the request itself was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// A single-valued parameter appeared twice (RFC 6749 §3.2).
    #[error("repeated parameter {0}")]
    RepeatedParameter(&'static str),
    /// A required parameter is missing or empty.
    #[error("missing parameter {0}")]
    MissingParameter(&'static str),
    /// `grant_type` is not token exchange.
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    /// A `*_token_type` names a type we never accept (refresh token, SAML, unknown).
    #[error("unsupported token type in {0}")]
    UnsupportedTokenType(&'static str),
    /// `actor_token_type` without `actor_token` (RFC 8693 §2.1).
    #[error("actor_token_type without actor_token")]
    ActorTypeWithoutToken,
    /// `requested_token_type` is not access_token or jwt.
    #[error("unsupported requested_token_type")]
    UnsupportedRequestedType,
    /// `resource` is not an absolute URI without fragment (RFC 8707 §2).
    #[error("resource is not an absolute URI without fragment")]
    InvalidResource,
    /// `scope` is not a space-delimited list of scope tokens (RFC 6749 §3.3).
    #[error("malformed scope")]
    MalformedScope,
    /// More than `MAX_SCOPES` (64) distinct scope tokens.
    #[error("too many scope values")]
    TooManyScopes,
    /// More than `MAX_TARGETS` (16) `audience` and `resource` values.
    #[error("too many audience and resource values")]
    TooManyTargets,
}

impl RequestError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestError::RepeatedParameter(_) => "repeated_parameter",
            RequestError::MissingParameter(_) => "missing_parameter",
            RequestError::UnsupportedGrantType => "unsupported_grant_type",
            RequestError::UnsupportedTokenType(_) => "unsupported_token_type",
            RequestError::ActorTypeWithoutToken => "actor_type_without_token",
            RequestError::UnsupportedRequestedType => "unsupported_requested_type",
            RequestError::InvalidResource => "invalid_resource",
            RequestError::MalformedScope => "malformed_scope",
            RequestError::TooManyScopes => "too_many_scopes",
            RequestError::TooManyTargets => "too_many_targets",
        }
    }
}

impl From<Repeated> for RequestError {
    fn from(Repeated(name): Repeated) -> Self {
        RequestError::RepeatedParameter(name)
    }
}

/// A presented token and the type the client declared for it.
pub struct PresentedToken {
    /// The compact token. Never logged.
    pub token: String,
    /// The declared type.
    pub token_type: TokenType,
}

impl std::fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedToken")
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

/// A syntactically valid token-exchange request.
#[derive(Debug)]
pub struct TokenExchangeRequest {
    /// `subject_token` / `subject_token_type`.
    pub subject: PresentedToken,
    /// `actor_token` / `actor_token_type`.
    pub actor: Option<PresentedToken>,
    /// `audience` values, in order.
    pub audiences: Vec<String>,
    /// `resource` values, in order.
    pub resources: Vec<String>,
    /// `scope`, split; `None` when absent.
    pub scope: Option<Vec<String>>,
    /// `requested_token_type` (default access_token).
    pub requested_token_type: TokenType,
}

/// Subject and actor tokens may be declared as one of these; anything else is refused.
fn presentable(urn: &str, param: &'static str) -> Result<TokenType, RequestError> {
    match TokenType::from_urn(urn) {
        Some(t @ (TokenType::AccessToken | TokenType::Jwt | TokenType::IdToken)) => Ok(t),
        _ => Err(RequestError::UnsupportedTokenType(param)),
    }
}

impl TokenExchangeRequest {
    /// Reads the request parameters strictly (RFC 8693 §2.1).
    pub fn from_form(form: &FormBody) -> Result<Self, RequestError> {
        let required = |name: &'static str| -> Result<&str, RequestError> {
            form.single(name)?
                .ok_or(RequestError::MissingParameter(name))
        };
        if required("grant_type")? != GRANT_TYPE_TOKEN_EXCHANGE {
            return Err(RequestError::UnsupportedGrantType);
        }
        let subject = PresentedToken {
            token: required("subject_token")?.to_owned(),
            token_type: presentable(required("subject_token_type")?, "subject_token_type")?,
        };
        let actor = match (
            form.single("actor_token")?,
            form.single("actor_token_type")?,
        ) {
            (Some(token), Some(urn)) => Some(PresentedToken {
                token: token.to_owned(),
                token_type: presentable(urn, "actor_token_type")?,
            }),
            (Some(_), None) => return Err(RequestError::MissingParameter("actor_token_type")),
            (None, Some(_)) => return Err(RequestError::ActorTypeWithoutToken),
            (None, None) => None,
        };
        let requested_token_type = match form.single("requested_token_type")? {
            None => TokenType::AccessToken,
            Some(urn) => match TokenType::from_urn(urn) {
                Some(t @ (TokenType::AccessToken | TokenType::Jwt)) => t,
                _ => return Err(RequestError::UnsupportedRequestedType),
            },
        };
        if form
            .all("audience")
            .chain(form.all("resource"))
            .nth(MAX_TARGETS)
            .is_some()
        {
            return Err(RequestError::TooManyTargets);
        }
        let resources: Vec<String> = form.all("resource").map(str::to_owned).collect();
        if !resources.iter().all(|r| is_resource_uri(r)) {
            return Err(RequestError::InvalidResource);
        }
        let scope = match form.single("scope")? {
            None => None,
            Some(s) => {
                let mut seen = HashSet::new();
                let mut tokens: Vec<String> = Vec::new();
                for t in s.split(' ').filter(|t| !t.is_empty()) {
                    if !is_scope_token(t) {
                        return Err(RequestError::MalformedScope);
                    }
                    if seen.insert(t) {
                        if tokens.len() == MAX_SCOPES {
                            return Err(RequestError::TooManyScopes);
                        }
                        tokens.push(t.to_owned());
                    }
                }
                Some(tokens)
            }
        };
        Ok(Self {
            subject,
            actor,
            audiences: form.all("audience").map(str::to_owned).collect(),
            resources,
            scope,
            requested_token_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

    fn parse(body: &str) -> Result<TokenExchangeRequest, RequestError> {
        TokenExchangeRequest::from_form(&FormBody::parse(body.as_bytes()).unwrap())
    }

    fn base() -> String {
        format!(
            "grant_type={GRANT_TYPE_TOKEN_EXCHANGE}&subject_token=x.y.z&subject_token_type={AT}"
        )
    }

    #[test]
    fn minimal_request() {
        let r = parse(&base()).unwrap();
        assert_eq!(r.subject.token_type, TokenType::AccessToken);
        assert!(r.actor.is_none());
        assert_eq!(r.requested_token_type, TokenType::AccessToken);
        assert_eq!(r.scope, None);
    }

    #[test]
    fn repeatable_and_optional_parameters() {
        let r = parse(&format!(
            "{}&audience=a&audience=b&resource=https://api.example/x&resource=urn:example:api&scope=read+write+read&actor_token=a.b.c&actor_token_type=urn:ietf:params:oauth:token-type:jwt&requested_token_type=urn:ietf:params:oauth:token-type:jwt&unknown=1&unknown=2",
            base()
        ))
        .unwrap();
        assert_eq!(r.audiences, ["a", "b"]);
        assert_eq!(r.resources, ["https://api.example/x", "urn:example:api"]);
        assert_eq!(r.scope.unwrap(), ["read", "write"]);
        assert_eq!(r.actor.unwrap().token_type, TokenType::Jwt);
        assert_eq!(r.requested_token_type, TokenType::Jwt);
    }

    #[test]
    fn caps_are_inclusive_and_duplicates_do_not_count() {
        let many = (0..MAX_SCOPES)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join("+");
        let r = parse(&format!("{}&scope={many}+s0+s1", base())).unwrap();
        assert_eq!(r.scope.unwrap().len(), MAX_SCOPES);
        let r = parse(&format!("{}{}", base(), "&audience=a".repeat(MAX_TARGETS))).unwrap();
        assert_eq!(r.audiences.len(), MAX_TARGETS);
    }

    #[test]
    fn refusals() {
        let b = base();
        let cases: Vec<(String, RequestError)> = vec![
            (String::new(), RequestError::MissingParameter("grant_type")),
            (
                "grant_type=client_credentials".into(),
                RequestError::UnsupportedGrantType,
            ),
            (
                b.replace("&subject_token=x.y.z", ""),
                RequestError::MissingParameter("subject_token"),
            ),
            (
                b.replace("subject_token=x.y.z", "subject_token="),
                RequestError::MissingParameter("subject_token"),
            ),
            (
                b.replace(&format!("&subject_token_type={AT}"), ""),
                RequestError::MissingParameter("subject_token_type"),
            ),
            (
                format!("{b}&subject_token=again"),
                RequestError::RepeatedParameter("subject_token"),
            ),
            (
                format!("{b}&grant_type={GRANT_TYPE_TOKEN_EXCHANGE}"),
                RequestError::RepeatedParameter("grant_type"),
            ),
            (
                format!("{b}&scope=a&scope=b"),
                RequestError::RepeatedParameter("scope"),
            ),
            (
                format!("{b}&requested_token_type=urn:ietf:params:oauth:token-type:refresh_token"),
                RequestError::UnsupportedRequestedType,
            ),
            (
                format!("{b}&requested_token_type=urn:ietf:params:oauth:token-type:id_token"),
                RequestError::UnsupportedRequestedType,
            ),
            (
                b.replace(AT, "urn:ietf:params:oauth:token-type:refresh_token"),
                RequestError::UnsupportedTokenType("subject_token_type"),
            ),
            (
                b.replace(AT, "urn:ietf:params:oauth:token-type:saml2"),
                RequestError::UnsupportedTokenType("subject_token_type"),
            ),
            (
                b.replace(AT, "access_token"),
                RequestError::UnsupportedTokenType("subject_token_type"),
            ),
            (
                format!("{b}&actor_token=a.b.c"),
                RequestError::MissingParameter("actor_token_type"),
            ),
            (
                format!("{b}&actor_token_type={AT}"),
                RequestError::ActorTypeWithoutToken,
            ),
            (
                format!(
                    "{b}&actor_token=a.b.c&actor_token_type=urn:ietf:params:oauth:token-type:refresh_token"
                ),
                RequestError::UnsupportedTokenType("actor_token_type"),
            ),
            (
                format!("{b}&resource=relative/path"),
                RequestError::InvalidResource,
            ),
            (
                format!("{b}&resource=https://api.example/x%23frag"),
                RequestError::InvalidResource,
            ),
            (format!("{b}&scope=a+%22b"), RequestError::MalformedScope),
            (
                format!(
                    "{b}&scope={}",
                    (0..=MAX_SCOPES)
                        .map(|i| format!("s{i}"))
                        .collect::<Vec<_>>()
                        .join("+")
                ),
                RequestError::TooManyScopes,
            ),
            (
                format!(
                    "{b}{}",
                    "&audience=a".repeat(MAX_TARGETS / 2 + 1)
                        + &"&resource=urn:x".repeat(MAX_TARGETS / 2)
                ),
                RequestError::TooManyTargets,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(&body).unwrap_err(), want, "{body}");
        }
    }
}
