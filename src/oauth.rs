//! OAuth wire vocabulary: the grant type, token type URNs, error codes, and the strict
//! `application/x-www-form-urlencoded` body they travel in.
//!
//! A supporting module: every stage may use it, it uses no stage.

pub mod form;

/// RFC 8693 §2.1: the only grant type this service accepts.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Token type identifiers (RFC 8693 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// `urn:ietf:params:oauth:token-type:access_token`
    AccessToken,
    /// `urn:ietf:params:oauth:token-type:jwt`
    Jwt,
    /// `urn:ietf:params:oauth:token-type:id_token`
    IdToken,
    /// `urn:ietf:params:oauth:token-type:refresh_token` (recognised only to be refused)
    RefreshToken,
    /// `urn:ietf:params:oauth:token-type:saml1` (recognised only to be refused)
    Saml1,
    /// `urn:ietf:params:oauth:token-type:saml2` (recognised only to be refused)
    Saml2,
}

impl TokenType {
    const ALL: [TokenType; 6] = [
        TokenType::AccessToken,
        TokenType::Jwt,
        TokenType::IdToken,
        TokenType::RefreshToken,
        TokenType::Saml1,
        TokenType::Saml2,
    ];

    /// The URN that names this type on the wire.
    pub fn urn(self) -> &'static str {
        match self {
            TokenType::AccessToken => "urn:ietf:params:oauth:token-type:access_token",
            TokenType::Jwt => "urn:ietf:params:oauth:token-type:jwt",
            TokenType::IdToken => "urn:ietf:params:oauth:token-type:id_token",
            TokenType::RefreshToken => "urn:ietf:params:oauth:token-type:refresh_token",
            TokenType::Saml1 => "urn:ietf:params:oauth:token-type:saml1",
            TokenType::Saml2 => "urn:ietf:params:oauth:token-type:saml2",
        }
    }

    /// The short name used in configuration files (`access_token`, `jwt`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TokenType::AccessToken => "access_token",
            TokenType::Jwt => "jwt",
            TokenType::IdToken => "id_token",
            TokenType::RefreshToken => "refresh_token",
            TokenType::Saml1 => "saml1",
            TokenType::Saml2 => "saml2",
        }
    }

    /// Parses a URN exactly (URNs are compared as strings, RFC 8693 §3).
    pub fn from_urn(urn: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.urn() == urn)
    }

    /// Parses a configuration short name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// OAuth error codes this service answers with (RFC 6749 §5.2, RFC 8693 §2.2.2,
/// RFC 8707 §2, RFC 6749 §4.1.2.1 for `temporarily_unavailable`/`server_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`
    InvalidClient,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`
    InvalidScope,
    /// `invalid_target`
    InvalidTarget,
    /// `temporarily_unavailable`
    TemporarilyUnavailable,
    /// `server_error`
    ServerError,
}

impl ErrorCode {
    /// The code as it appears in the `error` member.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// RFC 8707 §2: a `resource` is an absolute URI (RFC 3986 §4.3) with no fragment.
pub fn is_resource_uri(value: &str) -> bool {
    !value.contains('#') && reqwest::Url::parse(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_type_urns_round_trip() {
        for t in TokenType::ALL {
            assert_eq!(TokenType::from_urn(t.urn()), Some(t));
            assert_eq!(TokenType::from_name(t.name()), Some(t));
        }
        assert_eq!(TokenType::from_urn("access_token"), None);
        assert_eq!(
            TokenType::from_urn("URN:IETF:PARAMS:OAUTH:TOKEN-TYPE:JWT"),
            None
        );
    }

    #[test]
    fn scope_tokens_follow_rfc6749() {
        assert!(is_scope_token("orders:read"));
        assert!(is_scope_token("a!#[]~"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("a b"));
        assert!(!is_scope_token("quote\""));
        assert!(!is_scope_token("back\\slash"));
        assert!(!is_scope_token("é"));
    }

    #[test]
    fn resource_uris_follow_rfc8707() {
        assert!(is_resource_uri("https://api.example.com/orders"));
        assert!(is_resource_uri("urn:example:orders"));
        assert!(!is_resource_uri("orders"));
        assert!(!is_resource_uri("/orders"));
        assert!(!is_resource_uri("https://api.example.com/#x"));
        assert!(!is_resource_uri(""));
    }
}
