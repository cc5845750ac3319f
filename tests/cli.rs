//! The `gleipnir` binary as an operator meets it: `keygen`, `check`, `serve` refusing a
//! bad configuration before it binds, `dev` running the delegation example it prints, and
//! `check` on the shipped deploy/gleipnir.toml.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gleipnir::jose::JwsAlgorithm;
use gleipnir::keys::SigningKey;
use serde_json::json;
use support::{AT, GRANT, claims_of, encode_form};

fn gleipnir() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gleipnir"));
    // Keep the child's logs short and deterministic whatever the caller's RUST_LOG.
    command.env("RUST_LOG", "warn");
    command
}

fn run(command: &mut Command) -> (Output, String, String) {
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `gleipnir keygen --alg <alg> --out <out>`.
fn keygen(alg: &str, out: &Path) -> (Output, String, String) {
    run(gleipnir().args(["keygen", "--alg", alg, "--out"]).arg(out))
}

// ---- keygen ----------------------------------------------------------------------------

#[test]
fn keygen_writes_a_private_pem_that_loads_and_prints_its_kid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let (out, stdout, stderr) = run(gleipnir().args(["keygen", "--out"]).arg(&path));
    assert!(out.status.success(), "{stderr}");

    let key = SigningKey::from_pem_file(JwsAlgorithm::Es256, &path).unwrap();
    assert!(
        stdout.contains(&format!("(kid {})", key.kid())),
        "the printed kid is the key's: {stdout}"
    );
    assert!(stdout.contains("ES256"), "ES256 is the default: {stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private key mode {mode:o}");
    }
}

#[test]
fn keygen_never_overwrites_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let (first, _, stderr) = keygen("ES256", &path);
    assert!(first.status.success(), "{stderr}");
    let before = std::fs::read(&path).unwrap();

    let (second, stdout, stderr) = keygen("ES256", &path);
    assert!(!second.status.success(), "overwrote: {stdout}");
    assert!(
        stderr.contains(&path.display().to_string()),
        "names the file: {stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "file unchanged");
}

#[test]
fn keygen_makes_eddsa_keys_and_refuses_symmetric_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let ed = dir.path().join("ed.pem");
    let (out, stdout, stderr) = keygen("EdDSA", &ed);
    assert!(out.status.success(), "{stderr}");
    let key = SigningKey::from_pem_file(JwsAlgorithm::EdDsa, &ed).unwrap();
    assert!(stdout.contains(key.kid()), "{stdout}");
    assert!(
        SigningKey::from_pem_file(JwsAlgorithm::Es256, &ed).is_err(),
        "an Ed25519 key, not a P-256 one"
    );

    for alg in ["HS256", "RS256", "none"] {
        let path = dir.path().join(format!("{alg}.pem"));
        let (out, _, stderr) = keygen(alg, &path);
        assert!(!out.status.success(), "{alg} accepted");
        assert!(stderr.contains(alg), "{alg}: {stderr}");
        assert!(!path.exists(), "{alg}: nothing written");
    }
}

// ---- check -----------------------------------------------------------------------------

const SECRET_VAR: &str = "GLEIPNIR_CLI_TEST_BFF_SECRET";

const CONFIG: &str = r#"issuer = "https://sts.example.com"

[server]
listen = "127.0.0.1:8080"

[signing]
algorithm = "ES256"
key_file = "signing.pem"

[policy]
dir = "policies"

[[issuers]]
name = "corp"
issuer = "https://idp.example.com/realms/corp"
jwks_uri = "https://idp.example.com/realms/corp/certs"

[[clients]]
id = "bff"
secret = { env = "GLEIPNIR_CLI_TEST_BFF_SECRET" }

[[clients]]
id = "orders-api"
secret = { value = "orders-secret" }
"#;

const POLICY: &str = r#"[clients.bff]
delegate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
scopes = ["orders:read"]
"#;

/// A directory with a valid gleipnir.toml, its key and one policy file.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (out, _, stderr) = keygen("ES256", &dir.path().join("signing.pem"));
        assert!(out.status.success(), "{stderr}");
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        write_tls_files(&dir.path().join("tls"));
        let setup = Setup { dir };
        setup.write_config(CONFIG);
        std::fs::write(setup.policy_path(), POLICY).unwrap();
        setup
    }
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("gleipnir.toml")
    }
    fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policies/bff.toml")
    }
    fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }
    /// `gleipnir <command> --config gleipnir.toml` with the bff secret in its environment.
    fn command(&self, command: &str) -> Command {
        let mut c = gleipnir();
        c.args([command, "--config"])
            .arg(self.config_path())
            .env(SECRET_VAR, "bff-secret");
        c
    }
}

