//! Shared state with expiry: the seam between the features that need state shared across
//! replicas and the backend that holds it. A supporting module: it never imports a
//! pipeline stage (`exchange`, `client_auth`, `token`, `policy`, `mint`); the stages call
//! it.
//!
//! Every entry expires at an absolute Unix time in whole seconds, like `exp` elsewhere: an
//! entry is live while `now < expires_at`, and every call that writes an expiry refuses one
//! that is not in the future ([`StoreError::PastExpiry`]) rather than record something
//! already gone. [`MemoryStore`] reads "now" from the [`Clock`] it is built with (a manual
//! one in tests). The primitives and what they are for:
//!
//! - [`Store::set_if_absent`]: records a key only if no live entry holds it, and says
//!   whether this call did. Of callers racing on one key exactly one is told `true`: the
//!   replay cache for single-use client assertions (a `jti` seen once, kept until the
//!   assertion expires).
//! - [`Store::put`], [`Store::get`], [`Store::delete`]: a value under a key until it
//!   expires, looked up by key: the revocation lineage of issued tokens, whose entries
//!   expire with the tokens.
//! - [`Store::increment`]: a counter created at 1 with an expiry when absent, incremented
//!   otherwise (its expiry unchanged): fixed-window rate limits, the window's end being
//!   the expiry.
//! - [`Store::get_many`]: the live values of several keys in one call (one round trip):
//!   the revocation markers of every ancestor of a token.
//! - [`Store::put_record`], [`Store::get_record`]: a value together with the keys of the
//!   entries it depends on (its *references*); reading it returns, in the same call, the
//!   live value under each reference. A token's lineage is such a record, its references
//!   the revocation markers of everything it derives from, so that introspection and
//!   re-exchange check every ancestor in one call. A plain value reads as a record
//!   without references, and a record's value reads through [`Store::get`].
//! - [`Store::admit`]: one step of a sliding-window rate limit: counts the request in the
//!   current window only if the weighted count of both windows is under the limit,
//!   atomically (a [`Window`]).
//!
//! A backend never evicts a live entry to make room: evicting a replay-cache entry would
//! let the assertion be replayed. A full backend refuses new keys with
//! [`StoreError::Full`], and the caller decides whether that fails open or closed.
//!
//! # Dispatch
//!
//! [`Store`] is an enum with one variant per backend, and each method is one `match`
//! forwarding to the backend. The calls are `async` because a networked backend (Redis or
//! Valkey, later) does I/O; `async fn` in a trait cannot be called through `dyn` without
//! boxing each future, and a generic `S: Backend` would spread a type parameter through
//! everything that holds a store. The enum costs no allocation and no indirect call on the
//! hot path, and the set of backends is closed and known here.
//!
//! # Adding a backend
//!
//! Write it in its own file under `src/store/` with the same inherent `async` methods as
//! [`MemoryStore`] and the same semantics (the tests here are the contract), add a variant
//! to [`Store`] and one arm to each method, and add to [`StoreError`] the facts it can
//! report (`Unavailable`, `Timeout`). Nothing outside this module changes.
//!
//! # Backends
//!
//! [`MemoryStore`] (`memory.rs`) is the default: one replica, `gleipnir dev`, tests.
//! [`RedisStore`] (`redis.rs`) keeps the entries in Redis or Valkey, shared by every
//! replica that names the same server and key prefix. Both honour the same contract
//! (`tests/lifecycle_store.rs` runs it against both), with "now" read from the store's
//! [`Clock`] in both: Redis's own expiry only reclaims memory after the fact.
//!
//! Every call is counted in `gleipnir_store_calls_total{backend, op, outcome}` and timed
//! in `gleipnir_store_call_duration_seconds{backend, op}` when the store is built with
//! [`Metrics`].

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use thiserror::Error;

use crate::clock::Clock;
use crate::metrics::Metrics;

pub use memory::MemoryStore;
pub use redis::{RedisSettings, RedisStore};

