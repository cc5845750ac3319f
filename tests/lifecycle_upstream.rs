//! Upstream revocation reaching derived tokens: an opaque token of a real OpenID provider
//! (panva's node-oidc-provider, tests/interop/op.mjs) is exchanged, the token derived from
//! it is re-exchanged, then the provider revokes the opaque token (RFC 7009 at the
//! provider). Within the issuer's introspection `cache_seconds`, introspection of both
//! derived tokens says inactive and re-exchange is refused.
//!
//! Needs `node` and `npm ci --prefix tests/interop`; SKIPPED without them, unless
//! `GLEIPNIR_REQUIRE_INTEROP=1` (set by `.ci/run`).
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
use serde_json::Value;
use support::*;

/// The provider process, killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
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
    let issuer = serde_json::from_str::<Value>(&line).unwrap()["issuer"]
        .as_str()
        .unwrap()
        .to_owned();
    Provider {
        child,
        issuer,
        _stdout: stdout,
    }
}

const ALICE_APP: (&str, &str) = ("alice-app", "alice-app-secret");
const BFF_AT_OP: (&str, &str) = ("bff", "bff-op-secret");
const CACHE_SECONDS: u64 = 5;

async fn op_token(op: &Provider, client: (&str, &str), resource: &str) -> String {
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
    response["access_token"].as_str().unwrap().to_owned()
}

const POLICY: &str = r#"
[clients.bff]
impersonate = true
delegate = true
subject_issuers = ["corp"]
actor_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.orders-api]
impersonate = true
subject_issuers = ["self"]
audiences = ["payments-api"]
default_audience = "payments-api"
scopes = ["orders:read"]
"#;

async fn active(sts: &Sts, token: &str) -> bool {
    let answer = sts
        .post(
            sts.http
                .post(format!("{}/introspect", sts.base))
                .basic_auth(ORDERS.0, Some(ORDERS.1))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode_form(&[("token", token)])),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["active"].as_bool().unwrap()
}

#[tokio::test]
async fn an_upstream_revocation_reaches_derived_tokens_within_the_cache_time() {
    let test = "an_upstream_revocation_reaches_derived_tokens_within_the_cache_time";
    if !node_package_available(test, "oidc-provider") {
        return;
    }
    audit::capture();
    let op = tokio::task::spawn_blocking(start_provider).await.unwrap();
    let settings = format!(
        "algorithms = [\"ES256\", \"RS256\"]\n[issuers.introspection]\nendpoint = \"{}/token/introspection\"\nclient_id = \"gleipnir\"\nsecret = {{ value = \"gleipnir-op-secret\" }}\ncache_seconds = {CACHE_SECONDS}\n",
        op.issuer
    );
    let sts = Sts::builder()
        .issuer_at("corp", &op.issuer, "", &settings)
        .policy(POLICY)
        .client("orders-api", "introspect = true")
        .start()
        .await;
    sts.clock.set(Clock::System.now());
    sts.wait_ready().await;

    let opaque = op_token(&op, ALICE_APP, "urn:gleipnir:opaque").await;
    let actor = op_token(&op, BFF_AT_OP, "urn:gleipnir:es256").await;
    let hop1 = sts.exchange(BFF, &delegation(&opaque, &actor)).await;
    assert_eq!(hop1.status, 200, "{}", hop1.body);
    let hop1 = hop1.token().to_owned();
    let hop2 = sts.exchange(ORDERS, &impersonation(&hop1)).await;
    assert_eq!(hop2.status, 200, "{}", hop2.body);
    let hop2 = hop2.token().to_owned();
    assert!(active(&sts, &hop1).await && active(&sts, &hop2).await);

    // Revoked at the provider (by the client it was issued to).
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", op.issuer))
        .basic_auth(ALICE_APP.0, Some(ALICE_APP.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(&[("token", &opaque)]))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);

    // Within cache_seconds the cached answer may still stand...
    assert!(active(&sts, &hop2).await);
    // ...and once it is older, the provider is asked again: both derived tokens are
    // inactive, and the re-exchange is refused.
    sts.clock.advance(CACHE_SECONDS);
    assert!(!active(&sts, &hop2).await);
    assert!(!active(&sts, &hop1).await);
    let answer = sts.exchange(ORDERS, &impersonation(&hop1)).await;
    assert_eq!((answer.status, answer.error()), (400, "invalid_request"));
    assert_eq!(
        audit::refusal(answer.request_id().unwrap()).as_deref(),
        Some("lifecycle/upstream_inactive")
    );
}
