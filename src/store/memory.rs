//! The in-process backend: a map under one mutex, with an index by expiry so that each
//! call first drops the entries that have expired since the last one, at a cost in the
//! number expired (times a logarithm), never in the number held. The map therefore holds
//! only live entries, and its size is the capacity check.
//!
//! The mutex is a `std` one: no call awaits while holding it (the methods are `async` only
//! to match the networked backends), and every critical section is a few map operations.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{Admitted, Record, StoreError, Window};
use crate::clock::Clock;
use crate::metrics::Metrics;

/// Shared state in this process, bounded to a number of live entries. Clones share it.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    max_entries: usize,
    clock: Clock,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys may be token identifiers: show the size, not the content.
        f.debug_struct("MemoryStore")
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<Arc<str>, Entry>,
    /// Every entry's `(expires_at, key)`, earliest first.
    by_expiry: BTreeSet<(u64, Arc<str>)>,
}

struct Entry {
    value: Value,
    expires_at: u64,
}

/// A counter is kept as a number so counting does not parse and format each time; it
/// reads as its decimal digits, as it would from a networked backend. A record keeps its
/// references beside its value, in two allocations of exactly their size: the value, and
/// the references joined by newlines (a reference never holds one, `Store::put_record`
/// checks). A lineage record is held for every live token, so its size is the store's.
enum Value {
    Bytes(Bytes),
    Count(u64),
    Record(Box<[u8]>, Box<str>),
}

impl Value {
    fn to_bytes(&self) -> Bytes {
        match self {
            Value::Bytes(bytes) => bytes.clone(),
            Value::Record(bytes, _) => Bytes::copy_from_slice(bytes),
            Value::Count(n) => Bytes::from(n.to_string()),
        }
    }

    fn count(&self) -> Option<u64> {
        match self {
            Value::Count(n) => Some(*n),
            Value::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
            Value::Record(..) => None,
        }
    }
}

impl MemoryStore {
    /// A store holding at most `max_entries` live entries, expiring them by `clock`.
    pub fn new(max_entries: usize, clock: Clock) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            max_entries,
            clock,
            metrics: None,
        }
    }

    /// Live entries held now (expired ones dropped first), for metrics.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no live entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most live entries it holds.
    pub fn capacity(&self) -> usize {
        self.max_entries
    }

    /// The same store, counting its calls in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub(super) fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// See [`super::Store::get_many`].
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let state = self.lock();
        Ok(keys
            .iter()
            .map(|key| state.entries.get(key.as_str()).map(|e| e.value.to_bytes()))
            .collect())
    }

    /// See [`super::Store::put_record`].
    pub async fn put_record(
        &self,
        key: &str,
        value: Bytes,
        refs: &[String],
        expires_at: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.lock_for(expires_at)?;
        let entry = Entry {
            value: Value::Record(value.as_ref().into(), refs.join("\n").into()),
            expires_at,
        };
        match state.held_key(key) {
            Some(held) => state.replace(held, entry),
            None => state.insert_new(key, entry, self.max_entries)?,
        }
        Ok(())
    }

    /// See [`super::Store::get_record`].
    pub async fn get_record(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let state = self.lock();
        let Some(entry) = state.entries.get(key) else {
            return Ok(None);
        };
        let (value, refs) = match &entry.value {
            Value::Record(value, refs) => (Bytes::copy_from_slice(value), &**refs),
            other => (other.to_bytes(), ""),
        };
        let refs = refs
            .split('\n')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let live = state.entries.get(r).map(|e| e.value.to_bytes());
                (r.to_owned(), live)
            })
            .collect();
        Ok(Some(Record { value, refs }))
    }

    /// See [`super::Store::admit`].
    pub async fn admit(&self, window: &Window<'_>) -> Result<Admitted, StoreError> {
        let mut state = self.lock_for(window.expires_at)?;
        let count = |state: &State, key: &str| {
            state
                .entries
                .get(key)
                .map_or(Some(0), |e| e.value.count())
                .ok_or(StoreError::NotACounter)
        };
        let current = count(&state, window.current)?;
        let previous = count(&state, window.previous)?;
        let weighted = previous.saturating_mul(window.previous_weight_milli) / 1000;
        if weighted.saturating_add(current) >= window.limit {
            return Ok(Admitted {
                admitted: false,
                current,
                previous,
            });
        }
        let next = current.checked_add(1).ok_or(StoreError::NotACounter)?;
        match state.entries.get_mut(window.current) {
            Some(entry) => entry.value = Value::Count(next),
            None => {
                let entry = Entry {
                    value: Value::Count(1),
                    expires_at: window.expires_at,
                };
                state.insert_new(window.current, entry, self.max_entries)?;
            }
        }
        Ok(Admitted {
            admitted: true,
            current: next,
            previous,
        })
    }

    /// See [`super::Store::put`].
    pub async fn put(&self, key: &str, value: Bytes, expires_at: u64) -> Result<(), StoreError> {
        let mut state = self.lock_for(expires_at)?;
        let entry = Entry {
            value: Value::Bytes(value),
            expires_at,
        };
        match state.held_key(key) {
            Some(held) => state.replace(held, entry),
            None => state.insert_new(key, entry, self.max_entries)?,
        }
        Ok(())
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let state = self.lock();
        Ok(state.entries.get(key).map(|entry| entry.value.to_bytes()))
    }

    /// See [`super::Store::delete`].
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let Some((held, entry)) = state.entries.remove_entry(key) else {
            return Ok(false);
        };
        state.by_expiry.remove(&(entry.expires_at, held));
        Ok(true)
    }

    /// See [`super::Store::set_if_absent`].
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        expires_at: u64,
    ) -> Result<bool, StoreError> {
        // Check and insert under one lock: that is what makes the winner unique.
        let mut state = self.lock_for(expires_at)?;
        if state.entries.contains_key(key) {
            return Ok(false);
        }
        let entry = Entry {
            value: Value::Bytes(value),
            expires_at,
        };
        state.insert_new(key, entry, self.max_entries)?;
        Ok(true)
    }

    /// See [`super::Store::increment`].
    pub async fn increment(&self, key: &str, expires_at: u64) -> Result<u64, StoreError> {
        let mut state = self.lock_for(expires_at)?;
        let Some(entry) = state.entries.get_mut(key) else {
            let entry = Entry {
                value: Value::Count(1),
                expires_at,
            };
            state.insert_new(key, entry, self.max_entries)?;
            return Ok(1);
        };
        let count = entry
            .value
            .count()
            .and_then(|n| n.checked_add(1))
            .ok_or(StoreError::NotACounter)?;
        entry.value = Value::Count(count);
        Ok(count)
    }

    /// The state with every expired entry dropped.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.lock_at(self.clock.now())
    }

    /// [`Self::lock`], for a call that records `expires_at`: refused unless it is after now.
    fn lock_for(&self, expires_at: u64) -> Result<MutexGuard<'_, State>, StoreError> {
        let now = self.clock.now();
        if expires_at <= now {
            return Err(StoreError::PastExpiry);
        }
        Ok(self.lock_at(now))
    }

    fn lock_at(&self, now: u64) -> MutexGuard<'_, State> {
        // A panic cannot leave the map and the index disagreeing in a harmful way (see
        // `purge`), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.purge(now);
        state
    }
}

