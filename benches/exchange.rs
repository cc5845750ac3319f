//! Criterion benches, by scenario (the operations issue): what one exchange costs in
//! process, next to the cost of its signature operations alone ("crypto floor").
//!
//! - `form_parse/*`: decoding a token request body.
//! - `verify/*`: one signature verification with a key parsed once (aws-lc-rs), per
//!   algorithm an upstream may use.
//! - `sign/*`: one signature with our key, per algorithm we issue with.
//! - `exchange/*`: the whole pipeline in process (form parse, client authentication,
//!   request parsing, admission, token validation against the cached JWKS, policy,
//!   minting), without HTTP: (a) an RS256 subject exchanged for an ES256 token,
//!   (b) a delegation with an ES256 subject and an ES256 actor token.
//! - `policy/*`: the decision of (b) with every check but the signatures (the offline dry
//!   run: parameters, claim checks, policy), i.e. the exchange minus its crypto.
//! - `floor/*`: the signature operations of (a) and (b) alone.
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
use criterion::{Criterion, criterion_group, criterion_main};
use gleipnir::client_auth::ClientRequest;
use gleipnir::exchange::dry_run::Signatures;
use gleipnir::jose::{JwsAlgorithm, KeyLookup, KeySet};
use gleipnir::keys::SigningKey;
use gleipnir::oauth::form::FormBody;
use support::*;

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
                    app.exchanger().exchange("bench", &request).await.unwrap()
                })
            })
        });
    }
    exchange.finish();

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

criterion_group!(exchange, benches);
criterion_main!(exchange);
