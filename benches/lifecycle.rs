//! Criterion benches of the token lifecycle: what lineage costs an exchange, in process
//! and with Redis.
//!
//! - `lineage/record_memory`, `lineage/record_redis`: writing one token's lineage record
//!   (a hop-1 token: its own marker, its upstream subject and actor tokens and
//!   identities), as the exchange does after minting.
//! - `lineage/check_memory`, `lineage/check_redis`: reading a record with every marker it
//!   references, one call, as re-exchange and introspection do (a hop-3 record).
//! - `exchange/delegation_memory`, `exchange/delegation_redis`: the whole delegation
//!   exchange (scenario (b) of `benches/exchange.rs`) with its lineage write to each
//!   backend. The exchange without lineage is the first minus `lineage/record_memory`.
//!
//! - Printed, not timed: the resident memory one hop-1 lineage record takes in the
//!   in-process store (`VmRSS` before and after writing 200 000 of them).
//!
//! The Redis benches start a `redis-server` (persistence off) on a free loopback port and
//! are left out, with a message, when it is not installed. Run:
//! `cargo bench --bench lifecycle`. Report ratios: the machines are shared and noisy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use gleipnir::app::App;
use gleipnir::client_auth::ClientRequest;
use gleipnir::lifecycle::{Lifecycle, Provenance};
use gleipnir::oauth::form::FormBody;
use support::*;

/// A hop-1 token's provenance: an upstream subject and actor token.
fn provenance() -> Provenance {
    let mut provenance = Provenance::default();
    provenance.upstream(
        "https://idp.example",
        Some("jti-1"),
        "subject.token.value",
        "alice",
    );
    provenance.upstream("https://idp.example", None, "actor.token.value", "bff");
    provenance
}

/// A fresh jti per iteration: records are never replaced.
fn next_jti(counter: &AtomicU64) -> String {
    format!("bench-{}", counter.fetch_add(1, Ordering::Relaxed))
}

fn lineage_benches(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    lifecycle: &Lifecycle,
) {
    let counter = AtomicU64::new(0);
    let provenance = provenance();
    let mut group = c.benchmark_group("lineage");
    group.bench_function(format!("record_{name}"), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let jti = next_jti(&counter);
                lifecycle
                    .record(&jti, (NOW, NOW + 300), None, &provenance)
                    .await
                    .unwrap()
            })
        })
    });
    // A three-hop chain, then its last record read with all its markers.
    let leaf = runtime.block_on(async {
        let mut parent = None;
        let mut jti = String::new();
        for hop in 0..3 {
            jti = format!("chain-{name}-{hop}");
            lifecycle
                .record(&jti, (NOW, NOW + 300), parent.as_ref(), &provenance)
                .await
                .unwrap();
            parent = lifecycle.check(&jti).await.unwrap();
        }
        jti
    });
    group.bench_function(format!("check_{name}"), |b| {
        b.iter(|| runtime.block_on(async { lifecycle.check(&leaf).await.unwrap().unwrap() }))
    });
    group.finish();
}

fn exchange_bench(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    app: &App,
    body: &str,
) {
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", BFF.0, BFF.1))
    );
    let mut group = c.benchmark_group("exchange");
    group.bench_function(format!("delegation_{name}"), |b| {
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
    group.finish();
}

fn app_with(
    runtime: &tokio::runtime::Runtime,
    issuer: &TestIssuer,
    store: &str,
) -> (App, tempfile::TempDir) {
    let (built, _clock, dir) = Sts::builder()
        .issuer("corp", issuer, "")
        .extra(store)
        // Every iteration is the same exchange: measured, not answered from the cache.
        .extra("[reissue_cache]\nenabled = false")
        .build_app("http://127.0.0.1:1");
    runtime.block_on(async {
        for keeper in &built.background.keepers {
            keeper.maintain().await;
        }
    });
    (built.app, dir)
}

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Prints the memory a hop-1 lineage record takes in the in-process store.
fn memory_per_record(runtime: &tokio::runtime::Runtime, lifecycle: &Lifecycle) {
    const N: u64 = 200_000;
    let provenance = provenance();
    let before = rss_kib();
    runtime.block_on(async {
        for i in 0..N {
            let jti = format!("size-{i:016}-xxxx");
            lifecycle
                .record(&jti, (NOW, NOW + 300), None, &provenance)
                .await
                .unwrap();
        }
    });
    let after = rss_kib();
    eprintln!(
        "lineage/memory_per_record: {} bytes of RSS per hop-1 record ({N} records, {before} -> {after} KiB)",
        after.saturating_sub(before) * 1024 / N
    );
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = runtime.block_on(TestIssuer::start());
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let body = encode_form(&delegation(&subject, &issuer.actor_token("bff")));

    // A large in-process store: the benches write hundreds of thousands of records.
    let (memory, _dir) = app_with(&runtime, &issuer, "[store]\nmax_entries = 100000000\n");
    let (sizing, _sizing_dir) = app_with(&runtime, &issuer, "[store]\nmax_entries = 100000000\n");
    memory_per_record(&runtime, sizing.exchanger().lifecycle());
    drop(sizing);
    // The exchange first, on an empty store: the lineage benches leave millions of
    // records behind.
    exchange_bench(c, &runtime, "memory", &memory, &body);
    lineage_benches(c, &runtime, "memory", memory.exchanger().lifecycle());

    let Some(redis) = support::redis::RedisServer::start("benches/lifecycle (redis)") else {
        return;
    };
    let store = format!(
        "[store]\nbackend = \"redis\"\nurl = {{ value = \"{}\" }}\ntimeout_ms = 2000\n",
        redis.url()
    );
    let (on_redis, _dir) = app_with(&runtime, &issuer, &store);
    exchange_bench(c, &runtime, "redis", &on_redis, &body);
    lineage_benches(c, &runtime, "redis", on_redis.exchanger().lifecycle());
}

criterion_group!(lifecycle, benches);
criterion_main!(lifecycle);
