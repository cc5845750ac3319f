//! Signing-key rotation (`signing.key_dir`), on the real server with a manual clock: the
//! schedule (which key signs, which keys are published), re-exchange across a switch,
//! reload of the key directory, and, with panva's `jose` as a resource server that caches
//! our JWKS the way libraries do, no token failing verification while keys rotate under
//! load.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gleipnir::jose::JwsAlgorithm;
use gleipnir::keys::SigningKey;
use serde_json::{Value, json};
use support::*;

/// RFC 3339 UTC for Unix seconds (H. Hinnant's civil-from-days).
fn rfc3339(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes a new ES256 key as `<name>.pem` into `dir`; returns its kid.
fn new_key(dir: &Path, name: &str) -> String {
    let pkcs8 = gleipnir::keys::generate_pkcs8(JwsAlgorithm::Es256).unwrap();
    let pem = gleipnir::keys::pkcs8_to_pem(&pkcs8);
    std::fs::write(dir.join(format!("{name}.pem")), pem.as_bytes()).unwrap();
    SigningKey::from_pkcs8(JwsAlgorithm::Es256, &pkcs8)
        .unwrap()
        .kid()
        .to_owned()
}

fn write_manifest(dir: &Path, keys: &[(&str, u64)]) {
    let text: String = keys
        .iter()
        .map(|(name, not_before)| {
            format!(
                "[[keys]]\nfile = \"{name}.pem\"\nnot_before = {}\n",
                rfc3339(*not_before)
            )
        })
        .collect();
    std::fs::write(dir.join("keys.toml"), text).unwrap();
}

/// `max_ttl_seconds` of these tests' configuration, and the default leeway.
const MAX_TTL: u64 = 600;
const LEEWAY: u64 = 30;
const AHEAD: u64 = 3600;

async fn rotating_sts(issuer: &TestIssuer, keys: &Path) -> Sts {
    Sts::builder()
        .issuer("corp", issuer, "")
        .tokens(&format!("max_ttl_seconds = {MAX_TTL}"))
        .signing(&format!(
            "key_dir = \"{}\"\npublish_ahead_seconds = {AHEAD}\nwatch_seconds = 1",
            keys.display()
        ))
        .start()
        .await
}

async fn published_kids(sts: &Sts) -> Vec<String> {
    let (status, jwks) = sts.get_json("/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn keys_are_published_ahead_sign_on_schedule_and_retire_after_their_last_token() {
    let issuer = TestIssuer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let a = new_key(keys.path(), "a");
    let b = new_key(keys.path(), "b");
    let switch = NOW + AHEAD;
    write_manifest(keys.path(), &[("a", NOW - 86_400), ("b", switch)]);
    let sts = rotating_sts(&issuer, keys.path()).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let actor = issuer.actor_token("bff");

    // b is published an hour before it signs; a signs.
    assert_eq!(published_kids(&sts).await, [a.clone(), b.clone()]);
    let answer = sts.exchange(BFF, &delegation(&subject, &actor)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(kid_of(answer.token()), a);

    // Just before the switch: a token signed by a, alive past the switch.
    sts.clock.set(switch - 10);
    let subject = issuer.sign(issuer.user_claims("alice", "bff", "orders:read"));
    let mut claims = issuer.user_claims("alice", "bff", "orders:read");
    claims["iat"] = (switch - 20).into();
    claims["exp"] = (switch + 3000).into();
    let late_subject = issuer.sign(claims);
    let mut actor_claims = issuer.actor_claims("bff");
    actor_claims["exp"] = (switch + 3000).into();
    let late_actor = issuer.sign(actor_claims);
    let by_a = sts
        .exchange(BFF, &delegation(&late_subject, &late_actor))
        .await;
    assert_eq!(kid_of(by_a.token()), a);
    drop(subject);

    // From the switch on, b signs; a stays published and trusted for re-exchange.
    sts.clock.set(switch);
    let answer = sts
        .exchange(BFF, &delegation(&late_subject, &late_actor))
        .await;
    assert_eq!(kid_of(answer.token()), b);
    assert_eq!(published_kids(&sts).await, [a.clone(), b.clone()]);
    let mut orders_actor = issuer.actor_claims("orders-api");
    orders_actor["exp"] = (switch + 3000).into();
    let hop2 = sts
        .exchange(
            ORDERS,
            &delegation(by_a.token(), &issuer.sign(orders_actor)),
        )
        .await;
    assert_eq!(
        hop2.status, 200,
        "a token a signed re-exchanges after the switch: {}",
        hop2.body
    );
    assert_eq!(kid_of(hop2.token()), b);

    // a's last token expired (max TTL + leeway after the switch): a is withdrawn.
    sts.clock.set(switch + MAX_TTL + LEEWAY - 1);
    assert_eq!(published_kids(&sts).await, [a.clone(), b.clone()]);
    sts.clock.set(switch + MAX_TTL + LEEWAY);
    assert_eq!(published_kids(&sts).await, [b.as_str()]);
    assert_eq!(
        metric_line(&sts.admin, "gleipnir_signing_keys_published ").await,
        Some("gleipnir_signing_keys_published 1".into())
    );

    // Withdrawn, a (leaked, say) verifies nothing: a token it signs now, valid by every
    // claim, is refused as our own subject token.
    let now = switch + MAX_TTL + LEEWAY;
    let forged = sign_with_file(
        &keys.path().join("a.pem"),
        &a,
        json!({ "iss": sts.base, "sub": "root", "aud": "orders-api", "client_id": "bff",
                "scope": "orders:read", "iat": now, "exp": now + 60, "jti": "forged" }),
    );
    let mut orders_actor = issuer.actor_claims("orders-api");
    orders_actor["exp"] = (now + 3000).into();
    let answer = sts
        .exchange(ORDERS, &delegation(&forged, &issuer.sign(orders_actor)))
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.error(), "invalid_request");
}

/// A gleipnir-shaped access token signed with the key in `pem` (ES256, `kid`).
fn sign_with_file(pem: &Path, kid: &str, claims: Value) -> String {
    use gleipnir::jose::b64_encode;
    let key = SigningKey::from_pem_file(JwsAlgorithm::Es256, pem).unwrap();
    let header = json!({ "alg": "ES256", "kid": kid, "typ": "at+jwt" });
    let input = format!(
        "{}.{}",
        b64_encode(header.to_string().as_bytes()),
        b64_encode(claims.to_string().as_bytes())
    );
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64_encode(&signature))
}

#[tokio::test]
async fn reload_adds_a_key_only_if_it_is_published_long_enough_before_it_signs() {
    let issuer = TestIssuer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let a = new_key(keys.path(), "a");
    write_manifest(keys.path(), &[("a", NOW - 86_400)]);
    let sts = rotating_sts(&issuer, keys.path()).await;
    assert_eq!(published_kids(&sts).await, [a.as_str()]);

    // Too soon: refused, the previous keys stay in force.
    let c = new_key(keys.path(), "c");
    write_manifest(keys.path(), &[("a", NOW - 86_400), ("c", NOW + AHEAD - 1)]);
    // A key that would sign too soon is refused.
    wait_for_metric(&sts.admin, FAILED, 1.0).await;
    assert_eq!(published_kids(&sts).await, [a.as_str()]);

    // Far enough ahead: applied, published at once, signing only from its not_before.
    write_manifest(keys.path(), &[("a", NOW - 86_400), ("c", NOW + AHEAD)]);
    let mut applied = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if published_kids(&sts).await == [a.clone(), c.clone()] {
            applied = true;
            break;
        }
    }
    assert!(applied, "the new key was not published");
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let answer = sts.exchange(BFF, &impersonation(&subject)).await;
    assert_eq!(kid_of(answer.token()), a);

    // The schedule of a key that signs cannot change, nor can it be removed while its
    // tokens may be valid: each refused, the keys in force unchanged.
    for (what, manifest) in [
        ("a moved", vec![("a", NOW - 3600), ("c", NOW + AHEAD)]),
        (
            "c brought forward",
            vec![("a", NOW - 86_400), ("c", NOW + 10)],
        ),
    ] {
        let failed_before = metric_value(&sts.admin, FAILED).await.unwrap_or(0.0);
        write_manifest(keys.path(), &manifest);
        wait_for_metric(&sts.admin, FAILED, failed_before + 1.0).await;
        assert_eq!(published_kids(&sts).await, [a.clone(), c.clone()], "{what}");
    }
}

