//! Upstream issuers that fail (rules §4): down at cold start, down while warm,
//! hung or trickling, oversized, rotating keys, flooded with unknown `kid`s, redirecting,
//! failing TLS. Over real HTTP against the real server; time is the test's manual clock,
//! so hours of staleness take no time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use gleipnir::jose::JwsAlgorithm;
use gleipnir::keys::SigningKey;
use serde_json::json;
use support::*;

/// A user token for bff that stays valid for a day of test time (the longest lifetime an
/// issuer's tokens may have by default; no test here moves the clock further).
fn long_token(issuer: &TestIssuer) -> String {
    issuer.sign(json!({ "iss": issuer.iss, "sub": "alice", "aud": "bff",
                        "iat": NOW, "exp": NOW + 86_400 }))
}

async fn readyz(sts: &Sts) -> u16 {
    let r = sts
        .http
        .get(format!("{}/readyz", sts.admin))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// Waits (at most 5 s) until the issuer's JWKS endpoint was asked `n` times in all.
async fn wait_fetches(issuer: &TestIssuer, n: usize) {
    for _ in 0..100 {
        if issuer.jwks_fetches() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("JWKS fetched {} times, expected {n}", issuer.jwks_fetches());
}

fn assert_unavailable(answer: &Answer) {
    assert_eq!(
        (answer.status, answer.error()),
        (503, "temporarily_unavailable"),
        "{}",
        answer.body
    );
    assert!(answer.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn issuer_down_at_cold_start_then_recovers() {
    let issuer = TestIssuer::start().await;
    issuer.set_behaviour(Behaviour::Status(503));
    let sts = Sts::start(&issuer).await;
    wait_fetches(&issuer, 1).await;
    assert_eq!(readyz(&sts).await, 503, "no keys: not ready");
    let token = long_token(&issuer);
    for _ in 0..5 {
        assert_unavailable(&sts.exchange(BFF, &impersonation(&token)).await);
    }
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "requests fail fast while the fetch backs off"
    );

    issuer.set_behaviour(Behaviour::Serve);
    sts.clock.advance(8); // past the longest backoff
    let recovering = Instant::now();
    sts.wait_ready().await;
    eprintln!(
        "time to ready after the issuer recovered: {:?}",
        recovering.elapsed()
    );
    assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);
}

#[tokio::test]
async fn issuer_down_while_warm_is_served_from_cache_until_max_staleness() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "max_staleness_seconds = 3600")
        .start()
        .await;
    sts.wait_ready().await;
    let token = long_token(&issuer);
    assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);

    issuer.set_behaviour(Behaviour::Status(500));
    sts.clock.advance(601); // keys expired: the keeper tries and fails
    wait_fetches(&issuer, 2).await;
    assert_eq!(
        sts.exchange(BFF, &impersonation(&token)).await.status,
        200,
        "stale keys still serve"
    );
    sts.clock.set(NOW + 3599);
    assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);
    assert_eq!(readyz(&sts).await, 200);

    sts.clock.set(NOW + 3600); // too stale: fail closed
    assert_unavailable(&sts.exchange(BFF, &impersonation(&token)).await);
    assert_eq!(readyz(&sts).await, 503);

    issuer.set_behaviour(Behaviour::Serve);
    sts.clock.advance(8);
    sts.wait_ready().await;
    assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);
}

#[tokio::test]
async fn hung_or_trickling_issuer_is_bounded_and_never_blocks_another() {
    for behaviour in [Behaviour::Hang, Behaviour::Trickle] {
        let slow = TestIssuer::start().await;
        slow.set_behaviour(behaviour);
        let healthy = TestIssuer::start().await;
        let policy = DEFAULT_POLICY.replacen(
            "subject_issuers = [\"corp\"]\nactor_issuers = [\"corp\"]",
            "subject_issuers = [\"corp\", \"partner\"]\nsubject_namespace = \"issuer_claim\"\nactor_issuers = [\"corp\"]",
            1,
        );
        let sts = Sts::builder()
            .issuer("corp", &slow, "required = false")
            .issuer("partner", &healthy, "")
            .policy(&policy)
            .start()
            .await;
        sts.wait_ready().await; // only the healthy issuer is required
        wait_fetches(&slow, 1).await; // the slow issuer's keeper is stuck in its fetch

        let started = Instant::now();
        let ok = sts
            .exchange(BFF, &impersonation(&long_token(&healthy)))
            .await;
        assert_eq!(ok.status, 200, "{behaviour:?}: {}", ok.body);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{behaviour:?}: healthy issuer delayed"
        );

        // Ten requests for the slow issuer at once: they wait for the keeper's attempt
        // (at most 5 s) and take its failure; none starts a fetch of its own.
        let started = Instant::now();
        let statuses = sts
            .exchange_concurrently(BFF, (0..10).map(|_| long_token(&slow)).collect())
            .await;
        assert!(
            statuses.iter().all(|s| *s == 503),
            "{behaviour:?}: {statuses:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(7),
            "{behaviour:?}: not bounded by one fetch: {waited:?}"
        );
        assert!(
            slow.jwks_fetches() <= 2,
            "{behaviour:?}: requests fetched: {}",
            slow.jwks_fetches()
        );
    }
}

