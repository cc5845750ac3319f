//! Compact JWS (RFC 7515 §7.1), shared by every verifier of signed JWTs: subject and actor
//! tokens (`token`) and client assertions (`client_auth`). The token is split and decoded
//! strictly (strict base64url, a JSON object header without `crit` or key-carrying
//! members, a known asymmetric algorithm), and its signature is verified with the key a
//! [`KeySet`] binds to the token's algorithm (RFC 8725 §3.1: the algorithm comes from the
//! key, never from the token alone). The strict JSON pieces every claims set decodes with
//! live here too: [`NumericDate`], [`Audience`], the nesting bound and the member helpers.
//!
//! What the claims *mean* is each caller's business; this module never judges a claim.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};

use super::{JsonObject, JwsAlgorithm, KeyLookup, KeySet, b64_decode};

/// Deepest JSON nesting accepted in a header or claims set (rules §4).
pub const MAX_JSON_DEPTH: usize = 32;

/// Largest NumericDate accepted: 9999-12-31T23:59:59Z. Bigger values (`1e19`) are refused.
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Whether `json` nests arrays/objects at most `max` deep. A linear scan that skips
/// string contents; run before any decoding so a hostile token costs one pass.
pub fn nesting_within(json: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The protected header members we act on.
#[derive(Debug)]
pub struct Header {
    /// `alg`, as written.
    pub alg: String,
    /// `kid`: a lookup key only.
    pub kid: Option<String>,
    /// `typ`.
    pub typ: Option<String>,
}

/// Why a JWS header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not the JSON object we expect (or a JWE's `enc`).
    Malformed,
    /// `crit`: we understand no extension (RFC 7515 §4.1.11).
    Crit,
    /// `jku`, `jwk`, `x5u` or `x5c`: keys are never taken from a token (RFC 8725 §3.10).
    KeyInHeader,
}

/// Why a token is not a usable compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsError {
    /// Not three strict base64url segments.
    NotCompact,
    /// The header was refused.
    Header(HeaderError),
    /// `alg` is `none`, an HMAC algorithm or unknown.
    UnsupportedAlgorithm,
}

/// Why a signature did not verify with a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No key has this `kid` (or, without `kid`, none has this algorithm).
    UnknownKid,
    /// No `kid`, and several keys fit the algorithm.
    KidRequired,
    /// The key named by `kid` is not bound to the token's algorithm.
    AlgorithmKeyMismatch,
    /// The key was found and the signature does not verify with it.
    BadSignature,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default, deserialize_with = "string_not_null")]
    kid: Option<String>,
    #[serde(default, deserialize_with = "string_not_null")]
    typ: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    enc: bool,
}

/// A member that, when present, must be a string (RFC 7515 §4.1.4, §4.1.9).
/// `Option`'s own deserializer would take `"kid": null` as absent, and a token whose
/// `kid` is `null` would then select the issuer's only key for the algorithm.
pub fn string_not_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// A member that, when present, must decode as `T` (`null` included: it is refused unless
/// `T` accepts it), for `#[serde(default, deserialize_with = "some")]`.
pub fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// True whenever the member is there, whatever its value (even `null`).
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// Decodes the protected header. RFC 8725 §3.1 and rules §4: `crit` is refused (we
/// understand no extensions); key-carrying headers are refused, never followed.
pub fn parse_header(json: &[u8]) -> Result<Header, HeaderError> {
    if !nesting_within(json, MAX_JSON_DEPTH) {
        return Err(HeaderError::Malformed);
    }
    let JsonObject(raw) = serde_json::from_slice::<JsonObject<RawHeader>>(json)
        .map_err(|_| HeaderError::Malformed)?;
    if raw.enc {
        return Err(HeaderError::Malformed);
    }
    if raw.crit {
        return Err(HeaderError::Crit);
    }
    if raw.jku || raw.jwk || raw.x5u || raw.x5c {
        return Err(HeaderError::KeyInHeader);
    }
    Ok(Header {
        alg: raw.alg,
        kid: raw.kid,
        typ: raw.typ,
    })
}

