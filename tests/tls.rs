//! TLS on the public listener (`[tls]`), against the real server on 127.0.0.1:0: token
//! exchanges over HTTPS with HTTP/1.1 and HTTP/2 (ALPN), certificate reload on change of
//! the files (a Kubernetes-style symlink swap) and on SIGHUP, a bad replacement keeping
//! the old certificate in force, the handshake timeout freeing the connection slot, and
//! the clear-text warning. Start-up refusals of bad TLS files are rows of
//! `check_refuses_bad_configs_naming_file_and_field` in tests/cli.rs.
//!
//! Certificates are generated per test with rcgen (aws-lc-rs); no key is a fixture. The
//! clients trust exactly one test CA each and never resume TLS sessions, so a request
//! that succeeds proves which certificate the connection it used was set up with.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate for 127.0.0.1 and its key, as PEM.
struct Leaf {
    chain: String,
    key: String,
    /// `notAfter`, Unix seconds.
    not_after: i64,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for 127.0.0.1 valid until 1 January of `until_year`; the chain file holds the
    /// leaf then the CA.
    fn leaf(&self, until_year: i32) -> Leaf {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "gleipnir test");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: format!("{}{}", cert.pem(), self.pem()),
            key: key.serialize_pem(),
            not_after: params.not_after.unix_timestamp(),
        }
    }
}

impl Leaf {
    fn write_to(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        replace(&dir.join("cert.pem"), &self.chain);
        replace(&dir.join("key.pem"), &self.key);
    }
}

