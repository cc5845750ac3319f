//! An upstream Keycloak (profile = "keycloak"): tokens shaped like Keycloak 26's, exchanged
//! over HTTP against the real server.
//!
//! Where the shapes come from: a Keycloak 26 realm with its default client scopes
//! (`basic`, `profile`, `email`, `roles`, `web-origins`), as its tokens decode:
//! - every token's header is serialised by Keycloak as `{"alg":"RS256","typ" : "JWT","kid" : …}`
//!   (spaces around the colons are Keycloak's own);
//! - access tokens: claim `typ` `Bearer`, `azp` = the client, often no `aud` at all,
//!   `sid`, `realm_access`, `resource_access`, `scope`, profile claims;
//! - service-account (client-credentials) access tokens: `sub` = the service-account user,
//!   `preferred_username` `service-account-<client>`, `azp` and `client_id` = the client
//!   (Keycloak before 25 wrote `clientId`), plus `clientHost`/`clientAddress`;
//! - ID tokens: claim `typ` `ID`, `aud` = `azp` = the client, `nonce`, `at_hash`, `auth_time`;
//! - refresh tokens: `HS512` (signed with a realm secret), claim `typ` `Refresh`, `aud` = the realm URL;
//! - logout tokens: claim `typ` `Logout` with an `events` member.
//!
//! Signatures are the test issuer's RSA key (kid `rs-1`); Keycloak's own kids look like
//! `K0lQRi8_05eN9_5SNHnCTs7_b1oST0_WFlTp8dj01Fg` and play no role in these checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::{Value, json};
use support::*;

const KC_HEADER: &str = r#"{"alg":"RS256","typ" : "JWT","kid" : "rs-1"}"#;
const ALICE: &str = "8befeac4-8963-49da-a9ac-f310e8d922d8";
const BFF_SERVICE_ACCOUNT: &str = "1f4db6ad-5e75-479c-b289-b8096ec1f4f4";

struct Realm<'a> {
    issuer: &'a TestIssuer,
    iss: String,
}

impl Realm<'_> {
    fn sign(&self, claims: &Value) -> String {
        self.issuer
            .sign_raw(Alg::Rs256, KC_HEADER, &claims.to_string())
    }

    fn user_access_token(&self) -> Value {
        json!({
            "exp": NOW + 300, "iat": NOW, "auth_time": NOW,
            "jti": "179a04e8-6a41-41bb-ab20-14d55a8518af",
            "iss": self.iss, "sub": ALICE, "typ": "Bearer", "azp": "bff",
            "sid": "54db1502-a5dc-4a27-af62-eeef0694a628",
            "realm_access": { "roles": ["uma_authorization"] },
            "resource_access": { "bff": { "roles": ["user"] }, "account": { "roles": ["view-profile"] } },
            "scope": "openid email web-origins profile roles orders:read",
            "email_verified": true, "preferred_username": "alice@example.org",
            "given_name": "Alice", "family_name": "Example", "email": "alice@example.org"
        })
    }

    fn service_account_token(&self) -> Value {
        json!({
            "exp": NOW + 300, "iat": NOW, "jti": "20cda5b8-8b46-4046-976d-0a477d66e919",
            "iss": self.iss, "aud": "account", "sub": BFF_SERVICE_ACCOUNT, "typ": "Bearer",
            "azp": "bff", "acr": "1",
            "realm_access": { "roles": ["offline_access", "default-roles-corp", "uma_authorization"] },
            "resource_access": { "account": { "roles": ["manage-account", "view-profile"] } },
            "scope": "email profile", "email_verified": false,
            "client_id": "bff", "clientHost": "10.0.0.7", "clientAddress": "10.0.0.7",
            "preferred_username": "service-account-bff"
        })
    }

    fn id_token(&self) -> Value {
        json!({
            "exp": NOW + 300, "iat": NOW, "auth_time": NOW - 10,
            "jti": "38a54f99-92f8-41b7-96eb-867a45465774",
            "iss": self.iss, "aud": "bff", "sub": ALICE, "typ": "ID", "azp": "bff",
            "nonce": "Dgm3-itbf_5ZSwkb-uvSYw", "session_state": "a7a51738-3e8b-4b88-9ff1-a17ed56aa87a",
            "at_hash": "JyMVmkVDihFu5cignwASQQ", "acr": "1",
            "sid": "a7a51738-3e8b-4b88-9ff1-a17ed56aa87a", "email_verified": true,
            "preferred_username": "alice@example.org"
        })
    }

    fn refresh_token_claims(&self) -> Value {
        json!({
            "exp": NOW + 1800, "iat": NOW, "jti": "ee3d3d78-6819-42ac-9eb7-136bdfca136c",
            "iss": self.iss, "aud": self.iss, "sub": ALICE, "typ": "Refresh", "azp": "bff",
            "sid": "54db1502-a5dc-4a27-af62-eeef0694a628",
            "scope": "openid email basic web-origins profile roles"
        })
    }

    fn logout_token(&self) -> Value {
        json!({
            "iat": NOW, "exp": NOW + 300, "jti": "6d4a2b7e-0c53-4b1e-9f35-ad1f2a3c4b5d",
            "iss": self.iss, "aud": "bff", "sub": ALICE, "typ": "Logout",
            "sid": "54db1502-a5dc-4a27-af62-eeef0694a628",
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} }
        })
    }
}

