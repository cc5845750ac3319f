//! The store contract (`src/store.rs`), run against both backends: the in-process one,
//! always, and Redis, against a real `redis-server` this test starts on a free loopback
//! port (skipped, visibly, when it is not installed). Each case gets its own key prefix
//! on the one server; "now" is a manual clock in both, so expiry is a fact of the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gleipnir::clock::ManualClock;
use gleipnir::config::Secret;
use gleipnir::store::{Admitted, RedisSettings, RedisStore, Store, StoreError, Window};
use support::redis::RedisServer;

const T0: u64 = 1_700_000_000;

fn bytes(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Makes a fresh, empty store on its clock for one case.
type Factory = Box<dyn Fn(&str) -> (Store, ManualClock)>;

fn memory() -> Factory {
    Box::new(|_| {
        let clock = ManualClock::new(T0);
        (Store::memory(10_000, clock.clone().into()), clock)
    })
}

fn redis(url: String) -> Factory {
    Box::new(move |case| {
        let clock = ManualClock::new(T0);
        let settings = RedisSettings {
            url: Secret::from(url.as_str()),
            password: None,
            ca_pem: None,
            key_prefix: format!("contract:{case}:"),
            timeout: Duration::from_secs(2),
        };
        let store = RedisStore::new(settings, clock.clone().into()).unwrap();
        (Store::Redis(store), clock)
    })
}

async fn contract(make: Factory) {
    values_expire(make("values_expire")).await;
    put_replaces(make("put_replaces")).await;
    past_expiry_refused(make("past_expiry")).await;
    delete_live_only(make("delete")).await;
    set_if_absent_once(make("set_if_absent")).await;
    one_winner(make("one_winner")).await;
    counters(make("counters")).await;
    not_a_counter(make("not_a_counter")).await;
    get_many_in_order(make("get_many")).await;
    records_read_their_references(make("records")).await;
    sliding_window(make("window")).await;
}

#[tokio::test]
async fn the_contract_holds_in_memory() {
    contract(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_in_redis() {
    let Some(server) = RedisServer::start("the_contract_holds_in_redis") else {
        return;
    };
    contract(redis(server.url())).await;
}

async fn values_expire((store, clock): (Store, ManualClock)) {
    store.put("k", bytes("v"), T0 + 10).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("v")));
    clock.set(T0 + 9);
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("v")));
    clock.set(T0 + 10);
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(store.get("never").await.unwrap(), None);
    // Values are bytes, separators included.
    store
        .put("b", Bytes::from_static(b"1:2:\n\0x"), T0 + 20)
        .await
        .unwrap();
    assert_eq!(
        store.get("b").await.unwrap(),
        Some(Bytes::from_static(b"1:2:\n\0x"))
    );
}

async fn put_replaces((store, clock): (Store, ManualClock)) {
    store.put("k", bytes("old"), T0 + 10).await.unwrap();
    store.put("k", bytes("new"), T0 + 20).await.unwrap();
    clock.set(T0 + 15);
    assert_eq!(store.get("k").await.unwrap(), Some(bytes("new")));
    store.put("k", bytes("short"), T0 + 16).await.unwrap();
    clock.set(T0 + 16);
    assert_eq!(store.get("k").await.unwrap(), None);
}

async fn past_expiry_refused((store, _clock): (Store, ManualClock)) {
    for expires_at in [T0, T0 - 1] {
        assert_eq!(
            store.put("k", bytes("v"), expires_at).await,
            Err(StoreError::PastExpiry)
        );
        assert_eq!(
            store.set_if_absent("k", bytes("v"), expires_at).await,
            Err(StoreError::PastExpiry)
        );
        assert_eq!(
            store.increment("k", expires_at).await,
            Err(StoreError::PastExpiry)
        );
        assert_eq!(
            store.put_record("k", bytes("v"), &[], expires_at).await,
            Err(StoreError::PastExpiry)
        );
    }
    assert_eq!(store.get("k").await.unwrap(), None);
}

async fn delete_live_only((store, clock): (Store, ManualClock)) {
    store.put("k", bytes("v"), T0 + 10).await.unwrap();
    assert!(store.delete("k").await.unwrap());
    assert_eq!(store.get("k").await.unwrap(), None);
    assert!(!store.delete("k").await.unwrap());
    store.put("gone", bytes("v"), T0 + 1).await.unwrap();
    clock.set(T0 + 1);
    assert!(!store.delete("gone").await.unwrap());
    assert!(store.set_if_absent("k", bytes("v"), T0 + 10).await.unwrap());
}

async fn set_if_absent_once((store, clock): (Store, ManualClock)) {
    assert!(
        store
            .set_if_absent("jti", bytes("a"), T0 + 60)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_if_absent("jti", bytes("b"), T0 + 90)
            .await
            .unwrap()
    );
    assert_eq!(store.get("jti").await.unwrap(), Some(bytes("a")));
    clock.set(T0 + 59);
    assert!(
        !store
            .set_if_absent("jti", bytes("c"), T0 + 90)
            .await
            .unwrap()
    );
    clock.set(T0 + 60);
    assert!(
        store
            .set_if_absent("jti", bytes("d"), T0 + 90)
            .await
            .unwrap()
    );
    assert_eq!(store.get("jti").await.unwrap(), Some(bytes("d")));
}

