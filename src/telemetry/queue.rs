//! A bounded queue of log lines and the std thread that writes them out, one per stream
//! (audit to stdout, service log to stderr). Part of `telemetry`.
//!
//! Why: a write to a pipe whose reader stopped blocks once the pipe is full (64 KiB on
//! Linux). Written from a tokio worker, that froze every task of the worker, probes
//! included, and the request timeout could not fire. Here the tracing layers only format
//! a line and hand it over; the blocking write happens on a dedicated thread.
//!
//! The rule: a stalled reader never stops the service, and never costs the record of a
//! granted exchange.
//! - Ordinary lines (service log, refused exchanges) are dropped when the queue is full,
//!   counted, and reported by one line once writing resumes.
//! - The record of a granted exchange is written under a slot reserved beforehand
//!   ([`LineQueue::reserve`]): the exchange waits for one asynchronously (never blocking
//!   a worker thread) and the request timeout bounds the wait, so an exchange that cannot
//!   be audited ends as 503, never as an unaudited token. Granted slots have their own
//!   allowance, so a flood of refusals cannot starve them.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer thread lets lines gather after each batch it wrote. A line
/// reaches the stream at most this much later; the exit flush waits for it.
const COALESCE: Duration = Duration::from_millis(1);

thread_local! {
    /// Set while the holder of a reserved slot emits its record: the tracing layer writes
    /// the event synchronously on this thread, so the line it hands over is that record.
    static HOLDING_SLOT: Cell<bool> = const { Cell::new(false) };
}

/// One stream's queue.
#[derive(Debug)]
pub struct LineQueue {
    /// `audit` or `service` (the metric label).
    stream: &'static str,
    /// Ordinary lines held at most.
    capacity: usize,
    /// Reserved (granted) lines held at most; 0 for a stream without reservations.
    reserved_capacity: usize,
    state: Mutex<State>,
    /// Wakes the writer thread when lines arrive.
    arrived: Condvar,
    /// Wakes [`LineQueue::flush`] when the writer has written what it took.
    written: Condvar,
    /// Wakes exchanges waiting for a reserved slot.
    space: tokio::sync::Notify,
    /// Lines dropped since start (the metric).
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    lines: VecDeque<Vec<u8>>,
    /// Ordinary lines in `lines`.
    ordinary: usize,
    /// Reserved lines in `lines`.
    reserved_queued: usize,
    /// Slots reserved whose line is not handed over yet.
    reserved_pending: usize,
    /// Dropped since the last report.
    unreported: u64,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
    /// The writer waits for lines: a push must wake it.
    waiting: bool,
}

impl LineQueue {
    /// A queue for `stream` holding at most `capacity` ordinary and `reserved_capacity`
    /// reserved lines.
    pub fn new(stream: &'static str, capacity: usize, reserved_capacity: usize) -> Self {
        Self {
            stream,
            capacity,
            reserved_capacity,
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            written: Condvar::new(),
            space: tokio::sync::Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &'static str {
        self.stream
    }

    /// Lines dropped since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent counters: go on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands one formatted line over; never blocks beyond the queue's lock. The record of
    /// a slot holder always goes in (its room was reserved); any other line is dropped
    /// and counted when the queue is full.
    pub fn push(&self, line: Vec<u8>) {
        let holding = self.reserved_capacity > 0 && HOLDING_SLOT.replace(false);
        let mut state = self.state();
        if !holding && state.ordinary >= self.capacity {
            state.unreported = state.unreported.saturating_add(1);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if holding {
            state.reserved_pending = state.reserved_pending.saturating_sub(1);
            state.reserved_queued += 1;
        } else {
            state.ordinary += 1;
        }
        state.lines.push_back(line);
        // A writer that is not waiting takes this line with its next batch: no wake-up
        // (a system call, and on a busy core a switch to the writer thread) per line.
        let wake = state.waiting;
        drop(state);
        if wake {
            self.arrived.notify_one();
        }
    }

    /// Waits (asynchronously) for room for one reserved line and reserves it.
    pub async fn reserve(&'static self) -> Slot {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the two is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.state();
                if state.reserved_queued + state.reserved_pending < self.reserved_capacity {
                    state.reserved_pending += 1;
                    return Slot { queue: Some(self) };
                }
            }
            notified.await;
        }
    }

    /// Gives back a slot whose record was never written.
    fn release(&self) {
        let mut state = self.state();
        state.reserved_pending = state.reserved_pending.saturating_sub(1);
        drop(state);
        self.space.notify_waiters();
    }

    /// Waits for lines, then takes them all, with the count dropped since the last
    /// report.
    fn take(&self) -> (VecDeque<Vec<u8>>, u64) {
        let mut state = self.state();
        while state.lines.is_empty() {
            state.waiting = true;
            state = self
                .arrived
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting = false;
        }
        let lines = std::mem::take(&mut state.lines);
        let dropped = std::mem::take(&mut state.unreported);
        state.ordinary = 0;
        state.reserved_queued = 0;
        state.writing = true;
        drop(state);
        self.space.notify_waiters();
        (lines, dropped)
    }

