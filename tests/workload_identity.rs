//! Workload identity: clients that prove who they are without a shared secret, against
//! the real server on loopback over HTTPS (rustls, certificates made with rcgen), with
//! real loopback issuers: a client's JWKS (`private_key_jwt`), a Kubernetes cluster's
//! service-account issuer serving OIDC discovery and JWKS, a SPIFFE trust domain's
//! bundle endpoint. One end-to-end success per method, the refusals of the issue as one
//! table (status, `error`, and the audit's `stage/reason`), the replay race, actor
//! binding to the workload identity, and the metadata.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use support::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";
const K8S_CLIENT: &str = "orders-k8s";
const K8S_SUB: &str = "system:serviceaccount:shop:orders";
const SPIFFE_CLIENT: &str = "gw-spiffe";
const SPIFFE_ID: &str = "spiffe://example.org/ns/shop/sa/gw";
const MTLS_CLIENT: &str = "mtls-client";
const MTLS_ID: &str = "spiffe://example.org/ns/shop/sa/mtls";

const WORKLOAD_POLICY: &str = r#"
[clients.pk-client]
impersonate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.orders-k8s]
impersonate = true
delegate = true
subject_issuers = ["corp"]
actor_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.gw-spiffe]
impersonate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.mtls-client]
impersonate = true
certificate_bound = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.self-signed]
impersonate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]
"#;

