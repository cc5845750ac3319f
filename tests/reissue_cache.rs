//! The re-issue cache on the real server: an exchange whose inputs are byte for byte
//! those of an earlier grant gets the earlier token back, audited as `cached`; any
//! differing input, a policy reload, a signing-key change, a lifetime running out or an
//! input token's bound ends that.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::forms::{Edit, Form, del, imp};
use support::*;

/// bff may delegate and impersonate, with two audiences and resources, jwt-typed tokens;
/// mallory has the same rule (both are named by the shared subject token's `aud`).
fn policy(extra: &str) -> String {
    let rule = r#"
impersonate = true
delegate = true
subject_issuers = ["corp"]
actor_issuers = ["corp"]
subject_token_types = ["access_token", "jwt"]
actor_token_types = ["access_token", "jwt"]
audiences = ["orders-api", "inventory-api"]
resources = ["https://orders.example/api"]
max_audiences = 2
default_audience = "orders-api"
scopes = ["orders:read", "orders:write"]
ttl_seconds = 300
"#;
    format!("[clients.bff]\n{rule}{extra}\n[clients.mallory]\n{rule}")
}

fn builder(issuer: &TestIssuer) -> StsBuilder<'_> {
    Sts::builder()
        .issuer("corp", issuer, "token_types = [\"access_token\", \"jwt\"]")
        .policy(&policy(""))
}

/// How a request authenticates its client.
#[derive(Clone, Copy)]
enum Auth {
    Basic((&'static str, &'static str)),
    Post((&'static str, &'static str)),
}

async fn send(sts: &Sts, auth: Auth, form: &Form) -> Answer {
    let mut pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let request = sts
        .http
        .post(sts.token_url())
        .header("content-type", "application/x-www-form-urlencoded");
    let request = match auth {
        Auth::Basic((id, secret)) => request.basic_auth(id, Some(secret)),
        Auth::Post((id, secret)) => {
            pairs.push(("client_id", id));
            pairs.push(("client_secret", secret));
            request
        }
    };
    sts.post(request.body(encode_form(&pairs))).await
}

/// Whether the answer's audit record says it came from the cache.
fn cached(answer: &Answer) -> bool {
    let record = audit::record(answer.request_id().unwrap()).expect("audited");
    assert_eq!(record["decision"], "granted", "{record}");
    record["cached"].as_bool().expect("cached is a boolean")
}

