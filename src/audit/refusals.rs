//! Repeated refusals, aggregated in the audit stream. Part of `audit`.
//!
//! A flood of identical bad requests (an attack run, a misconfigured client retrying)
//! would otherwise write one full record each, some 300 B, without bound. Refusals are
//! keyed by (stage, reason, client or none, peer address): the first of a key's window
//! is written in full; identical ones within the window are only counted, and one
//! summary record (`aggregated: true`, `count`, `window_seconds`, `first_request_id`)
//! is written when the window closes. So every refusal is either a full record or in a
//! summary's `count`. Grants are never aggregated.
//!
//! The table holds at most `max_keys` keys; refusals of a key that does not fit while it
//! is full are counted in one overflow bucket, summarised the same way (`overflow`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The aggregation state of the audit stream's refusals.
#[derive(Debug)]
pub struct RefusalLog {
    /// How long a key's window stays open; zero writes every refusal in full.
    window: Duration,
    max_keys: usize,
    table: Mutex<Table>,
}

/// What makes two refusals identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RefusalKey {
    /// The refusing stage.
    pub stage: &'static str,
    /// The check that refused.
    pub reason: &'static str,
    /// The authenticated client, if any.
    pub client_id: Option<String>,
    /// The connection's peer address, if known.
    pub peer: Option<IpAddr>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    /// The request written in full when the window opened (overflow: none).
    first_request_id: Option<String>,
    /// Refusals counted, not written, since.
    count: u64,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<RefusalKey, Window>,
    overflow: Option<Window>,
}

impl RefusalLog {
    /// Windows of `window` (zero: no aggregation) over at most `max_keys` keys.
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the refusal of `request_id` under `key`, at `now`, is to be written in
    /// full (else it was counted). A key's expired window is summarised here if the
    /// periodic [`flush`](Self::flush) has not done it yet.
    pub fn admit(&self, key: RefusalKey, request_id: &str, now: Instant) -> bool {
        if self.window.is_zero() {
            return true;
        }
        let opened = || Window {
            opened: now,
            first_request_id: Some(request_id.to_owned()),
            count: 0,
        };
        let mut table = self.table();
        let room = table.open.len() < self.max_keys;
        match table.open.get_mut(&key) {
            Some(w) if now.saturating_duration_since(w.opened) < self.window => {
                w.count = w.count.saturating_add(1);
                false
            }
            Some(w) => {
                let closed = std::mem::replace(w, opened());
                drop(table);
                self.summary(Some(&key), &closed);
                true
            }
            None if room => {
                table.open.insert(key, opened());
                true
            }
            // A full table is what a flood from many addresses makes; the refusals of an
            // authenticated client are not hidden in its anonymous overflow bucket, but
            // written in full (their clients are a configured, bounded set).
            None if key.client_id.is_some() => true,
            None => {
                let w = table.overflow.get_or_insert(Window {
                    opened: now,
                    first_request_id: None,
                    count: 0,
                });
                w.count = w.count.saturating_add(1);
                false
            }
        }
    }

    /// Closes every window open for `window` or longer at `now` (all of them with
    /// `everything`), writing the summary of each that counted refusals.
    pub fn flush(&self, now: Instant, everything: bool) {
        let ended =
            |w: &Window| everything || now.saturating_duration_since(w.opened) >= self.window;
        let mut closed = Vec::new();
        let overflow = {
            let mut table = self.table();
            table.open.retain(|key, w| {
                if !ended(w) {
                    return true;
                }
                if w.count > 0 {
                    closed.push((
                        key.clone(),
                        std::mem::replace(&mut w.count, 0),
                        w.first_request_id.take(),
                    ));
                }
                false
            });
            match &table.overflow {
                Some(w) if ended(w) => table.overflow.take(),
                _ => None,
            }
        };
        for (key, count, first_request_id) in closed {
            let window = Window {
                opened: now,
                first_request_id,
                count,
            };
            self.summary(Some(&key), &window);
        }
        if let Some(w) = overflow.filter(|w| w.count > 0) {
            self.summary(None, &w);
        }
    }

    /// Closes ended windows every second, until aborted; nothing to do without windows.
    pub async fn run(self: std::sync::Arc<Self>) {
        if self.window.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1).min(self.window));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush(Instant::now(), false);
        }
    }

    /// The summary record of a closed window (`key` none: the overflow bucket).
    fn summary(&self, key: Option<&RefusalKey>, window: &Window) {
        if window.count == 0 {
            return;
        }
        tracing::info!(
            target: crate::telemetry::AUDIT_TARGET,
            decision = "refused",
            aggregated = true,
            overflow = key.is_none(),
            count = window.count,
            window_seconds = self.window.as_secs(),
            stage = key.map(|k| k.stage),
            reason = key.map(|k| k.reason),
            client_id = key.and_then(|k| k.client_id.as_deref()),
            peer = key.and_then(|k| k.peer).map(|p| p.to_string()),
            first_request_id = window.first_request_id.as_deref(),
        );
    }
}

impl Drop for RefusalLog {
    /// What was counted but not yet summarised is written at shutdown.
    fn drop(&mut self) {
        self.flush(Instant::now(), true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &'static str) -> RefusalKey {
        RefusalKey {
            stage: "client_auth",
            reason,
            client_id: None,
            peer: Some(IpAddr::from([127, 0, 0, 1])),
        }
    }

    #[test]
    fn the_first_of_a_window_is_full_and_the_rest_counted_until_it_closes() {
        let log = RefusalLog::new(Duration::from_secs(5), 2);
        let t0 = Instant::now();
        assert!(log.admit(key("a"), "r1", t0));
        assert!(!log.admit(key("a"), "r2", t0 + Duration::from_secs(1)));
        assert!(
            log.admit(key("b"), "r3", t0),
            "another key has its own window"
        );
        assert!(
            !log.admit(key("c"), "r4", t0),
            "no room: counted in the overflow"
        );
        assert!(
            log.admit(key("a"), "r5", t0 + Duration::from_secs(5)),
            "a new window"
        );
        log.flush(t0 + Duration::from_secs(20), false);
        assert!(log.table().open.is_empty() && log.table().overflow.is_none());
        assert!(log.admit(key("c"), "r6", t0 + Duration::from_secs(20)));
    }

    #[test]
    fn an_authenticated_clients_refusal_is_never_hidden_in_the_overflow() {
        let log = RefusalLog::new(Duration::from_secs(5), 1);
        let t0 = Instant::now();
        assert!(log.admit(key("flood"), "r1", t0));
        assert!(!log.admit(key("other"), "r2", t0), "anonymous: overflow");
        let client = RefusalKey {
            stage: "policy",
            client_id: Some("bff".into()),
            ..key("actor_not_bound_to_client")
        };
        assert!(log.admit(client.clone(), "r3", t0), "written in full");
        assert!(
            log.admit(client, "r4", t0),
            "and again: the table stays full"
        );
        assert_eq!(log.table().open.len(), 1);
    }

    #[test]
    fn a_zero_window_writes_every_refusal() {
        let log = RefusalLog::new(Duration::ZERO, 2);
        let t0 = Instant::now();
        assert!((0..5).all(|_| log.admit(key("a"), "r", t0)));
    }
}
