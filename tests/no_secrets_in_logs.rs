//! Rules §7 and §8: no token and no secret ever reaches a log line.
//! Captures every event at TRACE level (gleipnir's and its dependencies') while granted
//! and refused exchanges run, then searches the output for the tokens and secrets used.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::{Arc, Mutex};

use support::audit::Sink;
use support::*;

#[tokio::test]
async fn tokens_and_secrets_never_reach_the_logs() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(Arc::clone(&lines));
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();

    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let actor = issuer.actor_token("bff");
    let foreign_actor = issuer.actor_token("orders-api");

    let granted = sts.exchange(BFF, &delegation(&subject, &actor)).await;
    assert_eq!(granted.status, 200, "{}", granted.body);
    let issued = granted.token().to_owned();
    // Refusals at each stage: client auth, subject validation, actor binding, and a
    // re-exchange of the issued token by a client it was not issued to.
    let wrong_secret = sts
        .exchange(("bff", "not-the-secret"), &impersonation(&subject))
        .await;
    assert_eq!(wrong_secret.status, 401);
    let tampered = format!("{subject}x");
    let bad_subject = sts.exchange(BFF, &impersonation(&tampered)).await;
    assert_eq!(bad_subject.status, 400);
    let spliced = sts
        .exchange(BFF, &delegation(&subject, &foreign_actor))
        .await;
    assert_eq!(spliced.status, 400);
    let reused = sts.exchange(MALLORY, &impersonation(&issued)).await;
    assert_eq!(reused.status, 400);

    let logs = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("decision"),
        "audit records were captured: {logs}"
    );
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    let payload = |t: &str| t.split('.').nth(1).unwrap().to_owned();
    for (what, needle) in [
        ("subject token payload", payload(&subject)),
        ("subject token signature", signature(&subject)),
        ("actor token signature", signature(&actor)),
        ("foreign actor token signature", signature(&foreign_actor)),
        ("issued token payload", payload(&issued)),
        ("issued token signature", signature(&issued)),
        ("client secret", BFF.1.to_owned()),
        ("wrong client secret", "not-the-secret".to_owned()),
        ("mallory's secret", MALLORY.1.to_owned()),
    ] {
        assert!(!logs.contains(&needle), "{what} found in the logs");
    }
}
