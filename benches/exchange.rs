//! Criterion benches, by scenario (the operations issue): what one exchange costs in
//! process, next to the cost of its signature operations alone ("crypto floor").
//!
//! - `form_parse/*`: decoding a token request body.
//! - `verify/*`: one signature verification with a key parsed once (aws-lc-rs), per
//!   algorithm an upstream may use; `verify_jsonwebtoken/*`: the same through the
//!   jsonwebtoken crate, which parses the key again on every call.
//! - `sign/*`: one signature with our key, per algorithm we issue with.
//! - `exchange/*`: the whole pipeline in process (form parse, client authentication,
//!   request parsing, admission, token validation against the cached JWKS, policy,
//!   minting), without HTTP: (a) an RS256 subject exchanged for an ES256 token,
//!   (b) a delegation with an ES256 subject and an ES256 actor token. Traces are off, as
//!   without `[telemetry.otlp]`: their spans are disabled.
//! - `exchange_traced/*`: the same, with traces on and every trace sampled: the request's
//!   span (child of a caller's `traceparent`) and its stage spans are recorded and handed
//!   to the batch exporter, which sends them over OTLP/HTTP to a loopback sink from a
//!   runtime of its own (its thread's and that runtime's work is not in the time).
//! - `policy/*`: the decision of (b) with every check but the signatures (the offline dry
//!   run: parameters, claim checks, policy), i.e. the exchange minus its crypto.
//! - `floor/*`: the signature operations of (a) and (b) alone.
//! - `client_auth/*`: exchange (a) authenticated by each client authentication method, in
//!   the same run: `client_secret_basic` (the reference), `private_key_jwt` (a fresh
//!   ES256 assertion each time, its `jti` recorded in the replay cache), a Kubernetes
//!   service-account token (ES256, keys from the cluster's discovered JWKS), a SPIFFE
//!   JWT-SVID (ES256, keys from the bundle endpoint), `tls_client_auth` (a P-256 chain
//!   to the client's CA, already proven by the TLS handshake) and
//!   `self_signed_tls_client_auth`.
//! - `replay_cache/*`: recording a `jti` in the in-process store when it holds 0 and
//!   90 000 live entries; and, printed before the benches, a flood of 100 000 distinct
//!   assertions' `jti`s: time, memory, and what the 100 001st gets.
//!
//! Run: `cargo bench --bench exchange`. Report ratios (exchange / floor): these machines
//! are shared and noisy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;

