//! gleipnir in front of a real Keycloak (the pinned version of `scripts/keycloak`), run
//! with the worked example of deploy/README.md ("In front of Keycloak"): the realm of
//! `deploy/keycloak/realm-corp.json`, imported through the admin REST API, and gleipnir
//! on `deploy/keycloak/gleipnir.toml` and its policies, as they are but for the loopback
//! addresses of this run. Tokens are Keycloak's own (direct grant, client credentials).
//!
//! One Keycloak serves every test of this binary: the first test to need it starts it
//! (`scripts/keycloak run`, `start-dev` with the in-memory database on a free port) and
//! the others wait for it. It is stopped when this process ends, however it ends: the
//! script stops it when its standard input, held open by this process, closes.
//!
//! Without a JDK 21+ or the distribution (`scripts/keycloak fetch`) the tests say
//! SKIPPED, unless `GLEIPNIR_REQUIRE_INTEROP=1` (set by `.ci/run`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gleipnir::clock::Clock;
use serde_json::{Value, json};
use support::*;

/// Where the documented example lives.
fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/keycloak")
}

/// The addresses the documented files name, replaced by this run's.
const DOC_KEYCLOAK: &str = "http://127.0.0.1:8180";
const DOC_GLEIPNIR: &str = "http://127.0.0.1:8080";

/// The client secrets at gleipnir, as deploy/README.md writes them into `secrets/`.
const BFF_AT_STS: (&str, &str) = ("bff", "bff-gleipnir-secret");
const ORDERS_AT_STS: (&str, &str) = ("orders-api", "orders-api-gleipnir-secret");
const PORTAL_AT_STS: (&str, &str) = ("portal", "portal-gleipnir-secret");
const SECRETS: &[(&str, &str)] = &[
    ("bff", "bff-gleipnir-secret"),
    ("orders-api", "orders-api-gleipnir-secret"),
    ("portal", "portal-gleipnir-secret"),
    ("keycloak-introspection", "gleipnir-keycloak-secret"),
];

/// Clients and users of realm-corp.json.
const BFF_AT_KC: (&str, &str) = ("bff", "bff-keycloak-secret");
const ORDERS_AT_KC: (&str, &str) = ("orders-api", "orders-api-keycloak-secret");
const PORTAL_AT_KC: (&str, &str) = ("portal", "portal-keycloak-secret");
const ALICE: (&str, &str) = ("alice", "alice-password");
const BOB: (&str, &str) = ("bob", "bob-password");
const ALICE_ID: &str = "8befeac4-8963-49da-a9ac-f310e8d922d8";
const BOB_ID: &str = "3c1e5d2a-7b9f-4e61-a0d4-6f8e2b1c9d07";
const BFF_SERVICE_ACCOUNT: &str = "5f2c6a0e-5b1f-4c4e-9a57-0d8f1c2b3a4d";
const ORDERS_SERVICE_ACCOUNT: &str = "9d1e7b3c-2a4f-4b8e-8c6d-3f5a1e0b7c92";

/// How long Keycloak may take to start (its first start also builds it; a busy 2-core
/// machine has taken four minutes).
const START_TIMEOUT: Duration = Duration::from_secs(600);

/// The running Keycloak: its base URL. Its process lives as long as this test binary.
#[derive(Clone)]
struct Keycloak {
    base: String,
}

/// The script's standard input: open while this process lives.
static KEEPALIVE: Mutex<Option<ChildStdin>> = Mutex::new(None);
static KEYCLOAK: tokio::sync::OnceCell<Result<Keycloak, String>> =
    tokio::sync::OnceCell::const_new();

/// The shared Keycloak, started on first use; `None` (after `support::skip`) when Java
/// 21+ or the distribution is missing.
async fn keycloak(test: &str) -> Option<Keycloak> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new(repo.join("scripts/keycloak"))
        .arg("status")
        .output()
        .expect("scripts/keycloak runs");
    if !status.status.success() {
        let missing = String::from_utf8_lossy(&status.stdout).trim().to_owned();
        skip(
            test,
            &missing,
            "run `scripts/keycloak fetch` (needs Maven and a JDK 21 or later)",
        );
        return None;
    }
    let started = KEYCLOAK.get_or_init(start_keycloak).await;
    match started {
        Ok(kc) => Some(kc.clone()),
        Err(e) => panic!("{test}: Keycloak did not start: {e}"),
    }
}

