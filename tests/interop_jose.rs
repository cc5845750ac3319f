//! Interoperability: tokens gleipnir mints verify with an independent JOSE implementation
//! (panva's `jose` on Node, tests/interop/verify.mjs), fetching keys from our published
//! JWKS over HTTP, for every signing algorithm we offer.
//!
//! Needs `node` and `npm ci --prefix tests/interop`. Without them the tests say SKIPPED
//! on stderr and pass, unless `GLEIPNIR_REQUIRE_INTEROP=1` (set by `.ci/run`), which
//! turns a missing verifier into a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::*;

/// Runs verify.mjs on a blocking thread, so the STS on this runtime can serve its JWKS.
async fn verify(jwks_url: String, token: String, iss: String, aud: String) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(support::interop_dir().join("verify.mjs"))
            .args([&jwks_url, &token, &iss, &aud])
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `token` with the first byte of its signature flipped.
fn flip_signature_byte(token: &str) -> String {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[0] ^= 0x01;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig))
}

async fn minted_token_verifies_with_jose(alg: &str, test: &str) {
    if !node_package_available(test, "jose") {
        return;
    }
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .signing_alg(alg)
        .start()
        .await;
    let subject = issuer.user_token("alice", "bff", "orders:read orders:write");
    let actor = issuer.actor_token("bff");
    let mut form = delegation(&subject, &actor);
    form.extend([("audience", "orders-api"), ("scope", "orders:read")]);
    let answer = sts.exchange(BFF, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = answer.token().to_owned();

    let (status, jwks) = sts.get_json("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    let published_kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let jwks_url = format!("{}/.well-known/jwks.json", sts.base);

    let out = verify(
        jwks_url.clone(),
        token.clone(),
        sts.base.clone(),
        "orders-api".into(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "jose refused our {alg} token: {stderr}"
    );
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    let header = &verified["protectedHeader"];
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], alg);
    assert_eq!(header["kid"], published_kid.as_str());
    let payload = &verified["payload"];
    assert_eq!(payload["act"], json!({ "sub": "bff" }));
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["iat"], NOW);

    // The same token with one signature bit changed must be refused: jose really verifies.
    let tampered = verify(
        jwks_url,
        flip_signature_byte(&token),
        sts.base.clone(),
        "orders-api".into(),
    )
    .await;
    assert!(
        !tampered.status.success(),
        "jose accepted a tampered {alg} signature: {}",
        String::from_utf8_lossy(&tampered.stdout)
    );
    assert!(
        String::from_utf8_lossy(&tampered.stderr).contains("verification failed"),
        "{}",
        String::from_utf8_lossy(&tampered.stderr)
    );
}

#[tokio::test]
async fn es256_tokens_verify_with_jose() {
    minted_token_verifies_with_jose("ES256", "es256_tokens_verify_with_jose").await;
}

#[tokio::test]
async fn eddsa_tokens_verify_with_jose() {
    minted_token_verifies_with_jose("EdDSA", "eddsa_tokens_verify_with_jose").await;
}