/// Why a store call did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The store holds its maximum number of live entries; nothing was evicted.
    #[error("store full")]
    Full,
    /// The expiry given is not after the current time.
    #[error("expiry not in the future")]
    PastExpiry,
    /// [`Store::increment`] on a key whose value is not a counter (or would overflow).
    #[error("value is not a counter")]
    NotACounter,
    /// A record reference that is empty or holds a newline.
    #[error("bad record reference")]
    BadReference,
    /// The backend could not be reached, or refused the call (a networked backend).
    #[error("store unavailable")]
    Unavailable,
    /// The backend did not answer within the configured timeout.
    #[error("store call timed out")]
    Timeout,
}

impl StoreError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreError::Full => "full",
            StoreError::PastExpiry => "past_expiry",
            StoreError::NotACounter => "not_a_counter",
            StoreError::BadReference => "bad_reference",
            StoreError::Unavailable => "unavailable",
            StoreError::Timeout => "timeout",
        }
    }
}

/// What [`Store::get_record`] reads: the record's value, and for each of its references,
/// in the order they were written, the reference and the live value under it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's own value.
    pub value: Bytes,
    /// Each reference with the value of the live entry under it, `None` when there is
    /// none.
    pub refs: Vec<(String, Option<Bytes>)>,
}

/// One step of a sliding-window rate limit ([`Store::admit`]): the request is counted
/// in `current` (created at 1, expiring at `expires_at`, when absent) only if
/// `previous × previous_weight_milli / 1000 + current < limit`, where `previous` and
/// `current` are the counters' live values (0 when absent).
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    /// The counter of the window now running.
    pub current: &'a str,
    /// The counter of the window before it.
    pub previous: &'a str,
    /// How much of the previous window still counts, in thousandths (0 ..= 1000).
    pub previous_weight_milli: u64,
    /// The most requests the weighted count may reach.
    pub limit: u64,
    /// When the current counter expires, if this call creates it.
    pub expires_at: u64,
}

/// What [`Store::admit`] decided, and the counts it decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The request was counted.
    pub admitted: bool,
    /// The current window's count after this call.
    pub current: u64,
    /// The previous window's count.
    pub previous: u64,
}

/// Shared state with expiry, on one of the backends. Clones share the same state.
#[derive(Clone, Debug)]
pub enum Store {
    /// In this process: the default, for one replica or for tests.
    Memory(MemoryStore),
    /// In Redis or Valkey: shared by every replica that uses the same server and prefix.
    Redis(RedisStore),
}

impl Store {
    /// An in-process store holding at most `max_entries` live entries, expiring them by
    /// `clock`.
    pub fn memory(max_entries: usize, clock: Clock) -> Self {
        Store::Memory(MemoryStore::new(max_entries, clock))
    }

    /// Live entries held, where the backend can tell cheaply (for metrics).
    pub fn entries(&self) -> Option<usize> {
        match self {
            Store::Memory(store) => Some(store.len()),
            Store::Redis(_) => None,
        }
    }

    /// The most live entries the backend holds, where it has such a bound (for metrics).
    pub fn capacity(&self) -> Option<usize> {
        match self {
            Store::Memory(store) => Some(store.capacity()),
            Store::Redis(_) => None,
        }
    }

    /// The store `[store]` configures, its calls counted in `metrics`. Resolves the
    /// secrets and reads the CA file now (start-up); connects to Redis on first use.
    pub fn from_config(
        config: &crate::config::StoreConfig,
        clock: Clock,
        metrics: Arc<Metrics>,
        origin: &str,
    ) -> Result<Self, crate::config::ConfigError> {
        use crate::config::{ConfigError, StoreBackend};
        match &config.backend {
            StoreBackend::Memory { max_entries } => Ok(Store::Memory(
                MemoryStore::new(*max_entries, clock).with_metrics(metrics),
            )),
            StoreBackend::Redis {
                url,
                password,
                ca_file,
                key_prefix,
            } => {
                let bad = |field: &str, reason: String| ConfigError::new(origin, field, reason);
                let url = url.resolve().map_err(|r| bad("store.url", r))?;
                let password = match password {
                    Some(p) => Some(p.resolve().map_err(|r| bad("store.password", r))?),
                    None => None,
                };
                let ca_pem = match ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        bad(
                            "store.ca_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?),
                    None => None,
                };
                let settings = RedisSettings {
                    url,
                    password,
                    ca_pem,
                    key_prefix: key_prefix.clone(),
                    timeout: config.timeout,
                };
                let store = RedisStore::new(settings, clock).map_err(|r| bad("store.url", r))?;
                Ok(Store::Redis(store.with_metrics(metrics)))
            }
        }
    }