use base64::Engine as _;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use gleipnir::client_auth::ClientRequest;
use gleipnir::exchange::dry_run::Signatures;
use gleipnir::jose::{JwsAlgorithm, KeyLookup, KeySet};
use gleipnir::keys::SigningKey;
use gleipnir::oauth::form::FormBody;
use gleipnir::store::Store;
use rustls_pki_types::CertificateDer;
use support::*;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = runtime.block_on(TestIssuer::start());
    let (built, _clock, _dir) = Sts::builder()
        .issuer("corp", &issuer, "algorithms = [\"RS256\", \"ES256\"]")
        .build_app("http://127.0.0.1:1");
    runtime.block_on(async {
        for keeper in &built.background.keepers {
            keeper.maintain().await;
        }
    });
    let app = built.app;
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", BFF.0, BFF.1))
    );
    let rs256_subject = issuer.sign_as(
        Alg::Rs256,
        issuer.user_claims("alice", "bff", "orders:read"),
    );
    let es256_subject = issuer.user_token("alice", "bff", "orders:read");
    let actor = issuer.actor_token("bff");
    let body_a = encode_form(&impersonation(&rs256_subject));
    let body_b = encode_form(&delegation(&es256_subject, &actor));

    c.bench_function("form_parse/delegation", |b| {
        b.iter(|| FormBody::parse(black_box(body_b.as_bytes())).unwrap())
    });

    // Keys as the cache holds them, from the issuer's own JWKS.
    let jwks = serde_json::to_vec(&issuer.default_jwks()).unwrap();
    let (keys, _) = KeySet::from_jwks(&jwks, &JwsAlgorithm::DEFAULT_ALLOWED).unwrap();
    let message = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
    let mut verify = c.benchmark_group("verify");
    for (alg, kid, jws_alg) in [
        (Alg::Rs256, "rs-1", JwsAlgorithm::Rs256),
        (Alg::Ps256, "rs-1", JwsAlgorithm::Ps256),
        (Alg::Es256, "es-1", JwsAlgorithm::Es256),
        (Alg::EdDsa, "ed-1", JwsAlgorithm::EdDsa),
    ] {
        let signature = issuer.signature(alg, message);
        let KeyLookup::Found(key) = keys.find(Some(kid), jws_alg) else {
            panic!("no {kid} key")
        };
        verify.bench_function(alg.name(), |b| {
            b.iter(|| assert!(key.verify(black_box(message), &signature)))
        });
    }
    verify.finish();

    // The same verifications through jsonwebtoken 11 (aws_lc_rs provider), with its
    // DecodingKey built once from the same JWK: jsonwebtoken keeps the key's bytes and
    // hands them to aws-lc-rs on every call, which parses the key again each time (and
    // the signature arrives base64url-encoded, as in a token). Beside `verify/*` for the
    // README's "Why not jsonwebtoken".
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks).unwrap();
    let mut verify_jwt = c.benchmark_group("verify_jsonwebtoken");
    for (alg, kid, jwt_alg) in [
        (Alg::Rs256, "rs-1", jsonwebtoken::Algorithm::RS256),
        (Alg::Ps256, "rs-1", jsonwebtoken::Algorithm::PS256),
        (Alg::Es256, "es-1", jsonwebtoken::Algorithm::ES256),
        (Alg::EdDsa, "ed-1", jsonwebtoken::Algorithm::EdDSA),
    ] {
        let signature = b64(&issuer.signature(alg, message));
        let key = jsonwebtoken::DecodingKey::from_jwk(set.find(kid).unwrap()).unwrap();
        verify_jwt.bench_function(alg.name(), |b| {
            b.iter(|| {
                assert!(
                    jsonwebtoken::crypto::verify(
                        &signature,
                        black_box(&message[..]),
                        &key,
                        jwt_alg
                    )
                    .unwrap()
                )
            })
        });
    }
    verify_jwt.finish();

    let payload = vec![b'x'; 420]; // about the size of an issued token's signing input
    let mut sign = c.benchmark_group("sign");
    for alg in [JwsAlgorithm::Es256, JwsAlgorithm::EdDsa] {
        let key = SigningKey::ephemeral(alg).unwrap();
        sign.bench_function(alg.as_str(), |b| {
            b.iter(|| key.sign(black_box(&payload)).unwrap())
        });
    }
    sign.finish();

    let mut exchange = c.benchmark_group("exchange");
    for (name, body) in [
        ("a_rs256_subject_to_es256", &body_a),
        ("b_delegation_es256_actor", &body_b),
    ] {
        exchange.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let form = FormBody::parse(body.as_bytes()).unwrap();
                    let request = ClientRequest {
                        authorization: Some(authorization.as_bytes()),
                        form: &form,
                        peer: None,
                        tls_certificates: None,
                        forwarded_certificate: None,
                    };
                    app.exchanger()
                        .exchange("bench", &request)
                        .await
                        .result
                        .unwrap()
                })
            })
        });
    }
    exchange.finish();

    // Traces on: the same exchanges, in the request span `http` would make.
    let exporter = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let otlp = gleipnir::config::OtlpConfig {
        endpoint: exporter.block_on(otlp_sink()),
        service_name: "gleipnir-bench".into(),
        sampling_ratio: 1.0,
        headers: Vec::new(),
        timeout_seconds: 10,
        max_queue_spans: 2048,
    };
    let (layer, traces) =
        gleipnir::telemetry::otlp::layer(&otlp, exporter.handle().clone(), "bench").unwrap();
    let mut caller = http::HeaderMap::new();
    caller.insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    // Whether a traced exchange ran: not when a filter (`-- floor`) left the group out.
    let traced_ran = std::cell::Cell::new(false);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let mut traced = c.benchmark_group("exchange_traced");
        for (name, body) in [
            ("a_rs256_subject_to_es256", &body_a),
            ("b_delegation_es256_actor", &body_b),
        ] {
            traced.bench_function(name, |b| {
                b.iter(|| {
                    traced_ran.set(true);
                    runtime.block_on(async {
                        let form = FormBody::parse(body.as_bytes()).unwrap();
                        let request = ClientRequest {
                            authorization: Some(authorization.as_bytes()),
                            form: &form,
                            peer: None,
                            tls_certificates: None,
                            forwarded_certificate: None,
                        };
                        let span = request_span(&caller);
                        app.exchanger()
                            .exchange("bench", &request)
                            .instrument(span)
                            .await
                            .result
                            .unwrap()
                    })
                })
            });
        }
        traced.finish();
    });
    traces.shutdown();
    let exported = gleipnir::telemetry::otlp::stats().unwrap();
    assert!(!traced_ran.get() || exported.exported > 0, "{exported:?}");

    // The decision without any signature: the dry run of `gleipnir policy explain
    // --offline` (parameters, claim checks, policy). The exchange minus its crypto.
    let mut policy = c.benchmark_group("policy");
    let form_b = FormBody::parse(body_b.as_bytes()).unwrap();
    policy.bench_function("decide_delegation_without_signatures", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let explanation = app
                    .exchanger()
                    .dry_run(BFF.0, &form_b, Signatures::Offline)
                    .await;
                assert!(explanation.outcome.is_ok());
                explanation
            })
        })
    });
    policy.finish();

    // The signature operations of each scenario, nothing else.
    let our_key = SigningKey::ephemeral(JwsAlgorithm::Es256).unwrap();
    let verify_with = |kid: &str, alg: JwsAlgorithm, signature: &[u8]| {
        let KeyLookup::Found(key) = keys.find(Some(kid), alg) else {
            panic!()
        };
        assert!(key.verify(message, signature));
    };
    let rs_signature = issuer.signature(Alg::Rs256, message);
    let es_signature = issuer.signature(Alg::Es256, message);
    let mut floor = c.benchmark_group("floor");
    floor.bench_function("a_verify_rs256_sign_es256", |b| {
        b.iter(|| {
            verify_with("rs-1", JwsAlgorithm::Rs256, &rs_signature);
            our_key.sign(&payload).unwrap()
        })
    });
    floor.bench_function("b_verify_es256_twice_sign_es256", |b| {
        b.iter(|| {
            verify_with("es-1", JwsAlgorithm::Es256, &es_signature);
            verify_with("es-1", JwsAlgorithm::Es256, &es_signature);
            our_key.sign(&payload).unwrap()
        })
    });
    floor.finish();
}