/// A test certificate authority (rcgen, aws-lc-rs).
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain and its key, PEM.
struct Leaf {
    chain: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with a URI SAN, valid until 1 January of `until` (the STS's
    /// clock says 2030).
    fn client(&self, uri: &str, until: i32) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
        params
            .distinguished_name
            .push(DnType::CommonName, "workload");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: format!("{}{}", cert.pem(), self.issuer.pem()),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn self_signed(name: &str) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Leaf {
        chain: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// An HTTPS client trusting `ca`, presenting `identity`, connecting from `local`.
fn https(ca: &Ca, identity: Option<&Leaf>, local: Option<IpAddr>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.issuer.pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let tls = match identity {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let mut client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10));
    if let Some(local) = local {
        client = client.local_address(local);
    }
    client.build().unwrap()
}

/// Everything the tests share: the STS and the parties around it.
struct World {
    sts: Sts,
    corp: TestIssuer,
    /// The `private_key_jwt` client's key pair (its JWKS served on loopback).
    client_keys: TestIssuer,
    /// Another client's keys (`pk-other`, a JWKS file).
    other_keys: TestIssuer,
    cluster: TestIssuer,
    other_cluster: TestIssuer,
    spire: TestIssuer,
    ca: Ca,
    other_ca: Ca,
    mtls_leaf: Leaf,
    registered: Leaf,
    _dir: tempfile::TempDir,
}

fn toml_str(path: &std::path::Path) -> String {
    format!("{:?}", path.display().to_string())
}

impl World {
    async fn start() -> World {
        support::audit::capture();
        let corp = TestIssuer::start().await;
        let client_keys = TestIssuer::start().await;
        let other_keys = TestIssuer::start().await;
        let cluster = TestIssuer::start().await;
        let other_cluster = TestIssuer::start().await;
        let spire = TestIssuer::start().await;
        cluster.serve_document(
            "/.well-known/openid-configuration",
            json!({ "issuer": cluster.iss, "jwks_uri": cluster.jwks_uri() }),
        );
        spire.serve_document("/bundle", spiffe_bundle(&spire));
        let dir = tempfile::tempdir().unwrap();
        let (ca, other_ca) = (Ca::new("workload CA"), Ca::new("another CA"));
        let server = ca.server();
        std::fs::write(dir.path().join("cert.pem"), &server.chain).unwrap();
        std::fs::write(dir.path().join("key.pem"), &server.key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.issuer.pem()).unwrap();
        let registered = self_signed("self-signed.example");
        std::fs::write(dir.path().join("registered.pem"), &registered.chain).unwrap();
        let other_jwks = dir.path().join("other.jwks.json");
        std::fs::write(&other_jwks, other_keys.default_jwks().to_string()).unwrap();
        let extra = format!(
            r#"
[[clients]]
id = "pk-client"
private_key_jwt = {{ jwks_uri = "{}", allow_http = true, algorithms = ["ES256"] }}

[[clients]]
id = "pk-other"
private_key_jwt = {{ jwks_file = {} }}

[[clients]]
id = "{K8S_CLIENT}"
kubernetes = {{ issuer = "cluster", service_account = "shop:orders" }}

[[clients]]
id = "{SPIFFE_CLIENT}"
spiffe = {{ issuer = "spire", spiffe_id = "{SPIFFE_ID}" }}

[[clients]]
id = "{MTLS_CLIENT}"
tls_client_auth = {{ ca_file = {}, san_uri = "{MTLS_ID}" }}

[[clients]]
id = "self-signed"
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

[client_certificates]
trusted_proxies = ["127.0.0.2"]
"#,
            client_keys.jwks_uri(),
            toml_str(&other_jwks),
            toml_str(&dir.path().join("ca.pem")),
            toml_str(&dir.path().join("registered.pem")),
            cluster.iss,
            spire.iss,
        );
        let tls = format!(
            "cert_file = {}\nkey_file = {}",
            toml_str(&dir.path().join("cert.pem")),
            toml_str(&dir.path().join("key.pem"))
        );
        let sts = Sts::builder()
            .issuer("corp", &corp, "")
            .policy(&format!("{DEFAULT_POLICY}{WORKLOAD_POLICY}"))
            .tls(&tls)
            .extra(&extra)
            .start()
            .await;
        let mtls_leaf = ca.client(MTLS_ID, 2040);
        World {
            sts,
            corp,
            client_keys,
            other_keys,
            cluster,
            other_cluster,
            spire,
            ca,
            other_ca,
            mtls_leaf,
            registered,
            _dir: dir,
        }
    }

    fn https(&self) -> reqwest::Client {
        https(&self.ca, None, None)
    }

    fn subject(&self, client: &str) -> String {
        self.corp.user_token("alice", client, "orders:read")
    }

    /// A `private_key_jwt` assertion with these claims (ES256, the client's kid).
    fn pkjwt(&self, claims: Value) -> String {
        self.client_keys
            .sign_with(Alg::Es256, json!({ "alg": "ES256", "kid": "es-1" }), claims)
    }

    fn pkjwt_claims(&self, jti: &str) -> Value {
        json!({ "iss": "pk-client", "sub": "pk-client", "aud": self.sts.base,
                "iat": NOW, "exp": NOW + 120, "jti": jti })
    }

    /// A Kubernetes 1.30+ projected service-account token: exactly the claims the API
    /// server's TokenRequest puts in a pod-bound token (`iss`, `sub`, `aud`, `exp`, `iat`,
    /// `nbf`, `jti`, and `kubernetes.io` with namespace, service account, pod and node,
    /// each named with its uid), as documented on kubernetes.io ("Service account token
    /// volume projection", and the `ServiceAccountTokenJTI` / `ServiceAccountTokenPodNodeInfo`
    /// features, beta and on by default since 1.30).
    fn k8s_claims(&self, issuer: &TestIssuer, namespace: &str, name: &str, aud: &str) -> Value {
        json!({
            "aud": [aud],
            "exp": NOW + 3000,
            "iat": NOW - 600,
            "iss": issuer.iss,
            "jti": "1f8a4c1e-8b9e-4f0e-9d43-0c2f5d6e7a81",
            "kubernetes.io": {
                "namespace": namespace,
                "node": { "name": "node-1", "uid": "0d9f6a34-2f3b-4a41-9a7c-6f3f0c1e2b55" },
                "pod": { "name": "orders-7c9f8d6b5-x2x7q", "uid": "b3c1e0a8-77d1-4f2e-8a5e-2c1d9f3a4b6c" },
                "serviceaccount": { "name": name, "uid": "a6f0c9a2-3d4e-4b5f-8c6d-7e8f9a0b1c2d" }
            },
            "nbf": NOW - 600,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
        })
    }

    fn k8s_token(&self, issuer: &TestIssuer, claims: Value) -> String {
        issuer.sign_with(Alg::Es256, json!({ "alg": "ES256", "kid": "es-1" }), claims)
    }

    fn svid(&self, sub: &str) -> String {
        self.spire.sign_with(
            Alg::Es256,
            json!({ "alg": "ES256", "kid": "es-1", "typ": "JWT" }),
            json!({ "sub": sub, "aud": [self.sts.base], "iat": NOW - 10, "exp": NOW + 290 }),
        )
    }

    /// POSTs `form` to /token with `client`.
    async fn post(&self, client: &reqwest::Client, form: &[(&str, &str)]) -> Answer {
        self.sts
            .post(
                client
                    .post(self.sts.token_url())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(encode_form(form)),
            )
            .await
    }

    /// An impersonation authenticated by `assertion` of `kind` (with `client_id`).
    async fn with_assertion(&self, client_id: Option<&str>, kind: &str, assertion: &str) -> Answer {
        self.with_assertion_for(client_id.unwrap_or("pk-client"), client_id, kind, assertion)
            .await
    }

    /// [`with_assertion`](Self::with_assertion), with a subject token issued to `subject_client`.
    async fn with_assertion_for(
        &self,
        subject_client: &str,
        client_id: Option<&str>,
        kind: &str,
        assertion: &str,
    ) -> Answer {
        let subject = self.subject(subject_client);
        let mut form = impersonation(&subject);
        form.extend([
            ("client_assertion_type", kind),
            ("client_assertion", assertion),
        ]);
        if let Some(id) = client_id {
            form.push(("client_id", id));
        }
        self.post(&self.https(), &form).await
    }

    /// An impersonation by a certificate client `client_id`, over `client`.
    async fn with_certificate(&self, client: &reqwest::Client, client_id: &str) -> Answer {
        let subject = self.subject(client_id);
        let mut form = impersonation(&subject);
        form.push(("client_id", client_id));
        self.post(client, &form).await
    }
}

/// A SPIFFE trust bundle as SPIRE writes it: the JWT-SVID keys marked `use: jwt-svid`,
/// with `spiffe_sequence` and `spiffe_refresh_hint`.
fn spiffe_bundle(spire: &TestIssuer) -> Value {
    let mut jwks = spire.default_jwks();
    for key in jwks["keys"].as_array_mut().unwrap() {
        key["use"] = json!("jwt-svid");
        key.as_object_mut().unwrap().remove("alg");
    }
    jwks["spiffe_sequence"] = json!(7);
    jwks["spiffe_refresh_hint"] = json!(300);
    jwks
}

fn assert_granted(answer: &Answer, method: &str) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    let audit = answer
        .request_id()
        .and_then(support::audit::record)
        .expect("audited");
    assert_eq!(audit["decision"], "granted");
    assert_eq!(audit["auth_method"], method, "{audit}");
}

#[tokio::test]
async fn each_method_authenticates_end_to_end() {
    let w = World::start().await;
    w.sts.clock.set(NOW);

    // private_key_jwt, keys from the client's JWKS URL; aud our issuer identifier.
    let answer = w
        .with_assertion(None, JWT_BEARER, &w.pkjwt(w.pkjwt_claims("e2e-1")))
        .await;
    assert_granted(&answer, "private_key_jwt");
    assert_eq!(answer.claims()["client_id"], "pk-client");

    // A Kubernetes projected token of the cluster found by discovery, presented twice:
    // federated assertions are reusable until they expire.
    let token = w.k8s_token(
        &w.cluster,
        w.k8s_claims(&w.cluster, "shop", "orders", &w.sts.base),
    );
    for _ in 0..2 {
        let answer = w.with_assertion(Some(K8S_CLIENT), JWT_BEARER, &token).await;
        assert_granted(&answer, "kubernetes_service_account_jwt");
        let audit = support::audit::record(answer.request_id().unwrap()).unwrap();
        assert_eq!(audit["client_identity"], K8S_SUB);
    }
    // Without client_id, the token's iss and sub name the client.
    let answer = w
        .with_assertion_for(K8S_CLIENT, None, JWT_BEARER, &token)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // A SPIFFE JWT-SVID, keys from the trust domain's bundle endpoint.
    let answer = w
        .with_assertion(Some(SPIFFE_CLIENT), JWT_SPIFFE, &w.svid(SPIFFE_ID))
        .await;
    assert_granted(&answer, "spiffe_jwt");

    // tls_client_auth: the policy binds the issued token to the certificate.
    let client = https(&w.ca, Some(&w.mtls_leaf), None);
    let answer = w.with_certificate(&client, MTLS_CLIENT).await;
    assert_granted(&answer, "tls_client_auth");
    let thumbprint = gleipnir::jose::b64_encode(&gleipnir::x509::thumbprint(&w.mtls_leaf.der));
    assert_eq!(answer.claims()["cnf"], json!({ "x5t#S256": thumbprint }));

    // self_signed_tls_client_auth: the registered certificate.
    let client = https(&w.ca, Some(&w.registered), None);
    let answer = w.with_certificate(&client, "self-signed").await;
    assert_granted(&answer, "self_signed_tls_client_auth");
    assert!(
        answer.claims().get("cnf").is_none(),
        "not bound by its policy"
    );

    // Behind a trusted proxy (connecting from 127.0.0.2): the certificate it forwards.
    let proxy = https(&w.ca, None, Some("127.0.0.2".parse().unwrap()));
    let subject = w.subject(MTLS_CLIENT);
    let header = xfcc(&w.mtls_leaf);
    let answer = w
        .sts
        .post(
            proxy
                .post(w.sts.token_url())
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-client-cert", header)
                .body(encode_form(&[
                    ("grant_type", GRANT),
                    ("subject_token", &subject),
                    ("subject_token_type", AT),
                    ("client_id", MTLS_CLIENT),
                ])),
        )
        .await;
    assert_granted(&answer, "tls_client_auth");
    assert_eq!(answer.claims()["cnf"], json!({ "x5t#S256": thumbprint }));
}

/// Envoy's `x-forwarded-client-cert` for `leaf`: `By`, `Hash`, URL-encoded `Cert`, `URI`.
fn xfcc(leaf: &Leaf) -> String {
    let pem = leaf
        .chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    let encoded: String = pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let hash: String = gleipnir::x509::thumbprint(&leaf.der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "By=spiffe://example.org/ns/mesh/sa/sidecar;Hash={hash};Cert=\"{encoded}\";URI={MTLS_ID}"
    )
}

#[tokio::test]
async fn refusals_each_with_status_error_and_audited_reason() {
    let w = World::start().await;
    let us = w.sts.base.clone();
    let pk = |claims: Value| w.pkjwt(claims);
    let with = |mut claims: Value, key: &str, value: Value| {
        claims[key] = value;
        claims
    };
    let base = w.pkjwt_claims("row");
    let none_alg = format!(
        "{}.{}.",
        b64_json(&json!({ "alg": "none" })),
        b64_json(&w.pkjwt_claims("none"))
    );
    // HS256 "signed" with the client's public key as the HMAC secret.
    let hs256 = {
        let input = format!(
            "{}.{}",
            b64_json(&json!({ "alg": "HS256", "kid": "es-1" })),
            b64_json(&w.pkjwt_claims("hs"))
        );
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            w.client_keys.default_jwks().to_string().as_bytes(),
        );
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    };
    let unknown_kid = w.client_keys.sign_with(
        Alg::Es256,
        json!({ "alg": "ES256", "kid": "nope" }),
        w.pkjwt_claims("kid"),
    );
    let another_clients_key = w.other_keys.sign_with(
        Alg::Es256,
        json!({ "alg": "ES256", "kid": "es-1" }),
        w.pkjwt_claims("other-key"),
    );
    let for_other_client = w.other_keys.sign_with(
        Alg::Es256,
        json!({ "alg": "ES256", "kid": "es-1" }),
        json!({ "iss": "pk-other", "sub": "pk-other", "aud": us, "iat": NOW, "exp": NOW + 60, "jti": "o" }),
    );
    let replayed = pk(w.pkjwt_claims("replayed"));
    assert_eq!(
        w.with_assertion(None, JWT_BEARER, &replayed).await.status,
        200,
        "first use"
    );
    let k8s = |issuer: &TestIssuer, ns: &str, name: &str, aud: &str| {
        w.k8s_token(issuer, w.k8s_claims(issuer, ns, name, aud))
    };
    let k8s_expired = {
        let mut claims = w.k8s_claims(&w.cluster, "shop", "orders", &us);
        claims["iat"] = json!(NOW - 4000);
        claims["nbf"] = json!(NOW - 4000);
        claims["exp"] = json!(NOW - 400);
        w.k8s_token(&w.cluster, claims)
    };

