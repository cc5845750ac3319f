//! JOSE primitives on aws-lc-rs: JWS algorithms, public keys parsed from JWKs, and
//! base64url. A supporting module used by `token` (verification) and `keys` (signing).
//!
//! Keys are decoded once, when a JWKS is fetched, into [`aws_lc_rs::signature::ParsedPublicKey`],
//! each bound to exactly one algorithm. A token's `alg` header only selects among the
//! algorithms a key was bound to; it never decides how a key is used (RFC 8725 §3.1).
//!
//! [`jws`] splits and verifies compact JWS and holds the strict JSON types of claims sets,
//! for every verifier of signed JWTs (subject and actor tokens, client assertions).

pub mod jws;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use thiserror::Error;

/// Largest JWKS document accepted (rules §4).
pub const MAX_JWKS_BYTES: usize = 128 * 1024;
/// Most keys accepted in one JWKS (rules §4).
pub const MAX_JWKS_KEYS: usize = 64;
/// Shortest RSA modulus kept, in bits (RFC 8725 §3.5; RFC 7518 §3.3 asks 2048 or more).
pub const MIN_RSA_BITS: usize = 2048;
/// Longest RSA modulus kept, in bits: verification cost grows with the modulus, so a
/// published 16384-bit key would make every token presented for it expensive.
pub const MAX_RSA_BITS: usize = 8192;
/// Smallest RSA public exponent kept. Every real issuer uses 65537 (F4).
pub const MIN_RSA_EXPONENT: u64 = 65_537;
/// Longest RSA public exponent kept, in bits: like the modulus, a huge exponent makes
/// each verification costly, and no issuer needs more than 65537.
pub const MAX_RSA_EXPONENT_BITS: usize = 33;

/// A JSON value that must be an object. serde's derived struct deserializers also accept a
/// JSON array and fill fields by position (`["ES256","kid"]` as a header); JOSE headers,
/// claims sets and JWKs are objects (RFC 7515 §4, RFC 7519 §7.2, RFC 7517 §4), so this
/// wrapper accepts a map only.
pub struct JsonObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = JsonObject<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(JsonObject)
            }
        }
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// Base64url without padding, strict (RFC 7515 §2): padding and stray bits are errors.
pub fn b64_decode(input: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(input).ok()
}

/// Base64url without padding.
pub fn b64_encode(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(input)
}

/// The asymmetric JWS algorithms gleipnir can verify (RFC 7518 §3, RFC 8037).
/// `none` and the HMAC family are deliberately not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512
    Rs512,
    /// RSASSA-PSS with SHA-256
    Ps256,
    /// RSASSA-PSS with SHA-384
    Ps384,
    /// RSASSA-PSS with SHA-512
    Ps512,
    /// ECDSA P-256 with SHA-256
    Es256,
    /// ECDSA P-384 with SHA-384
    Es384,
    /// Ed25519
    EdDsa,
}

