//! RFC 7662 introspection of opaque upstream tokens (rules §4), over HTTP
//! against the real server and a real introspection endpoint on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use gleipnir::app::App;
use gleipnir::clock::Clock;
use gleipnir::config::Config;
use serde_json::{Value, json};
use support::*;

const OPAQUE: &str = "2YotnFZFEjr1zCsicMWpAA";

fn introspection_settings(issuer: &TestIssuer, endpoint_path: &str) -> String {
    format!(
        "[issuers.introspection]\nendpoint = \"http://{}{endpoint_path}\"\nclient_id = \"{}\"\nsecret = {{ value = \"{}\" }}\n",
        issuer.addr, INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1
    )
}

/// An `active` answer as RFC 7662 §2.2 shapes it, for alice's token issued to the BFF.
fn active(issuer: &TestIssuer) -> Value {
    json!({ "active": true, "iss": issuer.iss, "sub": "alice", "aud": "bff",
            "client_id": "bff", "scope": "orders:read", "token_type": "Bearer",
            "iat": NOW - 60, "exp": NOW + 600, "jti": "opaque-1" })
}

fn patched(base: Value, changes: Value) -> Value {
    let mut out = base;
    for (k, v) in changes.as_object().unwrap() {
        out[k.as_str()] = v.clone();
    }
    out
}

async fn introspecting_sts(issuer: &TestIssuer) -> Sts {
    let settings = introspection_settings(issuer, "/introspect");
    Sts::builder()
        .issuer("corp", issuer, &settings)
        .start()
        .await
}

#[tokio::test]
async fn active_opaque_tokens_are_exchanged_and_the_answer_cached() {
    let issuer = TestIssuer::start().await;
    issuer.introspection.answer(OPAQUE, active(&issuer));
    let sts = introspecting_sts(&issuer).await;

    // Delegation: opaque subject, JWT actor.
    let actor = issuer.actor_token("bff");
    let answer = sts.exchange(BFF, &delegation(OPAQUE, &actor)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = answer.claims();
    assert_eq!(
        (claims["sub"].as_str(), claims["scope"].as_str()),
        (Some("alice"), Some("orders:read"))
    );
    assert_eq!(claims["act"], json!({ "sub": "bff" }));
    assert_eq!(claims["exp"], NOW + 300);
    // What we sent: our token, the hint, our own credentials (checked by the endpoint).
    assert_eq!(
        issuer.introspection.last_form(),
        format!("token={OPAQUE}&token_type_hint=access_token")
    );

    // Reused while valid: no second call.
    assert_eq!(sts.exchange(BFF, &impersonation(OPAQUE)).await.status, 200);
    assert_eq!(issuer.introspection.calls(), 1);
    // After cache_seconds (default 60) it is asked again.
    sts.clock.advance(60);
    assert_eq!(sts.exchange(BFF, &impersonation(OPAQUE)).await.status, 200);
    assert_eq!(issuer.introspection.calls(), 2);
}

#[tokio::test]
async fn an_active_answer_is_reused_no_longer_than_the_token_lives() {
    let issuer = TestIssuer::start().await;
    issuer
        .introspection
        .answer(OPAQUE, patched(active(&issuer), json!({ "exp": NOW + 20 })));
    let sts = introspecting_sts(&issuer).await;
    assert_eq!(sts.exchange(BFF, &impersonation(OPAQUE)).await.status, 200);
    issuer
        .introspection
        .answer(OPAQUE, json!({ "active": false })); // revoked
    sts.clock.advance(20);
    let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        issuer.introspection.calls(),
        2,
        "the cached answer ended with the token's exp"
    );
}

#[tokio::test]
async fn inactive_tokens_are_refused_and_the_answer_cached_briefly() {
    let issuer = TestIssuer::start().await;
    let sts = introspecting_sts(&issuer).await;
    for _ in 0..3 {
        let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "invalid_request"),
            "{}",
            answer.body
        );
    }
    assert_eq!(issuer.introspection.calls(), 1);
    sts.clock.advance(10);
    issuer.introspection.answer(OPAQUE, active(&issuer));
    assert_eq!(sts.exchange(BFF, &impersonation(OPAQUE)).await.status, 200);
    assert_eq!(issuer.introspection.calls(), 2);
}

