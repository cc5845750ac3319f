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

pub mod memory;

use bytes::Bytes;
use thiserror::Error;

use crate::clock::Clock;

pub use memory::MemoryStore;

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
}

impl StoreError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreError::Full => "full",
            StoreError::PastExpiry => "past_expiry",
            StoreError::NotACounter => "not_a_counter",
        }
    }
}

/// Shared state with expiry, on one of the backends. Clones share the same state.
#[derive(Clone, Debug)]
pub enum Store {
    /// In this process: the default, for one replica or for tests.
    Memory(MemoryStore),
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
        }
    }

    /// The most live entries the backend holds, where it has such a bound (for metrics).
    pub fn capacity(&self) -> Option<usize> {
        match self {
            Store::Memory(store) => Some(store.capacity()),
        }
    }

    /// Stores `value` under `key` until `expires_at`, replacing any value and expiry the
    /// key had.
    pub async fn put(&self, key: &str, value: Bytes, expires_at: u64) -> Result<(), StoreError> {
        match self {
            Store::Memory(store) => store.put(key, value, expires_at).await,
        }
    }

    /// The value under `key`, if it has not expired. A counter reads as its decimal digits.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self {
            Store::Memory(store) => store.get(key).await,
        }
    }

    /// Removes `key`; whether a live entry was removed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(store) => store.delete(key).await,
        }
    }

    /// Stores `value` under `key` until `expires_at` only if no live entry holds `key`;
    /// whether this call stored it. Concurrent callers on one key: exactly one gets `true`.
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(store) => store.set_if_absent(key, value, expires_at).await,
        }
    }

    /// Adds one to the counter under `key` and returns the new count. An absent key starts
    /// at 1 and expires at `expires_at`; a live one keeps its expiry (a fixed window).
    pub async fn increment(&self, key: &str, expires_at: u64) -> Result<u64, StoreError> {
        match self {
            Store::Memory(store) => store.increment(key, expires_at).await,
        }
    }
}

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

    #[tokio::test]
    async fn a_value_is_returned_until_it_expires() {
        let (store, clock) = store(10);
        store.put("k", bytes("v"), T0 + 10).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(bytes("v")));
        clock.set(T0 + 9);
        assert_eq!(store.get("k").await.unwrap(), Some(bytes("v")));
        // Expired at its expiry, like a token's `exp`.
        clock.set(T0 + 10);
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.get("never").await.unwrap(), None);
    }

    #[tokio::test]
    async fn put_replaces_the_value_and_the_expiry() {
        let (store, clock) = store(10);
        store.put("k", bytes("old"), T0 + 10).await.unwrap();
        store.put("k", bytes("new"), T0 + 20).await.unwrap();
        clock.set(T0 + 15);
        assert_eq!(store.get("k").await.unwrap(), Some(bytes("new")));
        // Shortening works too: the earlier expiry is the one in force.
        store.put("k", bytes("short"), T0 + 16).await.unwrap();
        clock.set(T0 + 16);
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_expiry_not_in_the_future_is_refused() {
        let (store, _clock) = store(10);
        for expires_at in [T0, T0 - 1] {
            let e = store.put("k", bytes("v"), expires_at).await.unwrap_err();
            assert_eq!(e, StoreError::PastExpiry);
            let e = store.set_if_absent("k", bytes("v"), expires_at).await;
            assert_eq!(e, Err(StoreError::PastExpiry));
            assert_eq!(
                store.increment("k", expires_at).await,
                Err(StoreError::PastExpiry)
            );
        }
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn delete_removes_a_live_entry_only() {
        let (store, clock) = store(10);
        store.put("k", bytes("v"), T0 + 10).await.unwrap();
        assert!(store.delete("k").await.unwrap());
        assert_eq!(store.get("k").await.unwrap(), None);
        assert!(!store.delete("k").await.unwrap());
        store.put("gone", bytes("v"), T0 + 1).await.unwrap();
        clock.set(T0 + 1);
        assert!(!store.delete("gone").await.unwrap());
        // A deleted key can be claimed again.
        assert!(store.set_if_absent("k", bytes("v"), T0 + 10).await.unwrap());
    }

    #[tokio::test]
    async fn set_if_absent_inserts_once_until_expiry() {
        let (store, clock) = store(10);
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
        // The loser changed nothing: neither value nor expiry.
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
    async fn a_counter_counts_within_its_window_and_restarts_after() {
        let (store, clock) = store(10);
        assert_eq!(store.increment("rate:a", T0 + 60).await.unwrap(), 1);
        assert_eq!(store.increment("rate:a", T0 + 60).await.unwrap(), 2);
        // A later expiry does not stretch the window.
        clock.set(T0 + 59);
        assert_eq!(store.increment("rate:a", T0 + 120).await.unwrap(), 3);
        assert_eq!(store.get("rate:a").await.unwrap(), Some(bytes("3")));
        clock.set(T0 + 60);
        assert_eq!(store.get("rate:a").await.unwrap(), None);
        assert_eq!(store.increment("rate:a", T0 + 120).await.unwrap(), 1);
        // Counters are per key.
        assert_eq!(store.increment("rate:b", T0 + 120).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn increment_takes_up_a_decimal_value_and_refuses_others() {
        let (store, _clock) = store(10);
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
        // The refused calls changed nothing.
        assert_eq!(store.get("s").await.unwrap(), Some(bytes("not a number")));
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
    }
}