impl State {
    /// Drops the entries expired at `now`, earliest first, stopping at the first live one.
    fn purge(&mut self, now: u64) {
        while self
            .by_expiry
            .first()
            .is_some_and(|(expires_at, _)| *expires_at <= now)
        {
            let Some((expires_at, key)) = self.by_expiry.pop_first() else {
                break;
            };
            // Only if the map agrees: an index entry never removes a newer entry.
            if self
                .entries
                .get(&key)
                .is_some_and(|entry| entry.expires_at == expires_at)
            {
                self.entries.remove(&key);
            }
        }
    }

    /// The map's own copy of `key`, if it holds it (to index it without allocating).
    fn held_key(&self, key: &str) -> Option<Arc<str>> {
        self.entries.get_key_value(key).map(|(k, _)| Arc::clone(k))
    }

    /// Replaces a held key's entry, moving it in the expiry index.
    fn replace(&mut self, key: Arc<str>, entry: Entry) {
        let new_expiry = (entry.expires_at, Arc::clone(&key));
        if let Some(old) = self.entries.insert(Arc::clone(&key), entry) {
            self.by_expiry.remove(&(old.expires_at, key));
        }
        self.by_expiry.insert(new_expiry);
    }

    /// Adds an entry under a key not held, if there is room: a live entry is never evicted.
    fn insert_new(
        &mut self,
        key: &str,
        entry: Entry,
        max_entries: usize,
    ) -> Result<(), StoreError> {
        if self.entries.len() >= max_entries {
            return Err(StoreError::Full);
        }
        let key: Arc<str> = Arc::from(key);
        self.by_expiry.insert((entry.expires_at, Arc::clone(&key)));
        self.entries.insert(key, entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const T0: u64 = 1_700_000_000;

    fn sizes(store: &MemoryStore) -> (usize, usize) {
        let state = store.state.lock().unwrap();
        (state.entries.len(), state.by_expiry.len())
    }

    #[tokio::test]
    async fn expired_entries_leave_the_map_and_the_index() {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::new(100, clock.clone().into());
        for i in 0..10u64 {
            let key = format!("k{i}");
            store.put(&key, Bytes::new(), T0 + 1 + i).await.unwrap();
        }
        store.increment("n", T0 + 100).await.unwrap();
        assert_eq!(sizes(&store), (11, 11));
        clock.set(T0 + 6);
        // Any call drops what has expired, reads included.
        assert_eq!(store.get("n").await.unwrap(), Some(Bytes::from("1")));
        assert_eq!(sizes(&store), (5, 5));
        clock.set(T0 + 100);
        assert!(!store.delete("n").await.unwrap());
        assert_eq!(sizes(&store), (0, 0));
    }

    #[tokio::test]
    async fn replacing_moves_the_entry_in_the_index() {
        let clock = ManualClock::new(T0);
        let store = MemoryStore::new(100, clock.clone().into());
        store.put("k", Bytes::from("a"), T0 + 10).await.unwrap();
        store.put("k", Bytes::from("b"), T0 + 20).await.unwrap();
        assert_eq!(sizes(&store), (1, 1));
        // The old expiry no longer drops the entry.
        clock.set(T0 + 10);
        assert_eq!(store.get("k").await.unwrap(), Some(Bytes::from("b")));
        assert!(store.delete("k").await.unwrap());
        assert_eq!(sizes(&store), (0, 0));
    }

    #[test]
    fn debug_shows_no_keys() {
        let store = MemoryStore::new(3, Clock::System);
        let shown = format!("{store:?}");
        assert!(shown.contains("max_entries: 3"), "{shown}");
    }
}