    type Row = (&'static str, Answer, u16, &'static str, &'static str);
    let mut rows: Vec<Row> = Vec::new();
    let pk_rows: Vec<(&'static str, String, &'static str)> = vec![
        (
            "assertion for another client",
            for_other_client,
            "assertion_not_for_client",
        ),
        (
            "aud = token endpoint",
            pk(with(base.clone(), "aud", json!(w.sts.token_url()))),
            "audience_mismatch",
        ),
        (
            "aud array",
            pk(with(base.clone(), "aud", json!([us]))),
            "audience_mismatch",
        ),
        (
            "aud of another server",
            pk(with(base.clone(), "aud", json!("https://other.example"))),
            "audience_mismatch",
        ),
        (
            "expired",
            pk(with(
                with(base.clone(), "iat", json!(NOW - 300)),
                "exp",
                json!(NOW - 120),
            )),
            "expired",
        ),
        (
            "lifetime above the maximum",
            pk(with(base.clone(), "exp", json!(NOW + 301))),
            "lifetime_too_long",
        ),
        ("replayed jti", replayed, "replayed_assertion"),
        ("alg none", none_alg, "unsupported_algorithm"),
        ("HS256 with the public key", hs256, "unsupported_algorithm"),
        ("unknown kid", unknown_kid, "unknown_kid"),
        (
            "key of another client",
            another_clients_key,
            "bad_signature",
        ),
    ];
    for (name, assertion, reason) in pk_rows {
        let client_id = (name == "assertion for another client").then_some("pk-client");
        rows.push((
            name,
            w.with_assertion(client_id, JWT_BEARER, &assertion).await,
            401,
            "invalid_client",
            reason,
        ));
    }
    // Two methods at once.
    let subject = w.subject("pk-client");
    let assertion = pk(w.pkjwt_claims("both"));
    let both = w
        .sts
        .post(
            w.https()
                .post(w.sts.token_url())
                .basic_auth(BFF.0, Some(BFF.1))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode_form(&[
                    ("grant_type", GRANT),
                    ("subject_token", &subject),
                    ("subject_token_type", AT),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ])),
        )
        .await;
    rows.push((
        "assertion and secret together",
        both,
        400,
        "invalid_request",
        "multiple_methods",
    ));
    let k8s_rows = vec![
        (
            "k8s: another namespace",
            k8s(&w.cluster, "billing", "orders", &us),
            "namespace_mismatch",
        ),
        (
            "k8s: another service account",
            k8s(&w.cluster, "shop", "cart", &us),
            "service_account_mismatch",
        ),
        (
            "k8s: another audience",
            k8s(
                &w.cluster,
                "shop",
                "orders",
                "https://kubernetes.default.svc",
            ),
            "audience_mismatch",
        ),
        ("k8s: expired", k8s_expired, "expired"),
        (
            "k8s: untrusted cluster issuer",
            k8s(&w.other_cluster, "shop", "orders", &us),
            "untrusted_assertion_issuer",
        ),
    ];
    for (name, token, reason) in k8s_rows {
        rows.push((
            name,
            w.with_assertion(Some(K8S_CLIENT), JWT_BEARER, &token).await,
            401,
            "invalid_client",
            reason,
        ));
    }
    for (name, sub, reason) in [
        (
            "svid: another trust domain",
            "spiffe://other.org/ns/shop/sa/gw",
            "trust_domain_mismatch",
        ),
        (
            "svid: another path",
            "spiffe://example.org/ns/shop/sa/cart",
            "spiffe_id_mismatch",
        ),
    ] {
        let answer = w
            .with_assertion(Some(SPIFFE_CLIENT), JWT_SPIFFE, &w.svid(sub))
            .await;
        rows.push((name, answer, 401, "invalid_client", reason));
    }
    let cert_rows = [
        (
            "certificate not chaining to the anchors",
            w.other_ca.client(MTLS_ID, 2040),
            "certificate_untrusted",
        ),
        (
            "certificate expired",
            w.ca.client(MTLS_ID, 2029),
            "certificate_expired",
        ),
        (
            "certificate with another SAN",
            w.ca.client("spiffe://example.org/ns/shop/sa/cart", 2040),
            "certificate_name_mismatch",
        ),
    ];
    for (name, leaf, reason) in cert_rows {
        let client = https(&w.ca, Some(&leaf), None);
        rows.push((
            name,
            w.with_certificate(&client, MTLS_CLIENT).await,
            401,
            "invalid_client",
            reason,
        ));
    }
    let unregistered = https(&w.ca, Some(&self_signed("self-signed.example")), None);
    rows.push((
        "self-signed certificate not registered",
        w.with_certificate(&unregistered, "self-signed").await,
        401,
        "invalid_client",
        "certificate_not_registered",
    ));
    let subject = w.subject(MTLS_CLIENT);
    let form = encode_form(&[
        ("grant_type", GRANT),
        ("subject_token", &subject),
        ("subject_token_type", AT),
        ("client_id", MTLS_CLIENT),
    ]);
    let untrusted_proxy = w
        .sts
        .post(
            w.https()
                .post(w.sts.token_url())
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-forwarded-client-cert", xfcc(&w.mtls_leaf))
                .body(form.clone()),
        )
        .await;
    rows.push((
        "x-forwarded-client-cert from an untrusted address",
        untrusted_proxy,
        401,
        "invalid_client",
        "forwarded_certificate_untrusted",
    ));
    let secret_only = w
        .sts
        .post(
            w.https()
                .post(w.sts.token_url())
                .basic_auth(MTLS_CLIENT, Some("guess"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone()),
        )
        .await;
    rows.push((
        "mTLS client presenting a secret",
        secret_only,
        401,
        "invalid_client",
        "wrong_method",
    ));
    let with_cert = https(&w.ca, Some(&w.mtls_leaf), None);
    let secret_and_cert = w
        .sts
        .post(
            with_cert
                .post(w.sts.token_url())
                .basic_auth(MTLS_CLIENT, Some("guess"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form),
        )
        .await;
    rows.push((
        "mTLS client presenting a secret and its certificate",
        secret_and_cert,
        400,
        "invalid_request",
        "multiple_methods",
    ));

    let mut failures = Vec::new();
    for (name, answer, status, error, reason) in &rows {
        let got = answer.request_id().and_then(support::audit::refusal);
        let want = format!("client_auth/{reason}");
        if answer.status != *status || answer.error() != *error || got.as_deref() != Some(&want) {
            failures.push(format!(
                "{name}: got {} {} {:?}, want {status} {error} {want}",
                answer.status,
                answer.error(),
                got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_replayed_assertion_sent_in_parallel_succeeds_exactly_once() {
    let w = World::start().await;
    let assertion = w.pkjwt(w.pkjwt_claims("race"));
    let subject = w.subject("pk-client");
    let body = encode_form(&[
        ("grant_type", GRANT),
        ("subject_token", &subject),
        ("subject_token_type", AT),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", &assertion),
    ]);
    let client = w.https();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let request = client
                .post(w.sts.token_url())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone());
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        15,
        "{statuses:?}"
    );
    // The replay cache's size is a metric: the store's (it holds the granted token's
    // lineage too).
    let entries = metric_value(&w.sts.admin, "gleipnir_store_entries").await;
    assert!(entries.is_some_and(|n| n >= 1.0), "{entries:?}");
    assert_eq!(
        metric_value(&w.sts.admin, "gleipnir_store_capacity").await,
        Some(1_000_000.0)
    );
}

#[tokio::test]
async fn the_workload_identity_is_the_client_s_identity_for_actor_binding_and_may_act() {
    let w = World::start().await;
    let token = w.k8s_token(
        &w.cluster,
        w.k8s_claims(&w.cluster, "shop", "orders", &w.sts.base),
    );
    let exchange = |subject: String, actor: Option<String>| {
        let token = token.clone();
        let w = &w;
        async move {
            let mut form = match &actor {
                Some(actor) => delegation(&subject, actor),
                None => impersonation(&subject),
            };
            form.extend([
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &token),
                ("client_id", K8S_CLIENT),
            ]);
            w.post(&w.https(), &form).await
        }
    };
    let subject = w.subject(K8S_CLIENT);
    // An actor token of the workload's identity binds; one of its client id does not.
    let own = w
        .corp
        .sign(json!({ "iss": w.corp.iss, "sub": K8S_SUB, "iat": NOW - 60, "exp": NOW + 600 }));
    let answer = exchange(subject.clone(), Some(own)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.claims()["act"], json!({ "sub": K8S_SUB }));
    let by_id = w.corp.actor_token(K8S_CLIENT);
    let answer = exchange(subject, Some(by_id)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(
        answer
            .request_id()
            .and_then(support::audit::refusal)
            .as_deref(),
        Some("policy/actor_not_bound_to_client")
    );
    // may_act may name the client by its id or by its workload identity.
    for named in [K8S_CLIENT, K8S_SUB] {
        let mut claims = w.corp.user_claims("alice", "someone-else", "orders:read");
        claims["may_act"] = json!({ "sub": named });
        let answer = exchange(w.corp.sign(claims), None).await;
        assert_eq!(answer.status, 200, "{named}: {}", answer.body);
    }
    let mut claims = w.corp.user_claims("alice", "someone-else", "orders:read");
    claims["may_act"] = json!({ "sub": "system:serviceaccount:shop:cart" });
    let answer = exchange(w.corp.sign(claims), None).await;
    assert_eq!(
        answer
            .request_id()
            .and_then(support::audit::refusal)
            .as_deref(),
        Some("policy/may_act_mismatch")
    );
}

#[tokio::test]
async fn metadata_lists_exactly_the_configured_methods() {
    let w = World::start().await;
    let metadata = w
        .https()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            w.sts.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metadata: Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "kubernetes_service_account_jwt",
            "spiffe_jwt",
            "tls_client_auth",
            "self_signed_tls_client_auth"
        ])
    );
    assert_eq!(
        metadata["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS256", "PS256", "ES256", "EdDSA"])
    );
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);

    // Secrets only: no algorithms, no certificate-bound tokens.
    let issuer = TestIssuer::start().await;
    let plain = Sts::start(&issuer).await;
    let (_, metadata) = plain
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert!(
        metadata
            .get("token_endpoint_auth_signing_alg_values_supported")
            .is_none()
    );
    assert!(
        metadata
            .get("tls_client_certificate_bound_access_tokens")
            .is_none()
    );
}

#[tokio::test]
async fn a_certificate_bound_policy_refuses_a_client_without_a_certificate() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let policy = DEFAULT_POLICY.replace(
        "[clients.impersonator]\nimpersonate = true",
        "[clients.impersonator]\nimpersonate = true\ncertificate_bound = true",
    );
    assert_ne!(policy, DEFAULT_POLICY);
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .policy(&policy)
        .start()
        .await;
    let subject = issuer.user_token("alice", IMPERSONATOR.0, "orders:read");
    let answer = sts.exchange(IMPERSONATOR, &impersonation(&subject)).await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "unauthorized_client")
    );
    assert_eq!(
        answer
            .request_id()
            .and_then(support::audit::refusal)
            .as_deref(),
        Some("policy/certificate_required")
    );
}