/// An STS trusting the realm, which (as Keycloak does) names its JWKS in its metadata.
async fn keycloak_sts(realm: &Realm<'_>) -> Sts {
    let realm_iss = realm.iss.as_str();
    realm.issuer.serve_document(
        "/realms/corp/.well-known/openid-configuration",
        json!({ "issuer": realm_iss,
                "jwks_uri": format!("{realm_iss}/protocol/openid-connect/certs") }),
    );
    Sts::builder()
        .issuer_at(
            "corp",
            realm_iss,
            "", // discovered from <issuer>/.well-known/openid-configuration
            "profile = \"keycloak\"\ntoken_types = [\"access_token\", \"id_token\"]",
        )
        // The BFF's actor tokens are its service account's (sub: that user's id).
        .client("bff", &format!("actor_sub = \"{BFF_SERVICE_ACCOUNT}\""))
        .start()
        .await
}

#[tokio::test]
async fn keycloak_access_tokens_are_exchanged() {
    let issuer = TestIssuer::start().await;
    let realm = Realm {
        issuer: &issuer,
        iss: format!("{}/realms/corp", issuer.iss),
    };
    let sts = keycloak_sts(&realm).await;
    sts.wait_ready().await;
    assert!(
        issuer
            .urls_requested()
            .iter()
            .any(|u| u == "/realms/corp/protocol/openid-connect/certs"),
        "keys fetched from the certs endpoint the realm's metadata names: {:?}",
        issuer.urls_requested()
    );

    // A user access token issued to the BFF (bound by azp; Keycloak put no aud).
    let subject = realm.sign(&realm.user_access_token());
    let mut form = impersonation(&subject);
    form.push(("scope", "orders:read"));
    let answer = sts.exchange(BFF, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = answer.claims();
    assert_eq!(
        (claims["sub"].as_str(), claims["scope"].as_str()),
        (Some(ALICE), Some("orders:read"))
    );

    // The BFF delegates with its own service-account token as actor token.
    let actor = realm.sign(&realm.service_account_token());
    let answer = sts.exchange(BFF, &delegation(&subject, &actor)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.claims()["act"],
        json!({ "sub": BFF_SERVICE_ACCOUNT })
    );

    // A user's access token issued to the BFF carries azp = bff too; it is not the BFF's
    // (rule 1: the actor token's sub is the client's actor_sub) and never acts.
    let mut bob = realm.user_access_token();
    bob["sub"] = json!("3c1e-bob");
    bob["jti"] = json!("bob-1");
    let bob = realm.sign(&bob);
    let answer = sts.exchange(BFF, &delegation(&subject, &bob)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer.body["error_description"],
        "actor_token does not belong to the client"
    );

    // An ID token issued to the BFF, declared as one (the issuer allows id_token).
    let id_token = realm.sign(&realm.id_token());
    let mut form = impersonation(&id_token);
    form[2] = ("subject_token_type", ID_TOKEN);
    let answer = sts.exchange(BFF, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn keycloak_token_kinds_are_not_confused() {
    let issuer = TestIssuer::start().await;
    let realm = Realm {
        issuer: &issuer,
        iss: format!("{}/realms/corp", issuer.iss),
    };
    let sts = keycloak_sts(&realm).await;
    let declared = |token: &str, urn: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", GRANT.to_owned()),
            ("subject_token", token.to_owned()),
            ("subject_token_type", urn.to_owned()),
        ]
    };
    let mut without_typ = realm.user_access_token();
    without_typ.as_object_mut().unwrap().remove("typ");
    // A refresh token as Keycloak signs it: HS512 with a realm secret (not ours to verify).
    let hs512_refresh = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"HS512","typ" : "JWT","kid" : "689952b1-7c65-409f-a29c-9a49d5bda4fa"}"#),
        b64_json(&realm.refresh_token_claims()),
        b64(&[7u8; 64])
    );
    type Form = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "id_token_as_access_token",
            declared(&realm.sign(&realm.id_token()), AT),
            "subject_token is invalid",
        ),
        (
            "id_token_as_jwt",
            declared(&realm.sign(&realm.id_token()), JWT),
            "subject_token is invalid",
        ),
        (
            "access_token_as_id_token",
            declared(&realm.sign(&realm.user_access_token()), ID_TOKEN),
            "subject_token is invalid",
        ),
        (
            "access_token_without_typ_claim",
            declared(&realm.sign(&without_typ), AT),
            "subject_token is invalid",
        ),
        (
            "hs512_refresh_token",
            declared(&hs512_refresh, AT),
            "subject_token is invalid",
        ),
        (
            "refresh_claims_resigned_rs256",
            declared(&realm.sign(&realm.refresh_token_claims()), AT),
            "subject_token is invalid",
        ),
        (
            "logout_token_as_jwt",
            declared(&realm.sign(&realm.logout_token()), JWT),
            "subject_token is invalid",
        ),
        (
            "refresh_token_type_declared",
            declared(
                &realm.sign(&realm.user_access_token()),
                "urn:ietf:params:oauth:token-type:refresh_token",
            ),
            "unsupported subject or actor token type",
        ),
    ];
    for (name, form, description) in cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = sts.exchange(BFF, &form).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, "invalid_request"),
            "{name}: {}",
            answer.body
        );
        assert_eq!(answer.body["error_description"], description, "{name}");
    }
}

