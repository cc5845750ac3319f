//! Traces of the real `gleipnir serve` binary, exported over OTLP/HTTP to a real
//! OpenTelemetry Collector (the OTLP receiver and the file exporter, built from
//! `tests/otelcol` by `tests/otelcol/build`, which `scripts/test` and `.ci/run` run): one
//! exchange with an incoming `traceparent` arrives with its stage spans under the
//! caller's trace, its upstream call carries our context, no attribute holds a token or a
//! secret; and a collector that never answers neither blocks nor slows requests, and its
//! failures are counted and logged once. Also the request id: a caller's well-formed
//! `x-request-id` is kept, echoed and names the audit record; a malformed or missing one
//! is replaced by a new id.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{AT, BFF, GRANT, INTROSPECTION_CLIENT, Sts, TestIssuer, encode_form, impersonation};

/// The caller's trace and span, as its `traceparent` names them.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const REQUEST_ID: &str = "edge-7f3a:req/42";
const SECRET: &str = "bff-trace-secret";
const OPAQUE: &str = "opaque-subject-token-8f14e45fceea167a";
/// Every stage of a delegation, in order.
const STAGES: [&str; 7] = [
    "client_authentication",
    "request_parsing",
    "admission",
    "subject_validation",
    "actor_validation",
    "decision",
    "minting",
];

/// Kills the child when dropped, so a failing assertion leaks no process.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a child wrote to one of its pipes so far.
type Captured = Arc<Mutex<String>>;

/// Reads `pipe` line by line on a thread into the returned text; the first line that
/// contains `signal` is also sent on the channel.
fn capture(
    pipe: impl std::io::Read + Send + 'static,
    signal: &'static str,
) -> (Captured, mpsc::Receiver<String>) {
    let text = Captured::default();
    let (tx, rx) = mpsc::channel();
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if line.contains(signal) {
                let _ = tx.send(line.clone());
            }
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    (text, rx)
}

