//! Test harness: a real upstream issuer on loopback (its own keys, a JWKS endpoint, a
//! fetch counter) and the real gleipnir server on 127.0.0.1:0 with a manual clock.
//! Nothing of gleipnir's is mocked: tests talk HTTP to both.
//!
//! The issuer signs with aws-lc-rs directly from raw header and claims JSON, so tests can
//! build any token a compromised or confused issuer might produce. Keys are generated per
//! test run; none is a fixture.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use gleipnir::app::App;
use gleipnir::clock::{Clock, ManualClock};
use gleipnir::config::Config;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub mod audit;
pub mod forms;
pub mod redis;

/// The fixed "now" of every test: 2030-03-17T17:46:40Z.
pub const NOW: u64 = 1_900_000_000;

pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_json(v: &Value) -> String {
    b64(v.to_string().as_bytes())
}

/// Decodes the claims of a compact JWS without verifying (for assertions).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Decodes the header of a compact JWS.
pub fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

/// The key types the test issuer signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Rs256,
    Ps256,
    EdDsa,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::EdDsa => "EdDSA",
        }
    }
    pub fn kid(self) -> &'static str {
        match self {
            Alg::Es256 => "es-1",
            Alg::Rs256 | Alg::Ps256 => "rs-1",
            Alg::EdDsa => "ed-1",
        }
    }
}

struct IssuerKeys {
    ec: EcdsaKeyPair,
    rsa: RsaKeyPair,
    ed: Ed25519KeyPair,
}

/// How the test issuer's JWKS endpoint behaves (fault tests switch it at run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the JWKS.
    Serve,
    /// This status, no JWKS.
    Status(u16),
    /// Accepts the connection and never answers.
    Hang,
    /// Sends a 200 header, then one byte of body every 200 ms.
    Trickle,
    /// 302 to `/real-jwks.json`, which would serve the JWKS if the redirect were followed.
    Redirect,
    /// 200 with the JWKS padded beyond 128 KiB.
    Huge,
}

/// A real upstream issuer: serves `GET /jwks.json` on loopback and signs test tokens.
pub struct TestIssuer {
    pub iss: String,
    pub addr: SocketAddr,
    keys: Arc<IssuerKeys>,
    jwks: Arc<std::sync::Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    /// Every request's URI and headers, in order.
    urls_requested: Arc<std::sync::Mutex<Vec<(String, http::HeaderMap)>>>,
    behaviour: Arc<std::sync::Mutex<Behaviour>>,
    /// The `Cache-Control` of `/jwks.json` answers (`None`: no header).
    cache_control: Arc<std::sync::Mutex<Option<String>>>,
    documents: Documents,
    /// The issuer's RFC 7662 endpoint (`/introspect`, and Keycloak's realm path).
    pub introspection: Arc<Introspection>,
}

/// gleipnir's credentials at the test issuer's introspection endpoint.
pub const INTROSPECTION_CLIENT: (&str, &str) = ("gleipnir", "introspect-secret");

/// The test issuer's introspection endpoint: answers from a table of opaque tokens,
/// checks gleipnir's Basic credentials, counts calls.
#[derive(Default)]
pub struct Introspection {
    answers: std::sync::Mutex<std::collections::HashMap<String, Value>>,
    calls: AtomicUsize,
    status: std::sync::Mutex<Option<u16>>,
    body: std::sync::Mutex<Option<Value>>,
    delay: std::sync::Mutex<std::time::Duration>,
    last_form: std::sync::Mutex<String>,
}

