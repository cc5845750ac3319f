//! What a token says about its own kind (`typ` header, Keycloak's `typ` claim, ID-token
//! hashes), judged against the type the request declared (RFC 8693 §2.1, RFC 9068 §2.1).

use crate::config::IssuerProfile;
use crate::oauth::TokenType;

/// What a token says about its own kind.
pub(super) struct TokenKind<'a> {
    /// The `typ` header (RFC 7515 §4.1.9).
    pub(super) header_typ: Option<&'a str>,
    /// The `typ` claim Keycloak uses: `Bearer`, `ID`, `Refresh`, `Offline`, `Logout`.
    pub(super) claim_typ: Option<&'a str>,
    /// `at_hash` or `c_hash`, which only ID tokens carry.
    pub(super) id_token_markers: bool,
}

impl TokenKind<'_> {
    /// Whether the token may be accepted as `declared` from an issuer with `profile`
    /// (rules §4 "what the request declares must match what the token is").
    ///
    /// Whatever the profile: refresh, offline and logout tokens are never accepted, and an
    /// ID token (by claim or by its hashes) is only ever an `id_token`. Then by type:
    /// an access token must be explicitly typed, `at+jwt` under RFC 9068 §2.1, or, from a
    /// Keycloak issuer, header `typ` `JWT` with claim `typ` `Bearer`; a `jwt` is any other
    /// JWT; an `id_token` has header `typ` `JWT` or none (and claim `ID` from Keycloak).
    pub(super) fn fits(&self, profile: IssuerProfile, declared: TokenType) -> bool {
        let header_is = |want: &str| self.header_typ.is_some_and(|t| media_type_is(t, want));
        let claim_is = |want: &str| self.claim_typ.is_some_and(|c| c.eq_ignore_ascii_case(want));
        if claim_is("refresh") || claim_is("offline") || claim_is("logout") {
            return false;
        }
        // Keycloak's claim decides when present (its old access tokens carried `nonce`).
        let id_token = claim_is("id") || (self.id_token_markers && !claim_is("bearer"));
        match declared {
            TokenType::AccessToken => {
                !id_token
                    && match profile {
                        IssuerProfile::Rfc9068 => header_is("at+jwt"),
                        IssuerProfile::Keycloak => {
                            (header_is("jwt") || header_is("at+jwt")) && claim_is("bearer")
                        }
                    }
            }
            TokenType::Jwt => {
                !id_token && (self.header_typ.is_none() || header_is("jwt") || header_is("at+jwt"))
            }
            TokenType::IdToken => {
                (self.header_typ.is_none() || header_is("jwt"))
                    && !claim_is("bearer")
                    && (profile == IssuerProfile::Rfc9068 || claim_is("id"))
            }
            TokenType::RefreshToken | TokenType::Saml1 | TokenType::Saml2 => false,
        }
    }

    /// An introspected token is an access token when the answer says `token_type`
    /// `Bearer` (RFC 7662 §2.2; a provider leaves it out or says `refresh_token` for other
    /// kinds, whatever `token_type_hint` asked) and nothing in it says otherwise.
    pub(super) fn introspected_access_token(&self, token_type: Option<&str>) -> bool {
        let claim_is = |want: &str| self.claim_typ.is_some_and(|c| c.eq_ignore_ascii_case(want));
        token_type.is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
            && !self.id_token_markers
            && (self.claim_typ.is_none() || claim_is("bearer"))
    }
}

