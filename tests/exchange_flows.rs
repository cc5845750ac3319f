//! The exchanges gleipnir exists for, end to end over HTTP: impersonation, delegation,
//! two-hop re-exchange with nested `act`, and the shape of what is issued.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn delegation_issues_an_audience_scoped_token_with_act() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read orders:write profile");
    let actor = issuer.actor_token("bff");
    let mut form = delegation(&subject, &actor);
    form.extend([("audience", "orders-api"), ("scope", "orders:read")]);
    let answer = sts.exchange(BFF, &form).await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.headers["pragma"], "no-cache");
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.body["issued_token_type"], AT);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["expires_in"], 300);
    assert_eq!(answer.body["scope"], "orders:read");

    let header = header_of(answer.token());
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let claims = answer.claims();
    assert_eq!(claims["iss"], sts.base);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["client_id"], "bff");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["nbf"], NOW);
    assert_eq!(claims["exp"], NOW + 300);
    assert_eq!(claims["act"], json!({ "sub": "bff" }));
    assert!(
        claims["jti"].as_str().unwrap().len() >= 22,
        "jti carries at least 128 bits"
    );
}

#[tokio::test]
async fn impersonation_issues_a_token_without_act() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let answer = sts.exchange(BFF, &impersonation(&subject)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = answer.claims();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "orders-api", "default audience");
    assert_eq!(
        claims["scope"], "orders:read",
        "no scope asked: subject ∩ ceiling"
    );
    assert!(claims.get("act").is_none(), "{claims}");
}

#[tokio::test]
async fn two_hop_re_exchange_nests_act_and_keeps_the_chain() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    // Hop 1: the BFF delegates alice's token to orders-api.
    let subject = issuer.user_token("alice", "bff", "orders:read orders:write");
    let actor = issuer.actor_token("bff");
    let mut form = delegation(&subject, &actor);
    form.push(("audience", "orders-api"));
    let hop1 = sts.exchange(BFF, &form).await;
    assert_eq!(hop1.status, 200, "{}", hop1.body);
    let hop1_token = hop1.token().to_owned();

    // Hop 2: orders-api exchanges that token (ours) with its own actor token.
    let actor2 = issuer.actor_token("orders-api");
    let hop2 = sts
        .exchange(ORDERS, &delegation(&hop1_token, &actor2))
        .await;
    assert_eq!(hop2.status, 200, "{}", hop2.body);
    let claims = hop2.claims();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "payments-api");
    assert_eq!(claims["client_id"], "orders-api");
    assert_eq!(
        claims["scope"], "orders:read",
        "narrowed by orders-api's ceiling"
    );
    assert_eq!(
        claims["act"],
        json!({ "sub": "orders-api", "act": { "sub": "bff" } })
    );
    assert_eq!(claims["exp"], NOW + 300, "min(now + 300, hop-1 exp)");
}

#[tokio::test]
async fn impersonation_of_a_delegated_token_carries_act_unchanged() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.sign(json!({
        "iss": issuer.iss, "sub": "alice", "aud": "bff", "exp": NOW + 600,
        "act": { "sub": "gateway", "iss": issuer.iss, "exp": NOW, "act": { "sub": "edge" } }
    }));
    let answer = sts.exchange(BFF, &impersonation(&subject)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // Same actors, same order, each with the identity it had (`iss` where the token gave
    // one, whatever `act_includes_iss` says: that applies to a new actor only); members
    // other than identity are not carried.
    assert_eq!(
        answer.claims()["act"],
        json!({ "sub": "gateway", "iss": issuer.iss, "act": { "sub": "edge" } })
    );
}

#[tokio::test]
async fn a_prior_actors_iss_survives_a_hop_that_does_not_record_iss() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    // The BFF (default act_includes_iss = false) delegates a token whose chain recorded
    // the realm of its actor.
    let subject = issuer.sign(json!({
        "iss": issuer.iss, "sub": "alice", "aud": "bff", "exp": NOW + 600,
        "act": { "sub": "gateway", "iss": "https://idp.example/realms/partners" }
    }));
    let actor = issuer.actor_token("bff");
    let answer = sts.exchange(BFF, &delegation(&subject, &actor)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.claims()["act"],
        json!({ "sub": "bff", "act": { "sub": "gateway", "iss": "https://idp.example/realms/partners" } }),
        "the new actor without iss (not configured), the prior one as recorded"
    );
}

#[tokio::test]
async fn act_carries_iss_when_the_policy_says_so() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .policy(&format!(
            "[defaults]\nact_includes_iss = true\n{DEFAULT_POLICY}"
        ))
        .start()
        .await;
    let subject = issuer.user_token("alice", "bff", "");
    let actor = issuer.actor_token("bff");
    let answer = sts.exchange(BFF, &delegation(&subject, &actor)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.claims()["act"],
        json!({ "sub": "bff", "iss": issuer.iss })
    );
}