/// The endpoint unreachable, failing, refusing our credentials, or answering something
/// that is not an introspection response: fail closed with 503, and cache nothing.
#[tokio::test]
async fn unusable_introspection_fails_closed() {
    let cases: Vec<(&str, Option<u16>, Value)> = vec![
        ("server error", Some(500), Value::Null),
        ("our credentials refused", Some(401), Value::Null),
        ("redirect not followed", Some(302), Value::Null),
        (
            "active as a string",
            None,
            json!({ "active": "true", "sub": "alice" }),
        ),
        ("no active member", None, json!({ "sub": "alice" })),
        ("not an object", None, json!([true])),
    ];
    for (what, status, answer) in cases {
        let issuer = TestIssuer::start().await;
        issuer.introspection.fail_with(status);
        if !answer.is_null() {
            issuer.introspection.answer(OPAQUE, answer);
        }
        let sts = introspecting_sts(&issuer).await;
        for _ in 0..2 {
            let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
            assert_eq!(
                (answer.status, answer.error()),
                (503, "temporarily_unavailable"),
                "{what}: {}",
                answer.body
            );
            assert!(answer.headers.contains_key("retry-after"), "{what}");
        }
        assert_eq!(
            issuer.introspection.calls(),
            1,
            "{what}: the endpoint is left alone during the backoff"
        );
        sts.clock.advance(1);
        let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
        assert_eq!(answer.status, 503, "{what}");
        assert_eq!(
            issuer.introspection.calls(),
            2,
            "{what}: failures are not cached"
        );
    }

    // Nothing listening at all.
    let issuer = TestIssuer::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let settings = format!(
        "[issuers.introspection]\nendpoint = \"http://{closed}/introspect\"\nclient_id = \"g\"\nsecret = {{ value = \"s\" }}\n"
    );
    let sts = Sts::builder()
        .issuer("corp", &issuer, &settings)
        .start()
        .await;
    let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
    assert_eq!(
        (answer.status, answer.error()),
        (503, "temporarily_unavailable"),
        "{}",
        answer.body
    );
}

/// Active answers go through the checks any token's claims get.
#[tokio::test]
async fn active_answers_are_checked_like_tokens() {
    let issuer = TestIssuer::start().await;
    let other = TestIssuer::start().await;
    let sts = introspecting_sts(&issuer).await;
    let cases = [
        ("iss of another issuer", json!({ "iss": other.iss })),
        ("iss missing", json!({ "iss": null })),
        ("expired", json!({ "exp": NOW - 60 })),
        ("exp missing", json!({ "exp": null })),
        (
            "sub and client_id missing",
            json!({ "sub": null, "client_id": null }),
        ),
        (
            "aud of another client and no client_id",
            json!({ "aud": "orders-api", "client_id": null }),
        ),
        ("Keycloak refresh token", json!({ "typ": "Refresh" })),
        ("ID token hashes", json!({ "at_hash": "x" })),
        ("iss as array", json!({ "iss": [issuer.iss] })),
        // RFC 7662 token_type: only Bearer access tokens (a provider answers refresh tokens
        // too, whatever the hint), and nothing bound to a key we cannot check.
        (
            "token_type refresh_token",
            json!({ "token_type": "refresh_token" }),
        ),
        ("token_type missing", json!({ "token_type": null })),
        (
            "DPoP-bound",
            json!({ "token_type": "DPoP", "cnf": { "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" } }),
        ),
        (
            "mTLS-bound Bearer",
            json!({ "cnf": { "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2" } }),
        ),
    ];
    for (i, (what, change)) in cases.into_iter().enumerate() {
        let token = format!("opaque-{i}");
        let mut answer = active(&issuer);
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                answer.as_object_mut().unwrap().remove(k);
            } else {
                answer[k.as_str()] = v.clone();
            }
        }
        issuer.introspection.answer(&token, answer);
        let answer = sts.exchange(BFF, &impersonation(&token)).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "invalid_request"),
            "{what}: {}",
            answer.body
        );
    }
}

/// RFC 7662 answers for client-credentials tokens often carry no `sub`: the subject is
/// then the client (RFC 9068 §2.2).
#[tokio::test]
async fn an_answer_without_sub_names_its_client() {
    let issuer = TestIssuer::start().await;
    let mut answer = active(&issuer);
    answer.as_object_mut().unwrap().remove("sub");
    answer["client_id"] = json!("reporting-job");
    issuer.introspection.answer(OPAQUE, answer);
    let sts = introspecting_sts(&issuer).await;
    let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.claims()["sub"], "reporting-job");
}

#[tokio::test]
async fn opaque_tokens_need_an_introspecting_issuer_the_client_accepts() {
    let issuer = TestIssuer::start().await;
    issuer.introspection.answer(OPAQUE, active(&issuer));
    // No introspection configured: an opaque token is simply not a JWT.
    let plain = Sts::start(&issuer).await;
    let answer = plain.exchange(BFF, &impersonation(OPAQUE)).await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "invalid_request"),
        "{}",
        answer.body
    );
    assert_eq!(issuer.introspection.calls(), 0);

    // Introspection configured, but declared as jwt: only access tokens are introspected.
    let sts = introspecting_sts(&issuer).await;
    let mut form = impersonation(OPAQUE);
    form[2] = ("subject_token_type", JWT);
    let answer = sts.exchange(BFF, &form).await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "invalid_request"),
        "{}",
        answer.body
    );
    assert_eq!(
        issuer.introspection.calls(),
        0,
        "never sent to the endpoint"
    );
}

