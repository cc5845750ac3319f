//! JWT client assertions (RFC 7521 §4.2, RFC 7523 §2.2): the two form parameters, the
//! compact JWS split strictly (the same parser as subject tokens, `jose::jws`), what
//! selects the client and its keys before the signature (`iss`, `sub`), and the claims
//! set decoded strictly once the signature verified: a claim of the wrong JSON type
//! (`null` included) is refused, never ignored; a repeated member is refused.

use serde::Deserialize;

use super::ClientAuthError;
use crate::jose::JsonObject;
use crate::jose::jws::{
    Audience, CompactJws, JwsError, MAX_JSON_DEPTH, NumericDate, TimeError, check_times,
    nesting_within, some, string_not_null,
};
use crate::oauth::form::FormBody;

/// `client_assertion_type` of a JWT assertion (RFC 7523 §2.2): `private_key_jwt` and
/// Kubernetes service-account tokens.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `client_assertion_type` of a SPIFFE JWT-SVID (draft-ietf-oauth-spiffe-client-auth).
pub const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
/// Largest assertion accepted, before any decoding (as a subject token's default cap).
const MAX_ASSERTION_BYTES: usize = 16 * 1024;
/// Longest `jti` recorded in the replay cache.
const MAX_JTI_BYTES: usize = 256;

/// Which assertion type the request declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssertionType {
    /// [`JWT_BEARER`].
    JwtBearer,
    /// [`JWT_SPIFFE`].
    JwtSpiffe,
}

/// An assertion as presented, decoded, not yet trusted.
pub(crate) struct PresentedAssertion<'f> {
    pub(crate) kind: AssertionType,
    pub(crate) jws: CompactJws<'f>,
    /// Unverified `iss`: it (with `sub`) selects the client and the keys, nothing else.
    pub(crate) iss: Option<String>,
    /// Unverified `sub`.
    pub(crate) sub: String,
}

/// Whether the request sends either assertion parameter.
pub(crate) fn is_presented(form: &FormBody) -> bool {
    !matches!(form.single("client_assertion"), Ok(None))
        || !matches!(form.single("client_assertion_type"), Ok(None))
}

/// The assertion of a request, if it presents one: both parameters, at most once each
/// (RFC 7521 §4.2), a known type, a compact JWS of at most 16 KiB with a strict header
/// and a known asymmetric algorithm, and a claims set whose `iss` and `sub` are strings.
pub(crate) fn presented(
    form: &FormBody,
) -> Result<Option<PresentedAssertion<'_>>, ClientAuthError> {
    let assertion = form
        .single("client_assertion")
        .map_err(|_| ClientAuthError::RepeatedParameter)?;
    let kind = form
        .single("client_assertion_type")
        .map_err(|_| ClientAuthError::RepeatedParameter)?;
    let (assertion, kind) = match (assertion, kind) {
        (None, None) => return Ok(None),
        (Some(a), Some(k)) => (a, k),
        _ => return Err(ClientAuthError::AssertionTypeMissing),
    };
    let kind = match kind {
        JWT_BEARER => AssertionType::JwtBearer,
        JWT_SPIFFE => AssertionType::JwtSpiffe,
        _ => return Err(ClientAuthError::UnsupportedAssertionType),
    };
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(ClientAuthError::MalformedAssertion);
    }
    let jws = CompactJws::parse(assertion).map_err(|e| match e {
        JwsError::UnsupportedAlgorithm => ClientAuthError::UnsupportedAlgorithm,
        JwsError::NotCompact | JwsError::Header(_) => ClientAuthError::MalformedAssertion,
    })?;
    let selectors = decode::<Selectors>(jws.payload())?;
    let sub = selectors.sub.ok_or(ClientAuthError::MissingClaim)?;
    Ok(Some(PresentedAssertion {
        kind,
        iss: selectors.iss,
        sub,
        jws,
    }))
}

