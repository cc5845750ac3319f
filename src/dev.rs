//! `gleipnir dev`: the embedded default. Runs the real service on loopback with an
//! ephemeral signing key, demo clients and a demo policy, next to a built-in demo issuer
//! (its own key, its JWKS over HTTP, and an endpoint that mints demo subject and actor
//! tokens for anyone who asks). It prints a ready-to-paste delegation example.
//!
//! The demo issuer also plays a Kubernetes cluster's service-account issuer: it serves
//! OIDC discovery and mints projected service-account tokens of the Kubernetes 1.30+
//! shape, and the demo client `inventory` authenticates with one (workload identity: no
//! secret), as the printed example's last step shows.
//!
//! Everything here exists only in dev mode: a configuration file cannot ask for an
//! ephemeral key, embedded policies or the demo issuer. The service says loudly that it is
//! in dev mode, at start and whenever the demo issuer mints a token.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::clock::Clock;
use crate::config::{Config, KeySource, PolicySource};
use crate::http::response::{self, Body};
use crate::jose::{JwsAlgorithm, b64_encode};
use crate::keys::{SigningKey, jwks_document};
use crate::oauth::form::FormBody;

/// Where dev mode listens.
#[derive(Debug, Clone, Copy)]
pub struct DevAddresses {
    /// The STS's public listener.
    pub listen: SocketAddr,
    /// The STS's admin listener.
    pub admin_listen: SocketAddr,
    /// The demo issuer.
    pub demo_issuer_listen: SocketAddr,
}

/// Demo client credentials (printed in the example; dev mode only).
pub const DEMO_CLIENTS: [(&str, &str); 2] = [
    ("bff", "bff-dev-secret"),
    ("orders-api", "orders-api-dev-secret"),
];

/// The demo client that authenticates with a Kubernetes service-account token.
pub const DEMO_WORKLOAD_CLIENT: (&str, &str) = ("inventory", "shop:inventory");

