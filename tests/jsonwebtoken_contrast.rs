//! Why gleipnir does JOSE itself on aws-lc-rs (`src/jose.rs`) and uses the `jsonwebtoken`
//! crate only as an independent verifier in tests: what jsonwebtoken 11, used as its
//! documentation shows (the JWK found by `kid`, `Validation::new(header.alg)` with the
//! issuer and audience set), accepts or fails on, next to what the real gleipnir server
//! does with the same token or JWKS. The README's "Why not jsonwebtoken" quotes these
//! tests; if jsonwebtoken changes, one fails and the README changes with it. The per-call
//! key parsing cost is measured by `cargo bench --bench exchange -- verify` (the
//! `verify_jsonwebtoken` group, beside ours).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::{Value, json};
use support::*;

/// jsonwebtoken's verdict on `token` against `jwks`: its key by `kid`, the algorithm from
/// the header, `iss` and `aud` as gleipnir's harness issues them (`exp` is checked against
/// the wall clock; the test tokens expire in 2030).
fn jsonwebtoken_verdict(
    token: &str,
    jwks: &Value,
    iss: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone())?;
    let header = jsonwebtoken::decode_header(token)?;
    let jwk = set
        .find(header.kid.as_deref().unwrap_or_default())
        .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk)?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[iss]);
    validation.set_audience(&["bff"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).map(|data| data.claims)
}

/// Exchanges `token` as a subject token at the real server; returns (status, audit
/// `stage/reason`).
async fn gleipnir_verdict(sts: &Sts, token: &str) -> (u16, String) {
    let answer = sts.exchange(BFF, &impersonation(token)).await;
    let reason = answer
        .request_id()
        .and_then(support::audit::refusal)
        .unwrap_or_else(|| "granted".to_owned());
    (answer.status, reason)
}

async fn setup() -> (TestIssuer, Sts) {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    (issuer, sts)
}

/// A user token for alice, issued to the BFF, with `header` members added.
fn with_header(issuer: &TestIssuer, extra: Value) -> String {
    let mut header = json!({ "alg": "ES256", "kid": "es-1", "typ": "at+jwt" });
    for (k, v) in extra.as_object().unwrap() {
        header[k] = v.clone();
    }
    issuer.sign_with(
        Alg::Es256,
        header,
        issuer.user_claims("alice", "bff", "orders:read"),
    )
}

/// A user token for alice, issued to the BFF, with `claims` members replaced.
fn with_claims(issuer: &TestIssuer, extra: Value) -> String {
    let mut claims = issuer.user_claims("alice", "bff", "orders:read");
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    issuer.sign(claims)
}

#[tokio::test]
async fn the_valid_token_is_accepted_by_both() {
    let (issuer, sts) = setup().await;
    let token = issuer.user_token("alice", "bff", "orders:read");
    let claims = jsonwebtoken_verdict(&token, &issuer.default_jwks(), &issuer.iss).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(gleipnir_verdict(&sts, &token).await.0, 200);
}

#[tokio::test]
async fn crit_is_not_refused_by_jsonwebtoken() {
    // RFC 7515 §4.1.11: a recipient that does not understand a `crit` extension MUST
    // refuse the JWS. jsonwebtoken parses `crit` into its Header and never checks it.
    let (issuer, sts) = setup().await;
    let token = with_header(
        &issuer,
        json!({ "crit": ["https://example.com/bound"], "https://example.com/bound": true }),
    );
    assert!(jsonwebtoken_verdict(&token, &issuer.default_jwks(), &issuer.iss).is_ok());
    assert_eq!(
        gleipnir_verdict(&sts, &token).await,
        (400, "subject_token/crit_header".to_owned())
    );
}

#[tokio::test]
async fn key_headers_are_not_refused_by_jsonwebtoken() {
    // A token naming its own key or key URL (RFC 8725 §3.10: never trust it). jsonwebtoken
    // leaves `jwk`, `jku`, `x5u`, `x5c` in its Header for the caller, who may use them.
    let (issuer, sts) = setup().await;
    let attacker = gleipnir::keys::SigningKey::ephemeral(gleipnir::jose::JwsAlgorithm::Es256)
        .unwrap()
        .public_jwk()
        .clone();
    for header in [
        json!({ "jwk": attacker }),
        json!({ "jku": "https://attacker.example/jwks.json" }),
        json!({ "x5u": "https://attacker.example/cert.pem" }),
    ] {
        let token = with_header(&issuer, header.clone());
        assert!(
            jsonwebtoken_verdict(&token, &issuer.default_jwks(), &issuer.iss).is_ok(),
            "{header}"
        );
        assert_eq!(
            gleipnir_verdict(&sts, &token).await,
            (400, "subject_token/key_in_header".to_owned()),
            "{header}"
        );
    }
}

#[tokio::test]
async fn wrong_typed_claims_are_not_refused_by_jsonwebtoken() {
    // jsonwebtoken reads each registered claim "if it parses": a member of the wrong type
    // counts as absent, so an `iss` or `aud` that is not a string passes the issuer and
    // audience checks that were set, and `nbf`/`iat` of any type pass.
    let (issuer, sts) = setup().await;
    for claims in [
        json!({ "iss": 42 }),
        json!({ "aud": 42 }),
        json!({ "nbf": "2030-01-01" }),
        json!({ "iat": { "when": "now" } }),
    ] {
        let token = with_claims(&issuer, claims.clone());
        assert!(
            jsonwebtoken_verdict(&token, &issuer.default_jwks(), &issuer.iss).is_ok(),
            "{claims}"
        );
        assert_eq!(
            gleipnir_verdict(&sts, &token).await,
            (400, "subject_token/invalid_claim".to_owned()),
            "{claims}"
        );
    }
}

#[tokio::test]
async fn one_bad_key_fails_a_whole_jwks_in_jsonwebtoken() {
    // An issuer adds one key jsonwebtoken cannot read (here `key_ops` as a string, not an
    // array): JwkSet fails to deserialize, and no token of that issuer verifies, not even
    // those of its good keys. gleipnir parses key by key and skips the bad one.
    let (issuer, sts) = setup().await;
    let mut jwks = issuer.default_jwks();
    jwks["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-256", "kid": "new-1", "use": "sig", "key_ops": "verify",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    }));
    issuer.set_jwks(jwks.clone());
    let token = issuer.user_token("alice", "bff", "orders:read");
    assert!(jsonwebtoken_verdict(&token, &jwks, &issuer.iss).is_err());
    assert_eq!(gleipnir_verdict(&sts, &token).await.0, 200);
}