#[tokio::test]
async fn a_key_whose_tokens_may_still_be_valid_cannot_be_removed() {
    let issuer = TestIssuer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let a = new_key(keys.path(), "a");
    let b = new_key(keys.path(), "b");
    // b took over 100 s ago: a's tokens live on for MAX_TTL + LEEWAY after that.
    write_manifest(keys.path(), &[("a", NOW - 86_400), ("b", NOW - 100)]);
    let sts = rotating_sts(&issuer, keys.path()).await;
    assert_eq!(published_kids(&sts).await, [a.clone(), b.clone()]);

    // Refused: a key with live tokens may not be removed.
    write_manifest(keys.path(), &[("b", NOW - 100)]);
    wait_for_metric(&sts.admin, FAILED, 1.0).await;
    assert_eq!(published_kids(&sts).await, [a.clone(), b.clone()]);

    // Once a's last token has expired it leaves the JWKS, and may leave the directory.
    sts.clock.set(NOW - 100 + MAX_TTL + LEEWAY);
    assert_eq!(published_kids(&sts).await, [b.as_str()]);
    std::fs::remove_file(keys.path().join("a.pem")).unwrap();
    wait_for_metric(&sts.admin, APPLIED, 1.0).await;
}

const FAILED: &str = "gleipnir_signing_key_reloads_total{outcome=\"failed\"}";
const APPLIED: &str = "gleipnir_signing_key_reloads_total{outcome=\"applied\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_fails_verification_by_a_caching_verifier_while_keys_rotate_under_load() {
    if !node_package_available(
        "no_token_fails_verification_by_a_caching_verifier_while_keys_rotate_under_load",
        "jose",
    ) {
        return;
    }
    let issuer = TestIssuer::start().await;
    let keys = tempfile::tempdir().unwrap();
    let a = new_key(keys.path(), "a");
    let b = new_key(keys.path(), "b");
    let switch = NOW + AHEAD;
    write_manifest(keys.path(), &[("a", NOW - 86_400), ("b", switch)]);
    let sts = Arc::new(rotating_sts(&issuer, keys.path()).await);
    let mut claims = issuer.user_claims("alice", "bff", "orders:read");
    claims["exp"] = (switch + 3000).into();
    let subject = issuer.sign(claims);

    // One verifier for the whole run, as a resource server keeps one.
    let mut verifier = Command::new("node")
        .arg(interop_dir().join("verify-stream.mjs"))
        .args([
            &format!("{}/.well-known/jwks.json", sts.base),
            &sts.base,
            "orders-api",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut to_verifier = verifier.stdin.take().unwrap();
    let mut from_verifier = BufReader::new(verifier.stdout.take().unwrap());

    // Clients exchange without pause; every token goes to the verifier as it is issued.
    let running = Arc::new(AtomicBool::new(true));
    let (tokens, mut issued) = tokio::sync::mpsc::unbounded_channel::<String>();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (sts, subject, running, tokens) = (
                Arc::clone(&sts),
                subject.clone(),
                Arc::clone(&running),
                tokens.clone(),
            );
            tokio::spawn(async move {
                let mut failed = 0;
                while running.load(Ordering::Relaxed) {
                    let answer = sts.exchange(BFF, &impersonation(&subject)).await;
                    match answer.body["access_token"].as_str() {
                        Some(t) => tokens.send(t.to_owned()).unwrap(),
                        None => failed += 1,
                    }
                }
                failed
            })
        })
        .collect();
    drop(tokens);
    let feeder = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        while let Some(token) = issued.blocking_recv() {
            writeln!(to_verifier, "{token}").unwrap();
            let mut line = String::new();
            from_verifier.read_line(&mut line).unwrap();
            results.push(line.trim().to_owned());
        }
        drop(to_verifier);
        results
    });

    // The verifier fetches our JWKS on the first token (a signing, b already published);
    // then the switch, and b signs within seconds: long before jose would refetch.
    tokio::time::sleep(Duration::from_millis(700)).await;
    sts.clock.set(switch);
    tokio::time::sleep(Duration::from_millis(700)).await;
    running.store(false, Ordering::Relaxed);
    for worker in workers {
        assert_eq!(worker.await.unwrap(), 0, "an exchange failed");
    }
    let results = feeder.await.unwrap();
    let _ = verifier.wait();

    let failures: Vec<&String> = results.iter().filter(|r| !r.starts_with("ok ")).collect();
    assert!(
        failures.is_empty(),
        "{} of {} tokens failed verification, e.g. {:?}",
        failures.len(),
        results.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );
    let by = |kid: &str| {
        results
            .iter()
            .filter(|r| **r == format!("ok {kid}"))
            .count()
    };
    assert!(
        by(&a) > 5 && by(&b) > 5,
        "both keys signed under load: {} by a, {} by b",
        by(&a),
        by(&b)
    );
}