impl JwsAlgorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [JwsAlgorithm; 9] = [
        JwsAlgorithm::Rs256,
        JwsAlgorithm::Rs384,
        JwsAlgorithm::Rs512,
        JwsAlgorithm::Ps256,
        JwsAlgorithm::Ps384,
        JwsAlgorithm::Ps512,
        JwsAlgorithm::Es256,
        JwsAlgorithm::Es384,
        JwsAlgorithm::EdDsa,
    ];

    /// The per-issuer allow-list when none is configured (rules §4).
    pub const DEFAULT_ALLOWED: [JwsAlgorithm; 4] = [
        JwsAlgorithm::Rs256,
        JwsAlgorithm::Ps256,
        JwsAlgorithm::Es256,
        JwsAlgorithm::EdDsa,
    ];

    /// The `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::Rs256 => "RS256",
            JwsAlgorithm::Rs384 => "RS384",
            JwsAlgorithm::Rs512 => "RS512",
            JwsAlgorithm::Ps256 => "PS256",
            JwsAlgorithm::Ps384 => "PS384",
            JwsAlgorithm::Ps512 => "PS512",
            JwsAlgorithm::Es256 => "ES256",
            JwsAlgorithm::Es384 => "ES384",
            JwsAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// Parses an `alg` value exactly (case-sensitive, RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    fn key_family(self) -> KeyFamily {
        match self {
            JwsAlgorithm::Rs256
            | JwsAlgorithm::Rs384
            | JwsAlgorithm::Rs512
            | JwsAlgorithm::Ps256
            | JwsAlgorithm::Ps384
            | JwsAlgorithm::Ps512 => KeyFamily::Rsa,
            JwsAlgorithm::Es256 => KeyFamily::P256,
            JwsAlgorithm::Es384 => KeyFamily::P384,
            JwsAlgorithm::EdDsa => KeyFamily::Ed25519,
        }
    }

    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            JwsAlgorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            JwsAlgorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            JwsAlgorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            JwsAlgorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            JwsAlgorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            JwsAlgorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            JwsAlgorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            JwsAlgorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            JwsAlgorithm::EdDsa => &signature::ED25519,
        }
    }

    fn rsa_parameters(self) -> Option<&'static signature::RsaParameters> {
        match self {
            JwsAlgorithm::Rs256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
            JwsAlgorithm::Rs384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
            JwsAlgorithm::Rs512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
            JwsAlgorithm::Ps256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
            JwsAlgorithm::Ps384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
            JwsAlgorithm::Ps512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
            JwsAlgorithm::Es256 | JwsAlgorithm::Es384 | JwsAlgorithm::EdDsa => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// A public key bound to one algorithm, parsed once.
pub struct VerifyingKey {
    kid: Option<String>,
    alg: JwsAlgorithm,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl VerifyingKey {
    /// A key from raw public key bytes: an uncompressed EC point (`04 || x || y`) or an
    /// Ed25519 public key. Used for the service's own signing keys.
    pub fn from_public_bytes(
        kid: Option<String>,
        alg: JwsAlgorithm,
        bytes: &[u8],
    ) -> Result<Self, JwkError> {
        let key = ParsedPublicKey::new(alg.verification(), bytes).map_err(|_| JwkError::BadKey)?;
        Ok(Self { kid, alg, key })
    }

    /// The `kid` the key was published with.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// Why one JWK was not usable. A JWKS skips such keys one by one.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum JwkError {
    /// `kty`, `crv` or `alg` names something not supported (or `oct`, which is never used).
    #[error("unsupported key type, curve or algorithm")]
    Unsupported,
    /// `use` is not `sig` or `key_ops` lacks `verify`.
    #[error("key is not for signature verification")]
    NotForVerification,
    /// The key's algorithm is not in the issuer's allow-list.
    #[error("key algorithm not allowed for this issuer")]
    AlgorithmNotAllowed,
    /// Missing or malformed members, or a key the crypto library rejects.
    #[error("malformed key material")]
    BadKey,
    /// An RSA key outside what we accept: modulus shorter than [`MIN_RSA_BITS`] or longer
    /// than [`MAX_RSA_BITS`], or an exponent that is even, below [`MIN_RSA_EXPONENT`] or
    /// longer than [`MAX_RSA_EXPONENT_BITS`].
    #[error("RSA key too weak or too large")]
    WeakRsaKey,
}

/// Why a whole JWKS document was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum JwksError {
    /// The document is not a JSON object with a `keys` array.
    #[error("JWKS is not a JSON object with a keys array")]
    Malformed,
    /// More than [`MAX_JWKS_KEYS`] keys.
    #[error("JWKS has more than {MAX_JWKS_KEYS} keys")]
    TooManyKeys,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The usable keys of one issuer.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// The result of looking a token's `kid`/`alg` up in a [`KeySet`].
#[derive(Debug)]
pub enum KeyLookup<'a> {
    /// The one key to verify with.
    Found(&'a VerifyingKey),
    /// No key has this `kid` (or, without `kid`, no key has this `alg`).
    UnknownKid,
    /// Keys with this `kid` exist, but none is bound to the token's `alg`.
    AlgorithmMismatch,
    /// No `kid` and several keys could match: refuse rather than try them all.
    KidRequired,
}

impl KeySet {
    /// A key set from already-parsed keys (the service's own keys).
    pub fn from_keys(keys: Vec<VerifyingKey>) -> Self {
        Self { keys }
    }

    /// Parses a JWKS document (RFC 7517 §5), keeping only keys usable for verification
    /// with an algorithm in `allowed`. Returns the set and how many keys were skipped.
    pub fn from_jwks(json: &[u8], allowed: &[JwsAlgorithm]) -> Result<(Self, usize), JwksError> {
        let JsonObject(raw) = serde_json::from_slice::<JsonObject<RawJwks>>(json)
            .map_err(|_| JwksError::Malformed)?;
        if raw.keys.len() > MAX_JWKS_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut skipped = 0;
        for value in raw.keys {
            match parse_jwk(value, allowed) {
                Ok(parsed) => keys.extend(parsed),
                Err(_) => skipped += 1,
            }
        }
        Ok((Self { keys }, skipped))
    }

    /// Parses a SPIFFE trust bundle (SPIFFE Trust Domain and Bundle §4: a JWKS with
    /// `spiffe_sequence` and `spiffe_refresh_hint`), keeping its JWT-SVID keys (`use:
    /// jwt-svid`) usable with an algorithm in `allowed`; X.509-SVID keys are not for
    /// JWTs and are left out (not counted as skipped).
    pub fn from_spiffe_bundle(
        json: &[u8],
        allowed: &[JwsAlgorithm],
    ) -> Result<(Self, usize), JwksError> {
        let JsonObject(raw) = serde_json::from_slice::<JsonObject<RawJwks>>(json)
            .map_err(|_| JwksError::Malformed)?;
        if raw.keys.len() > MAX_JWKS_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut skipped = 0;
        for mut value in raw.keys {
            let Some(member) = value.get_mut("use") else {
                continue;
            };
            if member.as_str() != Some("jwt-svid") {
                continue;
            }
            // A JWT-SVID key verifies signatures: what `use: sig` says for any JWKS.
            *member = serde_json::Value::String("sig".into());
            match parse_jwk(value, allowed) {
                Ok(parsed) => keys.extend(parsed),
                Err(_) => skipped += 1,
            }
        }
        Ok((Self { keys }, skipped))
    }

    /// How many (key, algorithm) bindings the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Finds the key for a token header. The algorithm must be one the key is bound to.
    pub fn find(&self, kid: Option<&str>, alg: JwsAlgorithm) -> KeyLookup<'_> {
        match kid {
            Some(kid) => {
                let mut seen = false;
                for key in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                    if key.alg == alg {
                        return KeyLookup::Found(key);
                    }
                    seen = true;
                }
                if seen {
                    KeyLookup::AlgorithmMismatch
                } else {
                    KeyLookup::UnknownKid
                }
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => KeyLookup::Found(key),
                    (Some(_), Some(_)) => KeyLookup::KidRequired,
                    (None, _) => KeyLookup::UnknownKid,
                }
            }
        }
    }
}