#[tokio::test]
async fn oversized_jwks_is_refused_and_the_old_keys_kept() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    let token = long_token(&issuer);
    issuer.set_behaviour(Behaviour::Huge);
    sts.clock.advance(601);
    wait_fetches(&issuer, 2).await;
    assert_eq!(
        sts.exchange(BFF, &impersonation(&token)).await.status,
        200,
        "old keys kept"
    );

    let cold = TestIssuer::start().await;
    cold.set_behaviour(Behaviour::Huge);
    let sts = Sts::start(&cold).await;
    wait_fetches(&cold, 1).await;
    assert_eq!(readyz(&sts).await, 503);
    assert_unavailable(&sts.exchange(BFF, &impersonation(&long_token(&cold))).await);
}

/// Valid JWK Sets with no key gleipnir may use: empty, only a symmetric key, only keys
/// marked for encryption.
fn keyless_jwks(issuer: &TestIssuer) -> Vec<(&'static str, serde_json::Value)> {
    let mut encryption_only = issuer.default_jwks();
    for key in encryption_only["keys"].as_array_mut().unwrap() {
        key["use"] = json!("enc");
    }
    vec![
        ("empty", json!({ "keys": [] })),
        (
            "only oct",
            json!({ "keys": [{ "kty": "oct", "kid": "es-1", "k": "c2VjcmV0LXNlY3JldA" }] }),
        ),
        ("only unusable", encryption_only),
    ]
}

/// A token of `issuer` whose `kid` it does not publish.
fn unknown_kid_token(issuer: &TestIssuer, kid: &str) -> String {
    let header = json!({ "alg": "ES256", "kid": kid, "typ": "at+jwt" });
    issuer.sign_with(Alg::Es256, header, issuer.user_claims("alice", "bff", ""))
}

const CORP_FAILURES: &str = "gleipnir_jwks_fetch_failures_total{issuer=\"corp\"}";

async fn jwks_failures(sts: &Sts) -> f64 {
    metric_value(&sts.admin, CORP_FAILURES).await.unwrap()
}

/// One keyless answer, provoked by a client's unknown `kid` or met by the keeper's
/// refresh, must not refuse the issuer's tokens once the issuer serves its keys again:
/// it is a failed fetch, the last good keys stay, and the keeper retries on the backoff.
#[tokio::test]
async fn one_keyless_jwks_never_replaces_the_last_good_keys() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    issuer.set_cache_control("max-age=120");
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    let token = long_token(&issuer);
    assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);
    for (what, keyless) in keyless_jwks(&issuer) {
        // Provoked by a client: an unknown kid forces a refetch.
        let fetched = issuer.jwks_fetches();
        let failures = jwks_failures(&sts).await;
        issuer.set_jwks(keyless.clone());
        sts.clock.advance(30); // past any cooldown
        let provoked = sts
            .exchange(BFF, &impersonation(&unknown_kid_token(&issuer, "nope")))
            .await;
        // The refetch failed: the kid could not be checked, not the client's fault.
        assert_refused(
            &provoked,
            503,
            "temporarily_unavailable",
            "subject_token/keys_unavailable",
        );
        assert_eq!(issuer.jwks_fetches(), fetched + 1, "{what}: one refetch");
        issuer.set_jwks(issuer.default_jwks()); // repaired at once
        let answer = sts.exchange(BFF, &impersonation(&token)).await;
        assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        assert_eq!(jwks_failures(&sts).await, failures + 1.0, "{what}");
        sts.clock.advance(8);
        wait_fetches(&issuer, fetched + 2).await; // the keeper's retry
        assert_eq!(readyz(&sts).await, 200, "{what}");

        // Met by the keeper: its refresh at 90 % of max-age gets the keyless answer.
        issuer.set_jwks(keyless);
        let fetched = issuer.jwks_fetches();
        sts.clock.advance(108);
        // The failure is counted once the attempt ended (its backoff counts from then).
        wait_for_metric(&sts.admin, CORP_FAILURES, failures + 2.0).await;
        let answer = sts.exchange(BFF, &impersonation(&token)).await;
        assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        assert_eq!(readyz(&sts).await, 200, "{what}");
        issuer.set_jwks(issuer.default_jwks());
        sts.clock.advance(1); // the first failure's backoff
        wait_fetches(&issuer, fetched + 2).await;
        assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);
    }
}

