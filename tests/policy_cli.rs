//! The policy commands of the real binary: `gleipnir policy explain` (against a real
//! loopback issuer's JWKS, and offline), `gleipnir policy test`, and reload on SIGHUP of
//! a running `gleipnir serve`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

fn gleipnir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gleipnir"))
}

fn output(command: &mut Command) -> (Output, String, String) {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

const POLICY: &str = r#"
[clients.bff]
impersonate = true
delegate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]
actors = ["bff"]
"#;

/// A configuration trusting `issuer` as corp, with a key and `POLICY`, in a temp dir.
fn setup(issuer: &TestIssuer, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pem = gleipnir::keys::pkcs8_to_pem(
        &gleipnir::keys::generate_pkcs8(gleipnir::jose::JwsAlgorithm::Es256).unwrap(),
    );
    std::fs::write(dir.path().join("signing.pem"), pem).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/bff.toml"), POLICY).unwrap();
    let config = format!(
        r#"issuer = "http://127.0.0.1:1"
[signing]
key_file = "signing.pem"
{extra}
[[issuers]]
name = "corp"
issuer = "{}"
jwks_uri = "{}"
allow_http = true

[[clients]]
id = "bff"
secret = {{ value = "bff-secret" }}
"#,
        issuer.iss,
        issuer.jwks_uri()
    );
    let path = dir.path().join("gleipnir.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

fn write_token(dir: &Path, name: &str, token: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, token).unwrap();
    format!("@{}", path.display())
}

fn explain(config: &Path, subject: &str, actor: Option<&str>, extra: &[&str]) -> Command {
    let mut c = gleipnir();
    c.args(["policy", "explain", "--config"])
        .arg(config)
        .args(["--client", "bff", "--subject-token", subject])
        .args(["--at", &NOW.to_string()]);
    if let Some(actor) = actor {
        c.args(["--actor-token", actor]);
    }
    c.args(extra);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_names_the_check_that_refuses_a_splice() {
    let issuer = TestIssuer::start().await;
    let (dir, config) = setup(&issuer, "");
    let subject = write_token(
        dir.path(),
        "alice",
        &issuer.user_token("alice", "bff", "orders:read"),
    );
    // bob's own token, issued to the BFF (client_id = bff), sent as the actor: its sub is
    // not the BFF's actor identity, so rule 1 refuses it (client_id alone never binds).
    let mut bob = issuer.actor_claims("bff");
    bob["sub"] = json!("bob");
    let bob = write_token(dir.path(), "bob", &issuer.sign(bob));
    let actor = write_token(dir.path(), "actor", &issuer.actor_token("bff"));

    let (out, stdout, stderr) = output(&mut explain(&config, &subject, Some(&bob), &[]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused → exit 1: {stdout}{stderr}"
    );
    for line in [
        "decision: refused",
        "stage: policy",
        "check: actor_not_bound_to_client",
        "on: actor_token.sub/client_id/azp",
        "detail: sub \"bob\" (the client's actor identity is \"bff\"), client_id \"bff\"",
        "#clients.bff",
        "client is told: 400 invalid_request",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        !stdout.contains("offline"),
        "signatures were verified: {stdout}"
    );
    assert!(!stdout.contains("eyJ"), "no token is printed: {stdout}");

    let (out, stdout, _) = output(&mut explain(&config, &subject, Some(&actor), &[]));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("decision: granted"), "{stdout}");
    assert!(stdout.contains("aud: orders-api"), "{stdout}");
    assert!(
        stdout.contains("act (current actor first): bff"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_verifies_signatures_unless_offline_and_then_says_so_on_every_line() {
    let issuer = TestIssuer::start().await;
    let (dir, config) = setup(&issuer, "");
    let token = issuer.user_token("alice", "bff", "orders:read");
    // Same header and claims, another signature.
    let forged = format!("{}AAAA", &token[..token.rfind('.').unwrap() + 1]);
    let forged = write_token(dir.path(), "forged", &forged);

    let (out, stdout, _) = output(&mut explain(&config, &forged, None, &[]));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("stage: subject_token"), "{stdout}");
    assert!(stdout.contains("check: bad_signature"), "{stdout}");

    let (out, stdout, _) = output(&mut explain(&config, &forged, None, &["--offline"]));
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("decision: granted"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() > 3);
    for line in lines {
        assert!(
            line.starts_with("[offline: signatures not verified] "),
            "{line}"
        );
    }
}

#[test]
fn policy_test_passes_the_shipped_cases_and_fails_a_wrong_expectation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (out, stdout, stderr) = output(
        gleipnir()
            .args(["policy", "test"])
            .arg(root.join("policies/tests")),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(" passed"), "{stdout}");
    let splices = stdout
        .lines()
        .filter(|l| l.starts_with("PASS:") && l.contains("splice"))
        .count();
    assert!(splices >= 5, "at least five splice attempts: {stdout}");

    // The same cases with one expectation turned around: the run fails and says which.
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(root.join("policies/tests/bff-sidecar.toml")).unwrap();
    let wrong = shipped
        .replace(
            "config = \"../../deploy/gleipnir.toml\"",
            &format!("config = {:?}", root.join("deploy/gleipnir.toml")),
        )
        .replacen(
            "check = \"policy/actor_token_self_issued\"",
            "check = \"policy/may_act_mismatch\"",
            1,
        );
    assert_ne!(wrong, shipped);
    std::fs::write(dir.path().join("wrong.toml"), wrong).unwrap();
    let (out, stdout, _) = output(gleipnir().args(["policy", "test"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "check: expected policy/may_act_mismatch, got policy/actor_token_self_issued"
        ),
        "{stdout}"
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("FAIL:")).count(), 1);
}

#[test]
fn policy_test_refuses_unreadable_case_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "config = 3\n").unwrap();
    let (out, _, stderr) = output(gleipnir().args(["policy", "test"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("bad.toml"), "{stderr}");
    let empty = tempfile::tempdir().unwrap();
    let (out, _, stderr) = output(gleipnir().args(["policy", "test"]).arg(empty.path()));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("no *.toml case files"), "{stderr}");
}

struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_policy_and_a_bad_one_keeps_the_old_in_force() {
    let issuer = TestIssuer::start().await;
    // No watching: only SIGHUP reloads.
    let (dir, config) = setup(&issuer, "[policy]\nwatch_seconds = 0");
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("http://127.0.0.1:{admin_port}");
    let child = KillOnDrop(
        gleipnir()
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--admin-listen"])
            .arg(format!("127.0.0.1:{admin_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut up = false;
    for _ in 0..100 {
        if metric_line(&admin, "gleipnir_policy_reload_failing")
            .await
            .is_some()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "gleipnir serve did not come up");
    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    std::fs::write(
        dir.path().join("policies/bff.toml"),
        POLICY.replace("actors = [\"bff\"]", "actors = [\"svc-bff\"]"),
    )
    .unwrap();
    hup();
    wait_for_metric(
        &admin,
        "gleipnir_policy_reloads_total{outcome=\"applied\"}",
        1.0,
    )
    .await;

    std::fs::write(
        dir.path().join("policies/bff.toml"),
        "[clients.bff]\nnot_a_field = 1\n",
    )
    .unwrap();
    hup();
    wait_for_metric(
        &admin,
        "gleipnir_policy_reloads_total{outcome=\"failed\"}",
        1.0,
    )
    .await;
    wait_for_metric(&admin, "gleipnir_policy_reload_failing", 1.0).await;
    // Still serving, under the last good policy.
    let ready = reqwest::get(format!("{admin}/livez")).await.unwrap();
    assert_eq!(ready.status(), 200);
}