    /// Notes that the batch taken last has been written (or failed to be).
    fn done(&self) {
        self.state().writing = false;
        self.written.notify_all();
    }

    /// Waits until everything handed over so far is written, at most `limit` (a stalled
    /// reader must not hold the process up at exit).
    pub fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut state = self.state();
        while !state.lines.is_empty() || state.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = match self.written.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The writer thread's loop: takes what was handed over and writes it to `out`
    /// (blocking, on this thread only); after a batch written following drops, calls
    /// `report` with their count.
    pub fn run<W: Write>(&self, mut out: impl FnMut() -> W, report: impl Fn(&str, u64)) {
        loop {
            let (lines, dropped) = self.take();
            let count = u64::try_from(lines.len()).unwrap_or(u64::MAX);
            let mut out = out();
            let ok = lines.iter().all(|line| out.write_all(line).is_ok()) && out.flush().is_ok();
            drop(out);
            if !ok {
                // The reader is gone (a closed pipe): what could not be written is lost.
                self.dropped.fetch_add(count, Ordering::Relaxed);
            }
            self.done();
            if dropped > 0 {
                report(self.stream, dropped);
            }
            // Lines arriving meanwhile are written together as the next batch: under
            // load one write (and one wake-up) per batch, not per line, which on a
            // saturated core is time taken from the requests.
            std::thread::sleep(COALESCE);
        }
    }
}

/// Room reserved in the audit queue for one record; given back if unused.
#[derive(Debug)]
#[must_use = "a slot is for writing a record"]
pub struct Slot {
    queue: Option<&'static LineQueue>,
}

impl Slot {
    /// A slot where no queue is installed (tests, tools): writing needs no room.
    pub fn unqueued() -> Self {
        Self { queue: None }
    }

    /// Emits the record with `emit`, which must write one event to the queue's stream.
    pub fn write(mut self, emit: impl FnOnce()) {
        if self.queue.is_none() {
            emit();
            return;
        }
        HOLDING_SLOT.set(true);
        emit();
        // `push` clears the flag when it takes the record: then the slot is used.
        if !HOLDING_SLOT.replace(false) {
            self.queue = None;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release();
        }
    }
}

/// The tracing writer onto a queue: each event is formatted into a [`Line`], handed over
/// whole when the layer is done with it.
#[derive(Debug, Clone, Copy)]
pub struct QueueWriter(pub &'static LineQueue);

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            queue: self.0,
            buf: Vec::new(),
        }
    }
}

/// One event's bytes on their way to the queue.
#[derive(Debug)]
pub struct Line {
    queue: &'static LineQueue,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.queue.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    fn leaked(capacity: usize, reserved: usize) -> &'static LineQueue {
        Box::leak(Box::new(LineQueue::new("audit", capacity, reserved)))
    }

    /// The real audit layer writing into `queue`, as `telemetry::init` sets it up.
    fn subscriber(queue: &'static LineQueue) -> impl tracing::Subscriber {
        tracing_subscriber::registry().with(super::super::audit_line::AuditLines::new(QueueWriter(
            queue,
        )))
    }

    #[tokio::test]
    async fn a_full_queue_drops_refusals_but_takes_a_reserved_record() {
        let queue = leaked(2, 1);
        let slot = queue.reserve().await;
        tracing::subscriber::with_default(subscriber(queue), || {
            for _ in 0..5 {
                tracing::info!(decision = "refused");
            }
            slot.write(|| tracing::info!(decision = "granted"));
        });
        assert_eq!(queue.dropped(), 3);
        let (lines, unreported) = queue.take();
        assert_eq!(unreported, 3);
        let granted = lines
            .iter()
            .filter(|l| String::from_utf8_lossy(l).contains("granted"))
            .count();
        assert_eq!((lines.len(), granted), (3, 1));
    }

    #[tokio::test]
    async fn a_reservation_waits_for_room_and_an_unused_slot_is_given_back() {
        let queue = leaked(1, 1);
        let held = queue.reserve().await;
        let waiting = tokio::spawn(queue.reserve());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room: the second exchange waits");
        drop(held);
        let slot = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        let slot = slot.expect("woken by the release").expect("no panic");
        tracing::subscriber::with_default(subscriber(queue), || {
            slot.write(|| tracing::info!(decision = "granted"));
        });
        let again = tokio::spawn(queue.reserve());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!again.is_finished(), "the written record holds its room");
        let (lines, _) = queue.take();
        assert_eq!(lines.len(), 1);
        let woken = tokio::time::timeout(Duration::from_secs(1), again).await;
        assert!(woken.is_ok(), "the writer taking it makes room");
    }
}