#[tokio::test]
async fn concurrent_requests_for_one_token_share_one_call() {
    let issuer = TestIssuer::start().await;
    issuer.introspection.answer(OPAQUE, active(&issuer));
    let sts = introspecting_sts(&issuer).await;
    let statuses = sts
        .exchange_concurrently(BFF, vec![OPAQUE.to_owned(); 20])
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(issuer.introspection.calls(), 1);
}

/// Keycloak: the endpoint defaults to the realm's, and its answer (Keycloak 26 shape:
/// the access token's claims plus `client_id`, `username`, `token_type`, `active`) is
/// accepted as an access token.
#[tokio::test]
async fn keycloak_realm_introspection() {
    let issuer = TestIssuer::start().await;
    let realm = format!("{}/realms/corp", issuer.iss);
    issuer.introspection.answer(
        OPAQUE,
        json!({
            "exp": NOW + 300, "iat": NOW, "jti": "179a04e8-6a41-41bb-ab20-14d55a8518af",
            "iss": realm, "sub": "8befeac4-8963-49da-a9ac-f310e8d922d8", "typ": "Bearer",
            "azp": "bff", "sid": "54db1502-a5dc-4a27-af62-eeef0694a628", "acr": "1",
            "realm_access": { "roles": ["uma_authorization"] },
            "scope": "openid email profile orders:read", "email_verified": true,
            "preferred_username": "alice@example.org", "client_id": "bff",
            "username": "alice@example.org", "token_type": "Bearer", "active": true
        }),
    );
    let settings = format!(
        "profile = \"keycloak\"\n[issuers.introspection]\nclient_id = \"{}\"\nsecret = {{ value = \"{}\" }}\n",
        INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1
    );
    let sts = Sts::builder()
        .issuer_at("corp", &realm, "", &settings)
        .start()
        .await;
    let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        issuer
            .urls_requested()
            .iter()
            .any(|u| u == "/realms/corp/protocol/openid-connect/token/introspect"),
        "{:?}",
        issuer.urls_requested()
    );
}

/// A client may accept at most one introspecting issuer per role: an opaque token must
/// go to exactly one endpoint.
#[test]
fn two_introspecting_issuers_for_one_role_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pem = gleipnir::keys::pkcs8_to_pem(
        &gleipnir::keys::generate_pkcs8(gleipnir::jose::JwsAlgorithm::Es256).unwrap(),
    );
    std::fs::write(dir.path().join("k.pem"), pem.as_bytes()).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/p.toml"),
        "[clients.bff]\nimpersonate = true\nsubject_issuers = [\"a\", \"b\"]\n",
    )
    .unwrap();
    let issuer = |name: &str| {
        format!(
            "[[issuers]]\nname = \"{name}\"\nissuer = \"https://{name}.example\"\njwks_uri = \"https://{name}.example/jwks\"\n[issuers.introspection]\nendpoint = \"https://{name}.example/introspect\"\nclient_id = \"g\"\nsecret = {{ value = \"s\" }}\n"
        )
    };
    let text = format!(
        "issuer = \"https://sts.example\"\n[signing]\nkey_file = \"k.pem\"\n{}{}[[clients]]\nid = \"bff\"\nsecret = {{ value = \"x\" }}\n",
        issuer("a"),
        issuer("b")
    );
    let config = Config::from_toml(&text, &dir.path().join("g.toml")).unwrap();
    let error = App::build(&config, Clock::System).err().expect("refused");
    assert_eq!(error.field, "clients.bff.subject_issuers", "{error}");
}

/// Strings with the shape of a JWE or of a JOSE structure are never sent to the
/// introspection endpoint: they are malformed tokens, refused as such.
#[tokio::test]
async fn jose_shaped_strings_are_never_introspected() {
    let issuer = TestIssuer::start().await;
    let sts = introspecting_sts(&issuer).await;
    let header = b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
    for token in [
        format!("{header}.key.iv.ciphertext.tag"),
        format!("{header}.e30"),
        format!("{}.sig", b64(br#"{"alg":"ES256"}"#)),
    ] {
        let answer = sts.exchange(BFF, &impersonation(&token)).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "invalid_request"),
            "{token}: {}",
            answer.body
        );
    }
    assert_eq!(issuer.introspection.calls(), 0);
}