    /// The backend's name, for metric labels.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    fn metrics(&self) -> Option<&Arc<Metrics>> {
        match self {
            Store::Memory(store) => store.metrics(),
            Store::Redis(store) => store.metrics(),
        }
    }

    /// Runs one call, counting and timing it when the store has metrics.
    async fn observe<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let Some(metrics) = self.metrics() else {
            return call.await;
        };
        // Latency is an interval: a monotonic reading.
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.as_str(),
        };
        metrics.store_call(self.backend(), op, outcome, started.elapsed().as_secs_f64());
        result
    }

    /// Stores `value` under `key` until `expires_at`, replacing any value and expiry the
    /// key had.
    pub async fn put(&self, key: &str, value: Bytes, expires_at: u64) -> Result<(), StoreError> {
        self.observe("put", async {
            match self {
                Store::Memory(store) => store.put(key, value, expires_at).await,
                Store::Redis(store) => store.put(key, value, expires_at).await,
            }
        })
        .await
    }

    /// The value under `key`, if it has not expired. A counter reads as its decimal digits.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.observe("get", async {
            match self {
                Store::Memory(store) => store.get(key).await,
                Store::Redis(store) => store.get(key).await,
            }
        })
        .await
    }

    /// The live value under each of `keys`, in order, in one call.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        self.observe("get_many", async {
            match self {
                Store::Memory(store) => store.get_many(keys).await,
                Store::Redis(store) => store.get_many(keys).await,
            }
        })
        .await
    }

    /// Removes `key`; whether a live entry was removed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.observe("delete", async {
            match self {
                Store::Memory(store) => store.delete(key).await,
                Store::Redis(store) => store.delete(key).await,
            }
        })
        .await
    }

    /// Stores `value` with its references `refs` under `key` until `expires_at`,
    /// replacing what the key held. A reference is the key of another entry, which need
    /// not exist (yet); references never contain a newline.
    pub async fn put_record(
        &self,
        key: &str,
        value: Bytes,
        refs: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        if refs.iter().any(|r| r.is_empty() || r.contains('\n')) {
            return Err(StoreError::BadReference);
        }
        self.observe("put_record", async {
            match self {
                Store::Memory(store) => store.put_record(key, value, refs, expires_at).await,
                Store::Redis(store) => store.put_record(key, value, refs, expires_at).await,
            }
        })
        .await
    }

    /// The record under `key`, with the live value under each of its references, read in
    /// one call (one round trip to a networked backend).
    pub async fn get_record(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.observe("get_record", async {
            match self {
                Store::Memory(store) => store.get_record(key).await,
                Store::Redis(store) => store.get_record(key).await,
            }
        })
        .await
    }

    /// One step of a sliding-window rate limit, atomically (see [`Window`]).
    pub async fn admit(&self, window: &Window<'_>) -> Result<Admitted, StoreError> {
        self.observe("admit", async {
            match self {
                Store::Memory(store) => store.admit(window).await,
                Store::Redis(store) => store.admit(window).await,
            }
        })
        .await
    }

    /// Stores `value` under `key` until `expires_at` only if no live entry holds `key`;
    /// whether this call stored it. Concurrent callers on one key: exactly one gets `true`.
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        self.observe("set_if_absent", async {
            match self {
                Store::Memory(store) => store.set_if_absent(key, value, expires_at).await,
                Store::Redis(store) => store.set_if_absent(key, value, expires_at).await,
            }
        })
        .await
    }

    /// Adds one to the counter under `key` and returns the new count. An absent key starts
    /// at 1 and expires at `expires_at`; a live one keeps its expiry (a fixed window).
    pub async fn increment(&self, key: &str, expires_at: u64) -> Result<u64, StoreError> {
        self.observe("increment", async {
            match self {
                Store::Memory(store) => store.increment(key, expires_at).await,
                Store::Redis(store) => store.increment(key, expires_at).await,
            }
        })
        .await
    }
}