/// A granted answer's token, and whether it was served from the cache.
async fn granted(sts: &Sts, auth: Auth, form: &Form) -> (String, bool) {
    let answer = send(sts, auth, form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    (answer.token().to_owned(), cached(&answer))
}

async fn metric(sts: &Sts, name: &str) -> f64 {
    metric_value(&sts.admin, name).await.unwrap_or(0.0)
}

#[tokio::test]
async fn an_identical_exchange_gets_the_same_token_audited_and_counted() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = builder(&issuer).start().await;
    let form = del(
        &issuer.user_token("alice", "bff", "orders:read"),
        &issuer.actor_token("bff"),
    )
    .with("audience", "orders-api");

    let first = send(&sts, Auth::Basic(BFF), &form).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!cached(&first));
    sts.clock.advance(10);
    let second = send(&sts, Auth::Basic(BFF), &form).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        second.token(),
        first.token(),
        "the same token, handed out again"
    );
    assert!(cached(&second), "the hit is audited as cached");
    assert_eq!(
        (
            first.body["expires_in"].as_u64(),
            second.body["expires_in"].as_u64()
        ),
        (Some(300), Some(290)),
        "expires_in counts down"
    );
    assert_eq!(second.headers["cache-control"], "no-store");
    let record = audit::record(second.request_id().unwrap()).unwrap();
    assert_eq!(record["jti"], first.claims()["jti"]);
    assert_eq!(record["client_id"], "bff");
    assert_eq!(record["actor_chain"], "[\"bff\"]");

    let hit = "gleipnir_reissue_cache_lookups_total{result=\"hit\"}";
    let miss = "gleipnir_reissue_cache_lookups_total{result=\"miss\"}";
    assert_eq!(metric(&sts, hit).await, 1.0);
    assert_eq!(metric(&sts, miss).await, 1.0);
    assert_eq!(
        metric(
            &sts,
            "gleipnir_exchanges_total{result=\"granted\",client_id=\"bff\"}"
        )
        .await,
        2.0,
        "a hit is a granted exchange"
    );
    // Sizes are moka's, updated lazily: present, not exact.
    assert!(
        metric_line(&sts.admin, "gleipnir_reissue_cache_bytes ")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_difference_in_any_input_misses() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = builder(&issuer).start().await;
    // One subject token both clients may use; re-signing the same claims gives other
    // bytes (ES256 signatures are randomised): same claims, different input.
    let mut claims = issuer.user_claims("alice", "bff", "orders:read orders:write");
    claims["aud"] = json!(["bff", "mallory"]);
    let subject = issuer.sign(claims.clone());
    let subject_again = issuer.sign(claims);
    assert_ne!(subject, subject_again);
    let actor = issuer.actor_token("bff");
    let actor_again = issuer.actor_token("bff");
    assert_ne!(actor, actor_again);

    let base = del(&subject, &actor)
        .with("audience", "orders-api")
        .with("scope", "orders:read");
    let basic = Auth::Basic(BFF);
    let (base_token, was_cached) = granted(&sts, basic, &base).await;
    assert!(!was_cached);
    assert_eq!(
        granted(&sts, basic, &base).await,
        (base_token.clone(), true)
    );

    let rows: Vec<(&str, Auth, Form)> = vec![
        (
            "client authentication method",
            Auth::Post(BFF),
            base.clone(),
        ),
        (
            "subject token bytes",
            basic,
            base.clone().set("subject_token", &subject_again),
        ),
        (
            "subject token type",
            basic,
            base.clone().set("subject_token_type", JWT),
        ),
        (
            "actor token bytes",
            basic,
            base.clone().set("actor_token", &actor_again),
        ),
        (
            "actor token type",
            basic,
            base.clone().set("actor_token_type", JWT),
        ),
        (
            "no actor token",
            basic,
            base.clone()
                .without("actor_token")
                .without("actor_token_type"),
        ),
        (
            "audience",
            basic,
            base.clone().set("audience", "inventory-api"),
        ),
        (
            "a second audience",
            basic,
            base.clone().with("audience", "inventory-api"),
        ),
        (
            "audiences in another order",
            basic,
            base.clone()
                .set("audience", "inventory-api")
                .with("audience", "orders-api"),
        ),
        (
            "a resource",
            basic,
            base.clone().with("resource", "https://orders.example/api"),
        ),
        ("scope", basic, base.clone().set("scope", "orders:write")),
        (
            "scope in another order",
            basic,
            base.clone().set("scope", "orders:write orders:read"),
        ),
        ("no scope", basic, base.clone().without("scope")),
        (
            "requested token type",
            basic,
            base.clone().with("requested_token_type", JWT),
        ),
    ];
    let mut seen = vec![base_token];
    for (what, auth, form) in &rows {
        let (token, was_cached) = granted(&sts, *auth, form).await;
        assert!(!was_cached, "{what}: must miss");
        assert!(!seen.contains(&token), "{what}: a new token");
        // The row itself is cacheable: its miss was the difference, nothing else.
        assert_eq!(
            granted(&sts, *auth, form).await,
            (token.clone(), true),
            "{what}: the same inputs again hit"
        );
        seen.push(token);
    }

    // Another client with the very same form (without the actor, which is bff's own).
    let imp = base.without("actor_token").without("actor_token_type");
    let (bff_token, _) = granted(&sts, basic, &imp).await;
    let (mallory_token, was_cached) = granted(&sts, Auth::Basic(MALLORY), &imp).await;
    assert!(!was_cached, "another client misses");
    assert_ne!(mallory_token, bff_token);
    assert_eq!(claims_of(&mallory_token)["client_id"], "mallory");
}