/// The collector binary `tests/otelcol/build` makes, if it is there (or
/// `GLEIPNIR_OTELCOL`); otherwise the test skips (fails under CI).
fn collector_binary(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("GLEIPNIR_OTELCOL").map_or_else(
        || {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("otelcol/otelcol-gleipnir-test")
        },
        PathBuf::from,
    );
    if path.is_file() {
        return Some(path);
    }
    support::skip(
        test,
        &format!("no OpenTelemetry Collector at {}", path.display()),
        "run tests/otelcol/build (needs Go 1.26; scripts/test runs it when go is installed)",
    );
    None
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running collector: an OTLP/HTTP receiver on loopback writing every trace it
/// receives to a file, one OTLP JSON export request per line.
struct Collector {
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
    endpoint: String,
    file: PathBuf,
    log: Captured,
}

impl Collector {
    fn start(binary: &Path) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let file = dir.path().join("traces.jsonl");
        let config = format!(
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:{port}\n\
             exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
             service:\n  telemetry:\n    logs:\n      level: info\n    metrics:\n      level: none\n\
             \x20 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
            file.display()
        );
        let config_path = dir.path().join("collector.yaml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (log, _) = capture(child.stderr.take().unwrap(), "\u{0}");
        let child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "collector not listening: {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Collector {
            _child: child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{port}"),
            file,
            log,
        }
    }

    /// Every span the collector wrote, with the resource attributes it came with.
    fn spans(&self) -> Vec<(Value, Value)> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut spans = Vec::new();
        for line in text.lines() {
            let export: Value = serde_json::from_str(line).unwrap();
            for resource in export["resourceSpans"].as_array().unwrap() {
                for scope in resource["scopeSpans"].as_array().unwrap() {
                    for span in scope["spans"].as_array().unwrap() {
                        spans.push((resource["resource"].clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

/// A running `gleipnir serve`.
struct Served {
    child: KillOnDrop,
    _dir: tempfile::TempDir,
    stdout: Captured,
    stderr: Captured,
    public: String,
    admin: String,
}

/// Writes a configuration trusting the issuer `iss` (its JWKS at `jwks`, introspection at
/// `<iss>/introspect`), with a key, a policy for `bff`, and these lines in
/// `[telemetry.otlp]`.
fn configure(iss: &str, jwks: &str, otlp: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gleipnir"))
        .args(["keygen", "--alg", "ES256", "--out"])
        .arg(dir.path().join("signing.pem"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/bff.toml"),
        "[clients.bff]\nimpersonate = true\ndelegate = true\nsubject_issuers = [\"corp\"]\n\
         actor_issuers = [\"corp\"]\naudiences = [\"orders-api\"]\ndefault_audience = \"orders-api\"\n\
         scopes = [\"orders:read\"]\n",
    )
    .unwrap();
    let config = format!(
        r#"issuer = "http://127.0.0.1:1"
[server]
drain_seconds = 0
[signing]
key_file = "signing.pem"
[[issuers]]
name = "corp"
issuer = "{iss}"
jwks_uri = "{jwks}"
allow_http = true
[issuers.introspection]
endpoint = "{iss}/introspect"
client_id = "{introspection_id}"
secret = {{ value = "{introspection_secret}" }}
[[clients]]
id = "bff"
secret = {{ value = "{SECRET}" }}
[telemetry.otlp]
{otlp}
"#,
        introspection_id = INTROSPECTION_CLIENT.0,
        introspection_secret = INTROSPECTION_CLIENT.1,
    );
    let config_path = dir.path().join("gleipnir.toml");
    std::fs::write(&config_path, config).unwrap();
    (dir, config_path)
}

/// Starts `gleipnir serve` trusting `issuer` (JWKS and introspection), with these lines
/// in `[telemetry.otlp]`.
fn serve(issuer: &TestIssuer, otlp: &str) -> Served {
    let (dir, config_path) = configure(&issuer.iss, &issuer.jwks_uri(), otlp);
    let mut child = Command::new(env!("CARGO_BIN_EXE_gleipnir"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, _) = capture(child.stdout.take().unwrap(), "\u{0}");
    let (stderr, serving) = capture(child.stderr.take().unwrap(), "gleipnir serving");
    let child = KillOnDrop(child);
    let line = serving
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no serving line: {}", stderr.lock().unwrap()));
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        format!("http://{}", line[start..].split(' ').next().unwrap())
    };
    Served {
        public: field("public"),
        admin: field("admin"),
        child,
        _dir: dir,
        stdout,
        stderr,
    }
}

impl Served {
    async fn wait_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = format!("{}/readyz", self.admin);
        while Instant::now() < deadline {
            if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not ready: {}", self.stderr.lock().unwrap());
    }

    /// The value of an unlabelled sample of `/metrics`.
    async fn metric(&self, http: &reqwest::Client, name: &str) -> Option<u64> {
        let text = http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Tokens with real times: the binary runs on the system clock.
fn now() -> u64 {
    gleipnir::clock::Clock::System.now()
}

fn actor_token(issuer: &TestIssuer) -> String {
    let now = now();
    issuer.sign(json!({ "iss": issuer.iss, "sub": "bff", "client_id": "bff",
                        "iat": now - 5, "exp": now + 600 }))
}

/// The attributes of an OTLP JSON span (or resource) as a map of key to string value.
fn attributes(of: &Value) -> serde_json::Map<String, Value> {
    of["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let value = &kv["value"];
            // OTLP JSON writes 64-bit integers as strings: "intValue": "200".
            let text = value["stringValue"]
                .as_str()
                .or_else(|| value["intValue"].as_str())
                .map_or_else(|| value.to_string(), str::to_owned);
            (kv["key"].as_str().unwrap().to_owned(), Value::String(text))
        })
        .collect()
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

#[tokio::test]
async fn an_exchange_reaches_the_collector_as_the_callers_trace_with_its_stages() {
    let test = "an_exchange_reaches_the_collector_as_the_callers_trace_with_its_stages";
    let Some(binary) = collector_binary(test) else {
        return;
    };
    let collector = Collector::start(&binary);
    let issuer = TestIssuer::start().await;
    let now = now();
    issuer.introspection.answer(
        OPAQUE,
        json!({ "active": true, "iss": issuer.iss, "sub": "alice", "aud": "bff",
                "client_id": "bff", "scope": "orders:read", "token_type": "Bearer",
                "iat": now - 5, "exp": now + 600 }),
    );
    let served = serve(
        &issuer,
        &format!(
            "endpoint = \"{}\"\nservice_name = \"gleipnir-trace-test\"",
            collector.endpoint
        ),
    );
    let http = reqwest::Client::new();
    served.wait_ready(&http).await;

    let actor = actor_token(&issuer);
    let form = support::encode_form(&[
        ("grant_type", GRANT),
        ("subject_token", OPAQUE),
        ("subject_token_type", AT),
        ("actor_token", &actor),
        ("actor_token_type", AT),
    ]);
    let response = http
        .post(format!("{}/token", served.public))
        .basic_auth("bff", Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .header("tracestate", "edge=t61rcWkgMzE")
        .header("x-request-id", REQUEST_ID)
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], REQUEST_ID, "echoed");
    let issued: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let issued = issued["access_token"].as_str().unwrap().to_owned();

    // Exported within the batch delay (2 s) and the file exporter's flush (100 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let ours = loop {
        let ours: Vec<Value> = collector
            .spans()
            .into_iter()
            .map(|(_, span)| span)
            .filter(|s| s["traceId"] == TRACE_ID)
            .collect();
        if ours.iter().any(|s| s["name"] == "POST /token") || Instant::now() > deadline {
            break ours;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ours.iter().any(|s| s["name"] == "POST /token"),
        "no request span exported; collector log:\n{}",
        collector.log.lock().unwrap()
    );
    let request = named(&ours, "POST /token");
    assert_eq!(
        request["parentSpanId"], CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(request["kind"], 2, "SPAN_KIND_SERVER");
    let attrs = attributes(request);
    assert_eq!(attrs["gleipnir.request_id"], REQUEST_ID);
    assert_eq!(attrs["gleipnir.client_id"], "bff");
    assert_eq!(attrs["gleipnir.decision"], "granted");
    let status = request["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|kv| kv["key"] == "http.response.status_code")
        .unwrap();
    assert_eq!(status["value"], json!({ "intValue": "200" }), "an integer");
    assert_eq!(attrs["http.route"], "/token");
    for stage in STAGES {
        assert_eq!(
            named(&ours, stage)["parentSpanId"],
            request["spanId"],
            "{stage} is a child of the request"
        );
    }
    // The introspection call: a client span under subject validation, and the request
    // the issuer received carried its context (and the caller's tracestate).
    let introspection = named(&ours, "introspection");
    assert_eq!(
        introspection["parentSpanId"],
        named(&ours, "subject_validation")["spanId"]
    );
    assert_eq!(introspection["kind"], 3, "SPAN_KIND_CLIENT");
    let url = format!("{}/introspect", issuer.iss);
    assert_eq!(attributes(introspection)["url.full"], url.as_str());
    let requests = issuer.requests();
    let (_, headers) = requests
        .iter()
        .find(|(uri, _)| uri == "/introspect")
        .expect("introspected");
    let span_id = introspection["spanId"].as_str().unwrap();
    assert_eq!(
        headers["traceparent"],
        format!("00-{TRACE_ID}-{span_id}-01").as_str()
    );
    assert_eq!(headers["tracestate"], "edge=t61rcWkgMzE");

    // The keeper's JWKS fetch is a trace of its own (shared by every request), whose
    // context the issuer received too.
    let all = collector.spans();
    let (resource, refresh) = all
        .iter()
        .find(|(_, s)| s["name"] == "jwks_refresh")
        .expect("the keeper's fetch was traced");
    assert!(
        refresh["parentSpanId"].as_str().unwrap_or("").is_empty(),
        "a root"
    );
    assert_eq!(attributes(resource)["service.name"], "gleipnir-trace-test");
    let (_, jwks_headers) = requests
        .iter()
        .find(|(uri, _)| uri == "/jwks.json")
        .expect("JWKS fetched");
    let jwks_trace = refresh["traceId"].as_str().unwrap();
    assert!(
        jwks_headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with(&format!("00-{jwks_trace}-")),
        "{jwks_headers:?}"
    );

    // No token and no secret in any attribute of any span or resource.
    let text = std::fs::read_to_string(&collector.file).unwrap();
    for secret in [
        OPAQUE,
        actor.as_str(),
        issued.as_str(),
        SECRET,
        INTROSPECTION_CLIENT.1,
    ] {
        let (head, _) = secret.split_at(secret.len().min(24));
        assert!(!text.contains(head), "{head} exported");
    }

    // The audit record carries the caller's request id.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !served.stdout.lock().unwrap().contains(REQUEST_ID) {
        assert!(
            Instant::now() < deadline,
            "{}",
            served.stdout.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stdout = served.stdout.lock().unwrap().clone();
    let record: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["request_id"] == REQUEST_ID)
        .unwrap();
    assert_eq!(record["decision"], "granted");
}

/// A collector that accepts connections and never answers: every export hangs until
/// its timeout.
fn black_hole() -> (std::net::SocketAddr, Arc<Mutex<Vec<std::net::TcpStream>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    (addr, held)
}

#[tokio::test]
async fn a_collector_that_never_answers_neither_blocks_nor_slows_requests() {
    let (addr, held) = black_hole();
    let issuer = TestIssuer::start().await;
    let served = serve(
        &issuer,
        &format!("endpoint = \"http://{addr}\"\ntimeout_seconds = 2\nmax_queue_spans = 64"),
    );
    let http = reqwest::Client::new();
    served.wait_ready(&http).await;

    // Seven spans per exchange (the request and six stages): the queue of 64 is full
    // after ten, while each export hangs for its 2 s timeout. Requests go on until two
    // exports have failed.
    let now = now();
    let subject = issuer.sign(json!({ "iss": issuer.iss, "sub": "alice", "aud": "bff",
                                      "iat": now - 5, "exp": now + 600 }));
    let form = support::encode_form(&support::impersonation(&subject));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut slowest = Duration::ZERO;
    for sent in 1.. {
        let started = Instant::now();
        let response = http
            .post(format!("{}/token", served.public))
            .basic_auth("bff", Some(SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
            .body(form.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
        if sent % 10 == 0 {
            let failures = served
                .metric(&http, "gleipnir_trace_export_failures_total")
                .await;
            if failures.is_some_and(|f| f >= 2) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "failures {failures:?} after {sent}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?}: for the collector?"
    );
    assert!(
        !held.lock().unwrap().is_empty(),
        "the exporter did connect to the black hole"
    );
    let dropped = served
        .metric(&http, "gleipnir_trace_spans_dropped_total")
        .await;
    assert!(dropped.is_some_and(|d| d > 0), "dropped {dropped:?}");
    assert_eq!(
        served
            .metric(&http, "gleipnir_trace_spans_exported_total")
            .await,
        Some(0)
    );
    // Each streak is logged once, naming the endpoint.
    let stderr = served.stderr.lock().unwrap().clone();
    assert_eq!(stderr.matches("trace export failed").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("trace spans dropped").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("http://{addr}/v1/traces")),
        "{stderr}"
    );
    drop(served.child);
}

#[tokio::test]
async fn a_well_formed_request_id_is_kept_and_a_malformed_one_replaced() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let send = |id: &'static str| {
        sts.http
            .post(sts.token_url())
            .basic_auth(BFF.0, Some(BFF.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-request-id", id)
            .body(encode_form(&impersonation(&subject)))
    };
    let kept = sts.post(send("f47ac10b-58cc-4372-a567-0e02b2c3d479")).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert_eq!(
        kept.request_id(),
        Some("f47ac10b-58cc-4372-a567-0e02b2c3d479")
    );
    let record = support::audit::record("f47ac10b-58cc-4372-a567-0e02b2c3d479").unwrap();
    assert_eq!(record["decision"], "granted");

    let replaced = sts.post(send("not well formed")).await;
    assert_eq!(replaced.status, 200);
    let id = replaced.request_id().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(support::audit::record(id).unwrap()["decision"], "granted");
    assert!(support::audit::record("not well formed").is_none());
}

#[test]
fn check_and_serve_resolve_the_collectors_header_secrets() {
    let (_dir, config) = configure(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/jwks.json",
        "endpoint = \"http://127.0.0.1:4318\"\n\
         headers = { authorization = { env = \"GLEIPNIR_TEST_OTLP_AUTHORIZATION\" } }",
    );
    let run = |command: &str, value: Option<&str>| {
        let mut run = Command::new(env!("CARGO_BIN_EXE_gleipnir"));
        run.args([command, "--config"]).arg(&config);
        run.env_remove("GLEIPNIR_TEST_OTLP_AUTHORIZATION");
        if let Some(value) = value {
            run.env("GLEIPNIR_TEST_OTLP_AUTHORIZATION", value);
        }
        run.output().unwrap()
    };
    for command in ["check", "serve"] {
        let out = run(command, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("telemetry.otlp.headers.authorization")
                && stderr.contains("GLEIPNIR_TEST_OTLP_AUTHORIZATION"),
            "{command}: {stderr}"
        );
    }
    let out = run("check", Some("Bearer collector-secret"));
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("collector-secret"));
}