// What every backend does is the contract of `tests/lifecycle_store.rs`, run against the
// in-process store and a real Redis. Here only what the in-process store alone has: its
// bound on entries, and a race on two threads (the contract runs it in memory on one).
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    const T0: u64 = 1_700_000_000;

    fn store(max_entries: usize) -> (Store, ManualClock) {
        let clock = ManualClock::new(T0);
        (Store::memory(max_entries, clock.clone().into()), clock)
    }

    fn bytes(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn set_if_absent_has_exactly_one_winner_among_racing_tasks() {
        let (store, _clock) = store(1_000);
        let start = Arc::new(tokio::sync::Barrier::new(64));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64u8 {
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
        // The stored value is the winner's.
        assert_eq!(
            store.get("jti-1").await.unwrap(),
            Some(Bytes::from(vec![winners[0]]))
        );
    }

    #[tokio::test]
    async fn a_full_store_refuses_new_keys_and_evicts_nothing() {
        let (store, _clock) = store(2);
        assert!(store.set_if_absent("a", bytes("1"), T0 + 60).await.unwrap());
        store.put("b", bytes("2"), T0 + 60).await.unwrap();
        assert_eq!(
            store.set_if_absent("c", bytes("3"), T0 + 60).await,
            Err(StoreError::Full)
        );
        assert_eq!(
            store.put("c", bytes("3"), T0 + 60).await,
            Err(StoreError::Full)
        );
        assert_eq!(store.increment("c", T0 + 60).await, Err(StoreError::Full));
        // Every live entry is still there.
        assert_eq!(store.get("a").await.unwrap(), Some(bytes("1")));
        assert_eq!(store.get("b").await.unwrap(), Some(bytes("2")));
        // Keys already held need no room: replacing, counting, and the replay answer.
        store.put("b", bytes("22"), T0 + 60).await.unwrap();
        assert!(!store.set_if_absent("a", bytes("x"), T0 + 60).await.unwrap());
        // Deleting makes room.
        assert!(store.delete("b").await.unwrap());
        assert_eq!(store.increment("c", T0 + 60).await.unwrap(), 1);
        assert_eq!(store.increment("c", T0 + 60).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn expired_entries_free_their_room() {
        let (store, clock) = store(2);
        store.put("a", bytes("1"), T0 + 10).await.unwrap();
        store.put("b", bytes("2"), T0 + 20).await.unwrap();
        assert_eq!(
            store.put("c", bytes("3"), T0 + 30).await,
            Err(StoreError::Full)
        );
        clock.set(T0 + 10);
        store.put("c", bytes("3"), T0 + 30).await.unwrap();
        assert_eq!(
            store.set_if_absent("d", bytes("4"), T0 + 30).await,
            Err(StoreError::Full)
        );
        clock.set(T0 + 20);
        assert!(store.set_if_absent("d", bytes("4"), T0 + 30).await.unwrap());
        assert_eq!(store.get("c").await.unwrap(), Some(bytes("3")));
        assert_eq!(store.get("d").await.unwrap(), Some(bytes("4")));
    }

    #[test]
    fn error_names_are_stable() {
        assert_eq!(StoreError::Full.as_str(), "full");
        assert_eq!(StoreError::PastExpiry.as_str(), "past_expiry");
        assert_eq!(StoreError::NotACounter.as_str(), "not_a_counter");
        assert_eq!(StoreError::Unavailable.as_str(), "unavailable");
        assert_eq!(StoreError::Timeout.as_str(), "timeout");
    }
}