#[test]
fn bad_key_directories_are_refused_at_start_up_naming_the_field() {
    let keys = tempfile::tempdir().unwrap();
    new_key(keys.path(), "a");
    new_key(keys.path(), "b");
    let ed =
        gleipnir::keys::pkcs8_to_pem(&gleipnir::keys::generate_pkcs8(JwsAlgorithm::EdDsa).unwrap());
    std::fs::write(keys.path().join("ed.pem"), ed.as_bytes()).unwrap();
    let past = rfc3339(NOW - 100);
    let future = rfc3339(NOW + 100);
    let cases: &[(&str, String, &str)] = &[
        (
            "no key signs yet",
            format!("[[keys]]\nfile = \"a.pem\"\nnot_before = {future}\n"),
            "keys: no key may sign now",
        ),
        ("empty", String::new(), "keys: must list at least one"),
        (
            "missing file",
            format!("[[keys]]\nfile = \"zz.pem\"\nnot_before = {past}\n"),
            "keys[0].file",
        ),
        (
            "listed twice",
            format!(
                "[[keys]]\nfile = \"a.pem\"\nnot_before = {past}\n[[keys]]\nfile = \"a.pem\"\nnot_before = {future}\n"
            ),
            "keys[1].file: the same key is listed twice",
        ),
        (
            "no offset",
            "[[keys]]\nfile = \"a.pem\"\nnot_before = 2026-01-01T00:00:00\n".into(),
            "keys[0].not_before",
        ),
        (
            "wrong algorithm for the key",
            format!("[[keys]]\nfile = \"ed.pem\"\nnot_before = {past}\n"),
            "keys[0].file",
        ),
        (
            "unsupported algorithm",
            format!("[[keys]]\nfile = \"a.pem\"\nnot_before = {past}\nalgorithm = \"RS256\"\n"),
            "keys[0].algorithm",
        ),
        (
            "unknown field",
            format!("[[keys]]\nfile = \"a.pem\"\nnot_before = {past}\nkid = \"x\"\n"),
            "unknown field `kid`",
        ),
    ];
    for (what, manifest, want) in cases {
        std::fs::write(keys.path().join("keys.toml"), manifest).unwrap();
        let error = Sts::builder()
            .issuer_at(
                "corp",
                "https://idp.example.com",
                "http://127.0.0.1:1/jwks",
                "",
            )
            .signing(&format!("key_dir = \"{}\"", keys.path().display()))
            .try_build_app("http://127.0.0.1:1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(
            error.contains("keys.toml"),
            "{what}: names the file: {error}"
        );
        assert!(error.contains(want), "{what}: {error}");
    }
    // And the control: a valid manifest starts.
    std::fs::write(
        keys.path().join("keys.toml"),
        format!("[[keys]]\nfile = \"a.pem\"\nnot_before = {past}\n[[keys]]\nfile = \"ed.pem\"\nalgorithm = \"EdDSA\"\nnot_before = {future}\n"),
    )
    .unwrap();
    assert_eq!(
        Sts::builder()
            .issuer_at(
                "corp",
                "https://idp.example.com",
                "http://127.0.0.1:1/jwks",
                ""
            )
            .signing(&format!("key_dir = \"{}\"", keys.path().display()))
            .try_build_app("http://127.0.0.1:1")
            .map_err(|e| e.to_string())
            .err(),
        None
    );
}