/// The demo policy: the BFF may impersonate or delegate toward orders-api; orders-api may
/// continue the chain toward payments-api with its own actor token; inventory (a
/// Kubernetes workload) may impersonate toward orders-api.
pub const DEMO_POLICY: &str = r#"
[clients.bff]
impersonate = true
delegate = true
subject_issuers = ["demo"]
actor_issuers = ["demo"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read", "orders:write"]
ttl_seconds = 300

[clients.orders-api]
delegate = true
subject_issuers = ["self"]
actor_issuers = ["demo"]
audiences = ["payments-api"]
default_audience = "payments-api"
scopes = ["orders:read"]
ttl_seconds = 120

[clients.inventory]
impersonate = true
subject_issuers = ["demo"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]
ttl_seconds = 300
"#;

/// The configuration text of dev mode; `files` holds the `[signing]` and `[policy]`
/// settings of a written configuration (embedded ones are set on the parsed value).
fn dev_config_text(addrs: &DevAddresses, issuer_url: &str, jwks_uri: &str, files: &str) -> String {
    let clients: String = DEMO_CLIENTS
        .iter()
        .map(|(id, secret)| {
            format!("[[clients]]\nid = \"{id}\"\nsecret = {{ value = \"{secret}\" }}\n")
        })
        .collect();
    format!(
        r#"
issuer = "http://{listen}"
[server]
listen = "{listen}"
admin_listen = "{admin}"
{files}
[[issuers]]
name = "demo"
issuer = "{issuer_url}"
jwks_uri = "{jwks_uri}"
allow_http = true
algorithms = ["ES256"]
{clients}
[[clients]]
id = "{workload}"
kubernetes = {{ issuer = "demo-cluster", service_account = "{service_account}" }}

# The demo issuer as a Kubernetes cluster's service-account issuer (OIDC discovery).
[[workload_issuers]]
name = "demo-cluster"
kind = "kubernetes"
issuer = "{issuer_url}"
allow_http = true
algorithms = ["ES256"]
"#,
        listen = addrs.listen,
        admin = addrs.admin_listen,
        workload = DEMO_WORKLOAD_CLIENT.0,
        service_account = DEMO_WORKLOAD_CLIENT.1,
    )
}

/// Dev mode's configuration: an ephemeral key and the embedded policy, or, with
/// `write_to`, the same configuration written there first (key and policy as files) and
/// read back, so that what runs is exactly what was written.
fn dev_config(
    addrs: &DevAddresses,
    issuer_url: &str,
    jwks_uri: &str,
    write_to: Option<&Path>,
) -> Result<Config, String> {
    let Some(dir) = write_to else {
        let files = "[signing]\nkey_file = \"(ephemeral)\"";
        let text = dev_config_text(addrs, issuer_url, jwks_uri, files);
        let mut config = Config::from_toml(&text, Path::new("<dev>")).map_err(|e| e.to_string())?;
        config.signing.key = KeySource::Ephemeral;
        config.policy = PolicySource::Embedded(vec![("<dev policy>".into(), DEMO_POLICY.into())]);
        return Ok(config);
    };
    let files = "[signing]\nkey_file = \"signing.pem\"\n[policy]\ndir = \"policies\"";
    let text = format!(
        "{WRITTEN_HEADER}{}",
        dev_config_text(addrs, issuer_url, jwks_uri, files)
    );
    let path = write_config(dir, &text)?;
    Config::load(&path).map_err(|e| e.to_string())
}

/// The head of a configuration written by `gleipnir dev --write-config`.
const WRITTEN_HEADER: &str = "\
# Written by `gleipnir dev --write-config`: the embedded default as files (this
# configuration, signing.pem, policies/demo.toml). DEV ONLY: the client secrets below
# are published in gleipnir's README, and the issuer \"demo\" is dev mode's demo issuer,
# which signs tokens for anyone and runs only while `gleipnir dev` does.
#   gleipnir serve --config <this file>        (stop `gleipnir dev` first: same ports)
#   gleipnir policy explain --config <this file> --client bff --subject-token ...
";

/// Writes the configuration, a new signing key and the demo policy under `dir` (created
/// if absent), refusing to overwrite any of them. Returns the configuration's path.
fn write_config(dir: &Path, text: &str) -> Result<std::path::PathBuf, String> {
    let at = |name: &str| dir.join(name);
    let failed =
        |what: &Path, e: std::io::Error| format!("--write-config: {}: {e}", what.display());
    for name in ["gleipnir.toml", "signing.pem", "policies"] {
        if at(name).exists() {
            return Err(format!(
                "--write-config: {} exists; gleipnir never overwrites it: choose an empty directory",
                at(name).display()
            ));
        }
    }
    let policies = at("policies");
    std::fs::create_dir_all(&policies).map_err(|e| failed(&policies, e))?;
    let key = crate::keys::generate_pkcs8(JwsAlgorithm::Es256).map_err(|e| e.to_string())?;
    let pem = crate::keys::pkcs8_to_pem(&key);
    crate::keys::write_private(&at("signing.pem"), pem.as_bytes())
        .map_err(|e| failed(&at("signing.pem"), e))?;
    let policy = policies.join("demo.toml");
    let policy_text = format!("# The demo policy of `gleipnir dev`.{DEMO_POLICY}");
    std::fs::write(&policy, policy_text).map_err(|e| failed(&policy, e))?;
    let config = at("gleipnir.toml");
    std::fs::write(&config, text).map_err(|e| failed(&config, e))?;
    Ok(config)
}

/// The demo issuer: signs whatever subject and actor tokens it is asked for, and
/// service-account tokens as a Kubernetes API server would.
struct DemoIssuer {
    iss: String,
    key: SigningKey,
    header: String,
    /// A service-account token's header: `alg` and `kid`, no `typ` (as Kubernetes).
    sa_header: String,
    /// Bytes of request bodies the demo issuer buffers at once.
    body_budget: tokio::sync::Semaphore,
}

/// The demo issuer's largest request body, and its budget of bodies read at once.
const DEMO_MAX_BODY: usize = 16 * 1024;
const DEMO_BODY_BUDGET: usize = 64 * DEMO_MAX_BODY;

impl DemoIssuer {
    fn new(iss: String) -> Result<Self, String> {
        let key = SigningKey::ephemeral(JwsAlgorithm::Es256).map_err(|e| e.to_string())?;
        let header = b64_encode(
            format!(r#"{{"alg":"ES256","kid":"{}","typ":"at+jwt"}}"#, key.kid()).as_bytes(),
        );
        let sa_header =
            b64_encode(format!(r#"{{"alg":"ES256","kid":"{}"}}"#, key.kid()).as_bytes());
        Ok(Self {
            iss,
            key,
            header,
            sa_header,
            body_budget: tokio::sync::Semaphore::new(DEMO_BODY_BUDGET),
        })
    }

    /// `POST /token` with form fields `sub` (required), `aud`, `client_id`, `scope`,
    /// `may_act`, `ttl` (seconds, ≤ 3600): answers the signed token as plain text.
    fn mint(&self, form: &FormBody, now: u64) -> Result<String, &'static str> {
        let one = |name: &'static str| form.single(name).map_err(|_| "repeated parameter");
        let sub = one("sub")?.ok_or("sub is required")?;
        let ttl = match one("ttl")? {
            Some(t) => t
                .parse::<u64>()
                .ok()
                .filter(|t| (1..=3600).contains(t))
                .ok_or("ttl must be 1..3600")?,
            None => 600,
        };
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), json!(self.iss));
        claims.insert("sub".into(), json!(sub));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + ttl));
        for name in ["aud", "client_id", "scope"] {
            if let Some(v) = one(name)? {
                claims.insert(name.into(), json!(v));
            }
        }
        if let Some(actor) = one("may_act")? {
            claims.insert("may_act".into(), json!({ "sub": actor }));
        }
        tracing::warn!(sub, "DEV MODE: demo issuer minted a token on request");
        self.sign(&self.header, &serde_json::Value::Object(claims))
    }

    /// `POST /serviceaccount-token` with `namespace`, `name` (required) and `aud`: a
    /// projected service-account token of the Kubernetes 1.30+ shape (pod-bound, with
    /// `jti` and the node), valid 10 minutes, as the kubelet would mount it.
    fn service_account_token(&self, form: &FormBody, now: u64) -> Result<String, &'static str> {
        let one = |name: &'static str| form.single(name).map_err(|_| "repeated parameter");
        let namespace = one("namespace")?.ok_or("namespace is required")?;
        let name = one("name")?.ok_or("name is required")?;
        let aud = one("aud")?.ok_or("aud is required")?;
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| "random source failed")?;
        let claims = json!({
            "aud": [aud],
            "exp": now + 600,
            "iat": now,
            "iss": self.iss,
            "jti": b64_encode(&jti),
            "kubernetes.io": {
                "namespace": namespace,
                "node": { "name": "dev-node", "uid": "00000000-0000-4000-8000-000000000001" },
                "pod": { "name": format!("{name}-dev"), "uid": "00000000-0000-4000-8000-000000000002" },
                "serviceaccount": { "name": name, "uid": "00000000-0000-4000-8000-000000000003" }
            },
            "nbf": now,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        });
        tracing::warn!(
            namespace,
            name,
            "DEV MODE: demo issuer minted a service-account token"
        );
        self.sign(&self.sa_header, &claims)
    }

    fn sign(&self, header: &str, claims: &serde_json::Value) -> Result<String, &'static str> {
        let payload = claims.to_string();
        let mut token = format!("{header}.{}", b64_encode(payload.as_bytes()));
        let signature = self
            .key
            .sign(token.as_bytes())
            .map_err(|_| "signing failed")?;
        token.push('.');
        token.push_str(&b64_encode(&signature));
        Ok(token)
    }

    async fn handle(&self, request: Request<Incoming>, clock: &Clock) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/jwks.json") => {
                response::json(StatusCode::OK, jwks_document(&[&self.key]).to_string())
            }
            (&Method::GET, "/.well-known/openid-configuration") => {
                let document = json!({
                    "issuer": self.iss,
                    "jwks_uri": format!("{}/jwks.json", self.iss),
                    "id_token_signing_alg_values_supported": ["ES256"],
                });
                response::json(StatusCode::OK, document.to_string())
            }
            (&Method::POST, path @ ("/token" | "/serviceaccount-token")) => {
                let service_account = path == "/serviceaccount-token";
                let (parts, body) = request.into_parts();
                let read = crate::http::body::read_form(
                    &parts.headers,
                    body,
                    DEMO_MAX_BODY,
                    &self.body_budget,
                );
                let minted = match read.await {
                    Ok(form) if service_account => self.service_account_token(&form, clock.now()),
                    Ok(form) => self.mint(&form, clock.now()),
                    Err(_) => Err("send an application/x-www-form-urlencoded body"),
                };
                let (status, text) = match minted {
                    Ok(token) => (StatusCode::OK, token),
                    Err(reason) => (StatusCode::BAD_REQUEST, reason.to_owned()),
                };
                let mut r = Response::new(Body::from(text));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain"),
                );
                r
            }
            _ => response::not_found(),
        }
    }
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({flag}): {e}"))
}