/// The same Keycloak access token from an issuer configured without the profile: header
/// `typ` `JWT` is not an RFC 9068 access token.
#[tokio::test]
async fn without_the_profile_a_keycloak_access_token_is_not_an_access_token() {
    let issuer = TestIssuer::start().await;
    let realm = Realm {
        issuer: &issuer,
        iss: format!("{}/realms/corp", issuer.iss),
    };
    let sts = Sts::builder()
        .issuer_at("corp", &realm.iss, &issuer.jwks_uri(), "")
        .start()
        .await;
    let answer = sts
        .exchange(BFF, &impersonation(&realm.sign(&realm.user_access_token())))
        .await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "invalid_request"),
        "{}",
        answer.body
    );
}

/// An ID token is only ever presented by the client in its `aud` (OIDC Core §2): `azp`
/// naming the BFF does not bind an ID token issued to another app.
#[tokio::test]
async fn an_id_token_binds_only_to_the_client_in_its_aud() {
    let issuer = TestIssuer::start().await;
    let realm = Realm {
        issuer: &issuer,
        iss: format!("{}/realms/corp", issuer.iss),
    };
    let sts = keycloak_sts(&realm).await;
    let mut claims = realm.id_token();
    claims["aud"] = json!("other-app");
    let id_token = realm.sign(&claims);
    let mut form = impersonation(&id_token);
    form[2] = ("subject_token_type", ID_TOKEN);
    let answer = sts.exchange(BFF, &form).await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "invalid_request"),
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body["error_description"],
        "subject_token was not issued to this client or actor"
    );
    // The same claims as an access token bind by azp (RFC 9068 tokens often have no client aud).
    let mut access = realm.user_access_token();
    access["aud"] = json!("other-app");
    assert_eq!(
        sts.exchange(BFF, &impersonation(&realm.sign(&access)))
            .await
            .status,
        200
    );
}