/// `tls/cert.pem` and `tls/key.pem` (a self-signed certificate for 127.0.0.1 and its
/// key), `tls/other-key.pem` (another key) and `tls/garbage.pem` (no PEM at all).
fn write_tls_files(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), pair.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("other-key.pem"), other.serialize_pem()).unwrap();
    std::fs::write(dir.join("garbage.pem"), "not PEM at all\n").unwrap();
}

/// CONFIG with a `[tls]` table naming these files (relative to the config's directory).
fn with_tls(cert: &str, key: &str) -> String {
    format!("{CONFIG}\n[tls]\ncert_file = \"tls/{cert}\"\nkey_file = \"tls/{key}\"\n")
}

#[test]
fn check_accepts_a_valid_tls_config() {
    let setup = Setup::new();
    setup.write_config(&with_tls("cert.pem", "key.pem"));
    let (out, stdout, stderr) = run(&mut setup.command("check"));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(": ok"), "{stdout}");
}

#[test]
fn check_accepts_a_valid_config() {
    let setup = Setup::new();
    let (out, stdout, stderr) = run(&mut setup.command("check"));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("{}: ok", setup.config_path().display())),
        "{stdout}"
    );
}

#[test]
fn check_refuses_bad_configs_naming_file_and_field() {
    // One row per refusal: what the files say, and what the message must name.
    struct Case {
        what: &'static str,
        config: String,
        policy: String,
        unset_secret: bool,
        file: &'static str,
        says: &'static [&'static str],
    }
    fn case(
        what: &'static str,
        config: String,
        policy: String,
        file: &'static str,
        says: &'static [&'static str],
    ) -> Case {
        Case {
            what,
            config,
            policy,
            unset_secret: false,
            file,
            says,
        }
    }
    let cases = [
        case(
            "unknown field",
            CONFIG.replace("[signing]", "[signing]\nkey_id = \"k1\""),
            POLICY.into(),
            "gleipnir.toml",
            &["toml", "unknown field `key_id`", "(line "],
        ),
        case(
            "bad listen address",
            CONFIG.replace("127.0.0.1:8080", "localhost"),
            POLICY.into(),
            "gleipnir.toml",
            &["server.listen", "\"localhost\""],
        ),
        case(
            "missing key file",
            CONFIG.replace("\"signing.pem\"", "\"absent.pem\""),
            POLICY.into(),
            "gleipnir.toml",
            &["signing.key_file", "absent.pem"],
        ),
        Case {
            unset_secret: true,
            ..case(
                "env secret unset",
                CONFIG.into(),
                POLICY.into(),
                "gleipnir.toml",
                &["clients[bff].secret", SECRET_VAR],
            )
        },
        case(
            "policy names an unknown issuer",
            CONFIG.into(),
            POLICY.replace("[\"corp\"]", "[\"partner\"]"),
            "bff.toml",
            &["clients.bff.subject_issuers", "\"partner\""],
        ),
        case(
            "policy lets gleipnir's own tokens act",
            CONFIG.into(),
            POLICY.replace(
                "subject_issuers = [\"corp\"]",
                "subject_issuers = [\"corp\"]\nactor_issuers = [\"corp\", \"self\"]",
            ),
            "bff.toml",
            &[
                "clients.bff.actor_issuers",
                "\"self\" cannot issue actor tokens",
            ],
        ),
        case(
            "delegating policy with no upstream actor issuer",
            CONFIG.into(),
            POLICY.replace("[\"corp\"]", "[\"self\"]"),
            "bff.toml",
            &["clients.bff.actor_issuers", "delegate = true needs"],
        ),
        case(
            "policy for a client not in the config",
            CONFIG.into(),
            POLICY.replace("[clients.bff]", "[clients.ghost]"),
            "bff.toml",
            &["clients.ghost", "no such client"],
        ),
        case(
            "missing TLS certificate",
            with_tls("absent.pem", "key.pem"),
            POLICY.into(),
            "gleipnir.toml",
            &["tls.cert_file", "absent.pem"],
        ),
        case(
            "TLS certificate file without a certificate",
            with_tls("garbage.pem", "key.pem"),
            POLICY.into(),
            "gleipnir.toml",
            &["tls.cert_file", "garbage.pem", "no PEM CERTIFICATE"],
        ),
        case(
            "TLS key file without a key",
            with_tls("cert.pem", "garbage.pem"),
            POLICY.into(),
            "gleipnir.toml",
            &["tls.key_file", "garbage.pem", "no PEM private key"],
        ),
        case(
            "TLS key that does not match the certificate",
            with_tls("cert.pem", "other-key.pem"),
            POLICY.into(),
            "gleipnir.toml",
            &[
                "tls.key_file",
                "other-key.pem",
                "does not match the certificate",
            ],
        ),
        case(
            "TLS watch interval out of bounds",
            format!("{}watch_seconds = 5000\n", with_tls("cert.pem", "key.pem")),
            POLICY.into(),
            "gleipnir.toml",
            &["tls.watch_seconds", "between 0 and 3600"],
        ),
    ];
    for c in cases {
        let setup = Setup::new();
        assert_ne!(
            (c.config.as_str(), c.policy.as_str(), c.unset_secret),
            (CONFIG, POLICY, false),
            "{}: the case changes nothing",
            c.what
        );
        setup.write_config(&c.config);
        std::fs::write(setup.policy_path(), &c.policy).unwrap();
        let mut command = setup.command("check");
        if c.unset_secret {
            command.env_remove(SECRET_VAR);
        }
        let (out, stdout, stderr) = run(&mut command);
        assert!(!out.status.success(), "{}: accepted: {stdout}", c.what);
        let file = match c.file {
            "bff.toml" => setup.policy_path(),
            _ => setup.config_path(),
        };
        assert!(
            stderr.contains(&format!("{}: ", file.display())),
            "{}: names {}: {stderr}",
            c.what,
            file.display()
        );
        for fragment in c.says {
            assert!(
                stderr.contains(fragment),
                "{}: {fragment}: {stderr}",
                c.what
            );
        }
    }
}