impl Introspection {
    /// What the endpoint answers for `token` (tokens not in the table: `active: false`).
    pub fn answer(&self, token: &str, answer: Value) {
        self.answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), answer);
    }
    /// Answers every call with this status (and no JSON) from now on; `None` restores.
    pub fn fail_with(&self, status: Option<u16>) {
        *self.status.lock().unwrap() = status;
    }
    /// Answers every call with this status and JSON body.
    pub fn fail_with_body(&self, status: u16, body: Value) {
        *self.status.lock().unwrap() = Some(status);
        *self.body.lock().unwrap() = Some(body);
    }
    /// Waits this long before answering each call.
    pub fn delay(&self, delay: std::time::Duration) {
        *self.delay.lock().unwrap() = delay;
    }
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    /// The last form body received.
    pub fn last_form(&self) -> String {
        self.last_form.lock().unwrap().clone()
    }

    async fn respond(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        use http_body_util::BodyExt as _;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1
            ))
        );
        let authorized = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form = String::from_utf8(body.to_vec()).unwrap();
        *self.last_form.lock().unwrap() = form.clone();
        let status = *self.status.lock().unwrap();
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let reply = |status: u16, body: String| {
            hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        };
        if let Some(status) = status {
            let body = self
                .body
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| json!({}));
            return reply(status, body.to_string());
        }
        if !authorized {
            return reply(401, r#"{"error":"invalid_client"}"#.into());
        }
        let token = gleipnir::oauth::form::FormBody::parse(form.as_bytes())
            .unwrap()
            .single("token")
            .unwrap()
            .unwrap_or_default()
            .to_owned();
        let answer = self.answers.lock().unwrap().get(&token).cloned();
        reply(
            200,
            answer
                .unwrap_or_else(|| json!({ "active": false }))
                .to_string(),
        )
    }
}

/// Extra JSON documents the issuer serves, by path (metadata for discovery tests).
type Documents = Arc<std::sync::Mutex<std::collections::HashMap<String, Value>>>;