/// Parses one JWK into the verifying keys it yields: one per algorithm it may be used
/// with (an RSA key without `alg` may serve both RS256 and PS256 when both are allowed).
fn parse_jwk(
    value: serde_json::Value,
    allowed: &[JwsAlgorithm],
) -> Result<Vec<VerifyingKey>, JwkError> {
    let JsonObject(raw) =
        serde_json::from_value::<JsonObject<RawJwk>>(value).map_err(|_| JwkError::BadKey)?;
    raw.check_verification_use()?;
    let family = raw.family()?;
    let algs = raw.algorithms(family, allowed)?;
    match family {
        KeyFamily::Rsa => raw.rsa_keys(algs),
        KeyFamily::P256 => raw.ec_keys(32, algs),
        KeyFamily::P384 => raw.ec_keys(48, algs),
        KeyFamily::Ed25519 => raw.ed25519_keys(algs),
    }
}

impl RawJwk {
    /// Refuses a key whose `use` or `key_ops` excludes verifying signatures.
    fn check_verification_use(&self) -> Result<(), JwkError> {
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(JwkError::NotForVerification);
        }
        if self
            .key_ops
            .as_ref()
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            return Err(JwkError::NotForVerification);
        }
        Ok(())
    }

    /// The key family named by `kty` and `crv`.
    fn family(&self) -> Result<KeyFamily, JwkError> {
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", None) => Ok(KeyFamily::Rsa),
            ("EC", Some("P-256")) => Ok(KeyFamily::P256),
            ("EC", Some("P-384")) => Ok(KeyFamily::P384),
            ("OKP", Some("Ed25519")) => Ok(KeyFamily::Ed25519),
            _ => Err(JwkError::Unsupported),
        }
    }

    /// The algorithms this key may verify: its declared `alg`, or every allowed
    /// algorithm of its family; never none.
    fn algorithms(
        &self,
        family: KeyFamily,
        allowed: &[JwsAlgorithm],
    ) -> Result<Vec<JwsAlgorithm>, JwkError> {
        let algs: Vec<JwsAlgorithm> = match self.alg.as_deref() {
            Some(name) => {
                let alg = JwsAlgorithm::from_name(name).ok_or(JwkError::Unsupported)?;
                if alg.key_family() != family {
                    return Err(JwkError::Unsupported);
                }
                if !allowed.contains(&alg) {
                    return Err(JwkError::AlgorithmNotAllowed);
                }
                vec![alg]
            }
            None => allowed
                .iter()
                .copied()
                .filter(|a| a.key_family() == family)
                .collect(),
        };
        if algs.is_empty() {
            return Err(JwkError::AlgorithmNotAllowed);
        }
        Ok(algs)
    }

    /// An RSA key (`n`, `e`), once per algorithm.
    fn rsa_keys(&self, algs: Vec<JwsAlgorithm>) -> Result<Vec<VerifyingKey>, JwkError> {
        let components = RsaPublicKeyComponents {
            n: b64_member(&self.n)?,
            e: b64_member(&self.e)?,
        };
        check_rsa_strength(&components.n, &components.e)?;
        let mut keys = Vec::with_capacity(algs.len());
        for alg in algs {
            let params = alg.rsa_parameters().ok_or(JwkError::Unsupported)?;
            let key = components
                .to_parsed_public_key(params)
                .map_err(|_| JwkError::BadKey)?;
            keys.push(VerifyingKey {
                kid: self.kid.clone(),
                alg,
                key,
            });
        }
        Ok(keys)
    }

    /// An EC key (`x`, `y`, each `coordinate_len` bytes) as an uncompressed point, once
    /// per algorithm.
    fn ec_keys(
        &self,
        coordinate_len: usize,
        algs: Vec<JwsAlgorithm>,
    ) -> Result<Vec<VerifyingKey>, JwkError> {
        let (x, y) = (b64_member(&self.x)?, b64_member(&self.y)?);
        if x.len() != coordinate_len || y.len() != coordinate_len {
            return Err(JwkError::BadKey);
        }
        let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        algs.into_iter()
            .map(|alg| VerifyingKey::from_public_bytes(self.kid.clone(), alg, &point))
            .collect()
    }

    /// An Ed25519 key (`x`, 32 bytes), once per algorithm.
    fn ed25519_keys(&self, algs: Vec<JwsAlgorithm>) -> Result<Vec<VerifyingKey>, JwkError> {
        let x = b64_member(&self.x)?;
        if x.len() != 32 {
            return Err(JwkError::BadKey);
        }
        algs.into_iter()
            .map(|alg| VerifyingKey::from_public_bytes(self.kid.clone(), alg, &x))
            .collect()
    }
}