/// What selects the client and its keys, read before the signature.
#[derive(Deserialize)]
struct Selectors {
    #[serde(default, deserialize_with = "string_not_null")]
    iss: Option<String>,
    #[serde(default, deserialize_with = "string_not_null")]
    sub: Option<String>,
}

/// The claims of an assertion, typed strictly; judged only once its signature verified.
#[derive(Deserialize)]
pub(crate) struct AssertionClaims {
    #[serde(default, deserialize_with = "string_not_null")]
    pub(crate) iss: Option<String>,
    #[serde(default, deserialize_with = "string_not_null")]
    pub(crate) sub: Option<String>,
    #[serde(default, deserialize_with = "some")]
    pub(crate) aud: Option<Audience>,
    #[serde(default, deserialize_with = "some")]
    exp: Option<NumericDate>,
    #[serde(default, deserialize_with = "some")]
    nbf: Option<NumericDate>,
    #[serde(default, deserialize_with = "some")]
    iat: Option<NumericDate>,
    #[serde(default, deserialize_with = "string_not_null")]
    pub(crate) jti: Option<String>,
    /// Kubernetes' claim about the token's service account and pod.
    #[serde(rename = "kubernetes.io", default, deserialize_with = "some")]
    pub(crate) kubernetes: Option<JsonObject<KubernetesClaim>>,
}

/// The `kubernetes.io` claim of a projected service-account token (Kubernetes 1.30+:
/// namespace, service account, and for a pod-bound token the pod and its node).
#[derive(Deserialize)]
pub(crate) struct KubernetesClaim {
    pub(crate) namespace: String,
    pub(crate) serviceaccount: JsonObject<KubernetesObject>,
    #[serde(default, deserialize_with = "some")]
    pub(crate) pod: Option<JsonObject<KubernetesObject>>,
    #[serde(default, deserialize_with = "some")]
    pub(crate) node: Option<JsonObject<KubernetesObject>>,
    #[serde(default, deserialize_with = "some")]
    pub(crate) warnafter: Option<NumericDate>,
}

/// An object a token is bound to: its name and uid.
#[derive(Deserialize)]
pub(crate) struct KubernetesObject {
    pub(crate) name: String,
    pub(crate) uid: String,
}

fn decode<T: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<T, ClientAuthError> {
    if !nesting_within(payload, MAX_JSON_DEPTH) {
        return Err(ClientAuthError::MalformedAssertion);
    }
    serde_json::from_slice::<JsonObject<T>>(payload)
        .map(|JsonObject(t)| t)
        .map_err(|_| ClientAuthError::MalformedAssertion)
}

impl PresentedAssertion<'_> {
    /// The claims, once the signature verified.
    pub(crate) fn claims(&self) -> Result<AssertionClaims, ClientAuthError> {
        decode(self.jws.payload())
    }
}

impl AssertionClaims {
    /// `exp` required; `exp`, `nbf`, `iat` against `now` with `leeway`; the lifetime
    /// claimed (`exp - iat`, or `exp - now`) at most `max_lifetime` (RFC 7523 §3 items 4–6).
    /// Returns `exp`.
    pub(crate) fn check_times(
        &self,
        leeway: u64,
        max_lifetime: u64,
        now: u64,
    ) -> Result<u64, ClientAuthError> {
        let exp = self.exp.as_ref().ok_or(ClientAuthError::MissingClaim)?.0;
        let (nbf, iat) = (
            self.nbf.as_ref().map(|d| d.0),
            self.iat.as_ref().map(|d| d.0),
        );
        check_times(exp, nbf, iat, leeway, max_lifetime, now).map_err(|e| match e {
            TimeError::Expired => ClientAuthError::Expired,
            TimeError::NotYetValid | TimeError::IssuedInFuture => ClientAuthError::NotYetValid,
            TimeError::LifetimeTooLong => ClientAuthError::LifetimeTooLong,
        })?;
        Ok(exp)
    }