/// Replaces a file's contents at once (a new file renamed over it), so the watch never
/// sees it half-written.
fn replace(path: &Path, contents: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A client that trusts only `ca`, offers `alpn`, and never resumes a TLS session (so a
/// new connection always verifies the certificate the server presents now).
fn client_trusting(ca: &Ca, alpn: &[&[u8]]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tls.resumption = rustls::client::Resumption::disabled();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

const H2_AND_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1_ONLY: &[&[u8]] = &[b"http/1.1"];

/// `[tls]` lines for the files in `dir`.
fn tls_table(dir: &Path, extra: &str) -> String {
    format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n{extra}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

/// `GET /.well-known/jwks.json` with `client`: the status, or the error's chain of causes.
async fn jwks_status(client: &reqwest::Client, base: &str) -> Result<u16, String> {
    match client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
    {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            Err(text)
        }
    }
}

const APPLIED: &str = "gleipnir_tls_reloads_total{outcome=\"applied\"}";
const FAILED: &str = "gleipnir_tls_reloads_total{outcome=\"failed\"}";
const EXPIRY: &str = "gleipnir_tls_certificate_expiry_timestamp_seconds";

#[tokio::test]
async fn exchanges_over_https_with_http1_and_http2() {
    let issuer = TestIssuer::start().await;
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(2040);
    let certs = tempfile::tempdir().unwrap();
    leaf.write_to(certs.path());
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .tls(&tls_table(certs.path(), ""))
        .start()
        .await;
    assert!(sts.base.starts_with("https://127.0.0.1:"), "{}", sts.base);
    sts.wait_ready().await;
    let subject = issuer.user_token("alice", "bff", "orders:read");

    for (alpn, version) in [
        (H2_AND_H1, reqwest::Version::HTTP_2),
        (H1_ONLY, reqwest::Version::HTTP_11),
    ] {
        let response = client_trusting(&ca, alpn)
            .post(sts.token_url())
            .basic_auth(BFF.0, Some(BFF.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(&impersonation(&subject)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), version, "ALPN {alpn:?}");
        assert_eq!(response.status(), 200, "ALPN {alpn:?}");
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap();
        let claims = claims_of(body["access_token"].as_str().unwrap());
        assert_eq!(claims["iss"], sts.base.as_str());
        assert_eq!(claims["sub"], "alice");
    }

    // Plain HTTP on the TLS port gets no answer, and the listener carries on.
    let plain = reqwest::Client::new()
        .get(format!(
            "{}/.well-known/jwks.json",
            sts.base.replace("https://", "http://")
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    assert_eq!(
        jwks_status(&client_trusting(&ca, H2_AND_H1), &sts.base).await,
        Ok(200)
    );
    // The admin listener stays plain HTTP; it reports the certificate's expiry.
    assert_eq!(
        metric_value(&sts.admin, EXPIRY).await,
        Some(leaf.not_after as f64)
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_certificate_is_used_by_new_connections_and_old_ones_carry_on() {
    let issuer = TestIssuer::start().await;
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let (old_leaf, new_leaf) = (old_ca.leaf(2040), new_ca.leaf(2041));
    // As Kubernetes mounts a Secret: the files are reached through a symlink to a
    // directory, and an update swaps the symlink.
    let certs = tempfile::tempdir().unwrap();
    old_leaf.write_to(&certs.path().join("v1"));
    let current = certs.path().join("current");
    std::os::unix::fs::symlink("v1", &current).unwrap();
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .tls(&tls_table(&current, "watch_seconds = 1"))
        .start()
        .await;

    // A connection set up with the old certificate, kept alive (HTTP/1.1).
    let old_client = client_trusting(&old_ca, H1_ONLY);
    assert_eq!(jwks_status(&old_client, &sts.base).await, Ok(200));
    assert_eq!(
        metric_value(&sts.admin, EXPIRY).await,
        Some(old_leaf.not_after as f64)
    );
    // Before the swap, a client trusting only the new CA is refused.
    assert!(
        jwks_status(&client_trusting(&new_ca, H2_AND_H1), &sts.base)
            .await
            .is_err()
    );

    new_leaf.write_to(&certs.path().join("v2"));
    std::os::unix::fs::symlink("v2", certs.path().join("next")).unwrap();
    std::fs::rename(certs.path().join("next"), &current).unwrap();
    wait_for_metric(&sts.admin, APPLIED, 1.0).await;

    // New connections get the new certificate...
    assert_eq!(
        jwks_status(&client_trusting(&new_ca, H2_AND_H1), &sts.base).await,
        Ok(200)
    );
    let refused = jwks_status(&client_trusting(&old_ca, H1_ONLY), &sts.base).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("certificate")),
        "{refused:?}"
    );
    // ...and the connection made before the swap still answers: it is reused (a new
    // connection from this client would fail verification, as just shown).
    assert_eq!(jwks_status(&old_client, &sts.base).await, Ok(200));
    assert_eq!(
        metric_value(&sts.admin, EXPIRY).await,
        Some(new_leaf.not_after as f64)
    );
    assert_eq!(metric_value(&sts.admin, FAILED).await, None);
}

#[tokio::test]
async fn a_bad_replacement_keeps_the_old_certificate_in_force() {
    let issuer = TestIssuer::start().await;
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(2040);
    let certs = tempfile::tempdir().unwrap();
    leaf.write_to(certs.path());
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .tls(&tls_table(certs.path(), "watch_seconds = 1"))
        .start()
        .await;
    let serves_the_old_certificate = || async {
        // A new client each time: a new connection, a new handshake.
        assert_eq!(
            jwks_status(&client_trusting(&ca, H2_AND_H1), &sts.base).await,
            Ok(200)
        );
        assert_eq!(
            metric_value(&sts.admin, EXPIRY).await,
            Some(leaf.not_after as f64)
        );
    };
    serves_the_old_certificate().await;

    // A key that does not match the certificate (another CA's leaf key).
    let other = Ca::new("other CA").leaf(2041);
    replace(&certs.path().join("key.pem"), &other.key);
    wait_for_metric(&sts.admin, FAILED, 1.0).await;
    serves_the_old_certificate().await;

    // Garbage instead of a certificate chain.
    replace(&certs.path().join("cert.pem"), "not a certificate\n");
    wait_for_metric(&sts.admin, FAILED, 2.0).await;
    serves_the_old_certificate().await;

    // A file that went missing.
    std::fs::remove_file(certs.path().join("cert.pem")).unwrap();
    wait_for_metric(&sts.admin, FAILED, 3.0).await;
    serves_the_old_certificate().await;

    // Each bad state is reported once, not on every tick of the watch.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(metric_value(&sts.admin, FAILED).await, Some(3.0));
    assert_eq!(metric_value(&sts.admin, APPLIED).await, None);

    // A good pair again is applied.
    let next = ca.leaf(2042);
    next.write_to(certs.path());
    wait_for_metric(&sts.admin, APPLIED, 1.0).await;
    assert_eq!(
        metric_value(&sts.admin, EXPIRY).await,
        Some(next.not_after as f64)
    );
}

#[tokio::test]
async fn a_client_that_never_completes_the_handshake_is_dropped_and_frees_its_slot() {
    let issuer = TestIssuer::start().await;
    let ca = Ca::new("test CA");
    let certs = tempfile::tempdir().unwrap();
    ca.leaf(2040).write_to(certs.path());
    // One connection at a time; the idle timeout (60 s) is far longer than the
    // handshake's.
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("max_connections = 1")
        .tls(&tls_table(certs.path(), "handshake_timeout_seconds = 1"))
        .start()
        .await;
    let addr = sts.base.trim_start_matches("https://").to_owned();

    // Connects and never sends a ClientHello: it holds the only slot...
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    // ...until the handshake timeout drops it and this request gets the slot.
    let status = jwks_status(&client_trusting(&ca, H2_AND_H1), &sts.base).await;
    assert_eq!(status, Ok(200));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(1), silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection is still open: {read:?}"
    );

    // A client that sends something other than a ClientHello fails the handshake at once;
    // the listener carries on.
    let mut wrong = TcpStream::connect(&addr).await.unwrap();
    wrong
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_millis(900), wrong.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "not closed at once");
    assert!(!answer.starts_with(b"HTTP"), "answered in clear text");
    assert_eq!(
        jwks_status(&client_trusting(&ca, H2_AND_H1), &sts.base).await,
        Ok(200)
    );
}

// ---- the binary: SIGHUP and the clear-text warning -------------------------------------

/// Kills the child when dropped, so a failing assertion leaks no process.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration directory for `gleipnir serve`: key, policy, and `extra` appended to
/// the configuration (relative paths in it are relative to the directory).
fn serve_setup(issuer: &TestIssuer, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pem = gleipnir::keys::pkcs8_to_pem(
        &gleipnir::keys::generate_pkcs8(gleipnir::jose::JwsAlgorithm::Es256).unwrap(),
    );
    std::fs::write(dir.path().join("signing.pem"), pem).unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/bff.toml"),
        "[clients.bff]\nimpersonate = true\nsubject_issuers = [\"corp\"]\naudiences = [\"orders-api\"]\n",
    )
    .unwrap();
    let config = format!(
        "issuer = \"https://127.0.0.1:1\"\n[signing]\nkey_file = \"signing.pem\"\n\
         [[issuers]]\nname = \"corp\"\nissuer = \"{}\"\njwks_uri = \"{}\"\nallow_http = true\n\
         [[clients]]\nid = \"bff\"\nsecret = {{ value = \"bff-secret\" }}\n{extra}",
        issuer.iss,
        issuer.jwks_uri()
    );
    let path = dir.path().join("gleipnir.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

fn gleipnir() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gleipnir"));
    command.env("RUST_LOG", "warn");
    command
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn one_sighup_reloads_the_certificate_and_the_policy() {
    let issuer = TestIssuer::start().await;
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    // Relative paths, resolved against the configuration's directory; no watching.
    let (dir, config) = serve_setup(
        &issuer,
        "[tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\nwatch_seconds = 0\n",
    );
    let tls_dir = dir.path().join("tls");
    old_ca.leaf(2040).write_to(&tls_dir);
    let (public_port, admin_port) = (free_port(), free_port());
    let base = format!("https://127.0.0.1:{public_port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let child = KillOnDrop(
        gleipnir()
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{public_port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while jwks_status(&client_trusting(&old_ca, H2_AND_H1), &base).await != Ok(200) {
        assert!(Instant::now() < deadline, "gleipnir serve did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let new_leaf = new_ca.leaf(2041);
    new_leaf.write_to(&tls_dir);
    // watch_seconds = 0: nothing happens until SIGHUP.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        jwks_status(&client_trusting(&old_ca, H2_AND_H1), &base).await,
        Ok(200)
    );
    let status = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_metric(&admin, APPLIED, 1.0).await;
    wait_for_metric(
        &admin,
        "gleipnir_policy_reloads_total{outcome=\"applied\"}",
        1.0,
    )
    .await;
    assert_eq!(
        jwks_status(&client_trusting(&new_ca, H2_AND_H1), &base).await,
        Ok(200)
    );
    assert_eq!(
        metric_value(&admin, EXPIRY).await,
        Some(new_leaf.not_after as f64)
    );
}

/// Starts `gleipnir serve` with `--listen listen` and returns its stderr up to the
/// "gleipnir serving" line (at most 10 s).
fn serve_logs(config: &Path, listen: &str) -> String {
    let mut child = gleipnir()
        .env("RUST_LOG", "info")
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", listen, "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _child = KillOnDrop(child);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if lines_tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        text.push_str(&line);
        text.push('\n');
        if line.contains("gleipnir serving") {
            // The warning follows the serving line.
            if let Ok(next) = lines.recv_timeout(Duration::from_millis(500)) {
                text.push_str(&next);
                text.push('\n');
            }
            return text;
        }
    }
    panic!("no serving line:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_beyond_loopback_is_served_with_a_warning() {
    let issuer = TestIssuer::start().await;
    let (_dir, config) = serve_setup(&issuer, "");
    let warning = "plain HTTP on a non-loopback address";

    let public = serve_logs(&config, "0.0.0.0:0");
    assert!(public.contains(warning), "{public}");
    assert!(public.contains("WARN"), "{public}");

    let loopback = serve_logs(&config, "127.0.0.1:0");
    assert!(!loopback.contains(warning), "{loopback}");

    let ca = Ca::new("test CA");
    let (tls_dir, tls_config) = serve_setup(
        &issuer,
        "[tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n",
    );
    ca.leaf(2040).write_to(&tls_dir.path().join("tls"));
    let with_tls = serve_logs(&tls_config, "0.0.0.0:0");
    assert!(with_tls.contains("tls=true"), "{with_tls}");
    assert!(!with_tls.contains(warning), "{with_tls}");
}