#[tokio::test]
async fn a_hit_still_authenticates_the_client() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = builder(&issuer).start().await;
    let form = imp(&issuer.user_token("alice", "bff", "orders:read"));
    assert_eq!(send(&sts, Auth::Basic(BFF), &form).await.status, 200);
    for auth in [
        Auth::Basic(("bff", "wrong-secret")),
        Auth::Basic(("nobody", "bff-secret")),
    ] {
        let answer = send(&sts, auth, &form).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(answer.error(), "invalid_client");
        assert!(answer.body.get("access_token").is_none());
    }
}

/// Rewrites the policy file and waits until the watch has applied it `times` times.
async fn rewrite_policy(sts: &Sts, dir: &Path, text: &str, times: f64) {
    std::fs::write(dir.join("policies/test.toml"), text).unwrap();
    let applied = "gleipnir_policy_reloads_total{outcome=\"applied\"}";
    for _ in 0..200 {
        if metric(sts, applied).await == times {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the policy was not reloaded");
}

#[tokio::test]
async fn a_policy_reload_misses_and_a_disabled_client_is_refused() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = builder(&issuer)
        .extra("[policy]\nwatch_seconds = 1")
        .start()
        .await;
    let dir = sts.dir().to_owned();
    let form = imp(&issuer.user_token("alice", "bff", "orders:read"));
    let (first, _) = granted(&sts, Auth::Basic(BFF), &form).await;
    assert_eq!(
        granted(&sts, Auth::Basic(BFF), &form).await,
        (first.clone(), true)
    );

    // The same rules, another file text: a new policy generation.
    rewrite_policy(&sts, &dir, &format!("# reloaded\n{}", policy("")), 1.0).await;
    let (second, was_cached) = granted(&sts, Auth::Basic(BFF), &form).await;
    assert!(!was_cached, "no grant of an earlier policy is handed out");
    assert_ne!(second, first);

    rewrite_policy(&sts, &dir, &policy("enabled = false"), 2.0).await;
    let answer = send(&sts, Auth::Basic(BFF), &form).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.error(), "unauthorized_client");
    assert_eq!(
        audit::refusal(answer.request_id().unwrap()).unwrap(),
        "policy/client_not_enabled"
    );
}

#[tokio::test]
async fn a_client_can_switch_the_cache_off_and_so_can_the_configuration() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    for (sts, what) in [
        (
            builder(&issuer)
                .policy(&policy("reissue_cache = false"))
                .start()
                .await,
            "policy reissue_cache = false",
        ),
        (
            builder(&issuer)
                .extra("[reissue_cache]\nenabled = false")
                .start()
                .await,
            "[reissue_cache] enabled = false",
        ),
    ] {
        let form = imp(&issuer.user_token("alice", "bff", "orders:read"));
        let (first, _) = granted(&sts, Auth::Basic(BFF), &form).await;
        let (second, was_cached) = granted(&sts, Auth::Basic(BFF), &form).await;
        assert!(!was_cached, "{what}");
        assert_ne!(first, second, "{what}");
        assert_eq!(
            metric(&sts, "gleipnir_reissue_cache_lookups_total{result=\"hit\"}").await,
            0.0,
            "{what}"
        );
    }
}

/// The token handed out at `at` seconds after the first exchange, and whether cached.
async fn at(sts: &Sts, form: &Form, seconds: u64) -> (String, bool) {
    sts.clock.set(NOW + seconds);
    granted(sts, Auth::Basic(BFF), form).await
}

#[tokio::test]
async fn an_entry_near_its_end_misses() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    // Defaults: half of the lifetime (300 s) and at least 30 s must remain.
    let sts = builder(&issuer).start().await;
    let form = imp(&issuer.user_token("alice", "bff", "orders:read"));
    let (first, _) = at(&sts, &form, 0).await;
    assert_eq!(at(&sts, &form, 150).await, (first.clone(), true));
    let (later, was_cached) = at(&sts, &form, 151).await;
    assert!(!was_cached);
    assert_ne!(later, first);

    // The seconds bound, when it is the larger.
    let sts = builder(&issuer)
        .extra("[reissue_cache]\nmin_remaining_fraction = 0.1\nmin_remaining_seconds = 100")
        .start()
        .await;
    let (first, _) = at(&sts, &form, 0).await;
    assert_eq!(at(&sts, &form, 200).await, (first.clone(), true));
    assert!(!at(&sts, &form, 201).await.1);
}