    /// `aud` is `expected` and nothing else: one string, or (where `array_allowed`) an
    /// array of exactly that one value.
    pub(crate) fn check_audience(
        &self,
        expected: &str,
        array_allowed: bool,
    ) -> Result<(), ClientAuthError> {
        let aud = self.aud.as_ref().ok_or(ClientAuthError::MissingClaim)?;
        let exact = matches!(aud.values.as_slice(), [one] if one == expected);
        if !exact || (aud.array && !array_allowed) {
            return Err(ClientAuthError::AudienceMismatch);
        }
        Ok(())
    }

    /// `jti`: required, non-empty, at most 256 bytes (it is recorded).
    pub(crate) fn jti(&self) -> Result<&str, ClientAuthError> {
        match self.jti.as_deref() {
            Some(jti) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => Ok(jti),
            Some(_) => Err(ClientAuthError::MalformedAssertion),
            None => Err(ClientAuthError::MissingClaim),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> FormBody {
        FormBody::parse(body.as_bytes()).unwrap()
    }

    fn jwt(header: &str, claims: &str) -> String {
        let seg = |s: &str| crate::jose::b64_encode(s.as_bytes());
        format!("{}.{}.{}", seg(header), seg(claims), seg("sig"))
    }

    #[test]
    fn parameters_come_together_once_with_a_known_type() {
        let t = jwt(r#"{"alg":"ES256"}"#, r#"{"iss":"a","sub":"a"}"#);
        let ok = format!("client_assertion={t}&client_assertion_type={JWT_BEARER}");
        assert!(presented(&form(&ok)).unwrap().is_some());
        assert!(presented(&form("")).unwrap().is_none());
        let cases = [
            (
                format!("client_assertion={t}"),
                ClientAuthError::AssertionTypeMissing,
            ),
            (
                format!("client_assertion_type={JWT_BEARER}"),
                ClientAuthError::AssertionTypeMissing,
            ),
            (
                format!("{ok}&client_assertion={t}"),
                ClientAuthError::RepeatedParameter,
            ),
            (
                format!("client_assertion={t}&client_assertion_type=urn:x"),
                ClientAuthError::UnsupportedAssertionType,
            ),
            (
                format!(
                    "client_assertion={}&client_assertion_type={JWT_BEARER}",
                    jwt(r#"{"alg":"none"}"#, r#"{"sub":"a"}"#)
                ),
                ClientAuthError::UnsupportedAlgorithm,
            ),
            (
                format!(
                    "client_assertion={}&client_assertion_type={JWT_BEARER}",
                    jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"a"}"#)
                ),
                ClientAuthError::UnsupportedAlgorithm,
            ),
            (
                format!(
                    "client_assertion={}&client_assertion_type={JWT_BEARER}",
                    jwt(r#"{"alg":"ES256"}"#, r#"{"sub":null}"#)
                ),
                ClientAuthError::MalformedAssertion,
            ),
            (
                format!(
                    "client_assertion={}&client_assertion_type={JWT_BEARER}",
                    jwt(r#"{"alg":"ES256"}"#, r#"{"iss":"a"}"#)
                ),
                ClientAuthError::MissingClaim,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(presented(&form(&body)).err(), Some(want), "{body}");
        }
    }

    #[test]
    fn audience_is_exactly_the_expected_value() {
        let claims = |aud: &str| -> AssertionClaims {
            serde_json::from_str(&format!(r#"{{"aud":{aud}}}"#)).unwrap()
        };
        let us = "https://sts.example";
        assert!(
            claims(r#""https://sts.example""#)
                .check_audience(us, false)
                .is_ok()
        );
        assert!(
            claims(r#"["https://sts.example"]"#)
                .check_audience(us, true)
                .is_ok()
        );
        for (aud, array_allowed) in [
            (r#"["https://sts.example"]"#, false),
            (r#""https://sts.example/token""#, false),
            (r#"["https://sts.example","https://other"]"#, true),
            (r#""https://other""#, true),
            ("[]", true),
        ] {
            assert_eq!(
                claims(aud).check_audience(us, array_allowed),
                Err(ClientAuthError::AudienceMismatch),
                "{aud}"
            );
        }
    }
}