/// With no keys ever fetched, a keyless JWKS fails closed (503) and is retried on the
/// failure backoff, not after its `max-age`; it is logged once for the whole streak,
/// with the issuer, the URL and the cause.
#[tokio::test]
async fn keyless_jwks_at_cold_start_fails_closed_and_is_retried_on_the_backoff() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    issuer.set_cache_control("max-age=3600");
    issuer.set_jwks(json!({ "keys": [] }));
    let sts = Sts::start(&issuer).await;
    wait_for_metric(&sts.admin, CORP_FAILURES, 1.0).await;
    assert_eq!(readyz(&sts).await, 503);
    let token = long_token(&issuer);
    assert_unavailable(&sts.exchange(BFF, &impersonation(&token)).await);
    for (n, backoff) in [(2, 1), (3, 2), (4, 4)] {
        sts.clock.advance(backoff);
        wait_for_metric(&sts.admin, CORP_FAILURES, f64::from(n)).await;
    }
    assert_eq!(issuer.jwks_fetches(), 4, "one fetch per backoff step");
    assert_unavailable(&sts.exchange(BFF, &impersonation(&token)).await);

    issuer.set_jwks(issuer.default_jwks());
    sts.clock.advance(8);
    let repaired = Instant::now();
    sts.wait_ready().await;
    eprintln!(
        "keyless at cold start: ready {:?} after the repair",
        repaired.elapsed()
    );
    assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);

    let warned = support::audit::warnings(&issuer.jwks_uri());
    assert_eq!(warned.len(), 1, "once per failure streak: {warned:?}");
    let line = warned[0].to_string();
    assert!(
        line.contains("corp") && line.contains("no usable key"),
        "{line}"
    );
    assert!(!line.contains(&token), "no token in the log");
}

/// A token for bff signed with `key`, under `key`'s `kid`.
fn token_signed_by(issuer: &TestIssuer, key: &SigningKey) -> String {
    let header = json!({ "alg": "ES256", "kid": key.kid(), "typ": "at+jwt" });
    let input = format!(
        "{}.{}",
        b64_json(&header),
        b64_json(&issuer.user_claims("alice", "bff", ""))
    );
    format!("{input}.{}", b64(&key.sign(input.as_bytes()).unwrap()))
}

/// The issuer's JWKS with `key` added (a rotation publishes the new key beside the old).
fn jwks_with(issuer: &TestIssuer, key: &SigningKey) -> serde_json::Value {
    let mut jwks = issuer.default_jwks();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(key.public_jwk().clone());
    jwks
}

fn assert_refused(answer: &Answer, status: u16, error: &str, reason: &str) {
    assert_eq!(
        (answer.status, answer.error()),
        (status, error),
        "{}",
        answer.body
    );
    assert_eq!(
        answer.headers.contains_key("retry-after"),
        status == 503,
        "Retry-After on a {status}"
    );
    let audited = answer.request_id().and_then(support::audit::refusal);
    assert_eq!(audited.as_deref(), Some(reason), "{}", answer.body);
}