#[test]
fn check_and_serve_report_every_independent_mistake_in_one_run() {
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n[tokens]\nmax_depth = 0\n",
        CONFIG
            .replace("127.0.0.1:8080", "localhost")
            .replace("jwks_uri = \"https://idp", "jwks_uri = \"http://idp")
    ));
    let file = setup.config_path().display().to_string();
    let want = [
        format!(
            "error: {file}: server.listen: \"localhost\" is not an address:port (e.g. 127.0.0.1:8080)"
        ),
        format!("error: {file}: tokens.max_depth: must be between 1 and 16"),
        format!(
            "error: {file}: issuers[corp].jwks_uri: must be an https URL (http only with allow_http = true, for loopback tests)"
        ),
    ];
    for command in ["check", "serve"] {
        let (out, stdout, stderr) = run(&mut setup.command(command));
        assert!(!out.status.success(), "{command} accepted: {stdout}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines, want, "{command}: one line per mistake, all of them");
    }
}

// ---- serve -----------------------------------------------------------------------------

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let setup = Setup::new();
    // The public port is taken: a serve that bound before validating would fail with
    // "cannot listen" instead of naming the bad field.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    setup.write_config(
        &CONFIG
            .replace("127.0.0.1:8080", &addr)
            .replace("\"signing.pem\"", "\"absent.pem\""),
    );
    let started = Instant::now();
    let (out, stdout, stderr) = run(&mut setup.command("serve"));
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "{}: signing.key_file",
            setup.config_path().display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn serve_refuses_a_bad_tls_key_before_binding() {
    let setup = Setup::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    setup.write_config(&with_tls("cert.pem", "other-key.pem").replace("127.0.0.1:8080", &addr));
    let (out, stdout, stderr) = run(&mut setup.command("serve"));
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&format!("{}: tls.key_file", setup.config_path().display())),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot listen"), "{stderr}");
}

// ---- dev -------------------------------------------------------------------------------

/// Kills the child when dropped, so a failing assertion leaks no process.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The URL after `marker` in `line`, up to the next space, ')' or ';'.
fn url_after(line: &str, marker: &str) -> String {
    let start = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {line}"))
        + marker.len();
    line[start..]
        .split([' ', ')', ';'])
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn dev_mode_refuses_an_address_beyond_loopback_naming_the_flag() {
    for flag in ["--listen", "--admin-listen", "--demo-issuer-listen"] {
        let mut args = vec![
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--demo-issuer-listen",
            "127.0.0.1:0",
        ];
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = "0.0.0.0:0";
        let out = gleipnir().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{flag} 0.0.0.0:0: dev mode listens on loopback only"
            )),
            "{flag}: {stderr}"
        );
        // Not blamed on a setting the user never wrote.
        assert!(!stderr.contains("issuer:"), "{flag}: {stderr}");
    }
}