/// Dev mode serves its published demo secrets and its sign-anything demo issuer on
/// loopback only: an address elsewhere is refused, naming the flag that set it.
fn check_loopback(addrs: &DevAddresses) -> Result<(), String> {
    for (addr, flag) in [
        (addrs.listen, "--listen"),
        (addrs.admin_listen, "--admin-listen"),
        (addrs.demo_issuer_listen, "--demo-issuer-listen"),
    ] {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{flag} {addr}: dev mode listens on loopback only (127.0.0.1 or [::1]): its \
                 client secrets are published and its demo issuer signs tokens for anyone; \
                 use `gleipnir serve` with a configuration to serve elsewhere"
            ));
        }
    }
    Ok(())
}

/// Runs dev mode until `shutdown` completes; with `write_config`, from its configuration
/// written as files into that directory first.
pub async fn run(
    addrs: DevAddresses,
    write_config: Option<&Path>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    check_loopback(&addrs)?;
    let issuer_listener = bind(addrs.demo_issuer_listen, "--demo-issuer-listen").await?;
    let public = bind(addrs.listen, "--listen").await?;
    let admin = bind(addrs.admin_listen, "--admin-listen").await?;
    // Port 0 asks the OS for a free port: use the addresses actually bound.
    let bound = DevAddresses {
        listen: public.local_addr().map_err(|e| e.to_string())?,
        admin_listen: admin.local_addr().map_err(|e| e.to_string())?,
        demo_issuer_listen: issuer_listener.local_addr().map_err(|e| e.to_string())?,
    };
    let issuer_url = format!("http://{}", bound.demo_issuer_listen);
    let jwks_uri = format!("{issuer_url}/jwks.json");
    let config = dev_config(&bound, &issuer_url, &jwks_uri, write_config)?;
    if let Some(dir) = write_config {
        eprintln!(
            "wrote {} (with signing.pem and policies/demo.toml), and serving from it",
            dir.join("gleipnir.toml").display()
        );
    }
    let built = App::build(&config, Clock::System).map_err(|e| e.to_string())?;
    let demo = Arc::new(DemoIssuer::new(issuer_url)?);

    eprintln!("{}", banner());
    println!("{}", example(&bound));

    let (stop, stopped) = watch::channel(false);
    let clock = Clock::System;
    let demo_server = tokio::spawn(crate::server::serve(
        issuer_listener,
        move |req| {
            let demo = Arc::clone(&demo);
            let clock = clock.clone();
            async move { demo.handle(req, &clock).await }
        },
        built.limits,
        stopped,
    ));
    crate::server::run(built, public, admin, shutdown).await;
    let _ = stop.send(true);
    let _ = demo_server.await;
    Ok(())
}

