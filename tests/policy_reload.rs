//! Policy reload under load: the real server on loopback, its policy file rewritten while
//! clients keep exchanging. No request may fail, the new rules must be in force after the
//! reload, and a bad policy file must leave the previous policy in force and say so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;
use tokio::net::TcpListener;

fn policy(default_audience: &str) -> String {
    format!(
        r#"
[clients.bff]
impersonate = true
subject_issuers = ["corp"]
audiences = ["orders-api", "inventory-api"]
default_audience = "{default_audience}"
scopes = ["orders:read"]
"#
    )
}

/// The issued token's `aud` for one impersonation exchange (no audience parameter: the
/// policy's default audience decides), or the failed status.
async fn exchange_aud(http: &reqwest::Client, url: &str, subject: &str) -> Result<String, u16> {
    let answer = http
        .post(url)
        .basic_auth(BFF.0, Some(BFF.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(&impersonation(subject)))
        .send()
        .await
        .map_err(|_| 0u16)?;
    let status = answer.status().as_u16();
    let text = answer.text().await.map_err(|_| status)?;
    let body: serde_json::Value = serde_json::from_str(&text).map_err(|_| status)?;
    match (status, body["access_token"].as_str()) {
        (200, Some(token)) => Ok(claims_of(token)["aud"].as_str().unwrap_or("").to_owned()),
        _ => Err(status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_take_effect_without_failing_a_request() {
    let issuer = TestIssuer::start().await;
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let admin_base = format!("http://{}", admin.local_addr().unwrap());
    let (app, _clock, dir) = Sts::builder()
        .issuer("corp", &issuer, "")
        .policy(&policy("orders-api"))
        // The builder's last table before [[issuers]]: check the policy files every second.
        .tokens("[policy]\nwatch_seconds = 1")
        .build_app(&base);
    let policy_file = dir.path().join("policies/test.toml");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gleipnir::server::run(app, public, admin, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let url = format!("{base}/token");
    let subject = issuer.user_token("alice", "bff", "orders:read");
    assert_eq!(
        exchange_aud(&http, &url, &subject).await,
        Ok("orders-api".into())
    );

    // Eight clients exchange without pause while the policy changes under them.
    let running = Arc::new(AtomicBool::new(true));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, subject, running) = (
                http.clone(),
                url.clone(),
                subject.clone(),
                Arc::clone(&running),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while running.load(Ordering::Relaxed) {
                    seen.push(exchange_aud(&http, &url, &subject).await);
                }
                seen
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&policy_file, policy("inventory-api")).unwrap();
    // Within two watch ticks the new default audience is in force.
    let mut switched = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if exchange_aud(&http, &url, &subject).await == Ok("inventory-api".into()) {
            switched = true;
            break;
        }
    }
    assert!(switched, "the new policy never took effect");

    // A broken file: the previous policy stays in force, the failure is reported.
    std::fs::write(&policy_file, "[clients.bff\nimpersonate = true\n").unwrap();
    wait_for_metric(&admin_base, "gleipnir_policy_reload_failing", 1.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.store(false, Ordering::Relaxed);

    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    assert!(answers.len() > 50, "too few requests: {}", answers.len());
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "failed requests during reload: {failed:?}"
    );
    // Both policies were seen, old before new (each worker's answers are in order).
    assert!(answers.contains(&Ok("orders-api".into())));
    assert!(answers.contains(&Ok("inventory-api".into())));
    // Still the last good policy after the bad file.
    assert_eq!(
        exchange_aud(&http, &url, &subject).await,
        Ok("inventory-api".into())
    );
    assert_eq!(
        metric_line(
            &admin_base,
            "gleipnir_policy_reloads_total{outcome=\"applied\"}"
        )
        .await,
        Some("gleipnir_policy_reloads_total{outcome=\"applied\"} 1".into())
    );
    assert_eq!(
        metric_line(
            &admin_base,
            "gleipnir_policy_reloads_total{outcome=\"failed\"}"
        )
        .await,
        Some("gleipnir_policy_reloads_total{outcome=\"failed\"} 1".into()),
        "a bad file is reported once, not at every watch tick"
    );

    // Fixed again: applied, and the failure gauge clears.
    std::fs::write(&policy_file, policy("orders-api")).unwrap();
    let mut recovered = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if exchange_aud(&http, &url, &subject).await == Ok("orders-api".into()) {
            recovered = true;
            break;
        }
    }
    assert!(recovered);
    assert_eq!(
        metric_line(&admin_base, "gleipnir_policy_reload_failing ").await,
        Some("gleipnir_policy_reload_failing 0".into())
    );
    let _ = stop.send(());
    server.await.unwrap();
}