/// A compact JWS, decoded, not yet trusted.
pub struct CompactJws<'t> {
    /// The protected header.
    pub header: Header,
    /// The algorithm `alg` names (only selects among a key's bindings).
    pub alg: JwsAlgorithm,
    /// The two first segments exactly as received: the signed input (RFC 7515 §5.2).
    signing_input: &'t str,
    signature: Vec<u8>,
    /// The claims set, decoded from base64url, not judged here.
    payload: Vec<u8>,
}

impl<'t> CompactJws<'t> {
    /// Splits and decodes a compact JWS with exactly two dots: a strict header and a
    /// known algorithm; the payload is only base64url-decoded.
    pub fn parse(token: &'t str) -> Result<Self, JwsError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::NotCompact);
        };
        let header = b64_decode(h64).ok_or(JwsError::NotCompact)?;
        let header = parse_header(&header).map_err(JwsError::Header)?;
        let alg = JwsAlgorithm::from_name(&header.alg).ok_or(JwsError::UnsupportedAlgorithm)?;
        let payload = b64_decode(p64).ok_or(JwsError::NotCompact)?;
        let signature = b64_decode(s64).ok_or(JwsError::NotCompact)?;
        let signing_input = token
            .get(..h64.len() + 1 + p64.len())
            .ok_or(JwsError::NotCompact)?;
        Ok(CompactJws {
            header,
            alg,
            signing_input,
            signature,
            payload,
        })
    }

    /// The decoded payload (the claims set, not yet trusted).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Verifies the signature with the key `kid` names in `keys` (or the only key for the
    /// algorithm), which must be bound to the token's algorithm.
    pub fn verify_with(&self, keys: &KeySet) -> Result<(), SignatureError> {
        match keys.find(self.header.kid.as_deref(), self.alg) {
            KeyLookup::Found(key) if key.verify(self.signing_input.as_bytes(), &self.signature) => {
                Ok(())
            }
            KeyLookup::Found(_) => Err(SignatureError::BadSignature),
            KeyLookup::UnknownKid => Err(SignatureError::UnknownKid),
            KeyLookup::AlgorithmMismatch => Err(SignatureError::AlgorithmKeyMismatch),
            KeyLookup::KidRequired => Err(SignatureError::KidRequired),
        }
    }
}

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3); nothing else. Whether it
/// was written as a string is kept: client assertions must name us with a string.
pub struct Audience {
    /// The values.
    pub values: Vec<String>,
    /// Written as a JSON array (even of one value).
    pub array: bool,
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Audience;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience {
                    values: vec![v.to_owned()],
                    array: false,
                })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut values = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    values.push(s);
                }
                Ok(Audience {
                    values,
                    array: true,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative JSON number of seconds, fractions dropped,
/// at most year 9999.
pub struct NumericDate(pub u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a NumericDate")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                if v <= MAX_NUMERIC_DATE {
                    Ok(NumericDate(v))
                } else {
                    Err(E::custom("NumericDate out of range"))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("negative NumericDate"))
                    .and_then(|v| self.visit_u64(v))
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                // The range check makes the cast exact for the integer part.
                if v.is_finite() && v >= 0.0 && v <= MAX_NUMERIC_DATE as f64 {
                    Ok(NumericDate(v.floor() as u64))
                } else {
                    Err(E::custom("NumericDate out of range"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a JWT's times were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` is in the future beyond the leeway.
    NotYetValid,
    /// `iat` is in the future beyond the leeway.
    IssuedInFuture,
    /// `exp − iat` (or `exp − now` without `iat`) above the maximum lifetime.
    LifetimeTooLong,
}

/// The time checks every JWT gets (RFC 7519 §4.1.4–§4.1.6), against our clock `now` with
/// `leeway`: `exp` not past, `nbf` and `iat` not in the future, and the lifetime the token
/// claims at most `max_lifetime` (RFC 8725 §3.10 asks for short-lived tokens; RFC 7519
/// leaves `exp` to the issuer). With `iat` the lifetime is `exp - iat`, the issuer's own
/// statement, taken without leeway; without `iat` it is what is left of it, `exp - now`,
/// with the leeway for our clock.
pub fn check_times(
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    leeway: u64,
    max_lifetime: u64,
    now: u64,
) -> Result<(), TimeError> {
    if exp.saturating_add(leeway) <= now {
        return Err(TimeError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(TimeError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(TimeError::IssuedInFuture);
    }
    let (lifetime, allowed) = match iat {
        Some(iat) => (exp.saturating_sub(iat), max_lifetime),
        None => (exp.saturating_sub(now), max_lifetime.saturating_add(leeway)),
    };
    if lifetime > allowed {
        return Err(TimeError::LifetimeTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        assert!(parse_header(br#"{"alg":"ES256","kid":"k","typ":"at+jwt"}"#).is_ok());
        for (h, want) in [
            (r#"{"alg":"ES256","crit":["exp"]}"#, HeaderError::Crit),
            (r#"{"alg":"ES256","crit":null}"#, HeaderError::Crit),
            (
                r#"{"alg":"ES256","jku":"https://evil"}"#,
                HeaderError::KeyInHeader,
            ),
            (
                r#"{"alg":"ES256","jwk":{"kty":"EC"}}"#,
                HeaderError::KeyInHeader,
            ),
            (
                r#"{"alg":"ES256","x5u":"https://evil"}"#,
                HeaderError::KeyInHeader,
            ),
            (r#"{"alg":"ES256","x5c":["MII"]}"#, HeaderError::KeyInHeader),
            (
                r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#,
                HeaderError::Malformed,
            ),
            (r#"{"kid":"k"}"#, HeaderError::Malformed),
            (r#"["ES256","es-1","at+jwt"]"#, HeaderError::Malformed),
            (r#"{"alg":"ES256","alg":"none"}"#, HeaderError::Malformed),
            (r#"{"alg":"ES256","kid":7}"#, HeaderError::Malformed),
        ] {
            assert_eq!(parse_header(h.as_bytes()).err(), Some(want), "{h}");
        }
    }

    #[test]
    fn none_and_hmac_are_unsupported_and_segments_are_strict() {
        let seg = |v: &str| crate::jose::b64_encode(v.as_bytes());
        for alg in ["none", "HS256"] {
            let token = format!("{}.{}.", seg(&format!("{{\"alg\":\"{alg}\"}}")), seg("{}"));
            assert_eq!(
                CompactJws::parse(&token).err(),
                Some(JwsError::UnsupportedAlgorithm)
            );
        }
        for token in ["a.b", "a.b.c.d", "!!.e30.AA", "e30=.e30.AA"] {
            assert_eq!(CompactJws::parse(token).err(), Some(JwsError::NotCompact));
        }
    }

    #[test]
    fn times_are_checked_with_leeway_and_lifetime() {
        let now = 1_000_000;
        assert_eq!(check_times(now + 60, None, Some(now), 30, 300, now), Ok(()));
        assert_eq!(
            check_times(now - 30, None, None, 30, 300, now),
            Err(TimeError::Expired)
        );
        assert_eq!(check_times(now - 29, None, None, 30, 300, now), Ok(()));
        assert_eq!(
            check_times(now + 60, Some(now + 31), None, 30, 300, now),
            Err(TimeError::NotYetValid)
        );
        assert_eq!(
            check_times(now + 60, None, Some(now + 31), 30, 300, now),
            Err(TimeError::IssuedInFuture)
        );
        assert_eq!(
            check_times(now + 301, None, Some(now), 30, 300, now),
            Err(TimeError::LifetimeTooLong)
        );
        assert_eq!(check_times(now + 330, None, None, 30, 300, now), Ok(()));
        assert_eq!(
            check_times(now + 331, None, None, 30, 300, now),
            Err(TimeError::LifetimeTooLong)
        );
    }
}
