//! `jwks_uri` discovered from the issuer's own metadata (rules §4): OpenID Connect
//! Discovery §4 first, RFC 8414 §3 second; the metadata's `issuer` must be exactly ours.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// An `openid-configuration` shaped like Keycloak 26's for a realm (the members a
/// Keycloak 26 realm publishes, abridged to one value per list; only `issuer` and
/// `jwks_uri` matter to gleipnir, the rest must simply not disturb it).
fn keycloak_metadata(realm: &str) -> Value {
    let oidc = format!("{realm}/protocol/openid-connect");
    json!({
        "issuer": realm,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "introspection_endpoint": format!("{oidc}/token/introspect"),
        "userinfo_endpoint": format!("{oidc}/userinfo"),
        "end_session_endpoint": format!("{oidc}/logout"),
        "frontchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "jwks_uri": format!("{oidc}/certs"),
        "check_session_iframe": format!("{oidc}/login-status-iframe.html"),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"],
        "acr_values_supported": ["0", "1"],
        "response_types_supported": ["code", "none", "id_token", "token", "code id_token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["PS384", "RS256", "ES256", "EdDSA"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic",
            "client_secret_post", "tls_client_auth", "client_secret_jwt"],
        "scopes_supported": ["openid", "basic", "profile", "email", "roles", "web-origins"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "tls_client_certificate_bound_access_tokens": true,
        "revocation_endpoint": format!("{oidc}/revoke"),
        "backchannel_logout_supported": true,
        "device_authorization_endpoint": format!("{oidc}/auth/device"),
        "authorization_response_iss_parameter_supported": true,
        "mtls_endpoint_aliases": { "token_endpoint": format!("{oidc}/token") }
    })
}

fn token_from(issuer: &TestIssuer, iss: &str) -> String {
    let claims =
        json!({ "iss": iss, "sub": "alice", "aud": "bff", "iat": NOW, "exp": NOW + 86_400 });
    issuer.sign_as(Alg::Rs256, claims)
}

async fn sts_discovering(iss: &str) -> Sts {
    Sts::builder().issuer_at("corp", iss, "", "").start().await
}

async fn readyz(sts: &Sts) -> u16 {
    sts.http
        .get(format!("{}/readyz", sts.admin))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn openid_configuration_names_the_jwks() {
    let issuer = TestIssuer::start().await;
    let realm = format!("{}/realms/corp", issuer.iss);
    issuer.serve_document(
        "/realms/corp/.well-known/openid-configuration",
        keycloak_metadata(&realm),
    );
    let sts = sts_discovering(&realm).await;
    sts.wait_ready().await;
    let answer = sts
        .exchange(BFF, &impersonation(&token_from(&issuer, &realm)))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let asked = issuer.urls_requested();
    assert_eq!(
        &asked[..2],
        [
            "/realms/corp/.well-known/openid-configuration",
            "/realms/corp/protocol/openid-connect/certs"
        ],
        "{asked:?}"
    );
}

#[tokio::test]
async fn rfc8414_metadata_is_the_fallback() {
    let issuer = TestIssuer::start().await;
    let tenant = format!("{}/tenant", issuer.iss);
    issuer.serve_document(
        "/.well-known/oauth-authorization-server/tenant",
        json!({ "issuer": tenant, "jwks_uri": issuer.jwks_uri(), "token_endpoint": format!("{tenant}/token") }),
    );
    let sts = sts_discovering(&tenant).await;
    sts.wait_ready().await;
    let answer = sts
        .exchange(BFF, &impersonation(&token_from(&issuer, &tenant)))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let asked = issuer.urls_requested();
    assert!(
        asked.contains(&"/tenant/.well-known/openid-configuration".to_owned()),
        "{asked:?}"
    );
}

/// Metadata that does not name exactly our issuer, or whose `jwks_uri` is unusable, yields
/// no keys: not ready, and the issuer's tokens get 503. The JWKS is never requested.
#[tokio::test]
async fn unusable_metadata_yields_no_keys() {
    type Document = fn(&str, &str) -> Value;
    let cases: [(&str, Document); 6] = [
        (
            "look-alike issuer (trailing slash)",
            |realm: &str, _jwks: &str| json!({ "issuer": format!("{realm}/"), "jwks_uri": format!("{realm}/protocol/openid-connect/certs") }),
        ),
        (
            "another realm's issuer",
            |realm: &str, _jwks: &str| json!({ "issuer": realm.replace("corp", "other"), "jwks_uri": format!("{realm}/protocol/openid-connect/certs") }),
        ),
        (
            "jwks_uri not http(s)",
            |realm: &str, _jwks: &str| json!({ "issuer": realm, "jwks_uri": "ftp://example.com/jwks" }),
        ),
        (
            "jwks_uri not a URL",
            |realm: &str, _jwks: &str| json!({ "issuer": realm, "jwks_uri": "certs" }),
        ),
        (
            "no jwks_uri",
            |realm: &str, _jwks: &str| json!({ "issuer": realm }),
        ),
        ("an array", |realm: &str, jwks: &str| json!([realm, jwks])),
    ];
    for (what, document) in cases {
        let issuer = TestIssuer::start().await;
        let realm = format!("{}/realms/corp", issuer.iss);
        let jwks = format!("{realm}/protocol/openid-connect/certs");
        issuer.serve_document(
            "/realms/corp/.well-known/openid-configuration",
            document(&realm, &jwks),
        );
        let sts = sts_discovering(&realm).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(readyz(&sts).await, 503, "{what}");
        let answer = sts
            .exchange(BFF, &impersonation(&token_from(&issuer, &realm)))
            .await;
        assert_eq!(
            (answer.status, answer.error()),
            (503, "temporarily_unavailable"),
            "{what}: {}",
            answer.body
        );
        assert_eq!(issuer.jwks_fetches(), 0, "{what}: the JWKS was requested");
    }
}

/// When the JWKS stops answering where the metadata pointed, the next attempt reads the
/// metadata again and follows it to the new place.
#[tokio::test]
async fn a_moved_jwks_is_rediscovered() {
    let issuer = TestIssuer::start().await;
    let tenant = format!("{}/tenant", issuer.iss);
    let metadata_path = "/tenant/.well-known/openid-configuration";
    issuer.serve_document(
        metadata_path,
        json!({ "issuer": tenant, "jwks_uri": issuer.jwks_uri() }),
    );
    let sts = sts_discovering(&tenant).await;
    sts.wait_ready().await;
    let token = token_from(&issuer, &tenant);

    // The JWKS moves: the old URL answers 404, the metadata points to the new one.
    issuer.set_behaviour(Behaviour::Status(404));
    issuer.serve_document(
        metadata_path,
        json!({ "issuer": tenant, "jwks_uri": format!("{tenant}/protocol/openid-connect/certs") }),
    );
    sts.clock.advance(601); // keys expire: the keeper's refetch fails, the metadata is forgotten
    let metadata_reads = || {
        issuer
            .urls_requested()
            .iter()
            .filter(|u| *u == metadata_path)
            .count()
    };
    for _ in 0..40 {
        if issuer.urls_requested().iter().any(|u| u == "/jwks.json") && issuer.jwks_fetches() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sts.clock.advance(1); // past the backoff: the keeper reads the metadata again
    for _ in 0..40 {
        if issuer
            .urls_requested()
            .iter()
            .any(|u| u == "/tenant/protocol/openid-connect/certs")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metadata_reads(), 2, "{:?}", issuer.urls_requested());
    assert_eq!(sts.exchange(BFF, &impersonation(&token)).await.status, 200);
}
