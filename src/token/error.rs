//! Why a subject or actor token was refused: one enum of facts, each with a stable name
//! for logs and metric labels. The wire mapping lives in `error`.

use thiserror::Error;

/// Why a subject or actor token was refused. Each variant is one fact.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Larger than `tokens.max_token_bytes`, refused before decoding.
    #[error("token exceeds the size limit")]
    TooLarge,
    /// Not three base64url segments (a JWE or an opaque token, for instance).
    #[error("not a compact JWS")]
    NotCompactJws,
    /// The header is not the JSON we expect (or announces a JWE).
    #[error("malformed header")]
    MalformedHeader,
    /// The claims are not a JSON object (or repeat a member).
    #[error("malformed claims")]
    MalformedClaims,
    /// A `crit` header: we understand no extension (RFC 7515 §4.1.11).
    #[error("crit header present")]
    CritHeader,
    /// `jku`, `jwk`, `x5u` or `x5c`: keys are never taken from a token.
    #[error("key-carrying header present")]
    KeyInHeader,
    /// `alg` is `none`, an HMAC algorithm or unknown.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// `alg` is not in this issuer's allow-list.
    #[error("algorithm not allowed for issuer")]
    AlgorithmNotAllowed,
    /// `iss` is not a configured issuer.
    #[error("untrusted issuer")]
    UnknownIssuer,
    /// `iss` is a configured issuer, but not one the client's policy accepts for this role.
    #[error("issuer not accepted for this client")]
    IssuerNotAccepted,
    /// The declared token type is not accepted from this issuer.
    #[error("token type not accepted from issuer")]
    TokenTypeNotAccepted,
    /// The `typ` header, or the `typ` claim some issuers use, does not fit the declared
    /// token type.
    #[error("typ does not match declared token type")]
    TypMismatch,
    /// No key of the issuer has this `kid`.
    #[error("unknown kid")]
    UnknownKid,
    /// No `kid`, and the issuer has several keys for the algorithm.
    #[error("kid required")]
    KidRequired,
    /// The key named by `kid` is not bound to the token's algorithm.
    #[error("algorithm does not match key")]
    AlgorithmKeyMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A required claim is absent.
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an impossible value.
    #[error("invalid claim {0}")]
    InvalidClaim(&'static str),
    /// `exp` is in the past beyond the leeway.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future beyond the leeway.
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is in the future beyond the leeway.
    #[error("issued in the future")]
    IssuedInFuture,
    /// Bound to a key (`cnf`) whose possession we cannot check.
    #[error("sender-constrained token")]
    SenderConstrained,
    /// Older than the issuer's maximum token age (by `iat`).
    #[error("older than the issuer's maximum token age")]
    TooOld,
    /// Claims a lifetime (`exp - iat`, or `exp - now` without `iat`) longer than the
    /// issuer's maximum token lifetime.
    #[error("lifetime longer than the issuer's maximum token lifetime")]
    LifetimeTooLong,
    /// The issuer's keys could not be fetched and none are cached; or the token's `kid`
    /// is not among the keys held and a refetch could not be made yet (cooldown,
    /// backoff) or failed.
    #[error("issuer keys unavailable")]
    KeysUnavailable,
    /// The issuer's introspection endpoint says the token is not active.
    #[error("token not active")]
    Inactive,
    /// The introspection endpoint could not be used: fail closed.
    #[error("introspection unavailable")]
    IntrospectionUnavailable,
}

impl TokenError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::NotCompactJws => "not_compact_jws",
            TokenError::MalformedHeader => "malformed_header",
            TokenError::MalformedClaims => "malformed_claims",
            TokenError::CritHeader => "crit_header",
            TokenError::KeyInHeader => "key_in_header",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::IssuerNotAccepted => "issuer_not_accepted",
            TokenError::TokenTypeNotAccepted => "token_type_not_accepted",
            TokenError::TypMismatch => "typ_mismatch",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::KidRequired => "kid_required",
            TokenError::AlgorithmKeyMismatch => "algorithm_key_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::InvalidClaim(_) => "invalid_claim",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::TooOld => "too_old",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::SenderConstrained => "sender_constrained",
            TokenError::KeysUnavailable => "keys_unavailable",
            TokenError::Inactive => "inactive",
            TokenError::IntrospectionUnavailable => "introspection_unavailable",
        }
    }
}
