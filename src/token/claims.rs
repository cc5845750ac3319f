//! Strict decoding of a JWT's header and claims (RFC 7519, RFC 8725).
//!
//! Each claim is first captured as raw JSON, then decoded on its own, so a claim of the
//! wrong type is refused and named (`iss` as an array, `exp` as a string), never ignored.
//! Duplicate members among the claims we read are refused by serde. JSON nesting is
//! bounded by serde_json's recursion limit and the token size cap before it.

use serde::de::Deserializer;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::value::RawValue;

use super::TokenError;
use crate::config::MAX_CHAIN_DEPTH;
use crate::jose::JsonObject;
use crate::jose::jws::{Audience, MAX_JSON_DEPTH, NumericDate, nesting_within};

/// A party in a delegation chain: identity only (rule 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorId {
    /// The actor's subject identifier.
    pub sub: String,
    /// The actor's issuer, when the token said it.
    pub iss: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow, default, deserialize_with = "raw")]
    iss: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    sub: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    aud: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    exp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    nbf: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    iat: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    jti: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    scope: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    client_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    azp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    act: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    may_act: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    typ: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    at_hash: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    c_hash: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    nonce: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    cnf: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    token_type: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw")]
    sub_iss: Option<&'a RawValue>,
}

/// Keeps a member's raw JSON, `null` included: `Option`'s own deserializer would turn a
/// `null` into `None`, and a `null` `act` or `may_act` would silently count as absent.
fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// The claims of a token, typed, not yet trusted.
#[derive(Debug, Clone)]
pub(super) struct Claims {
    pub iss: String,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub jti: Option<String>,
    pub scope: Vec<String>,
    pub client_id: Option<String>,
    pub azp: Option<String>,
    /// Prior actors, the current (outermost `act`) first.
    pub act: Vec<ActorId>,
    pub may_act: Option<ActorId>,
    /// The `typ` *claim* (not header) by which Keycloak and Red Hat SSO tell token
    /// kinds apart: `Bearer`, `ID`, `Refresh`, `Offline`, `Logout`.
    pub typ: Option<String>,
    /// `at_hash`, `c_hash` or `nonce` is present: claims OpenID Connect defines for ID
    /// tokens (OIDC Core §2, §3.1.3.6, §3.3.2.11).
    pub id_token_markers: bool,
    /// `cnf` is present: the token is bound to a key (RFC 7800; DPoP RFC 9449, mTLS
    /// RFC 8705) whose possession we cannot check.
    pub sender_constrained: bool,
    /// RFC 7662 §2.2 `token_type` of an introspection answer.
    pub token_type: Option<String>,
    /// `sub_iss`: in a token gleipnir issued, the issuer of its subject (see
    /// `policy::rules::subject_origin`); meaningless in anyone else's, so its type is
    /// checked (`Err`) only where it is read, in our own tokens.
    pub sub_iss: Option<Result<String, TokenError>>,
    /// The claims set as received (JSON text): policy conditions and passthrough claims
    /// read members the typed fields do not keep.
    pub raw: std::sync::Arc<str>,
}

fn claim<T: DeserializeOwned>(
    raw: Option<&RawValue>,
    name: &'static str,
) -> Result<Option<T>, TokenError> {
    // A claim present as `null` reaches here (see `raw`) and fails every typed decode.
    raw.map(|r| serde_json::from_str::<T>(r.get()).map_err(|_| TokenError::InvalidClaim(name)))
        .transpose()
}

/// The issuer of a JWS's claims set, read before its signature is verified because it
/// selects the keys: the structural checks of [`parse_claims`] (a JSON object, nesting,
/// no repeated member among those read) and `iss`, and no other claim, so that the claims
/// of a token nobody signed are never judged (RFC 8725 §3.8, and the pattern of
/// CVE-2024-51744: a forged token must be reported as forged).
pub(super) fn parse_iss(json: &[u8]) -> Result<String, TokenError> {
    if !nesting_within(json, MAX_JSON_DEPTH) {
        return Err(TokenError::MalformedClaims);
    }
    let JsonObject(raw) = serde_json::from_slice::<JsonObject<RawClaims<'_>>>(json)
        .map_err(|_| TokenError::MalformedClaims)?;
    claim(raw.iss, "iss")?.ok_or(TokenError::MissingClaim("iss"))
}