/// A running `gleipnir dev` on free loopback ports, with the example it printed.
struct RunningDev {
    child: KillOnDrop,
    example: String,
    stderr: std::thread::JoinHandle<String>,
}

/// Starts `gleipnir dev` on port 0 everywhere, with `extra` arguments, and waits (at most
/// 20 s) for the whole printed example.
fn start_dev(extra: &[&str]) -> RunningDev {
    let mut child = gleipnir()
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--demo-issuer-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);

    // Readers on threads: a pipe the child fills must never block it, and a child that
    // prints nothing must not hang the test.
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut example = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let status = child.0.try_wait().unwrap();
            panic!("no complete example on stdout (status {status:?}):\n{example}");
        };
        example.push_str(&line);
        example.push('\n');
        if line.contains("-d client_assertion=") {
            break;
        }
    }
    RunningDev {
        child,
        example,
        stderr,
    }
}

#[tokio::test]
async fn dev_mode_runs_the_example_it_prints() {
    let RunningDev {
        child,
        example,
        stderr: stderr_reader,
    } = start_dev(&[]);
    let first = example
        .lines()
        .find(|l| l.starts_with("gleipnir dev is serving "))
        .unwrap_or_else(|| panic!("no address line:\n{example}"));
    let sts = url_after(first, "is serving ");
    let admin = url_after(first, "(admin ");
    let iss = url_after(first, "demo issuer at ");
    for url in [&sts, &admin, &iss] {
        assert!(url.starts_with("http://127.0.0.1:"), "{url}: {first}");
        assert!(!url.ends_with(":0"), "the bound port, not 0: {first}");
    }

    // The steps below are the printed ones: fail if the example drifts from them.
    for step in [
        format!("curl -s {iss}/token -d sub=alice -d aud=bff -d scope='orders:read orders:write'"),
        format!("curl -s {iss}/token -d sub=bff -d client_id=bff"),
        format!("curl -s -u bff:bff-dev-secret {sts}/token"),
        format!("-d grant_type={GRANT}"),
        format!("-d subject_token=\"$SUBJECT\" -d subject_token_type={AT}"),
        format!("-d actor_token=\"$ACTOR\" -d actor_token_type={AT}"),
        "-d audience=orders-api -d scope=orders:read".to_owned(),
    ] {
        assert!(
            example.contains(&step),
            "example lacks {step:?}:\n{example}"
        );
    }

    let http = reqwest::Client::new();
    let demo_token = |form: &'static [(&'static str, &'static str)]| {
        let request = http
            .post(format!("{iss}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(form));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        }
    };
    let subject = demo_token(&[
        ("sub", "alice"),
        ("aud", "bff"),
        ("scope", "orders:read orders:write"),
    ])
    .await;
    let actor = demo_token(&[("sub", "bff"), ("client_id", "bff")]).await;

    let response = http
        .post(format!("{sts}/token"))
        .basic_auth("bff", Some("bff-dev-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(&[
            ("grant_type", GRANT),
            ("subject_token", &subject),
            ("subject_token_type", AT),
            ("actor_token", &actor),
            ("actor_token_type", AT),
            ("audience", "orders-api"),
            ("scope", "orders:read"),
        ]))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["act"], json!({ "sub": "bff" }));
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["iss"], sts.as_str());

    let livez = http.get(format!("{admin}/livez")).send().await.unwrap();
    assert_eq!(livez.status(), 200, "the printed admin address serves");

    // Step 3: the workload authenticates with its service-account token, no secret.
    for step in [
        format!(
            "curl -s {iss}/serviceaccount-token -d namespace=shop -d name=inventory -d aud={sts}"
        ),
        format!("curl -s {iss}/token -d sub=alice -d aud=inventory -d scope=orders:read"),
        format!("-d client_assertion_type={JWT_BEARER} \\"),
        "-d client_assertion=\"$SA_TOKEN\"".to_owned(),
    ] {
        assert!(
            example.contains(&step),
            "example lacks {step:?}:\n{example}"
        );
    }
    let claims = workload_exchange(&sts, &iss).await;
    assert_eq!(claims["client_id"], "inventory");
    assert_eq!(claims["aud"], "orders-api");

    drop(child);
    let stderr = stderr_reader.join().unwrap();
    assert!(stderr.contains("DEV MODE"), "{stderr}");
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Step 3 of the dev example: a service-account token from the demo issuer (as a
/// Kubernetes cluster), and the exchange `inventory` authenticates with it. The issued
/// token's claims.
async fn workload_exchange(sts: &str, iss: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let post = |url: String, form: Vec<(&str, &str)>| {
        http.post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(&form))
            .send()
    };
    let text = |r: reqwest::Response| async move {
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };
    let sa_url = format!("{iss}/serviceaccount-token");
    let sa_form = vec![("namespace", "shop"), ("name", "inventory"), ("aud", sts)];
    let sa_token = text(post(sa_url, sa_form).await.unwrap()).await;
    let user_form = vec![
        ("sub", "alice"),
        ("aud", "inventory"),
        ("scope", "orders:read"),
    ];
    let subject = text(post(format!("{iss}/token"), user_form).await.unwrap()).await;
    let exchange = vec![
        ("grant_type", GRANT),
        ("subject_token", subject.as_str()),
        ("subject_token_type", AT),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", sa_token.as_str()),
    ];
    let body = text(post(format!("{sts}/token"), exchange).await.unwrap()).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    claims_of(body["access_token"].as_str().unwrap())
}

