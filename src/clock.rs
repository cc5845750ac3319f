//! The only reader of wall time (time is a parameter: tests fix it).
//!
//! Every check that compares against "now" (`exp`, `nbf`, `iat`, the issued token's
//! lifetime) takes a [`Clock`]. Production uses [`Clock::System`]; tests drive a
//! [`ManualClock`] so a token's validity is a fact of the test, not of the machine.
//! clippy's `disallowed-methods` forbids `SystemTime::now` everywhere else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the current Unix time comes from.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The operating system's wall clock.
    #[default]
    System,
    /// A clock that moves only when told to (tests, dry runs).
    Manual(ManualClock),
}

impl Clock {
    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => system_now(),
            Clock::Manual(manual) => manual.now(),
        }
    }
}

#[allow(clippy::disallowed_methods)] // the one sanctioned reader of wall time
fn system_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A shared, settable clock. Clones see the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `unix_seconds`.
    pub fn new(unix_seconds: u64) -> Self {
        Self(Arc::new(AtomicU64::new(unix_seconds)))
    }

    /// The time it stands at.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the clock to `unix_seconds`.
    pub fn set(&self, unix_seconds: u64) {
        self.0.store(unix_seconds, Ordering::Relaxed);
    }

    /// Moves the clock forward.
    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::Relaxed);
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Clock::Manual(manual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let manual = ManualClock::new(1_000);
        let clock = Clock::from(manual.clone());
        manual.advance(5);
        assert_eq!(clock.now(), 1_005);
        manual.set(7);
        assert_eq!(clock.now(), 7);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(Clock::System.now() > 1_577_836_800);
    }
}