/// A CA, a client certificate for `spiffe://example.org/ns/shop/sa/bench` signed by it,
/// and a self-signed certificate: (CA PEM, client chain DER, self-signed PEM, its DER).
fn certificates() -> (
    String,
    Vec<CertificateDer<'static>>,
    String,
    CertificateDer<'static>,
) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/ns/shop/sa/bench".try_into().unwrap(),
    ));
    let leaf = params
        .signed_by(&KeyPair::generate().unwrap(), &ca)
        .unwrap();
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = KeyPair::generate().unwrap();
    let own = CertificateParams::new(vec!["bench.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (ca.pem(), chain, own.pem(), own.der().clone())
}

/// Exchange (a) authenticated by each method, next to the secret, in one run.
fn client_auth(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (corp, keys, cluster, spire) = runtime.block_on(async {
        (
            TestIssuer::start().await,
            TestIssuer::start().await,
            TestIssuer::start().await,
            TestIssuer::start().await,
        )
    });
    cluster.serve_document(
        "/.well-known/openid-configuration",
        serde_json::json!({ "issuer": cluster.iss, "jwks_uri": cluster.jwks_uri() }),
    );
    let mut bundle = spire.default_jwks();
    for key in bundle["keys"].as_array_mut().unwrap() {
        key["use"] = serde_json::json!("jwt-svid");
    }
    spire.serve_document("/bundle", bundle);
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, own_pem, own_der) = certificates();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    std::fs::write(dir.path().join("own.pem"), own_pem).unwrap();
    let path = |name: &str| format!("{:?}", dir.path().join(name).display().to_string());
    let base = "http://127.0.0.1:1";
    let policy: String = ["pk", "k8s", "svid", "mtls", "self"]
        .iter()
        .map(|id| {
            format!(
                "[clients.{id}]\nimpersonate = true\nsubject_issuers = [\"corp\"]\naudiences = [\"orders-api\"]\ndefault_audience = \"orders-api\"\nscopes = [\"orders:read\"]\n"
            )
        })
        .collect();
    let extra = format!(
        r#"
[[clients]]
id = "pk"
private_key_jwt = {{ jwks_uri = "{}", allow_http = true }}
[[clients]]
id = "k8s"
kubernetes = {{ issuer = "cluster", service_account = "shop:orders" }}
[[clients]]
id = "svid"
spiffe = {{ issuer = "spire", spiffe_id = "spiffe://example.org/ns/shop/sa/gw" }}
[[clients]]
id = "mtls"
tls_client_auth = {{ ca_file = {}, san_uri = "spiffe://example.org/ns/shop/sa/bench" }}
[[clients]]
id = "self"
self_signed_tls_client_auth = {{ cert_file = {} }}
[[workload_issuers]]
name = "cluster"
kind = "kubernetes"
issuer = "{}"
allow_http = true
[[workload_issuers]]
name = "spire"
kind = "spiffe"
trust_domain = "example.org"
bundle_endpoint = "{}/bundle"
allow_http = true
"#,
        keys.jwks_uri(),
        path("ca.pem"),
        path("own.pem"),
        cluster.iss,
        spire.iss
    );
    let (built, clock, _dir) = Sts::builder()
        .issuer("corp", &corp, "algorithms = [\"RS256\", \"ES256\"]")
        .policy(&format!("{DEFAULT_POLICY}{policy}"))
        .extra(&extra)
        .build_app(base);
    let gleipnir::app::Built {
        app, background, ..
    } = built;
    runtime.block_on(async {
        for keeper in &background.keepers {
            keeper.maintain().await;
        }
    });
    for task in background.client_keys {
        runtime.spawn(task);
    }
    // Let the keepers fetch the client keys (the cluster's JWKS, the bundle).
    runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_secs(2)).await });

    let subject =
        |client: &str| corp.sign_as(Alg::Rs256, corp.user_claims("alice", client, "orders:read"));
    let jwt_bearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let k8s_token = cluster.sign_with(
        Alg::Es256,
        serde_json::json!({ "alg": "ES256", "kid": "es-1" }),
        serde_json::json!({ "iss": cluster.iss, "sub": "system:serviceaccount:shop:orders",
            "aud": [base], "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3000, "jti": "k" }),
    );
    let svid = spire.sign_with(
        Alg::Es256,
        serde_json::json!({ "alg": "ES256", "kid": "es-1", "typ": "JWT" }),
        serde_json::json!({ "sub": "spiffe://example.org/ns/shop/sa/gw", "aud": [base],
            "iat": NOW - 10, "exp": NOW + 3000 }),
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", BFF.0, BFF.1))
    );
    let own_chain = vec![own_der];
    let body = |client: &str, extra: &[(&str, &str)]| {
        let subject = subject(client);
        let mut form = impersonation(&subject);
        form.extend_from_slice(extra);
        encode_form(&form)
    };
    let secret_body = body("bff", &[]);
    let k8s_body = body(
        "k8s",
        &[
            ("client_assertion_type", jwt_bearer),
            ("client_assertion", &k8s_token),
            ("client_id", "k8s"),
        ],
    );
    let svid_body = body(
        "svid",
        &[
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
            ),
            ("client_assertion", &svid),
            ("client_id", "svid"),
        ],
    );
    let mtls_body = body("mtls", &[("client_id", "mtls")]);
    let self_body = body("self", &[("client_id", "self")]);
    let pk_subject = subject("pk");
    let exchange = |body: &str,
                    authorization: Option<&str>,
                    certificates: Option<&[CertificateDer<'static>]>| {
        runtime.block_on(async {
            let form = FormBody::parse(body.as_bytes()).unwrap();
            let request = ClientRequest {
                authorization: authorization.map(str::as_bytes),
                form: &form,
                peer: None,
                tls_certificates: certificates,
                forwarded_certificate: None,
            };
            app.exchanger()
                .exchange("bench", &request)
                .await
                .result
                .unwrap()
        })
    };

    let mut group = c.benchmark_group("client_auth");
    group.bench_function("a_client_secret_basic", |b| {
        b.iter(|| exchange(&secret_body, Some(&basic), None))
    });
    let mut n = 0u64;
    group.bench_function("a_private_key_jwt", |b| {
        b.iter_batched(
            || {
                // A fresh assertion each time (single use), signed outside the timing; the
                // clock moves a second every 1000 so the replay cache's entries expire.
                n += 1;
                if n.is_multiple_of(1000) {
                    clock.advance(1);
                }
                let now = clock.now();
                let assertion = keys.sign_with(
                    Alg::Es256,
                    serde_json::json!({ "alg": "ES256", "kid": "es-1" }),
                    serde_json::json!({ "iss": "pk", "sub": "pk", "aud": base,
                        "iat": now, "exp": now + 30, "jti": format!("bench-{n}") }),
                );
                let mut form = impersonation(&pk_subject);
                form.extend_from_slice(&[
                    ("client_assertion_type", jwt_bearer),
                    ("client_assertion", &assertion),
                ]);
                encode_form(&form)
            },
            |body| exchange(&body, None, None),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("a_kubernetes_service_account", |b| {
        b.iter(|| exchange(&k8s_body, None, None))
    });
    group.bench_function("a_spiffe_jwt_svid", |b| {
        b.iter(|| exchange(&svid_body, None, None))
    });
    group.bench_function("a_tls_client_auth", |b| {
        b.iter(|| exchange(&mtls_body, None, Some(&chain)))
    });
    group.bench_function("a_self_signed_tls_client_auth", |b| {
        b.iter(|| exchange(&self_body, None, Some(&own_chain)))
    });
    group.finish();
}

/// The replay cache under a flood of distinct assertions: the cost of recording a `jti`
/// at 0 % and 90 % full (criterion), and, printed once, filling a cache of the service's
/// capacity with distinct `jti`s: time per insert, resident memory it took, and what the
/// next one gets.
fn replay_cache(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let capacity = 100_000;
    let key = |i: usize| format!("jti:{:064x}", i);
    let clock = gleipnir::clock::ManualClock::new(NOW);
    let store = Store::memory(capacity, clock.clone().into());
    let rss_before = rss_kib();
    let started = std::time::Instant::now();
    runtime.block_on(async {
        for i in 0..capacity {
            assert!(
                store
                    .set_if_absent(&key(i), Bytes::new(), NOW + 330)
                    .await
                    .unwrap()
            );
        }
    });
    let elapsed = started.elapsed();
    let full = runtime.block_on(store.set_if_absent(&key(capacity), Bytes::new(), NOW + 330));
    let rss_after = rss_kib();
    clock.set(NOW + 330);
    let after_expiry =
        runtime.block_on(store.set_if_absent(&key(capacity), Bytes::new(), NOW + 660));
    println!(
        "replay cache flood: {capacity} distinct jti in {:.1} ms ({:.2} µs each), RSS +{} KiB ({:.0} B per entry); the next one: {:?}; once they expired: {:?}, entries now {:?}",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / capacity as f64,
        rss_after.saturating_sub(rss_before),
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / capacity as f64,
        full,
        after_expiry,
        store.entries(),
    );

    let mut group = c.benchmark_group("replay_cache");
    for (name, held) in [
        ("record_jti_empty", 0usize),
        ("record_jti_90pct_full", capacity * 9 / 10),
    ] {
        let clock = gleipnir::clock::ManualClock::new(NOW);
        let store = Store::memory(capacity, clock.into());
        runtime.block_on(async {
            for i in 0..held {
                store
                    .set_if_absent(&key(i), Bytes::new(), NOW + 330)
                    .await
                    .unwrap();
            }
        });
        let mut i = held;
        group.bench_function(name, |b| {
            b.iter(|| {
                // Distinct keys, each deleted after, so the fill level stays put.
                i += 1;
                let k = key(capacity + i);
                runtime.block_on(async {
                    assert!(
                        store
                            .set_if_absent(&k, Bytes::new(), NOW + 330)
                            .await
                            .unwrap()
                    );
                    store.delete(&k).await.unwrap();
                })
            })
        });
    }
    group.finish();
}

/// This process's resident memory, KiB (Linux `/proc/self/status`).
fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The span `http` makes for `POST /token` (same fields), child of the caller's span.
fn request_span(headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        target: gleipnir::telemetry::SPAN_TARGET,
        "request",
        otel.name = "POST /token",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        http.route = "/token",
        http.response.status_code = tracing::field::Empty,
        gleipnir.request_id = "bench",
        gleipnir.client_id = tracing::field::Empty,
        gleipnir.decision = tracing::field::Empty,
        gleipnir.refusal.stage = tracing::field::Empty,
        gleipnir.refusal.reason = tracing::field::Empty,
    );
    gleipnir::telemetry::propagation::set_remote_parent(&span, headers);
    span
}

/// A loopback OTLP/HTTP receiver that accepts every export (200, empty body) and
/// discards it; returns its traces URL.
async fn otlp_sink() -> reqwest::Url {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(
                |request: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::new()),
                    ))
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    reqwest::Url::parse(&url).unwrap()
}

criterion_group!(exchange, benches, client_auth, replay_cache);
criterion_main!(exchange);
