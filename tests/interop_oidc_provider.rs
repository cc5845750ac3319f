//! Interoperability with a real OpenID provider: panva's node-oidc-provider
//! (tests/interop/op.mjs) on loopback as the upstream issuer. gleipnir discovers its JWKS
//! from its metadata, verifies its RFC 9068 JWT access tokens (ES256 and RS256) and
//! introspects its opaque ones, and exchanges them.
//!
//! Needs `node` and `npm ci --prefix tests/interop`. Without them the tests say SKIPPED
//! and pass, unless `GLEIPNIR_REQUIRE_INTEROP=1` (set by `.ci/run`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use gleipnir::clock::Clock;
use serde_json::{Value, json};
use support::*;

/// The provider process; killed when dropped, so a failing test leaves nothing behind.
struct Provider {
    child: Child,
    issuer: String,
    /// Kept open: node dies of EPIPE if it writes to a closed stdout.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider() -> Provider {
    let mut child = Command::new("node")
        .arg(interop_dir().join("op.mjs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let issuer = serde_json::from_str::<Value>(&line)
        .unwrap_or_else(|e| panic!("provider did not start: {e}: {line:?}"))["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    Provider {
        child,
        issuer,
        _stdout: stdout,
    }
}

/// A client-credentials access token from the provider for `resource`.
async fn token(op: &Provider, client: (&str, &str), resource: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/token", op.issuer))
        .basic_auth(client.0, Some(client.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(&[
            ("grant_type", "client_credentials"),
            ("resource", resource),
            ("scope", "orders:read"),
        ]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let response: Value = serde_json::from_str(&response).unwrap();
    response["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {response}"))
        .to_owned()
}

const ALICE_APP: (&str, &str) = ("alice-app", "alice-app-secret");
const BFF_AT_OP: (&str, &str) = ("bff", "bff-op-secret");

#[tokio::test]
async fn node_oidc_provider_tokens_are_exchanged() {
    if !node_package_available("node_oidc_provider_tokens_are_exchanged", "oidc-provider") {
        return;
    }
    let op = tokio::task::spawn_blocking(start_provider).await.unwrap();
    // No jwks_uri: discovered from the provider's openid-configuration.
    let settings = "algorithms = [\"ES256\", \"RS256\"]\n[issuers.introspection]\nendpoint = \"ENDPOINT\"\nclient_id = \"gleipnir\"\nsecret = { value = \"gleipnir-op-secret\" }\n"
        .replace("ENDPOINT", &format!("{}/token/introspection", op.issuer));
    let sts = Sts::builder()
        .issuer_at("corp", &op.issuer, "", &settings)
        .start()
        .await;
    // The provider's tokens live in real time, not the tests' fixed clock.
    sts.clock.set(Clock::System.now());
    sts.wait_ready().await;

    // ES256 JWT subject (alice-app's token, audience bff) and the BFF's ES256 actor token.
    let subject = token(&op, ALICE_APP, "urn:gleipnir:es256").await;
    assert_eq!(header_of(&subject)["typ"], "at+jwt");
    let actor = token(&op, BFF_AT_OP, "urn:gleipnir:es256").await;
    let answer = sts.exchange(BFF, &delegation(&subject, &actor)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = answer.claims();
    assert_eq!(claims["sub"], "alice-app");
    assert_eq!(claims["act"], json!({ "sub": "bff" }));
    assert_eq!(claims["scope"], "orders:read");

    // RS256 JWT subject.
    let subject = token(&op, ALICE_APP, "urn:gleipnir:rs256").await;
    assert_eq!(header_of(&subject)["alg"], "RS256");
    let answer = sts.exchange(BFF, &impersonation(&subject)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Opaque subject, by introspection (the provider leaves sub out: the client is the subject).
    let opaque = token(&op, ALICE_APP, "urn:gleipnir:opaque").await;
    assert_eq!(opaque.matches('.').count(), 0, "opaque: {opaque}");
    let answer = sts.exchange(BFF, &delegation(&opaque, &actor)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.claims()["sub"], "alice-app");

    // The provider's token for audience bff, presented by another client: not bound.
    let answer = sts.exchange(MALLORY, &impersonation(&subject)).await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "invalid_request"),
        "{}",
        answer.body
    );
    // A made-up opaque token: the provider says inactive.
    let answer = sts
        .exchange(BFF, &impersonation("not-a-token-the-provider-issued"))
        .await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "invalid_request"),
        "{}",
        answer.body
    );
}