fn banner() -> &'static str {
    "\
################################################################################
#  gleipnir DEV MODE: a throwaway signing key, demo clients with published      #
#  secrets, and a demo issuer that signs tokens for anyone who asks.            #
#  Never expose it beyond loopback; never use it in production.                 #
################################################################################"
}

/// The delegation example printed at start (the README shows the same steps).
pub fn example(addrs: &DevAddresses) -> String {
    let sts = format!("http://{}", addrs.listen);
    let iss = format!("http://{}", addrs.demo_issuer_listen);
    format!(
        r#"gleipnir dev is serving {sts} (admin http://{admin}); demo issuer at {iss}

# 1. A user token for alice, issued to the BFF, and the BFF's own actor token:
SUBJECT=$(curl -s {iss}/token -d sub=alice -d aud=bff -d scope='orders:read orders:write')
ACTOR=$(curl -s {iss}/token -d sub=bff -d client_id=bff)

# 2. The BFF exchanges them for a token orders-api accepts, acting for alice:
curl -s -u bff:bff-dev-secret {sts}/token \
  -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token="$SUBJECT" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token \
  -d actor_token="$ACTOR" -d actor_token_type=urn:ietf:params:oauth:token-type:access_token \
  -d audience=orders-api -d scope=orders:read

# 3. Workload identity, no secret: inventory runs in Kubernetes as service account
#    shop:inventory. Its projected token (audience: this STS) is its credential:
SA_TOKEN=$(curl -s {iss}/serviceaccount-token -d namespace=shop -d name=inventory -d aud={sts})
INV_SUBJECT=$(curl -s {iss}/token -d sub=alice -d aud=inventory -d scope=orders:read)
curl -s {sts}/token \
  -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token="$INV_SUBJECT" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token \
  -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
  -d client_assertion="$SA_TOKEN"
"#,
        admin = addrs.admin_listen,
    )
}
