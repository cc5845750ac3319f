//! The forward-auth endpoint behind a real nginx (Debian's package), started on loopback
//! with `deploy/nginx/nginx.conf` (only its addresses and credentials replaced):
//! client → nginx (`auth_request` to gleipnir) → an upstream echo service that verifies
//! the token it receives against gleipnir's JWKS with an independent library
//! (`jsonwebtoken`). Granted, cached and refused requests; a refused one never reaches
//! the upstream. Skips without nginx (fails under `GLEIPNIR_REQUIRE_INTEROP=1`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::*;
use tokio::net::TcpListener;

/// The configuration shipped in `deploy/`, which this test runs.
const NGINX_CONF: &str = include_str!("../deploy/nginx/nginx.conf");

const SECTION: &str = r#"
[forward_auth]

[[forward_auth.routes]]
host = "127.0.0.1"
path_prefix = "/orders"
audiences = ["orders-api"]
scope = "orders:read"
"#;

/// The nginx binary: on PATH, or where Debian puts it.
fn nginx_binary() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
}

/// A free loopback port (bound, then released for nginx to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx running from a temp dir; stopped (SIGTERM to its master) on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(binary: &Path, gleipnir: &str, upstream: &str, credentials: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // Workers of an nginx started as root run as `nobody`: let them in.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let port = free_port();
        let mut conf = NGINX_CONF.to_owned();
        for (from, to) in [
            ("server 127.0.0.1:8080;", format!("server {gleipnir};")),
            ("server 127.0.0.1:9000;", format!("server {upstream};")),
            (
                "listen 127.0.0.1:8000;",
                format!("listen 127.0.0.1:{port};"),
            ),
            (
                "\"Basic Z2F0ZXdheTpnYXRld2F5LXNlY3JldA==\"",
                format!("\"{credentials}\""),
            ),
        ] {
            assert!(conf.contains(from), "deploy/nginx/nginx.conf lost {from}");
            conf = conf.replace(from, &to);
        }
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .args(["-c", "nginx.conf", "-e", "error.log", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, dir, port };
        nginx.wait_listening();
        nginx
    }

    fn wait_listening(&mut self) {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not listen:\n{}", self.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its workers on SIGTERM; SIGKILL would leave them behind.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The upstream service: answers each request with the claims of the token it received,
/// once `jsonwebtoken` verified it against gleipnir's JWKS; 401 otherwise. Counts the
/// requests that reach it.
struct Echo {
    addr: String,
    hits: Arc<AtomicUsize>,
}

async fn start_echo(jwks: Value, issuer: String) -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let keys: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let keys = Arc::new(keys);
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (keys, counter, issuer) = (Arc::clone(&keys), Arc::clone(&counter), issuer.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let verified = verify(&keys, &issuer, request.headers());
                    async move {
                        let (status, body) = match verified {
                            Ok(claims) => (200, claims.to_string()),
                            Err(why) => (401, why),
                        };
                        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Echo { addr, hits }
}

/// The claims of the request's `Authorization: Bearer` token, verified independently.
fn verify(
    keys: &jsonwebtoken::jwk::JwkSet,
    issuer: &str,
    headers: &hyper::HeaderMap,
) -> Result<Value, String> {
    let value = headers
        .get("authorization")
        .ok_or("no Authorization")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let token = value.strip_prefix("Bearer ").ok_or("not Bearer")?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let jwk = keys
        .find(header.kid.as_deref().ok_or("no kid")?)
        .ok_or("unknown kid")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    // Our tokens live in 2030 (the tests' fixed clock): exp is checked by the test.
    validation.validate_exp = false;
    let data =
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())?;
    Ok(data.claims)
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn get(url: &str, headers: &[(&str, String)]) -> Reply {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_gets_tokens_from_gleipnir() {
    let Some(binary) = nginx_binary() else {
        skip(
            "nginx_auth_request_gets_tokens_from_gleipnir",
            "nginx is not installed",
            "apt-get install -y nginx (Debian)",
        );
        return;
    };
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .extra(SECTION)
        .start()
        .await;
    let (_, jwks) = sts.get_json("/.well-known/jwks.json").await;
    let echo = start_echo(jwks, sts.base.clone()).await;
    let credentials = "Basic YmZmOmJmZi1zZWNyZXQ="; // bff:bff-secret
    let nginx = Nginx::start(&binary, &addr(&sts.base), &echo.addr, credentials);

    // Granted: the upstream receives a token for its audience, verified independently.
    let subject = issuer.user_token("alice", "bff", "orders:read orders:write");
    let bearer = vec![("authorization", format!("Bearer {subject}"))];
    let reply = get(&nginx.url("/orders/17?full=1"), &bearer).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, nginx.error_log());
    let claims: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["client_id"], "bff");
    assert!(claims["exp"].as_u64().unwrap() > NOW);
    let jti = claims["jti"].clone();
    assert_eq!(echo.hits.load(Ordering::SeqCst), 1);

    // Cached: the same user token again gets the same token, from memory.
    let again = get(&nginx.url("/orders/18"), &bearer).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let claims: Value = serde_json::from_str(&again.body).unwrap();
    assert_eq!(claims["jti"], jti);
    assert_eq!(
        metric_value(
            &sts.admin,
            "gleipnir_reissue_cache_lookups_total{result=\"hit\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(echo.hits.load(Ordering::SeqCst), 2);

    // Refused: the upstream is never reached.
    let foreign = issuer.user_token("alice", "other-app", "orders:read");
    type Row<'a> = (&'a str, String, Vec<(&'a str, String)>, u16);
    let refusals: Vec<Row> = vec![
        ("no token", "/orders/1".into(), vec![], 401),
        (
            "a token not issued to the gateway's client",
            "/orders/1".into(),
            vec![("authorization", format!("Bearer {foreign}"))],
            403,
        ),
        ("no route", "/admin".into(), bearer.clone(), 403),
        (
            "a client's own credentials and target headers are replaced by nginx's",
            "/admin".into(),
            vec![
                ("authorization", format!("Bearer {subject}")),
                (
                    "x-gleipnir-client-authorization",
                    "Basic bWFsbG9yeTptYWxsb3J5LXNlY3JldA==".into(),
                ),
                ("x-forwarded-uri", "/orders/1".into()),
                ("x-forwarded-host", "127.0.0.1".into()),
            ],
            403,
        ),
    ];
    for (what, path, headers, status) in refusals {
        let reply = get(&nginx.url(&path), &headers).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        assert!(
            !reply.body.contains("eyJ"),
            "{what}: no token in the answer"
        );
        assert_eq!(
            echo.hits.load(Ordering::SeqCst),
            2,
            "{what}: upstream not reached"
        );
        if status == 401 {
            // nginx passes gleipnir's challenge on.
            assert_eq!(
                reply.headers["www-authenticate"], r#"Bearer realm="gleipnir""#,
                "{what}"
            );
        }
    }
    let refused = metric_value(
        &sts.admin,
        "gleipnir_forward_auth_requests_total{result=\"invalid_target\"}",
    )
    .await;
    assert_eq!(refused, Some(2.0), "both /admin requests reached gleipnir");
}