async fn start_keycloak() -> Result<Keycloak, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let log = std::env::temp_dir().join(format!("gleipnir-keycloak-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut child = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/keycloak"))
        .args([
            "run",
            "--http-host=127.0.0.1",
            &format!("--http-port={port}"),
        ])
        .env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
        .env("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin")
        .stdin(Stdio::piped())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| e.to_string())?;
    *KEEPALIVE.lock().unwrap() = child.stdin.take();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let began = Instant::now();
    loop {
        let ready = http
            .get(format!(
                "{base}/realms/master/.well-known/openid-configuration"
            ))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        let tail = || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        if let Ok(Some(exit)) = child.try_wait() {
            return Err(format!("exited with {exit}:\n{}", tail()));
        }
        if began.elapsed() > START_TIMEOUT {
            return Err(format!("not ready after {START_TIMEOUT:?}:\n{}", tail()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Printed where `cargo test -- --nocapture` and CI logs show it.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "keycloak: ready in {:.1} s on {base}",
        began.elapsed().as_secs_f64()
    );
    let kc = Keycloak { base };
    let realm: Value = serde_json::from_str(
        &std::fs::read_to_string(example_dir().join("realm-corp.json")).unwrap(),
    )
    .unwrap();
    kc.create_realm(&realm).await?;
    kc.create_realm(&other_realm()).await?;
    Ok(kc)
}

/// A second realm with a client and a user of the same names as corp's.
fn other_realm() -> Value {
    json!({
        "realm": "partners", "enabled": true,
        "clients": [{ "clientId": "bff", "publicClient": false, "secret": "bff-partners-secret",
                      "directAccessGrantsEnabled": true, "standardFlowEnabled": false }],
        "users": [{ "username": "alice", "enabled": true, "email": "alice@partners.example",
                    "firstName": "Alice", "lastName": "Partner", "emailVerified": true,
                    "credentials": [{ "type": "password", "value": "alice-password", "temporary": false }] }]
    })
}

impl Keycloak {
    fn realm(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.base)
    }

    async fn admin_token(&self) -> String {
        let answer = post_form(
            &format!("{}/protocol/openid-connect/token", self.realm("master")),
            None,
            &[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", "admin"),
                ("password", "admin"),
            ],
        )
        .await;
        answer["access_token"].as_str().unwrap().to_owned()
    }

    /// An admin REST call: status and JSON body (Null when none).
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}/admin/realms{path}", self.base))
            .bearer_auth(self.admin_token().await);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create_realm(&self, realm: &Value) -> Result<(), String> {
        match self.admin(reqwest::Method::POST, "", Some(realm)).await {
            (201, _) => Ok(()),
            (status, body) => Err(format!(
                "creating realm {}: {status} {body}",
                realm["realm"]
            )),
        }
    }

    /// A user's tokens by direct grant (Resource Owner Password Credentials) at `client`.
    async fn login(
        &self,
        realm: &str,
        client: (&str, &str),
        user: (&str, &str),
        scope: &str,
    ) -> Value {
        let answer = post_form(
            &format!("{}/protocol/openid-connect/token", self.realm(realm)),
            Some(client),
            &[
                ("grant_type", "password"),
                ("username", user.0),
                ("password", user.1),
                ("scope", scope),
            ],
        )
        .await;
        assert!(answer["access_token"].is_string(), "login: {answer}");
        answer
    }

    /// A client's own (service-account) access token, by client credentials.
    async fn service_token(&self, client: (&str, &str)) -> String {
        let answer = post_form(
            &format!("{}/protocol/openid-connect/token", self.realm("corp")),
            Some(client),
            &[("grant_type", "client_credentials")],
        )
        .await;
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("client credentials: {answer}"))
            .to_owned()
    }

    /// Ends the session of these tokens as the BFF does when its user logs out (OpenID
    /// Connect RP-initiated logout with the refresh token, by the client).
    async fn logout(&self, client: (&str, &str), tokens: &Value) {
        let response = reqwest::Client::new()
            .post(format!(
                "{}/protocol/openid-connect/logout",
                self.realm("corp")
            ))
            .basic_auth(client.0, Some(client.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(&[(
                "refresh_token",
                tokens["refresh_token"].as_str().unwrap(),
            )]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 204, "logout");
    }
}

/// POSTs a form, with Basic client authentication when given; the JSON answer.
async fn post_form(url: &str, client: Option<(&str, &str)>, form: &[(&str, &str)]) -> Value {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(form));
    if let Some((id, secret)) = client {
        request = request.basic_auth(id, Some(secret));
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON from {url}: {text}"))
}

/// gleipnir on the documented files, trusting `kc`'s realm, with the secrets and the
/// signing key deploy/README.md has the operator create. The clock is the wall clock's
/// now (Keycloak's tokens live in real time), and moves only when a test moves it.
async fn gleipnir(kc: &Keycloak) -> Sts {
    gleipnir_with(kc, |text| text).await
}

/// [`gleipnir`] with the documented configuration changed by `edit` (after the addresses).
async fn gleipnir_with(kc: &Keycloak, edit: impl FnOnce(String) -> String) -> Sts {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &example_dir().join("policies"),
        &dir.path().join("policies"),
    );
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    for (name, secret) in SECRETS {
        std::fs::write(dir.path().join("secrets").join(name), secret).unwrap();
    }
    let pem = gleipnir::keys::pkcs8_to_pem(
        &gleipnir::keys::generate_pkcs8(gleipnir::jose::JwsAlgorithm::Es256).unwrap(),
    );
    std::fs::write(dir.path().join("signing.pem"), pem.as_bytes()).unwrap();
    let documented = std::fs::read_to_string(example_dir().join("gleipnir.toml")).unwrap();
    assert!(documented.contains(DOC_KEYCLOAK) && documented.contains(DOC_GLEIPNIR));
    let sts = Sts::start_from_file(dir, Clock::System.now(), |base| {
        edit(
            documented
                .replace(DOC_KEYCLOAK, &kc.base)
                .replace(DOC_GLEIPNIR, base),
        )
    })
    .await;
    sts.wait_ready().await;
    sts
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A refusal: status, `error`, and the audit record's `stage/reason`.
fn assert_refused(answer: &Answer, error: &str, reason: &str, case: &str) {
    assert_eq!(
        (answer.status, answer.error()),
        (400, error),
        "{case}: {}",
        answer.body
    );
    let id = answer.request_id().unwrap();
    assert_eq!(
        support::audit::refusal(id).as_deref(),
        Some(reason),
        "{case}: audit record"
    );
}

fn access_token(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

#[tokio::test]
async fn a_user_token_and_the_bffs_service_account_token_make_a_delegation() {
    let Some(kc) =
        keycloak("a_user_token_and_the_bffs_service_account_token_make_a_delegation").await
    else {
        return;
    };
    let _keys = REALM_KEYS.read().await;
    support::audit::capture();
    let sts = gleipnir(&kc).await;
    let alice = kc
        .login("corp", BFF_AT_KC, ALICE, "openid orders:read orders:write")
        .await;
    let actor = kc.service_token(BFF_AT_KC).await;
    assert_eq!(claims_of(&actor)["sub"], BFF_SERVICE_ACCOUNT);

    let mut form = delegation(access_token(&alice), &actor);
    form.push(("scope", "orders:read"));
    let answer = sts.exchange(BFF_AT_STS, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = answer.claims();
    assert_eq!(claims["sub"], ALICE_ID);
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["client_id"], "bff");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["act"], json!({ "sub": BFF_SERVICE_ACCOUNT }));
    assert_eq!(header_of(answer.token())["typ"], "at+jwt");
    assert!(
        claims["exp"].as_u64().unwrap() <= claims_of(access_token(&alice))["exp"].as_u64().unwrap()
    );

    // orders-api re-exchanges it for payments-api with its own service account: the chain
    // nests.
    let orders_actor = kc.service_token(ORDERS_AT_KC).await;
    let hop2 = sts
        .exchange(ORDERS_AT_STS, &delegation(answer.token(), &orders_actor))
        .await;
    assert_eq!(hop2.status, 200, "{}", hop2.body);
    let claims = hop2.claims();
    assert_eq!(claims["sub"], ALICE_ID);
    assert_eq!(claims["aud"], "payments-api");
    assert_eq!(
        claims["act"],
        json!({ "sub": ORDERS_SERVICE_ACCOUNT, "act": { "sub": BFF_SERVICE_ACCOUNT } })
    );

    // A scope alice's token does not carry is never granted.
    let mut form = delegation(access_token(&alice), &actor);
    form.push(("scope", "orders:read orders:admin"));
    let answer = sts.exchange(BFF_AT_STS, &form).await;
    assert_refused(
        &answer,
        "invalid_scope",
        "policy/scope_not_granted",
        "wider scope",
    );
}

/// Held for reading by every test that uses the realm's signing keys, for writing by the
/// key-rotation test, which removes the key the others' tokens may be signed with.
static REALM_KEYS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[tokio::test]
async fn real_tokens_that_must_not_be_exchanged_are_refused() {
    let Some(kc) = keycloak("real_tokens_that_must_not_be_exchanged_are_refused").await else {
        return;
    };
    let _keys = REALM_KEYS.read().await;
    support::audit::capture();
    let sts = gleipnir(&kc).await;
    let alice = kc
        .login("corp", BFF_AT_KC, ALICE, "openid orders:read")
        .await;
    let actor = kc.service_token(BFF_AT_KC).await;
    let declared = |token: &str, urn: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", GRANT.to_owned()),
            ("subject_token", token.to_owned()),
            ("subject_token_type", urn.to_owned()),
            ("actor_token", actor.clone()),
            ("actor_token_type", AT.to_owned()),
        ]
    };

    // Bob's own access token, issued to the BFF (azp = bff, aud names gleipnir), presented
    // as the BFF's actor token: it is bob's, not the BFF's.
    let bob = kc.login("corp", BFF_AT_KC, BOB, "openid").await;
    assert_eq!(claims_of(access_token(&bob))["azp"], "bff");
    assert_eq!(claims_of(access_token(&bob))["sub"], BOB_ID);
    let answer = sts
        .exchange(
            BFF_AT_STS,
            &delegation(access_token(&alice), access_token(&bob)),
        )
        .await;
    assert_refused(
        &answer,
        "invalid_request",
        "policy/actor_not_bound_to_client",
        "bob's token as actor",
    );

    // alice of another realm of the same Keycloak: same user name, client id and host.
    let partner = kc
        .login("partners", ("bff", "bff-partners-secret"), ALICE, "openid")
        .await;
    type Form = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Form, &str)> = vec![
        (
            "another realm's token",
            declared(access_token(&partner), AT),
            "subject_token/unknown_issuer",
        ),
        (
            "an ID token declared as an access token",
            declared(alice["id_token"].as_str().unwrap(), AT),
            "subject_token/typ_mismatch",
        ),
        (
            // Keycloak signs refresh tokens with a realm secret (HS512): never ours to verify.
            "a refresh token declared as an access token",
            declared(alice["refresh_token"].as_str().unwrap(), AT),
            "subject_token/unsupported_algorithm",
        ),
        (
            "a refresh token declared as one",
            declared(
                alice["refresh_token"].as_str().unwrap(),
                "urn:ietf:params:oauth:token-type:refresh_token",
            ),
            "request/unsupported_token_type",
        ),
    ];
    for (case, form, reason) in cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = sts.exchange(BFF_AT_STS, &form).await;
        assert_refused(&answer, "invalid_request", reason, case);
    }

    // The same pair as above, well-formed, is granted: the refusals are for what each
    // token is.
    let answer = sts
        .exchange(BFF_AT_STS, &delegation(access_token(&alice), &actor))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn an_expired_keycloak_token_is_refused() {
    let Some(kc) = keycloak("an_expired_keycloak_token_is_refused").await else {
        return;
    };
    let _keys = REALM_KEYS.read().await;
    support::audit::capture();
    let sts = gleipnir(&kc).await;
    let alice = kc.login("corp", BFF_AT_KC, ALICE, "openid").await;
    let actor = kc.service_token(BFF_AT_KC).await;
    let claims = claims_of(access_token(&alice));
    // The realm's access tokens live 300 s; ours is past that and the 30 s leeway.
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    sts.clock.advance(331);
    let answer = sts
        .exchange(BFF_AT_STS, &delegation(access_token(&alice), &actor))
        .await;
    assert_refused(
        &answer,
        "invalid_request",
        "subject_token/expired",
        "expired subject",
    );
}