/// RFC 8725 §3.5: keys must be strong enough for their algorithm. The crypto library
/// checks the modulus size only when a signature is verified, so a weak key would sit
/// in the key set, be counted and make the issuer look ready while refusing every token.
/// It is refused here instead, when the JWKS is parsed, and skipped like any unusable
/// key. The exponent must be odd (an even one is no RSA key) and at least 65537: tiny
/// exponents (1, 3) are the ones forgery and padding attacks exploit.
fn check_rsa_strength(n: &[u8], e: &[u8]) -> Result<(), JwkError> {
    let n_bits = bit_length(n);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&n_bits) {
        return Err(JwkError::WeakRsaKey);
    }
    if bit_length(e) > MAX_RSA_EXPONENT_BITS {
        return Err(JwkError::WeakRsaKey);
    }
    let exponent = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if exponent % 2 == 0 || exponent < MIN_RSA_EXPONENT {
        return Err(JwkError::WeakRsaKey);
    }
    Ok(())
}

/// The bit length of a big-endian unsigned integer (leading zero bytes ignored).
fn bit_length(big_endian: &[u8]) -> usize {
    let mut digits = big_endian.iter().skip_while(|&&b| b == 0);
    match digits.next() {
        None => 0,
        Some(&top) => {
            let rest = digits.count();
            rest * 8 + (8 - top.leading_zeros() as usize)
        }
    }
}

