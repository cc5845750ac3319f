//! `/metrics` on the admin listener: OpenMetrics text with the counters the operations of
//! an STS need, labelled only by closed sets (codes, reasons, issuer names, rule ids).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::json;
use support::*;

async fn scrape(sts: &Sts) -> (String, String) {
    let r = sts
        .http
        .get(format!("{}/metrics", sts.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, r.text().await.unwrap())
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_exchanges_refusals_validations_and_upstreams() {
    let issuer = TestIssuer::start().await;
    issuer.introspection.answer(
        "opaque-1",
        json!({ "active": true, "iss": issuer.iss, "sub": "carol", "aud": "bff", "token_type": "Bearer",
                "exp": NOW + 600, "iat": NOW }),
    );
    let settings = format!(
        "[issuers.introspection]\nendpoint = \"http://{}/introspect\"\nclient_id = \"{}\"\nsecret = {{ value = \"{}\" }}\n",
        issuer.addr, INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1
    );
    // The second identical exchange must validate its token again (and reuse the
    // introspection answer): not be answered by the re-issue cache.
    let sts = Sts::builder()
        .issuer("corp", &issuer, &settings)
        .extra("[reissue_cache]\nenabled = false")
        .start()
        .await;
    sts.wait_ready().await;

    let subject = issuer.user_token("alice", "bff", "orders:read");
    let actor = issuer.actor_token("bff");
    assert_eq!(
        sts.exchange(BFF, &delegation(&subject, &actor))
            .await
            .status,
        200
    );
    assert_eq!(
        sts.exchange(BFF, &impersonation("opaque-1")).await.status,
        200
    );
    assert_eq!(
        sts.exchange(BFF, &impersonation("opaque-1")).await.status,
        200
    );
    assert_eq!(
        sts.exchange(("bff", "not-the-secret-7f3a"), &impersonation(&subject))
            .await
            .status,
        401
    );
    let foreign = issuer.actor_token("orders-api");
    assert_eq!(
        sts.exchange(BFF, &delegation(&subject, &foreign))
            .await
            .status,
        400
    );
    assert_eq!(sts.exchange(BFF, &impersonation("a.b.c")).await.status, 400);
    // A client id nobody configured: not a label value (labels stay a closed set).
    assert_eq!(
        sts.exchange(("mallory-4c1d", "whatever"), &impersonation(&subject))
            .await
            .status,
        401
    );

    let (content_type, text) = scrape(&sts).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    let expect = [
        (
            "gleipnir_exchanges_total{result=\"granted\",client_id=\"bff\"}",
            3.0,
        ),
        // A wrong secret authenticates nobody: the claimed id is no label value.
        (
            "gleipnir_exchanges_total{result=\"invalid_client\",client_id=\"\"}",
            2.0,
        ),
        (
            "gleipnir_exchanges_total{result=\"invalid_request\",client_id=\"bff\"}",
            2.0,
        ),
        (
            "gleipnir_exchange_refusals_total{stage=\"client_auth\",reason=\"wrong_secret\"}",
            1.0,
        ),
        (
            "gleipnir_exchange_refusals_total{stage=\"policy\",reason=\"actor_not_bound_to_client\"}",
            1.0,
        ),
        (
            "gleipnir_exchange_refusals_total{stage=\"subject_token\",reason=\"not_compact_jws\"}",
            1.0,
        ),
        ("gleipnir_exchange_duration_seconds_count", 7.0),
        (
            "gleipnir_token_validations_total{issuer=\"corp\",role=\"subject\",outcome=\"valid\"}",
            4.0,
        ),
        (
            "gleipnir_token_validations_total{issuer=\"corp\",role=\"actor\",outcome=\"valid\"}",
            2.0,
        ),
        (
            "gleipnir_token_validations_total{issuer=\"unresolved\",role=\"subject\",outcome=\"not_compact_jws\"}",
            1.0,
        ),
        ("gleipnir_ready", 1.0),
        ("gleipnir_jwks_keys{issuer=\"corp\"}", 4.0),
        ("gleipnir_jwks_fetch_failures_total{issuer=\"corp\"}", 0.0),
        ("gleipnir_introspection_calls_total{issuer=\"corp\"}", 1.0),
        (
            "gleipnir_introspection_cache_hits_total{issuer=\"corp\"}",
            1.0,
        ),
        (
            "gleipnir_introspection_failures_total{issuer=\"corp\"}",
            0.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
    }
    assert!(value(&text, "gleipnir_jwks_fetches_total{issuer=\"corp\"}").unwrap() >= 1.0);
    assert!(
        text.contains("gleipnir_exchange_grants_total{rule=\""),
        "{text}"
    );
    assert!(text.contains("gleipnir_signing_key_info{kid=\""), "{text}");
    let version = format!(
        "gleipnir_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &version), Some(1.0), "{text}");
    // Times are timestamps (Unix seconds, by the server's clock: the harness's fixed
    // NOW), not ages.
    for series in [
        "gleipnir_signing_key_loaded_timestamp_seconds",
        "gleipnir_jwks_fetched_timestamp_seconds{issuer=\"corp\"}",
    ] {
        assert_eq!(value(&text, series), Some(NOW as f64), "{series}\n{text}");
    }
    // Nothing a caller chose: no token, no subject.
    for needle in [
        subject.split('.').nth(1).unwrap(),
        "opaque-1",
        "alice",
        "carol",
        "not-the-secret-7f3a",
        "mallory-4c1d",
    ] {
        assert!(!text.contains(needle), "{needle} in metrics");
    }
}

#[tokio::test]
async fn readiness_is_a_metric_too() {
    let issuer = TestIssuer::start().await;
    issuer.set_behaviour(Behaviour::Status(503));
    let sts = Sts::start(&issuer).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, text) = scrape(&sts).await;
    assert_eq!(value(&text, "gleipnir_ready"), Some(0.0), "{text}");
    assert!(
        value(&text, "gleipnir_jwks_fetch_failures_total{issuer=\"corp\"}").unwrap() >= 1.0,
        "{text}"
    );
}