/// Decodes the claims set. Checks types here; values are checked by the validator.
pub(super) fn parse_claims(json: &[u8]) -> Result<Claims, TokenError> {
    if !nesting_within(json, MAX_JSON_DEPTH) {
        return Err(TokenError::MalformedClaims);
    }
    let JsonObject(raw) = serde_json::from_slice::<JsonObject<RawClaims<'_>>>(json)
        .map_err(|_| TokenError::MalformedClaims)?;
    let text: std::sync::Arc<str> = std::str::from_utf8(json)
        .map_err(|_| TokenError::MalformedClaims)?
        .into();
    let iss: String = claim(raw.iss, "iss")?.ok_or(TokenError::MissingClaim("iss"))?;
    let scope: Option<String> = claim(raw.scope, "scope")?;
    let act: Option<JsonObject<RawActor>> = claim(raw.act, "act")?;
    let may_act: Option<JsonObject<RawMayAct>> = claim(raw.may_act, "may_act")?;
    Ok(Claims {
        iss,
        sub: claim(raw.sub, "sub")?,
        aud: claim::<Audience>(raw.aud, "aud")?
            .map(|a| a.values)
            .unwrap_or_default(),
        exp: claim::<NumericDate>(raw.exp, "exp")?.map(|d| d.0),
        nbf: claim::<NumericDate>(raw.nbf, "nbf")?.map(|d| d.0),
        iat: claim::<NumericDate>(raw.iat, "iat")?.map(|d| d.0),
        jti: claim(raw.jti, "jti")?,
        scope: scope
            .map(|s| {
                s.split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        client_id: claim(raw.client_id, "client_id")?,
        azp: claim(raw.azp, "azp")?,
        act: act
            .map(|a| flatten_act(a.0))
            .transpose()?
            .unwrap_or_default(),
        typ: claim(raw.typ, "typ")?,
        id_token_markers: raw.at_hash.is_some() || raw.c_hash.is_some() || raw.nonce.is_some(),
        sender_constrained: raw.cnf.is_some(),
        token_type: claim(raw.token_type, "token_type")?,
        sub_iss: claim(raw.sub_iss, "sub_iss").transpose(),
        may_act: may_act.map(|JsonObject(m)| ActorId {
            sub: m.sub,
            iss: m.iss,
        }),
        raw: text,
    })
}

/// `act` (RFC 8693 §4.1): `sub` required, `iss` optional, other members ignored.
#[derive(Deserialize)]
struct RawActor {
    sub: String,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    act: Option<Box<JsonObject<RawActor>>>,
}

/// `may_act` (RFC 8693 §4.4): the party allowed to act; we match on `sub` (and `iss`).
#[derive(Deserialize)]
struct RawMayAct {
    sub: String,
    #[serde(default)]
    iss: Option<String>,
}

fn flatten_act(mut current: RawActor) -> Result<Vec<ActorId>, TokenError> {
    let mut chain = Vec::new();
    loop {
        if current.sub.is_empty() {
            return Err(TokenError::InvalidClaim("act"));
        }
        chain.push(ActorId {
            sub: current.sub,
            iss: current.iss,
        });
        if chain.len() > MAX_CHAIN_DEPTH {
            return Err(TokenError::InvalidClaim("act"));
        }
        match current.act {
            Some(next) => current = next.0,
            None => return Ok(chain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: serde_json::Value) -> Result<Claims, TokenError> {
        parse_claims(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn well_formed_claims_decode() {
        let c = claims(json!({
            "iss": "https://idp", "sub": "alice", "aud": ["a", "b"], "exp": 1700000000.9,
            "scope": "read  write", "act": { "sub": "svc", "iss": "https://idp", "exp": 1,
            "act": { "sub": "bff" } }, "may_act": { "sub": "svc" }, "extra": [[[{}]]]
        }))
        .unwrap();
        assert_eq!(c.aud, ["a", "b"]);
        assert_eq!(c.exp, Some(1_700_000_000));
        assert_eq!(c.scope, ["read", "write"]);
        assert_eq!(c.act.len(), 2);
        assert_eq!(c.act[0].sub, "svc");
        assert_eq!(
            c.act[1],
            ActorId {
                sub: "bff".into(),
                iss: None
            }
        );
        assert_eq!(c.may_act.unwrap().sub, "svc");
    }

    #[test]
    fn wrong_types_are_refused_and_named() {
        let base = json!({ "iss": "https://idp", "sub": "alice", "exp": 1 });
        let cases = [
            ("iss", json!(["https://idp"])),
            ("iss", json!(1)),
            ("sub", json!(42)),
            ("aud", json!(7)),
            ("aud", json!([1])),
            ("aud", json!({"a": 1})),
            ("exp", json!("1700000000")),
            ("exp", json!(1e19)),
            ("exp", json!(-1)),
            ("nbf", json!(true)),
            ("iat", json!([1])),
            ("scope", json!(["read"])),
            ("client_id", json!(1)),
            ("azp", json!({})),
            ("act", json!("bff")),
            ("act", json!(["gateway"])),
            ("act", json!({ "sub": "gateway", "act": ["edge"] })),
            ("act", json!({ "iss": "x" })),
            ("act", json!({ "sub": "" })),
            ("may_act", json!("svc")),
            ("may_act", json!(["bff"])),
            ("typ", json!(["Bearer"])),
            ("sub", json!(null)),
            ("aud", json!(null)),
            ("nbf", json!(null)),
            ("act", json!(null)),
            ("may_act", json!(null)),
            ("iss", json!(null)),
            ("may_act", json!({ "iss": "x" })),
        ];
        for (name, value) in cases {
            let mut v = base.clone();
            v[name] = value.clone();
            match claims(v) {
                Err(TokenError::InvalidClaim(n)) => assert_eq!(n, name, "{value}"),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn missing_iss_and_duplicate_members_are_refused() {
        assert!(matches!(
            claims(json!({"sub": "a"})),
            Err(TokenError::MissingClaim("iss"))
        ));
        let dup = br#"{"iss":"https://idp","sub":"alice","sub":"mallory"}"#;
        assert!(matches!(
            parse_claims(dup),
            Err(TokenError::MalformedClaims)
        ));
        assert!(matches!(
            parse_claims(b"[]"),
            Err(TokenError::MalformedClaims)
        ));
        // A claims set as an array would otherwise fill iss, sub, ... by position.
        // Every field present, in declaration order: the exact positional attack.
        let positional =
            br#"["https://idp","alice","bff",1900000000,null,null,null,"read",null,null,null,null]"#;
        assert!(matches!(
            parse_claims(positional),
            Err(TokenError::MalformedClaims)
        ));
        assert!(matches!(
            parse_claims(b"{\"iss\":\"a\""),
            Err(TokenError::MalformedClaims)
        ));
    }

    #[test]
    fn act_nesting_is_bounded() {
        let mut act = json!({ "sub": "leaf" });
        for i in 0..MAX_CHAIN_DEPTH {
            act = json!({ "sub": format!("a{i}"), "act": act });
        }
        let v = json!({ "iss": "i", "act": act });
        assert!(matches!(claims(v), Err(TokenError::InvalidClaim("act"))));
        let nested =
            |n: usize| format!("{{\"iss\":\"i\",\"x\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert!(parse_claims(nested(MAX_JSON_DEPTH - 1).as_bytes()).is_ok());
        assert!(matches!(
            parse_claims(nested(MAX_JSON_DEPTH).as_bytes()),
            Err(TokenError::MalformedClaims)
        ));
        // Brackets inside strings do not count, escaped quotes do not end a string.
        let in_string = format!("{{\"iss\":\"i\",\"x\":\"\\\"{}\"}}", "[".repeat(100));
        assert!(parse_claims(in_string.as_bytes()).is_ok());
    }
}