/// `typ` equals `want`, case-insensitively, with or without `application/` (RFC 7515
/// §4.1.9).
fn media_type_is(typ: &str, want: &str) -> bool {
    const PREFIX: &str = "application/";
    let unprefixed = match typ.get(..PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(PREFIX) => typ.get(PREFIX.len()..).unwrap_or_default(),
        _ => typ,
    };
    unprefixed.eq_ignore_ascii_case(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use IssuerProfile::{Keycloak, Rfc9068};
    use TokenType::{AccessToken as At, IdToken as Id, Jwt};

    fn fits(
        profile: IssuerProfile,
        header: Option<&str>,
        claim: Option<&str>,
        markers: bool,
        declared: TokenType,
    ) -> bool {
        TokenKind {
            header_typ: header,
            claim_typ: claim,
            id_token_markers: markers,
        }
        .fits(profile, declared)
    }

    /// (profile, header typ, claim typ, ID-token hashes, declared type, accepted)
    type Row = (
        IssuerProfile,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        TokenType,
        bool,
    );

    #[test]
    fn token_kinds() {
        let table: &[Row] = &[
            // RFC 9068 access tokens are explicitly typed.
            (Rfc9068, Some("at+jwt"), None, false, At, true),
            (Rfc9068, Some("application/AT+JWT"), None, false, At, true),
            (Rfc9068, Some("JWT"), None, false, At, false),
            (Rfc9068, None, None, false, At, false),
            (Rfc9068, Some("JWT"), Some("Bearer"), false, At, false),
            // Keycloak access tokens: header JWT and claim Bearer, both required.
            (Keycloak, Some("JWT"), Some("Bearer"), false, At, true),
            (Keycloak, Some("at+jwt"), Some("Bearer"), false, At, true),
            (Keycloak, Some("JWT"), None, false, At, false),
            (Keycloak, Some("JWT"), Some("ID"), false, At, false),
            // Generic JWTs: not an ID token, not a refresh/logout token.
            (Rfc9068, Some("JWT"), None, false, Jwt, true),
            (Rfc9068, None, None, false, Jwt, true),
            (Rfc9068, Some("logout+jwt"), None, false, Jwt, false),
            (Keycloak, Some("JWT"), Some("ID"), false, Jwt, false),
            (Rfc9068, Some("JWT"), None, true, Jwt, false),
            // Keycloak's claim decides: an old access token with a nonce is still Bearer.
            (Keycloak, Some("JWT"), Some("Bearer"), true, At, true),
            (Keycloak, Some("JWT"), Some("Bearer"), true, Jwt, true),
            (Rfc9068, Some("at+jwt"), None, true, At, false),
            // ID tokens.
            (Rfc9068, None, None, true, Id, true),
            (Rfc9068, Some("JWT"), Some("ID"), false, Id, true),
            (Rfc9068, Some("at+jwt"), None, false, Id, false),
            (Rfc9068, Some("JWT"), Some("Bearer"), false, Id, false),
            (Keycloak, Some("JWT"), Some("ID"), true, Id, true),
            (Keycloak, Some("JWT"), None, true, Id, false),
            // Never.
            (Keycloak, Some("JWT"), Some("Refresh"), false, Jwt, false),
            (Keycloak, Some("JWT"), Some("refresh"), false, At, false),
            (Keycloak, Some("JWT"), Some("Offline"), false, Id, false),
            (Rfc9068, Some("JWT"), Some("Logout"), false, Jwt, false),
            (
                Rfc9068,
                Some("JWT"),
                None,
                false,
                TokenType::RefreshToken,
                false,
            ),
        ];
        let introspected =
            |claim: Option<&'static str>, markers: bool, token_type: Option<&'static str>| {
                TokenKind {
                    header_typ: None,
                    claim_typ: claim,
                    id_token_markers: markers,
                }
                .introspected_access_token(token_type)
            };
        assert!(introspected(None, false, Some("Bearer")));
        assert!(introspected(Some("Bearer"), false, Some("bearer")));
        assert!(!introspected(None, false, None), "token_type required");
        assert!(!introspected(None, false, Some("refresh_token")));
        assert!(!introspected(None, false, Some("DPoP")));
        assert!(!introspected(Some("Refresh"), false, Some("Bearer")));
        assert!(!introspected(None, true, Some("Bearer")));
        for &(profile, header, claim, markers, declared, accepted) in table {
            assert_eq!(
                fits(profile, header, claim, markers, declared),
                accepted,
                "{profile:?} header={header:?} claim={claim:?} hashes={markers} as {declared:?}"
            );
        }
    }
}