/// Routine rotation: the issuer starts signing with a new key 5 s after gleipnir's last
/// regular fetch. That fetch starts no cooldown: the first token with the new kid
/// forces one refetch and is accepted.
#[tokio::test]
async fn rotated_key_is_accepted_after_one_refetch() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    let fetched = issuer.jwks_fetches();
    sts.clock.advance(5);
    let new_key = SigningKey::ephemeral(JwsAlgorithm::Es256).unwrap();
    issuer.set_jwks(jwks_with(&issuer, &new_key));
    let token = token_signed_by(&issuer, &new_key);

    let answer = sts.exchange(BFF, &impersonation(&token)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(issuer.jwks_fetches(), fetched + 1, "one refetch");
    let again = sts.exchange(BFF, &impersonation(&token)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(issuer.jwks_fetches(), fetched + 1, "the new key is cached");
}

/// Whose fault an unknown kid is: still unknown in keys fetched after the token came,
/// the client's (400 `unknown_kid`); otherwise, keys we could not fetch yet (cooldown,
/// failed refetch): 503 `keys_unavailable` with Retry-After, and the key is accepted once
/// it can be fetched.
#[tokio::test]
async fn unknown_kid_is_the_clients_fault_only_after_a_successful_refetch() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    let good = long_token(&issuer);
    let fetched = issuer.jwks_fetches();

    let answer = sts
        .exchange(BFF, &impersonation(&unknown_kid_token(&issuer, "nope-1")))
        .await;
    assert_refused(&answer, 400, "invalid_request", "subject_token/unknown_kid");
    assert_eq!(
        issuer.jwks_fetches(),
        fetched + 1,
        "refetched, still unknown"
    );

    // Within the cooldown of that refetch the issuer rotates: the new kid is not refused
    // as a bad token, it is retried once the cooldown allows a refetch.
    sts.clock.advance(10);
    let new_key = SigningKey::ephemeral(JwsAlgorithm::Es256).unwrap();
    issuer.set_jwks(jwks_with(&issuer, &new_key));
    let rotated = token_signed_by(&issuer, &new_key);
    let answer = sts.exchange(BFF, &impersonation(&rotated)).await;
    assert_refused(
        &answer,
        503,
        "temporarily_unavailable",
        "subject_token/keys_unavailable",
    );
    assert_eq!(issuer.jwks_fetches(), fetched + 1, "cooldown: no fetch");
    sts.clock.advance(20);
    let answer = sts.exchange(BFF, &impersonation(&rotated)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(issuer.jwks_fetches(), fetched + 2);

    // A forced refetch that fails: 503; the keys we had still serve.
    issuer.set_behaviour(Behaviour::Status(500));
    sts.clock.advance(30);
    let answer = sts
        .exchange(BFF, &impersonation(&unknown_kid_token(&issuer, "nope-2")))
        .await;
    assert_refused(
        &answer,
        503,
        "temporarily_unavailable",
        "subject_token/keys_unavailable",
    );
    assert_eq!(issuer.jwks_fetches(), fetched + 3);
    assert_eq!(sts.exchange(BFF, &impersonation(&good)).await.status, 200);
    issuer.set_behaviour(Behaviour::Serve);
    sts.clock.advance(30);
    let answer = sts
        .exchange(BFF, &impersonation(&unknown_kid_token(&issuer, "nope-3")))
        .await;
    assert_refused(&answer, 400, "invalid_request", "subject_token/unknown_kid");
}

/// 100 tokens with random kids at once, three times: 0 s, 10 s and 30 s after the first
/// forced refetch. At most one refetch per 30 s; every answer is 400 (checked against
/// keys fetched after the token came) or 503 (not checkable yet), never a grant.
#[tokio::test]
async fn unknown_kid_flood_causes_at_most_one_refetch_per_cooldown() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    let before = issuer.jwks_fetches();
    for (round, advance, refetches) in [(0, 0, 1), (1, 10, 1), (2, 20, 2)] {
        sts.clock.advance(advance);
        let tokens = (0..100)
            .map(|i| unknown_kid_token(&issuer, &format!("flood-{round}-{i}")))
            .collect();
        let statuses = sts.exchange_concurrently(BFF, tokens).await;
        let refused = |s| statuses.iter().filter(|&&x| x == s).count();
        assert_eq!(refused(400) + refused(503), 100, "{statuses:?}");
        eprintln!(
            "unknown-kid flood round {round} (+{advance} s): 100 requests, {} x 400, {} x 503, \
             JWKS fetches so far: {}",
            refused(400),
            refused(503),
            issuer.jwks_fetches() - before
        );
        assert_eq!(
            issuer.jwks_fetches() - before,
            refetches,
            "at most one refetch per 30 s"
        );
        if advance == 10 {
            assert_eq!(
                refused(503),
                100,
                "within the cooldown nothing is confirmed"
            );
        } else {
            assert!(refused(400) >= 1, "the refetching request is confirmed");
        }
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let issuer = TestIssuer::start().await;
    issuer.set_behaviour(Behaviour::Redirect);
    let sts = Sts::start(&issuer).await;
    wait_fetches(&issuer, 1).await;
    assert_eq!(readyz(&sts).await, 503);
    assert_unavailable(
        &sts.exchange(BFF, &impersonation(&long_token(&issuer)))
            .await,
    );
    assert!(
        !issuer
            .urls_requested()
            .iter()
            .any(|u| u.contains("real-jwks")),
        "redirect target was requested: {:?}",
        issuer.urls_requested()
    );
}

#[tokio::test]
async fn tls_failure_yields_no_keys() {
    // An https jwks_uri pointing at a plain-HTTP port: the TLS handshake fails.
    let issuer = TestIssuer::start().await;
    let https = format!("https://{}/jwks.json", issuer.addr);
    let sts = Sts::builder()
        .issuer_at("corp", &issuer.iss, &https, "")
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(readyz(&sts).await, 503);
    assert_unavailable(
        &sts.exchange(BFF, &impersonation(&long_token(&issuer)))
            .await,
    );
    assert_eq!(issuer.jwks_fetches(), 0, "no JWKS request got through");
}

/// RSA keys no issuer should publish (RFC 8725 §3.5): too short, too long (each
/// verification would cost a huge modular exponentiation), or with an exponent that is
/// even or below 65537. `n` is a real 2048-bit modulus where only `e` is at fault.
fn weak_rsa_keys(issuer: &TestIssuer) -> Vec<serde_json::Value> {
    let real_n = issuer.default_jwks()["keys"][1]["n"].clone();
    let modulus = |bytes: usize| {
        let mut n = vec![0xC3; bytes];
        n[bytes - 1] = 0x01;
        b64(&n)
    };
    vec![
        json!({ "kty": "RSA", "kid": "rsa-1024", "n": modulus(128), "e": "AQAB" }),
        json!({ "kty": "RSA", "kid": "rsa-2047", "n": b64(&[&[0x7F][..], &[0xC3; 255]].concat()), "e": "AQAB" }),
        json!({ "kty": "RSA", "kid": "rsa-16384", "n": modulus(2048), "e": "AQAB" }),
        json!({ "kty": "RSA", "kid": "e-1", "n": real_n, "e": "AQ" }),
        json!({ "kty": "RSA", "kid": "e-3", "n": real_n, "e": "Aw" }),
        json!({ "kty": "RSA", "kid": "e-65536", "n": real_n, "e": "AQAA" }),
        json!({ "kty": "RSA", "kid": "e-65540-even", "n": real_n, "e": "AQAE" }),
        json!({ "kty": "RSA", "kid": "e-2^64+1", "n": real_n, "e": "AQAAAAAAAAAB" }),
    ]
}

#[tokio::test]
async fn a_jwks_of_only_weak_rsa_keys_is_no_keys() {
    let issuer = TestIssuer::start().await;
    issuer.set_jwks(json!({ "keys": weak_rsa_keys(&issuer) }));
    let sts = Sts::start(&issuer).await;
    wait_fetches(&issuer, 1).await;
    wait_for_metric(
        &sts.admin,
        "gleipnir_jwks_fetches_total{issuer=\"corp\"}",
        1.0,
    )
    .await;
    assert_eq!(
        metric_value(&sts.admin, "gleipnir_jwks_keys{issuer=\"corp\"}").await,
        Some(0.0),
        "weak keys are not counted as usable"
    );
    assert_eq!(readyz(&sts).await, 503, "only weak keys: not ready");
    assert_unavailable(
        &sts.exchange(BFF, &impersonation(&long_token(&issuer)))
            .await,
    );
}

#[tokio::test]
async fn weak_rsa_keys_beside_good_ones_are_skipped_and_not_counted() {
    let issuer = TestIssuer::start().await;
    let mut jwks = issuer.default_jwks();
    let keys = jwks["keys"].as_array_mut().unwrap();
    keys.extend(weak_rsa_keys(&issuer));
    // A 4096-bit key with e = 65537 is as good as the 2048-bit one.
    let big = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa4096).unwrap();
    let public = aws_lc_rs::signature::KeyPair::public_key(&big);
    keys.push(json!({ "kty": "RSA", "kid": "rsa-4096", "alg": "RS256",
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()) }));
    issuer.set_jwks(jwks);
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    // es-1, rs-1 (RS256 and PS256), ed-1, and rsa-4096 (RS256): nothing weak.
    assert_eq!(
        metric_value(&sts.admin, "gleipnir_jwks_keys{issuer=\"corp\"}").await,
        Some(5.0)
    );
    assert_eq!(
        sts.exchange(BFF, &impersonation(&long_token(&issuer)))
            .await
            .status,
        200
    );
}