/// RFC 7662 §2.3: an endpoint that does not introspect this kind of token says
/// `unsupported_token_type`; the token is refused like an inactive one, and the endpoint
/// is not treated as down.
#[tokio::test]
async fn unsupported_token_type_is_an_inactive_token() {
    let issuer = TestIssuer::start().await;
    issuer
        .introspection
        .fail_with_body(400, json!({ "error": "unsupported_token_type" }));
    let sts = introspecting_sts(&issuer).await;
    let answer = sts.exchange(BFF, &impersonation(OPAQUE)).await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "invalid_request"),
        "{}",
        answer.body
    );
    // Another token is introspected at once: no backoff after a proper answer.
    let answer = sts.exchange(BFF, &impersonation("another-opaque")).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(issuer.introspection.calls(), 2);
    // A 400 that is not unsupported_token_type is the endpoint's problem: 503.
    issuer
        .introspection
        .fail_with_body(400, json!({ "error": "invalid_request" }));
    let answer = sts.exchange(BFF, &impersonation("third-opaque")).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
}

/// At most 16 calls per issuer are in flight; beyond that, requests get 503 at once
/// instead of piling up connections to a slow endpoint.
#[tokio::test]
async fn calls_in_flight_are_capped() {
    let issuer = TestIssuer::start().await;
    issuer
        .introspection
        .delay(std::time::Duration::from_millis(500));
    let sts = introspecting_sts(&issuer).await;
    let tokens = (0..24).map(|i| format!("distinct-opaque-{i}")).collect();
    let statuses = sts.exchange_concurrently(BFF, tokens).await;
    let refused = statuses.iter().filter(|s| **s == 400).count();
    let shed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(refused + shed, 24, "{statuses:?}");
    assert!(
        issuer.introspection.calls() <= 16,
        "calls: {}",
        issuer.introspection.calls()
    );
    assert!(shed >= 8, "{statuses:?}");
}

/// With `check_jwts`, a JWT whose signature verified is introspected too: it counts only
/// while its issuer says it is active, and the answer's claims are the ones judged; the
/// answer must name the JWT's `sub`. An expired JWT is refused without a call, a forged
/// one before any.
#[tokio::test]
async fn with_check_jwts_a_signed_token_must_also_be_active() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let settings = format!(
        "{}check_jwts = true\n",
        introspection_settings(&issuer, "/introspect")
    );
    let sts = Sts::builder()
        .issuer("corp", &issuer, &settings)
        .start()
        .await;
    let jwt = issuer.user_token("alice", "bff", "orders:read");
    let refused = |answer: &Answer, reason: &str| {
        assert_eq!(
            (answer.status, answer.error()),
            (400, "invalid_request"),
            "{}",
            answer.body
        );
        assert_eq!(
            audit::refusal(answer.request_id().unwrap()).as_deref(),
            Some(reason)
        );
    };

    // Not known to the endpoint: inactive, although well signed.
    refused(
        &sts.exchange(BFF, &impersonation(&jwt)).await,
        "subject_token/inactive",
    );
    assert_eq!(issuer.introspection.calls(), 1);

    // Active: the answer's claims decide (here a wider scope than the JWT's own).
    let jwt = issuer.sign(patched(
        issuer.user_claims("alice", "bff", "orders:read"),
        json!({ "jti": "jwt-2" }),
    ));
    issuer.introspection.answer(
        &jwt,
        patched(
            active(&issuer),
            json!({ "scope": "orders:read orders:write" }),
        ),
    );
    let mut form = impersonation(&jwt);
    form.push(("scope", "orders:write"));
    let answer = sts.exchange(BFF, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.claims()["scope"], "orders:write");

    // An answer about another subject than the JWT's.
    let jwt = issuer.sign(patched(
        issuer.user_claims("alice", "bff", "orders:read"),
        json!({ "jti": "jwt-3" }),
    ));
    issuer
        .introspection
        .answer(&jwt, patched(active(&issuer), json!({ "sub": "mallory" })));
    refused(
        &sts.exchange(BFF, &impersonation(&jwt)).await,
        "subject_token/invalid_claim",
    );

    // Expired: refused by its own exp, the endpoint not asked.
    let calls = issuer.introspection.calls();
    let expired = issuer.sign(patched(
        issuer.user_claims("alice", "bff", "orders:read"),
        json!({ "exp": NOW - 100, "jti": "jwt-4" }),
    ));
    refused(
        &sts.exchange(BFF, &impersonation(&expired)).await,
        "subject_token/expired",
    );
    // Forged: refused by its signature, the endpoint not asked.
    let mut forged = issuer.user_token("alice", "bff", "orders:read");
    forged.replace_range(forged.len() - 4.., "AAAA");
    refused(
        &sts.exchange(BFF, &impersonation(&forged)).await,
        "subject_token/bad_signature",
    );
    assert_eq!(issuer.introspection.calls(), calls);
}