impl TestIssuer {
    /// Starts an issuer whose `iss` is its own base URL.
    pub async fn start() -> TestIssuer {
        let keys = Arc::new(IssuerKeys {
            ec: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            ed: Ed25519KeyPair::generate().unwrap(),
        });
        let jwks = Arc::new(std::sync::Mutex::new(jwks_for(&keys)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let urls_requested = Arc::new(std::sync::Mutex::new(Vec::new()));
        let behaviour = Arc::new(std::sync::Mutex::new(Behaviour::Serve));
        let behaviour_srv = Arc::clone(&behaviour);
        let cache_control: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let cache_control_srv = Arc::clone(&cache_control);
        let documents: Documents = Arc::default();
        let documents_srv = Arc::clone(&documents);
        let introspection: Arc<Introspection> = Arc::default();
        let introspection_srv = Arc::clone(&introspection);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (jwks_srv, fetches_srv, urls_srv) = (
            Arc::clone(&jwks),
            Arc::clone(&fetches),
            Arc::clone(&urls_requested),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if *behaviour_srv.lock().unwrap() == Behaviour::Trickle {
                    fetches_srv.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(trickle(stream));
                    continue;
                }
                let behaviour = Arc::clone(&behaviour_srv);
                let cache_control = Arc::clone(&cache_control_srv);
                let documents = Arc::clone(&documents_srv);
                let introspection = Arc::clone(&introspection_srv);
                let (jwks, fetches, urls) = (
                    Arc::clone(&jwks_srv),
                    Arc::clone(&fetches_srv),
                    Arc::clone(&urls_srv),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (jwks, fetches, urls) =
                            (Arc::clone(&jwks), Arc::clone(&fetches), Arc::clone(&urls));
                        let behaviour = *behaviour.lock().unwrap();
                        let cache_control = cache_control.lock().unwrap().clone();
                        let document = documents.lock().unwrap().get(req.uri().path()).cloned();
                        let introspection = Arc::clone(&introspection);
                        async move {
                            urls.lock()
                                .unwrap()
                                .push((req.uri().to_string(), req.headers().clone()));
                            let introspecting = req.uri().path() == "/introspect"
                                || req
                                    .uri()
                                    .path()
                                    .ends_with("/protocol/openid-connect/token/introspect");
                            if introspecting {
                                return Ok::<_, Infallible>(introspection.respond(req).await);
                            }
                            let path = req.uri().path();
                            let json = |body: String| {
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap()
                            };
                            // Faults (Behaviour) apply to /jwks.json; the Keycloak realm path
                            // <issuer>/protocol/openid-connect/certs always serves the keys.
                            let response = if let Some(document) = document {
                                json(document.to_string())
                            } else if path.ends_with("/protocol/openid-connect/certs") {
                                fetches.fetch_add(1, Ordering::SeqCst);
                                json(jwks.lock().unwrap().to_string())
                            } else if path == "/jwks.json" {
                                fetches.fetch_add(1, Ordering::SeqCst);
                                let body = jwks.lock().unwrap().to_string();
                                match behaviour {
                                    Behaviour::Serve | Behaviour::Trickle => {
                                        let mut response = json(body);
                                        if let Some(value) = cache_control {
                                            response
                                                .headers_mut()
                                                .insert("cache-control", value.parse().unwrap());
                                        }
                                        response
                                    }
                                    Behaviour::Status(code) => hyper::Response::builder()
                                        .status(code)
                                        .body(Full::new(Bytes::from_static(b"down")))
                                        .unwrap(),
                                    Behaviour::Hang => std::future::pending().await,
                                    Behaviour::Redirect => hyper::Response::builder()
                                        .status(302)
                                        .header("location", "/real-jwks.json")
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                    Behaviour::Huge => {
                                        let mut padded: Value =
                                            serde_json::from_str(&body).unwrap();
                                        padded["padding"] = Value::String("x".repeat(130 * 1024));
                                        json(padded.to_string())
                                    }
                                }
                            } else if path == "/real-jwks.json" {
                                json(jwks.lock().unwrap().to_string())
                            } else {
                                hyper::Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestIssuer {
            iss: format!("http://{addr}"),
            addr,
            keys,
            jwks,
            fetches,
            urls_requested,
            behaviour,
            cache_control,
            documents,
            introspection,
        }
    }

    /// Serves `document` as JSON at `path` (e.g. `/.well-known/openid-configuration`).
    pub fn serve_document(&self, path: &str, document: Value) {
        self.documents
            .lock()
            .unwrap()
            .insert(path.to_owned(), document);
    }

    /// Changes how the JWKS endpoint behaves from the next request on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Sends this `Cache-Control` with the JWKS from the next request on.
    pub fn set_cache_control(&self, value: &str) {
        *self.cache_control.lock().unwrap() = Some(value.to_owned());
    }

    pub fn jwks_uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Every path the issuer was asked for.
    pub fn urls_requested(&self) -> Vec<String> {
        let requests = self.urls_requested.lock().unwrap();
        requests.iter().map(|(uri, _)| uri.clone()).collect()
    }

    /// Every request the issuer received: its path and its headers.
    pub fn requests(&self) -> Vec<(String, http::HeaderMap)> {
        self.urls_requested.lock().unwrap().clone()
    }

    /// Replaces the published JWKS document.
    pub fn set_jwks(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }

    /// The JWKS the issuer publishes by default.
    pub fn default_jwks(&self) -> Value {
        jwks_for(&self.keys)
    }

    /// Signs `header.claims` (as given, byte for byte) with the key for `alg`.
    pub fn sign_raw(&self, alg: Alg, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let sig = self.signature(alg, input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    pub fn signature(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match alg {
            Alg::Es256 => self.keys.ec.sign(&rng, message).unwrap().as_ref().to_vec(),
            Alg::EdDsa => self.keys.ed.sign(message).as_ref().to_vec(),
            Alg::Rs256 | Alg::Ps256 => {
                let padding: &dyn signature::RsaEncoding = if alg == Alg::Rs256 {
                    &signature::RSA_PKCS1_SHA256
                } else {
                    &signature::RSA_PSS_SHA256
                };
                let mut sig = vec![0u8; self.keys.rsa.public_modulus_len()];
                self.keys
                    .rsa
                    .sign(padding, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    /// Signs `claims` with `header` (JSON values).
    pub fn sign_with(&self, alg: Alg, header: Value, claims: Value) -> String {
        self.sign_raw(alg, &header.to_string(), &claims.to_string())
    }

    /// An RFC 9068 access token (ES256, `typ: at+jwt`) with these claims.
    pub fn sign(&self, claims: Value) -> String {
        self.sign_as(Alg::Es256, claims)
    }

    /// An RFC 9068 access token signed with `alg`.
    pub fn sign_as(&self, alg: Alg, claims: Value) -> String {
        self.sign_with(
            alg,
            json!({ "alg": alg.name(), "kid": alg.kid(), "typ": "at+jwt" }),
            claims,
        )
    }

    /// The claims of a valid user token for `sub`, issued to `aud`, with `scope`.
    pub fn user_claims(&self, sub: &str, aud: &str, scope: &str) -> Value {
        json!({ "iss": self.iss, "sub": sub, "aud": aud, "scope": scope,
                "iat": NOW - 60, "exp": NOW + 600, "jti": format!("{sub}-{aud}") })
    }

    /// A valid user token.
    pub fn user_token(&self, sub: &str, aud: &str, scope: &str) -> String {
        self.sign(self.user_claims(sub, aud, scope))
    }

    /// The claims of a client's own actor token (client-credentials style).
    pub fn actor_claims(&self, client_id: &str) -> Value {
        json!({ "iss": self.iss, "sub": client_id, "client_id": client_id,
                "iat": NOW - 60, "exp": NOW + 600 })
    }

    /// A valid actor token for `client_id`.
    pub fn actor_token(&self, client_id: &str) -> String {
        self.sign(self.actor_claims(client_id))
    }
}

/// A response that never finishes: a 200 header announcing a large body, then one byte
/// every 200 ms.
async fn trickle(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if stream.write_all(b" ").await.is_err() {
            return;
        }
    }
}

fn jwks_for(keys: &IssuerKeys) -> Value {
    let point = keys.ec.public_key().as_ref();
    let rsa = keys.rsa.public_key();
    json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "es-1", "use": "sig", "alg": "ES256",
          "x": b64(&point[1..33]), "y": b64(&point[33..65]) },
        { "kty": "RSA", "kid": "rs-1", "use": "sig",
          "n": b64(rsa.modulus().big_endian_without_leading_zero()),
          "e": b64(rsa.exponent().big_endian_without_leading_zero()) },
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig", "alg": "EdDSA",
          "x": b64(keys.ed.public_key().as_ref()) },
    ]})
}

/// Clients registered in every test STS: (id, secret).
pub const BFF: (&str, &str) = ("bff", "bff-secret");
pub const ORDERS: (&str, &str) = ("orders-api", "orders-secret");
pub const MALLORY: (&str, &str) = ("mallory", "mallory-secret");
pub const NO_POLICY: (&str, &str) = ("no-policy", "no-policy-secret");
pub const DISABLED: (&str, &str) = ("disabled", "disabled-secret");
pub const IMPERSONATOR: (&str, &str) = ("impersonator", "impersonator-secret");

/// The policy most tests run under.
pub const DEFAULT_POLICY: &str = r#"
[clients.bff]
impersonate = true
delegate = true
subject_issuers = ["corp"]
actor_issuers = ["corp"]
audiences = ["orders-api", "inventory-api"]
resources = ["https://orders.example/api"]
default_audience = "orders-api"
scopes = ["orders:read", "orders:write"]
ttl_seconds = 300

[clients.orders-api]
delegate = true
subject_issuers = ["self", "corp"]
subject_namespace = "issuer_claim"
actor_issuers = ["corp"]
audiences = ["payments-api"]
default_audience = "payments-api"
scopes = ["orders:read"]

[clients.mallory]
impersonate = true
delegate = true
subject_issuers = ["corp", "self"]
subject_namespace = "issuer_claim"
actor_issuers = ["corp"]
audiences = ["orders-api", "payments-api"]
default_audience = "orders-api"
scopes = ["orders:read", "orders:write"]

[clients.disabled]
enabled = false
impersonate = true
delegate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"

[clients.impersonator]
impersonate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
"#;

/// How to build a test STS.
pub struct StsBuilder<'a> {
    /// (name, `iss`, `jwks_uri`, extra TOML lines) of each `[[issuers]]` entry.
    issuers: Vec<(String, String, String, String)>,
    policy: String,
    /// Further policy files (name, text) beside `policies/test.toml`.
    policy_files: Vec<(String, String)>,
    tokens: String,
    server: String,
    signing_alg: &'a str,
    signing: Option<String>,
    /// Lines of a `[tls]` table: the public listener serves HTTPS.
    tls: Option<String>,
    /// Extra TOML lines for registered clients' `[[clients]]` entries, by id.
    client_lines: Vec<(String, String)>,
    /// Top-level TOML after the clients: more `[[clients]]` (other authentication
    /// methods), `[[workload_issuers]]`, `[client_certificates]`, `[reissue_cache]`,
    /// `[forward_auth]`.
    extra: String,
    /// Our `issuer` instead of the public listener's URL (replicas share one).
    issuer_url: Option<String>,
}

impl<'a> StsBuilder<'a> {
    /// Trust `issuer` under `name`, with extra TOML lines for its [[issuers]] entry.
    pub fn issuer(self, name: &'a str, issuer: &'a TestIssuer, extra: &'a str) -> Self {
        let jwks_uri = issuer.jwks_uri();
        self.issuer_at(name, &issuer.iss, &jwks_uri, extra)
    }
    /// Trust an issuer given by its raw `iss` and `jwks_uri` (plain HTTP allowed), e.g.
    /// one whose JWKS endpoint is down.
    pub fn issuer_at(mut self, name: &str, iss: &str, jwks_uri: &str, extra: &str) -> Self {
        self.issuers.push((
            name.to_owned(),
            iss.to_owned(),
            jwks_uri.to_owned(),
            extra.to_owned(),
        ));
        self
    }
    pub fn policy(mut self, policy: &str) -> Self {
        self.policy = policy.to_owned();
        self
    }
    /// Extra TOML lines for the `[[clients]]` entry of registered client `id` (e.g. its
    /// `actor_sub`).
    pub fn client(mut self, id: &str, lines: &str) -> Self {
        self.client_lines.push((id.to_owned(), lines.to_owned()));
        self
    }
    /// Another policy file `policies/<name>`, read with `test.toml` in name order.
    pub fn policy_file(mut self, name: &str, text: &str) -> Self {
        self.policy_files.push((name.to_owned(), text.to_owned()));
        self
    }
    /// Extra lines for the [server] table. Unless they set `drain_seconds`, it is 0: a
    /// test's shutdown stops accepting at once.
    pub fn server(mut self, lines: &str) -> Self {
        self.server = lines.to_owned();
        self
    }
    /// Extra lines for the [tokens] table.
    pub fn tokens(mut self, lines: &str) -> Self {
        self.tokens = lines.to_owned();
        self
    }
    /// Lines for the [signing] table instead of `key_file = "signing.pem"` (a key
    /// directory, for rotation; relative paths are in the STS's temp dir).
    pub fn signing(mut self, lines: &str) -> Self {
        self.signing = Some(lines.to_owned());
        self
    }
    /// Lines of a `[tls]` table (`cert_file`, `key_file`, …): the public listener serves
    /// HTTPS and `Sts::base` is an https URL. `Sts::http` does not trust the test CA: set
    /// it to a client that does.
    pub fn tls(mut self, lines: &str) -> Self {
        self.tls = Some(lines.to_owned());
        self
    }
    /// Top-level TOML after the registered clients (more `[[clients]]`,
    /// `[[workload_issuers]]`, `[client_certificates]`, `[reissue_cache]`,
    /// `[forward_auth]`, `[store]`, `[lifecycle]`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
    /// Our `issuer`, instead of the public listener's URL: replicas of one service share
    /// it (and a signing key, with [`signing`](Self::signing)).
    pub fn issuer_url(mut self, url: &str) -> Self {
        self.issuer_url = Some(url.to_owned());
        self
    }
    pub fn signing_alg(mut self, alg: &'a str) -> Self {
        self.signing_alg = alg;
        self
    }

    /// Builds the App as the STS would run it, with `base` as its issuer, without
    /// starting any listener (benches drive its exchanger directly).
    pub fn build_app(self, base: &str) -> (gleipnir::app::Built, ManualClock, tempfile::TempDir) {
        self.try_build_app(base).unwrap()
    }

    /// [`build_app`](Self::build_app), returning the error start-up would report.
    pub fn try_build_app(
        self,
        base: &str,
    ) -> Result<(gleipnir::app::Built, ManualClock, tempfile::TempDir), gleipnir::config::ConfigError>
    {
        let (app, clock, dir, _) = self.try_build(base)?;
        Ok((app, clock, dir))
    }

    /// The App and, with `[tls]`, the public listener's TLS, as `serve` loads them.
    fn try_build(self, base: &str) -> Result<Built, gleipnir::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let alg = gleipnir::jose::JwsAlgorithm::from_name(self.signing_alg).unwrap();
        let pem = gleipnir::keys::pkcs8_to_pem(&gleipnir::keys::generate_pkcs8(alg).unwrap());
        std::fs::write(dir.path().join("signing.pem"), pem.as_bytes()).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/test.toml"), &self.policy).unwrap();
        for (name, text) in &self.policy_files {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        let issuers: String = self
            .issuers
            .iter()
            .map(|(name, iss, jwks_uri, extra)| {
                // An empty jwks_uri leaves it to the issuer's profile (Keycloak's realm path).
                let jwks_uri = if jwks_uri.is_empty() {
                    String::new()
                } else {
                    format!("jwks_uri = \"{jwks_uri}\"\n")
                };
                format!(
                    "[[issuers]]\nname = \"{name}\"\nissuer = \"{iss}\"\n{jwks_uri}allow_http = true\n{extra}\n"
                )
            })
            .collect();
        let issuers = match &self.tls {
            Some(lines) => format!("[tls]\n{lines}\n{issuers}"),
            None => issuers,
        };
        let clients: String = [BFF, ORDERS, MALLORY, NO_POLICY, DISABLED, IMPERSONATOR]
            .iter()
            .map(|(id, secret)| {
                let extra: String = self
                    .client_lines
                    .iter()
                    .filter(|(c, _)| c == id)
                    .map(|(_, lines)| format!("{lines}\n"))
                    .collect();
                format!("[[clients]]\nid = \"{id}\"\nsecret = {{ value = \"{secret}\" }}\n{extra}")
            })
            .collect();
        // Shutdowns are instant unless a test sets a drain time; every refusal is
        // written in full, so a test can look up each one's record, unless a test sets the
        // aggregation window itself (the binary's default is tested in log_streams).
        let mut server = self.server.clone();
        if !server.contains("drain_seconds") {
            server.push_str("\ndrain_seconds = 0");
        }
        if !server.contains("audit_refusal_window_seconds") {
            server = format!("audit_refusal_window_seconds = 0\n{server}");
        }
        let base = self.issuer_url.as_deref().unwrap_or(base);
        let text = format!(
            "issuer = \"{base}\"\n[server]\n{}\n[signing]\nalgorithm = \"{}\"\n{}\n[tokens]\n{}\n{issuers}{clients}\n{}",
            server,
            self.signing_alg,
            self.signing
                .as_deref()
                .unwrap_or("key_file = \"signing.pem\""),
            self.tokens,
            self.extra
        );
        let config = Config::from_toml(&text, &dir.path().join("gleipnir.toml"))
            .map_err(gleipnir::config::ConfigErrors::into_first)?;
        let clock = ManualClock::new(NOW);
        let app = App::build(&config, Clock::from(clock.clone()))?;
        let tls = gleipnir::server::tls::Tls::load(&config)?;
        Ok((app, clock, dir, tls))
    }

    pub async fn start(self) -> Sts {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", public.local_addr().unwrap());
        let (app, clock, dir, tls) = self.try_build(&base).unwrap();
        let admin_base = format!("http://{}", admin.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = match tls {
            Some(tls) => tokio::spawn(gleipnir::server::run_tls(app, public, tls, admin, shutdown)),
            None => tokio::spawn(gleipnir::server::run(app, public, admin, shutdown)),
        };
        Sts {
            base,
            admin: admin_base,
            clock,
            http: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }
}

impl Sts {
    /// The real server on a configuration file of one's own, as `serve` loads it from
    /// `dir/gleipnir.toml` (relative paths in it are relative to `dir`), with a manual
    /// clock set to `now`: `text_for` gets the public listener's base URL (for
    /// `issuer`) and returns the file's text. No `[tls]`.
    pub async fn start_from_file(
        dir: tempfile::TempDir,
        now: u64,
        text_for: impl FnOnce(&str) -> String,
    ) -> Sts {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", public.local_addr().unwrap());
        let path = dir.path().join("gleipnir.toml");
        let text = text_for(&base);
        std::fs::write(&path, &text).unwrap();
        let config = Config::from_toml(&text, &path)
            .map_err(gleipnir::config::ConfigErrors::into_first)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let clock = ManualClock::new(now);
        let app = App::build(&config, Clock::from(clock.clone())).unwrap();
        let admin_base = format!("http://{}", admin.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(gleipnir::server::run(app, public, admin, shutdown));
        Sts {
            base,
            admin: admin_base,
            clock,
            http: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }
}

/// What [`StsBuilder::try_build`] makes: the App, its clock, the temp dir holding its
/// files, and the public listener's TLS when `[tls]` was given.
type Built = (
    gleipnir::app::Built,
    ManualClock,
    tempfile::TempDir,
    Option<Arc<gleipnir::server::tls::Tls>>,
);

/// A running gleipnir.
pub struct Sts {
    pub base: String,
    pub admin: String,
    pub clock: ManualClock,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The answer to a token request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("<none>")
    }
    pub fn token(&self) -> &str {
        self.body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {} {}", self.status, self.body))
    }
    pub fn claims(&self) -> Value {
        claims_of(self.token())
    }
    /// The `x-request-id` the server gave this answer (the key of its audit record).
    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
    }
}

impl Sts {
    pub fn builder<'a>() -> StsBuilder<'a> {
        StsBuilder {
            issuers: Vec::new(),
            policy: DEFAULT_POLICY.to_owned(),
            policy_files: Vec::new(),
            tokens: String::new(),
            server: String::new(),
            signing_alg: "ES256",
            signing: None,
            tls: None,
            client_lines: Vec::new(),
            extra: String::new(),
            issuer_url: None,
        }
    }

    /// An STS trusting `issuer` as "corp" under the default policy.
    pub async fn start(issuer: &TestIssuer) -> Sts {
        Self::builder().issuer("corp", issuer, "").start().await
    }

    /// The directory holding this STS's files (its configuration, key, `policies/`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Stops accepting and waits for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    /// POSTs a form to /token with HTTP Basic client authentication.
    pub async fn exchange(&self, client: (&str, &str), form: &[(&str, &str)]) -> Answer {
        let request = self
            .http
            .post(format!("{}/token", self.base))
            .basic_auth(client.0, Some(client.1));
        Self::send(
            request
                .body(encode_form(form))
                .header("content-type", "application/x-www-form-urlencoded"),
        )
        .await
    }

    /// Sends one impersonation exchange per subject token, all at once (each on its own
    /// task, with HTTP Basic client authentication); returns their statuses, in order.
    pub async fn exchange_concurrently(
        &self,
        client: (&'static str, &'static str),
        subject_tokens: Vec<String>,
    ) -> Vec<u16> {
        let tasks: Vec<_> = subject_tokens
            .into_iter()
            .map(|token| {
                let (http, url) = (self.http.clone(), self.token_url());
                tokio::spawn(async move {
                    http.post(url)
                        .basic_auth(client.0, Some(client.1))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(encode_form(&impersonation(&token)))
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        let mut statuses = Vec::with_capacity(tasks.len());
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses
    }

    /// POSTs a raw request to /token.
    pub async fn post(&self, request: reqwest::RequestBuilder) -> Answer {
        Self::send(request).await
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.base)
    }

    async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// GETs a path of the public listener: status, headers and body (JSON when it parses).
    pub async fn get(&self, path: &str) -> Answer {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// GETs a path of the public listener as JSON.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }

    /// Waits until /readyz answers 200 (at most 5 s).
    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            let r = self
                .http
                .get(format!("{}/readyz", self.admin))
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("not ready after 5 s");
    }
}

pub fn encode_form(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                gleipnir::oauth::form::encode(k),
                gleipnir::oauth::form::encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The form of a delegation: subject and actor tokens as access tokens.
pub fn delegation<'a>(subject: &'a str, actor: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", GRANT),
        ("subject_token", subject),
        ("subject_token_type", AT),
        ("actor_token", actor),
        ("actor_token_type", AT),
    ]
}

/// The `host:port` of a plain-HTTP base URL, for raw TCP connections.
pub fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// The form of an impersonation: a subject token only.
pub fn impersonation(subject: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", GRANT),
        ("subject_token", subject),
        ("subject_token_type", AT),
    ]
}

/// `tests/interop`, where the Node packages of the interoperability tests live.
pub fn interop_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Whether `node` runs and the npm `package` is installed in `tests/interop`. When not,
/// the test says SKIPPED where `cargo test` shows it and should return, unless
/// `GLEIPNIR_REQUIRE_INTEROP=1` (set by `.ci/run`), which makes it a failure.
pub fn node_package_available(test: &str, package: &str) -> bool {
    let node = std::process::Command::new("node").arg("--version").output();
    let missing = match node {
        Ok(out) if out.status.success() => {
            if interop_dir()
                .join("node_modules")
                .join(package)
                .join("package.json")
                .is_file()
            {
                return true;
            }
            format!("tests/interop/node_modules/{package} is not installed")
        }
        Ok(out) => format!("`node --version` failed: {}", out.status),
        Err(e) => format!("`node` cannot be run: {e}"),
    };
    skip(
        test,
        &missing,
        "run `npm ci --prefix tests/interop` (needs Node 20+)",
    );
    false
}

/// A test that cannot run because `missing` (an external component) is absent: a
/// failure under `GLEIPNIR_REQUIRE_INTEROP=1` (set by `.ci/run`); otherwise a SKIPPED
/// line on stderr, and a line in the file `GLEIPNIR_SKIP_LOG` names when set, from which
/// `scripts/test` prints the list of skipped tests at its end. The caller returns.
pub fn skip(test: &str, missing: &str, how: &str) {
    use std::io::Write as _;
    if std::env::var("GLEIPNIR_REQUIRE_INTEROP").as_deref() == Ok("1") {
        panic!("{test}: GLEIPNIR_REQUIRE_INTEROP=1 but {missing}; {how}");
    }
    // Straight to the process's stderr: libtest captures eprintln! of passing tests.
    let _ = writeln!(std::io::stderr(), "{test}: SKIPPED: {missing}; {how}");
    if let Some(path) = std::env::var_os("GLEIPNIR_SKIP_LOG") {
        // One write per line, appending: tests of several binaries and threads share it.
        let line = format!("{test}: {missing}; {how}\n");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut file) = file {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// The first line of the admin listener's `/metrics` (at `admin`, e.g. `Sts::admin`)
/// that starts with `prefix` (a metric name, with its labels), if any.
pub async fn metric_line(admin: &str, prefix: &str) -> Option<String> {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
}

/// The value of the sample `name` (with its labels) on the admin listener's `/metrics`.
pub async fn metric_value(admin: &str, name: &str) -> Option<f64> {
    let line = metric_line(admin, &format!("{name} ")).await?;
    line.strip_prefix(name)?.trim().parse().ok()
}

/// Waits (at most 10 s) until the sample `name` has `value`; panics otherwise.
pub async fn wait_for_metric(admin: &str, name: &str, value: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if metric_value(admin, name).await == Some(value) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "{name} never became {value} (now {:?})",
        metric_value(admin, name).await
    );
}