async fn one_winner((store, _clock): (Store, ManualClock)) {
    let start = Arc::new(tokio::sync::Barrier::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let (store, start) = (store.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            let won = store
                .set_if_absent("jti-1", Bytes::from(vec![i]), T0 + 60)
                .await
                .unwrap();
            (i, won)
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (i, won) = result.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        store.get("jti-1").await.unwrap(),
        Some(Bytes::from(vec![winners[0]]))
    );
}

async fn counters((store, clock): (Store, ManualClock)) {
    assert_eq!(store.increment("rate:a", T0 + 60).await.unwrap(), 1);
    assert_eq!(store.increment("rate:a", T0 + 60).await.unwrap(), 2);
    clock.set(T0 + 59);
    assert_eq!(store.increment("rate:a", T0 + 120).await.unwrap(), 3);
    assert_eq!(store.get("rate:a").await.unwrap(), Some(bytes("3")));
    clock.set(T0 + 60);
    assert_eq!(store.get("rate:a").await.unwrap(), None);
    assert_eq!(store.increment("rate:a", T0 + 120).await.unwrap(), 1);
    assert_eq!(store.increment("rate:b", T0 + 120).await.unwrap(), 1);
}

async fn not_a_counter((store, _clock): (Store, ManualClock)) {
    store.put("n", bytes("41"), T0 + 60).await.unwrap();
    assert_eq!(store.increment("n", T0 + 60).await.unwrap(), 42);
    store
        .put("s", bytes("not a number"), T0 + 60)
        .await
        .unwrap();
    assert_eq!(
        store.increment("s", T0 + 60).await,
        Err(StoreError::NotACounter)
    );
    store
        .put("max", Bytes::from(u64::MAX.to_string()), T0 + 60)
        .await
        .unwrap();
    assert_eq!(
        store.increment("max", T0 + 60).await,
        Err(StoreError::NotACounter)
    );
    assert_eq!(store.get("s").await.unwrap(), Some(bytes("not a number")));
}

async fn get_many_in_order((store, clock): (Store, ManualClock)) {
    store.put("a", bytes("1"), T0 + 10).await.unwrap();
    store.put("c", bytes("3"), T0 + 20).await.unwrap();
    let keys = ["a", "b", "c"].map(String::from);
    assert_eq!(
        store.get_many(&keys).await.unwrap(),
        vec![Some(bytes("1")), None, Some(bytes("3"))]
    );
    clock.set(T0 + 10);
    assert_eq!(
        store.get_many(&keys).await.unwrap(),
        vec![None, None, Some(bytes("3"))]
    );
    assert_eq!(
        store.get_many(&[]).await.unwrap(),
        Vec::<Option<Bytes>>::new()
    );
}

async fn records_read_their_references((store, clock): (Store, ManualClock)) {
    let refs = ["rev:a", "rev:b", "rev:c"].map(String::from);
    store
        .put_record("lin:1", bytes("lineage"), &refs, T0 + 100)
        .await
        .unwrap();
    let record = store.get_record("lin:1").await.unwrap().unwrap();
    assert_eq!(record.value, bytes("lineage"));
    assert_eq!(
        record.refs,
        refs.iter().map(|r| (r.clone(), None)).collect::<Vec<_>>()
    );
    // A reference written after the record is seen by the next read; an expired one is not.
    store.put("rev:b", bytes("t1"), T0 + 50).await.unwrap();
    store.put("rev:c", bytes("t2"), T0 + 5).await.unwrap();
    clock.set(T0 + 5);
    let record = store.get_record("lin:1").await.unwrap().unwrap();
    assert_eq!(
        record.refs,
        vec![
            ("rev:a".to_owned(), None),
            ("rev:b".to_owned(), Some(bytes("t1"))),
            ("rev:c".to_owned(), None),
        ]
    );
    // The record's value reads through get; a plain value reads as a record without refs.
    assert_eq!(store.get("lin:1").await.unwrap(), Some(bytes("lineage")));
    store.put("plain", bytes("p"), T0 + 50).await.unwrap();
    let plain = store.get_record("plain").await.unwrap().unwrap();
    assert_eq!((plain.value, plain.refs), (bytes("p"), vec![]));
    assert_eq!(store.get_record("absent").await.unwrap(), None);
    clock.set(T0 + 100);
    assert_eq!(store.get_record("lin:1").await.unwrap(), None);
    assert_eq!(
        store
            .put_record("bad", bytes("v"), &["a\nb".to_owned()], T0 + 200)
            .await,
        Err(StoreError::BadReference)
    );
}

async fn sliding_window((store, clock): (Store, ManualClock)) {
    let window = |previous_weight_milli| Window {
        current: "w:2",
        previous: "w:1",
        previous_weight_milli,
        limit: 3,
        expires_at: T0 + 20,
    };
    let admitted = |admitted, current, previous| Admitted {
        admitted,
        current,
        previous,
    };
    for _ in 0..4 {
        store.increment("w:1", T0 + 10).await.unwrap();
    }
    // Half of the previous window's 4 counts: 2, so one more fits.
    assert_eq!(
        store.admit(&window(500)).await.unwrap(),
        admitted(true, 1, 4)
    );
    assert_eq!(
        store.admit(&window(500)).await.unwrap(),
        admitted(false, 1, 4)
    );
    // Refused requests are not counted; a lighter previous window lets more in.
    assert_eq!(
        store.admit(&window(250)).await.unwrap(),
        admitted(true, 2, 4)
    );
    assert_eq!(
        store.admit(&window(250)).await.unwrap(),
        admitted(false, 2, 4)
    );
    clock.set(T0 + 10);
    assert_eq!(store.admit(&window(0)).await.unwrap(), admitted(true, 3, 0));
    assert_eq!(
        store.admit(&window(0)).await.unwrap(),
        admitted(false, 3, 0)
    );
    assert_eq!(store.get("w:2").await.unwrap(), Some(bytes("3")));
}