#[tokio::test]
async fn a_token_whose_session_was_logged_out_is_refused() {
    let Some(kc) = keycloak("a_token_whose_session_was_logged_out_is_refused").await else {
        return;
    };
    let _keys = REALM_KEYS.read().await;
    support::audit::capture();
    let sts = gleipnir(&kc).await;
    let alice = kc.login("corp", BFF_AT_KC, ALICE, "openid").await;
    let actor = kc.service_token(BFF_AT_KC).await;
    let form = delegation(access_token(&alice), &actor);
    let answer = sts.exchange(BFF_AT_STS, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // alice logs out of the BFF. Her access token's signature is as good as before; the
    // realm's introspection says it is no longer active, once the cached answer (10 s,
    // `cache_seconds`) is out of date.
    kc.logout(BFF_AT_KC, &alice).await;
    sts.clock.advance(11);
    let answer = sts.exchange(BFF_AT_STS, &form).await;
    assert_refused(
        &answer,
        "invalid_request",
        "subject_token/inactive",
        "logged-out session",
    );
}

#[tokio::test]
async fn lightweight_access_tokens_are_read_by_introspection() {
    let Some(kc) = keycloak("lightweight_access_tokens_are_read_by_introspection").await else {
        return;
    };
    let _keys = REALM_KEYS.read().await;
    support::audit::capture();
    let sts = gleipnir(&kc).await;
    let alice = kc.login("corp", PORTAL_AT_KC, ALICE, "orders:read").await;
    let token = access_token(&alice);
    // Keycloak's lightweight access token: no sub, no profile claims, in the JWT.
    let jwt = claims_of(token);
    assert!(jwt.get("sub").is_none(), "{jwt}");
    assert_eq!(jwt["azp"], "portal");
    let calls = |sts: &Sts| {
        let admin = sts.admin.clone();
        async move {
            metric_value(
                &admin,
                "gleipnir_introspection_calls_total{issuer=\"corp\"}",
            )
            .await
            .unwrap_or(0.0)
        }
    };
    let before = calls(&sts).await;
    let answer = sts.exchange(PORTAL_AT_STS, &impersonation(token)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let claims = answer.claims();
    assert_eq!(claims["sub"], ALICE_ID);
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["scope"], "orders:read");
    assert!(claims.get("act").is_none());
    assert_eq!(calls(&sts).await, before + 1.0);

    // Without introspection of its JWTs the same issuer has only the JWT's claims, which
    // name no subject.
    let signature_only = gleipnir_with(&kc, |text| {
        assert!(text.contains("check_jwts = true"));
        text.replace("check_jwts = true", "check_jwts = false")
    })
    .await;
    let answer = signature_only
        .exchange(PORTAL_AT_STS, &impersonation(token))
        .await;
    assert_refused(
        &answer,
        "invalid_request",
        "subject_token/missing_claim",
        "lightweight token without introspection",
    );
}

#[tokio::test]
async fn the_jwks_is_discovered_and_encryption_keys_are_ignored() {
    let Some(kc) = keycloak("the_jwks_is_discovered_and_encryption_keys_are_ignored").await else {
        return;
    };
    let _keys = REALM_KEYS.read().await;
    let documented = std::fs::read_to_string(example_dir().join("gleipnir.toml")).unwrap();
    assert!(
        !documented.lines().any(|l| l.starts_with("jwks_uri")),
        "the example leaves the JWKS to discovery"
    );
    let sts = gleipnir(&kc).await;
    // The realm publishes a signing key and an encryption key, each with its certificate.
    let jwks: Value = serde_json::from_str(
        &reqwest::get(format!(
            "{}/protocol/openid-connect/certs",
            kc.realm("corp")
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap(),
    )
    .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let uses: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k["use"].as_str().unwrap(), k["alg"].as_str().unwrap()))
        .collect();
    assert!(uses.contains(&("sig", "RS256")), "{uses:?}");
    assert!(uses.contains(&("enc", "RSA-OAEP")), "{uses:?}");
    assert!(keys.iter().all(|k| k["x5c"].is_array()));
    // gleipnir holds the signing keys only.
    let signing = uses.iter().filter(|(u, _)| *u == "sig").count() as f64;
    assert_eq!(
        metric_value(&sts.admin, "gleipnir_jwks_keys{issuer=\"corp\"}").await,
        Some(signing)
    );
    let alice = kc.login("corp", BFF_AT_KC, ALICE, "openid").await;
    let actor = kc.service_token(BFF_AT_KC).await;
    let answer = sts
        .exchange(BFF_AT_STS, &delegation(access_token(&alice), &actor))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
async fn realm_key_rotation_needs_no_restart() {
    let Some(kc) = keycloak("realm_key_rotation_needs_no_restart").await else {
        return;
    };
    let _keys = REALM_KEYS.write().await;
    support::audit::capture();
    let sts = gleipnir(&kc).await;
    let exchange = |subject: String, actor: String| {
        let sts = &sts;
        async move {
            sts.exchange(BFF_AT_STS, &delegation(&subject, &actor))
                .await
        }
    };
    let old_actor = kc.service_token(BFF_AT_KC).await;
    let old = access_token(&kc.login("corp", BFF_AT_KC, ALICE, "openid").await).to_owned();
    let old_kid = header_of(&old)["kid"].as_str().unwrap().to_owned();
    assert_eq!(exchange(old.clone(), old_actor.clone()).await.status, 200);

    // A new RS256 key, active and of a higher priority: Keycloak signs with it from now on.
    let old_key = kc.signing_key_component(&old_kid).await;
    let (_, realm) = kc.admin(reqwest::Method::GET, "/corp", None).await;
    let (status, _) = kc
        .admin(
            reqwest::Method::POST,
            "/corp/components",
            Some(&json!({
                "name": "rsa-rotated", "providerId": "rsa-generated",
                "providerType": "org.keycloak.keys.KeyProvider", "parentId": realm["id"],
                "config": { "priority": ["200"], "enabled": ["true"], "active": ["true"],
                            "keySize": ["2048"], "algorithm": ["RS256"] }
            })),
        )
        .await;
    assert_eq!(status, 201);
    let new = access_token(&kc.login("corp", BFF_AT_KC, ALICE, "openid").await).to_owned();
    assert_ne!(header_of(&new)["kid"], old_kid.as_str());
    let new_actor = kc.service_token(BFF_AT_KC).await;
    let answer = exchange(new.clone(), new_actor.clone()).await;
    assert_eq!(answer.status, 200, "a new key's token: {}", answer.body);

    // The old key passive: it signs no more, its tokens still verify.
    let mut passive = old_key.clone();
    passive["config"]["active"] = json!(["false"]);
    let path = format!("/corp/components/{}", old_key["id"].as_str().unwrap());
    let (status, _) = kc.admin(reqwest::Method::PUT, &path, Some(&passive)).await;
    assert_eq!(status, 204);
    assert_eq!(exchange(old.clone(), old_actor.clone()).await.status, 200);

    // The old key removed: once gleipnir's keys are due for a refresh (Keycloak's JWKS
    // says `no-cache`: a minute), the old key's tokens (the BFF's old actor token too) are
    // refused as signed by a key the realm does not publish; the new key's are exchanged.
    let (status, _) = kc.admin(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    // Keys fetched at or after the moved clock are the realm's keys after the removal.
    sts.clock.advance(61);
    let due = sts.clock.now();
    let fetched_at = "gleipnir_jwks_fetched_timestamp_seconds{issuer=\"corp\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_value(&sts.admin, fetched_at).await.unwrap() < due as f64 {
        assert!(Instant::now() < deadline, "no JWKS refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = exchange(old, new_actor.clone()).await;
    assert_refused(
        &answer,
        "invalid_request",
        "subject_token/unknown_kid",
        "token of the removed key",
    );
    let answer = exchange(new, new_actor.clone()).await;
    assert_eq!(
        answer.status,
        200,
        "{} {:?}",
        answer.body,
        support::audit::refusal(answer.request_id().unwrap())
    );
    let newest = access_token(&kc.login("corp", BFF_AT_KC, ALICE, "openid").await).to_owned();
    assert_eq!(exchange(newest, new_actor).await.status, 200);
}

impl Keycloak {
    /// The realm's key provider component holding the key `kid`.
    async fn signing_key_component(&self, kid: &str) -> Value {
        let (_, keys) = self.admin(reqwest::Method::GET, "/corp/keys", None).await;
        let provider = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("no key {kid}: {keys}"))["providerId"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, component) = self
            .admin(
                reqwest::Method::GET,
                &format!("/corp/components/{provider}"),
                None,
            )
            .await;
        component
    }
}