/// `dev --write-config DIR` writes the embedded default as files and serves from them:
/// `check` passes on the written file, `policy explain` decides from it as the running
/// server does, and a second run refuses to overwrite it.
#[tokio::test]
async fn dev_mode_writes_the_configuration_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dev");
    let out_arg = out.to_str().unwrap();
    let dev = start_dev(&["--write-config", out_arg]);
    let config = out.join("gleipnir.toml");
    for file in ["gleipnir.toml", "signing.pem", "policies/demo.toml"] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(out.join("signing.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }
    let check = gleipnir()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let first = dev
        .example
        .lines()
        .find(|l| l.starts_with("gleipnir dev is serving "))
        .unwrap();
    let iss = url_after(first, "demo issuer at ");
    let http = reqwest::Client::new();
    let demo_token = |form: &'static [(&'static str, &'static str)]| {
        let request = http
            .post(format!("{iss}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(form));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let subject = demo_token(&[("sub", "alice"), ("aud", "bff"), ("scope", "orders:read")]).await;
    let actor = demo_token(&[("sub", "bff"), ("client_id", "bff")]).await;
    let explain = |actor: String| {
        gleipnir()
            .args(["policy", "explain", "--config"])
            .arg(&config)
            .args(["--client", "bff", "--subject-token", &subject])
            .args(["--actor-token", &actor, "--audience", "orders-api"])
            .output()
            .unwrap()
    };
    let granted = explain(actor);
    let text = String::from_utf8_lossy(&granted.stdout);
    assert!(granted.status.success(), "{text}{granted:?}");
    // The same file refuses what the running server refuses: an actor token of another.
    let foreign = demo_token(&[("sub", "orders-api"), ("client_id", "orders-api")]).await;
    let refused = explain(foreign);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    // The written files configure the workload client too.
    let sts = url_after(first, "is serving ");
    let claims = workload_exchange(&sts, &iss).await;
    assert_eq!(claims["client_id"], "inventory");

    drop(dev.child);
    let again = gleipnir()
        .args([
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--demo-issuer-listen",
            "127.0.0.1:0",
            "--write-config",
            out_arg,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{stderr}");
    assert!(
        stderr.contains("exists; gleipnir never overwrites it"),
        "{stderr}"
    );
}

// ---- jwks ------------------------------------------------------------------------------

/// The `kid`s of a printed JWKS, after checking that it holds public keys only.
fn printed_kids(stdout: &str) -> Vec<String> {
    let jwks: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let keys = jwks["keys"].as_array().expect("a JWKS");
    for key in keys {
        assert!(key.get("d").is_none(), "a private member printed: {key}");
        assert_eq!(key["use"], "sig", "{key}");
    }
    keys.iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn jwks_prints_the_public_key_of_the_configured_key_file_without_secrets() {
    let setup = Setup::new();
    // No client secret in the environment: publishing keys needs none.
    let (out, stdout, stderr) = run(gleipnir()
        .args(["jwks", "--config"])
        .arg(setup.config_path())
        .env_remove(SECRET_VAR));
    assert!(out.status.success(), "{stderr}");
    let key = SigningKey::from_pem_file(JwsAlgorithm::Es256, &setup.dir.path().join("signing.pem"))
        .unwrap();
    let printed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(printed, json!({ "keys": [key.public_jwk()] }));
    assert_eq!(printed_kids(&stdout), [key.kid()]);
}

#[test]
fn jwks_publishes_an_upcoming_key_of_a_key_directory_before_it_signs() {
    let setup = Setup::new();
    let keys = setup.dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (out, _, stderr) = keygen("ES256", &keys.join("now.pem"));
    assert!(out.status.success(), "{stderr}");
    let (out, _, stderr) = keygen("EdDSA", &keys.join("next.pem"));
    assert!(out.status.success(), "{stderr}");
    std::fs::write(
        keys.join("keys.toml"),
        "[[keys]]\nfile = \"now.pem\"\nnot_before = 2020-01-01T00:00:00Z\n\n\
         [[keys]]\nfile = \"next.pem\"\nnot_before = 2999-01-01T00:00:00Z\nalgorithm = \"EdDSA\"\n",
    )
    .unwrap();
    setup.write_config(&CONFIG.replace("key_file = \"signing.pem\"", "key_dir = \"keys\""));

    let (out, stdout, stderr) = run(&mut setup.command("jwks"));
    assert!(out.status.success(), "{stderr}");
    let kid = |alg, file: &str| {
        SigningKey::from_pem_file(alg, &keys.join(file))
            .unwrap()
            .kid()
            .to_owned()
    };
    assert_eq!(
        printed_kids(&stdout),
        [
            kid(JwsAlgorithm::Es256, "now.pem"),
            kid(JwsAlgorithm::EdDsa, "next.pem")
        ],
        "the signing key and the upcoming one"
    );
}

#[test]
fn jwks_refuses_a_configuration_without_its_key_naming_the_field() {
    let setup = Setup::new();
    std::fs::remove_file(setup.dir.path().join("signing.pem")).unwrap();
    let (out, stdout, stderr) = run(&mut setup.command("jwks"));
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("signing.key_file"), "{stderr}");
}

// ---- the shipped deploy config ---------------------------------------------------------

/// Every `env = "NAME"` secret source anywhere in the config.
fn env_names(value: &toml::Value, names: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                match (key.as_str(), v) {
                    ("env", toml::Value::String(name)) => names.push(name.clone()),
                    _ => env_names(v, names),
                }
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| env_names(v, names)),
        _ => {}
    }
}

#[test]
fn deploy_config_passes_check() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = manifest.join("deploy/gleipnir.toml");
    let text =
        std::fs::read_to_string(&shipped).unwrap_or_else(|e| panic!("{}: {e}", shipped.display()));
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Its policies are the repository's (it names them relative to deploy/).
    let policy_dir = &mut config["policy"]["dir"];
    assert_eq!(policy_dir.as_str(), Some("../policies"), "[policy] dir");
    *policy_dir = toml::Value::String(manifest.join("policies").display().to_string());
    let config_path = dir.path().join("gleipnir.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    // Its key is a fresh one where key_file says, relative to the config.
    let signing = &config["signing"];
    let key_file = dir.path().join(signing["key_file"].as_str().unwrap());
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    let alg = signing
        .get("algorithm")
        .and_then(toml::Value::as_str)
        .unwrap_or("ES256");
    let (out, _, stderr) = keygen(alg, &key_file);
    assert!(out.status.success(), "{stderr}");

    // Every secret it reads from the environment gets a dummy value.
    let mut names = Vec::new();
    env_names(&toml::Value::Table(config), &mut names);
    let mut check = gleipnir();
    check.arg("check").arg("--config").arg(&config_path);
    for name in &names {
        assert!(
            name.starts_with("GLEIPNIR_SECRET_"),
            "secret variables are named GLEIPNIR_SECRET_*: {name}"
        );
        check.env(name, "dummy-secret-for-check");
    }
    let (out, stdout, stderr) = run(&mut check);
    assert!(
        out.status.success(),
        "check of deploy/gleipnir.toml failed (secrets set: {names:?}):\n{stderr}"
    );
    assert!(stdout.contains(": ok"), "{stdout}");
}