#[tokio::test]
async fn every_issuer_algorithm_is_accepted_as_subject() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    for alg in [Alg::Es256, Alg::Rs256, Alg::Ps256, Alg::EdDsa] {
        let subject = issuer.sign_as(alg, issuer.user_claims("alice", "bff", "orders:read"));
        let answer = sts.exchange(BFF, &impersonation(&subject)).await;
        assert_eq!(answer.status, 200, "{alg:?}: {}", answer.body);
    }
}

#[tokio::test]
async fn requested_jwt_type_is_typed_jwt_and_re_exchangeable() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let actor = issuer.actor_token("bff");
    let mut form = delegation(&subject, &actor);
    form.push(("requested_token_type", JWT));
    let answer = sts.exchange(BFF, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["issued_token_type"], JWT);
    assert_eq!(header_of(answer.token())["typ"], "JWT");

    // Our JWT-typed token comes back as a subject declared as jwt.
    let actor2 = issuer.actor_token("orders-api");
    let token = answer.token().to_owned();
    let mut form = delegation(&token, &actor2);
    form[2] = ("subject_token_type", JWT);
    let again = sts.exchange(ORDERS, &form).await;
    assert_eq!(again.status, 200, "{}", again.body);
}

#[tokio::test]
async fn resource_and_client_secret_post_are_accepted() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let form = [
        ("grant_type", GRANT),
        ("subject_token", subject.as_str()),
        ("subject_token_type", AT),
        ("resource", "https://orders.example/api"),
        ("client_id", BFF.0),
        ("client_secret", BFF.1),
    ];
    let request = sts
        .http
        .post(sts.token_url())
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body(encode_form(&form));
    let answer = sts.post(request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.claims()["aud"], "https://orders.example/api");
}

#[tokio::test]
async fn issued_tokens_verify_with_jsonwebtoken_against_our_jwks() {
    for alg in ["ES256", "EdDSA"] {
        let issuer = TestIssuer::start().await;
        let sts = Sts::builder()
            .issuer("corp", &issuer, "")
            .signing_alg(alg)
            .start()
            .await;
        let subject = issuer.user_token("alice", "bff", "orders:read");
        let answer = sts.exchange(BFF, &impersonation(&subject)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);

        let (status, jwks) = sts.get_json("/.well-known/jwks.json").await;
        assert_eq!(status, 200);
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
        let header = jsonwebtoken::decode_header(answer.token()).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let jwk = set
            .find(header.kid.as_deref().unwrap())
            .expect("kid published");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&["orders-api"]);
        validation.set_issuer(&[sts.base.as_str()]);
        // Our tokens live in 2030 (the tests' fixed clock): check exp ourselves.
        validation.validate_exp = false;
        let data =
            jsonwebtoken::decode::<serde_json::Value>(answer.token(), &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(format!("{:?}", header.alg), alg);
    }
}

#[tokio::test]
async fn subject_token_signed_by_jsonwebtoken_is_accepted() {
    // A token produced by an independent JOSE library, not by our test signer.
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let pkcs8 = gleipnir::keys::generate_pkcs8(gleipnir::jose::JwsAlgorithm::Es256).unwrap();
    let signer =
        gleipnir::keys::SigningKey::from_pkcs8(gleipnir::jose::JwsAlgorithm::Es256, &pkcs8)
            .unwrap();
    let mut jwk = signer.public_jwk().clone();
    jwk["kid"] = json!("jsonwebtoken-1");
    let mut jwks = issuer.default_jwks();
    jwks["keys"].as_array_mut().unwrap().push(jwk);
    issuer.set_jwks(jwks);

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("jsonwebtoken-1".into());
    header.typ = Some("at+jwt".into());
    let key = jsonwebtoken::EncodingKey::from_ec_der(&pkcs8);
    let subject = jsonwebtoken::encode(
        &header,
        &issuer.user_claims("alice", "bff", "orders:read"),
        &key,
    )
    .unwrap();
    let answer = sts.exchange(BFF, &impersonation(&subject)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn well_known_documents() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let (status, meta) = sts
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(status, 200);
    assert_eq!(meta["issuer"], sts.base);
    assert_eq!(meta["token_endpoint"], format!("{}/token", sts.base));
    assert_eq!(
        meta["jwks_uri"],
        format!("{}/.well-known/jwks.json", sts.base)
    );
    assert_eq!(meta["grant_types_supported"], json!([GRANT]));
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );

    let (status, jwks) = sts.get_json("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    // Both documents may be cached for 5 minutes (a single key file never changes them
    // without a restart); tokens never are.
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ] {
        let answer = sts.get(path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(
            answer.headers["cache-control"], "public, max-age=300",
            "{path}"
        );
    }
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(key.get("d").is_none(), "no private member published");
}

#[tokio::test]
async fn readiness_follows_the_upstream_jwks_and_shutdown_drains() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    assert!(issuer.jwks_fetches() >= 1);
    let live = sts
        .http
        .get(format!("{}/livez", sts.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let base = sts.base.clone();
    sts.shutdown().await;
    assert!(
        reqwest::get(format!("{base}/livez")).await.is_err(),
        "listener closed"
    );
}