/// A base64url key member; absent or malformed is a bad key.
fn b64_member(member: &Option<String>) -> Result<Vec<u8>, JwkError> {
    member
        .as_deref()
        .and_then(b64_decode)
        .ok_or(JwkError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    fn p256() -> (EcdsaKeyPair, serde_json::Value) {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "ec1",
            "x": b64_encode(&point[1..33]), "y": b64_encode(&point[33..]),
        });
        (pair, jwk)
    }

    #[test]
    fn es256_key_verifies_its_signature_and_nothing_else() {
        let (pair, jwk) = p256();
        let jwks = serde_json::to_vec(&json!({ "keys": [jwk] })).unwrap();
        let (set, skipped) = KeySet::from_jwks(&jwks, &JwsAlgorithm::DEFAULT_ALLOWED).unwrap();
        assert_eq!((set.len(), skipped), (1, 0));
        let sig = pair.sign(&SystemRandom::new(), b"msg").unwrap();
        let KeyLookup::Found(key) = set.find(Some("ec1"), JwsAlgorithm::Es256) else {
            panic!("key not found")
        };
        assert!(key.verify(b"msg", sig.as_ref()));
        assert!(!key.verify(b"other", sig.as_ref()));
    }

    #[test]
    fn algorithm_must_fit_the_key() {
        let (_, jwk) = p256();
        let jwks = serde_json::to_vec(&json!({ "keys": [jwk] })).unwrap();
        let (set, _) = KeySet::from_jwks(&jwks, &JwsAlgorithm::DEFAULT_ALLOWED).unwrap();
        assert!(matches!(
            set.find(Some("ec1"), JwsAlgorithm::Rs256),
            KeyLookup::AlgorithmMismatch
        ));
        assert!(matches!(
            set.find(Some("nope"), JwsAlgorithm::Es256),
            KeyLookup::UnknownKid
        ));
        assert!(matches!(
            set.find(None, JwsAlgorithm::Es256),
            KeyLookup::Found(_)
        ));
    }

    #[test]
    fn unusable_keys_are_skipped_one_by_one() {
        let (_, good) = p256();
        let ed = Ed25519KeyPair::generate().unwrap();
        let jwks = serde_json::to_vec(&json!({ "keys": [
            { "kty": "oct", "k": "c2VjcmV0" },
            { "kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA" },
            { "kty": "EC", "crv": "secp256k1", "x": "AAAA", "y": "AAAA" },
            { "kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc" },
            { "kty": "WAT" },
            "not an object",
            ["EC", "P-256"],
            { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA",
              "x": b64_encode(ed.public_key().as_ref()) },
            good,
        ]}))
        .unwrap();
        let (set, skipped) = KeySet::from_jwks(&jwks, &JwsAlgorithm::DEFAULT_ALLOWED).unwrap();
        assert_eq!((set.len(), skipped), (2, 7));
        assert!(matches!(
            set.find(None, JwsAlgorithm::EdDsa),
            KeyLookup::Found(_)
        ));
    }

    #[test]
    fn declared_alg_outside_allow_list_is_skipped() {
        let (_, mut jwk) = p256();
        jwk["alg"] = json!("ES256");
        let jwks = serde_json::to_vec(&json!({ "keys": [jwk] })).unwrap();
        let (set, skipped) = KeySet::from_jwks(&jwks, &[JwsAlgorithm::Rs256]).unwrap();
        assert_eq!((set.len(), skipped), (0, 1));
    }

    #[test]
    fn too_many_keys_or_no_keys_array_is_refused() {
        let keys: Vec<_> = (0..=MAX_JWKS_KEYS).map(|_| json!({"kty": "oct"})).collect();
        let jwks = serde_json::to_vec(&json!({ "keys": keys })).unwrap();
        assert_eq!(
            KeySet::from_jwks(&jwks, &JwsAlgorithm::DEFAULT_ALLOWED).unwrap_err(),
            JwksError::TooManyKeys
        );
        for not_an_object in [&b"[]"[..], b"[[]]", b"\"keys\""] {
            assert_eq!(
                KeySet::from_jwks(not_an_object, &JwsAlgorithm::DEFAULT_ALLOWED).unwrap_err(),
                JwksError::Malformed
            );
        }
    }

    fn rsa_jwk(n: &[u8], e: &[u8]) -> serde_json::Value {
        json!({ "kty": "RSA", "alg": "RS256", "n": b64_encode(n), "e": b64_encode(e) })
    }

    /// A modulus of exactly `bits` bits (top bit set, odd).
    fn modulus(bits: usize) -> Vec<u8> {
        let mut n = vec![0xA5; bits.div_ceil(8)];
        let top_bits = bits - (n.len() - 1) * 8;
        n[0] = 0x80 >> (8 - top_bits) | 0x01;
        *n.last_mut().unwrap() |= 0x01;
        n
    }

    fn kept(jwk: serde_json::Value) -> usize {
        let jwks = serde_json::to_vec(&json!({ "keys": [jwk] })).unwrap();
        KeySet::from_jwks(&jwks, &JwsAlgorithm::DEFAULT_ALLOWED)
            .unwrap()
            .0
            .len()
    }

    #[test]
    fn rsa_modulus_must_be_2048_to_8192_bits() {
        let f4 = [0x01, 0x00, 0x01];
        assert_eq!(bit_length(&modulus(2047)), 2047);
        assert_eq!(bit_length(&[&[0, 0][..], &modulus(2048)].concat()), 2048);
        for (bits, want) in [
            (1024, 0),
            (2047, 0),
            (2048, 1),
            (8192, 1),
            (8193, 0),
            (16384, 0),
        ] {
            assert_eq!(kept(rsa_jwk(&modulus(bits), &f4)), want, "{bits} bits");
        }
    }

    #[test]
    fn rsa_exponent_must_be_odd_and_at_least_65537() {
        let n = modulus(2048);
        for (e, want) in [
            (&[0x01][..], 0),
            (&[0x03][..], 0),
            (&[0x01, 0x00, 0x00][..], 0),
            (&[0x01, 0x00, 0x02][..], 0),
            // Leading zero octets are not the minimal encoding RFC 7518 §6.3.1.2 asks.
            (&[0x00, 0x01, 0x00, 0x01][..], 0),
            (&[0x01, 0x00, 0x01][..], 1),
            (&[0x01, 0xFF, 0xFF, 0xFF, 0xFF][..], 1),
            (&[0x02, 0x00, 0x00, 0x00, 0x01][..], 0),
            (&[][..], 0),
        ] {
            assert_eq!(kept(rsa_jwk(&n, e)), want, "e = {e:02x?}");
        }
    }

    #[test]
    fn none_and_hmac_are_not_algorithms() {
        for name in ["none", "HS256", "HS384", "HS512", "es256", ""] {
            assert_eq!(JwsAlgorithm::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn strict_base64url() {
        assert_eq!(b64_decode("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(b64_decode("AQAB="), None);
        assert_eq!(b64_decode("AQ+B"), None);
        assert_eq!(b64_decode("AR"), None, "non-zero trailing bits");
    }
}