#[tokio::test]
async fn no_entry_outlives_its_inputs() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    // The subject token expires in 100 s: the issued token too (rule 8), and half of
    // that must remain.
    let sts = builder(&issuer).start().await;
    let mut claims = issuer.user_claims("alice", "bff", "orders:read");
    claims["exp"] = json!(NOW + 100);
    let form = imp(&issuer.sign(claims));
    let (first, _) = at(&sts, &form, 0).await;
    assert_eq!(claims_of(&first)["exp"], NOW + 100);
    assert_eq!(at(&sts, &form, 50).await, (first.clone(), true));
    assert!(!at(&sts, &form, 51).await.1);

    // The issuer's maximum token age ends the subject token's proof before its exp: the
    // token was issued 60 s ago and may be 120 s old.
    let sts = Sts::builder()
        .issuer("corp", &issuer, "max_token_age_seconds = 120")
        .start()
        .await;
    let form = imp(&issuer.user_token("alice", "bff", "orders:read"));
    let (first, _) = at(&sts, &form, 0).await;
    assert_eq!(at(&sts, &form, 59).await, (first.clone(), true));
    let (later, was_cached) = at(&sts, &form, 60).await;
    assert!(
        !was_cached,
        "past the age bound, the token is checked again"
    );
    assert_ne!(later, first);
}

#[tokio::test]
async fn a_new_signing_key_misses() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let write_key = |name: &str| {
        let pkcs8 = gleipnir::keys::generate_pkcs8(gleipnir::jose::JwsAlgorithm::Es256).unwrap();
        let pem = gleipnir::keys::pkcs8_to_pem(&pkcs8);
        std::fs::write(keys.path().join(format!("{name}.pem")), pem.as_bytes()).unwrap();
    };
    write_key("old");
    write_key("new");
    // `old` signs until NOW + 100, `new` from then on.
    std::fs::write(
        keys.path().join("keys.toml"),
        "[[keys]]\nfile = \"old.pem\"\nnot_before = 2030-03-17T17:00:00Z\n\
         [[keys]]\nfile = \"new.pem\"\nnot_before = 2030-03-17T17:48:20Z\n",
    )
    .unwrap();
    let sts = builder(&issuer)
        .signing(&format!("key_dir = \"{}\"", keys.path().display()))
        .start()
        .await;
    let form = imp(&issuer.user_token("alice", "bff", "orders:read"));
    let (first, _) = at(&sts, &form, 0).await;
    assert_eq!(at(&sts, &form, 99).await, (first.clone(), true));
    let (later, was_cached) = at(&sts, &form, 100).await;
    assert!(
        !was_cached,
        "the new key signs: no token of the old one is handed out"
    );
    let kid = |token: &str| header_of(token)["kid"].clone();
    assert_ne!(kid(&later), kid(&first));
}

#[test]
fn the_configuration_section_is_checked() {
    for (text, field) in [
        ("max_bytes = 10", "reissue_cache.max_bytes"),
        (
            "min_remaining_fraction = 1.5",
            "reissue_cache.min_remaining_fraction",
        ),
        (
            "min_remaining_seconds = 0",
            "reissue_cache.min_remaining_seconds",
        ),
        ("size = 1", "toml"),
    ] {
        let error = Sts::builder()
            .extra(&format!("[reissue_cache]\n{text}"))
            .try_build_app("http://127.0.0.1:1")
            .err()
            .unwrap_or_else(|| panic!("{text} accepted"));
        assert_eq!(error.field, field, "{text}: {error}");
    }
}
