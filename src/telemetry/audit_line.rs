//! The audit stream's JSON lines, written straight from each event's fields.
//!
//! One object per line: `timestamp` (RFC 3339, UTC, microseconds, as the service log
//! writes it) and `level` first, then the event's fields in the order it records them:
//! strings as JSON strings, 64-bit integers, floats and booleans as themselves, anything
//! else (a `Display` or `Debug` value, the message) as the string of its formatted form
//! (the audit events carry nothing else). These
//! are the lines tracing-subscriber's JSON formatter writes for the audit events (they
//! are flat: no span, no target), without its generic path: a serde map over an
//! `io::Write` adaptor that checks UTF-8 again on every write. Every exchange's record
//! goes through here, the re-issue cache's hits too, where that path was the largest
//! cost left after the HTTP exchange itself.

use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::layer::Context;

/// The layer writing each event it sees as one JSON line to its writer.
pub struct AuditLines<W> {
    writer: W,
}

impl<W> AuditLines<W> {
    /// Lines to `writer` (each line one `write_all`, so a queue writer takes it whole).
    pub fn new(writer: W) -> Self {
        Self { writer }
    }
}

impl<S, W> tracing_subscriber::Layer<S> for AuditLines<W>
where
    S: tracing::Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Vec::with_capacity(768);
        line.extend_from_slice(br#"{"timestamp":""#);
        let mut time = String::with_capacity(32);
        // Writing into a String cannot fail.
        let _ = SystemTime.format_time(&mut Writer::new(&mut time));
        line.extend_from_slice(time.as_bytes());
        line.extend_from_slice(br#"","level":""#);
        line.extend_from_slice(event.metadata().level().as_str().as_bytes());
        line.push(b'"');
        event.record(&mut Fields(&mut line));
        line.extend_from_slice(b"}\n");
        // A writer that cannot write has nowhere to report it: the queue counts its drops.
        let _ = self
            .writer
            .make_writer_for(event.metadata())
            .write_all(&line);
    }
}

/// An event's fields, appended to a line as `,"name":value`.
struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(b',');
        string(self.0, field.name());
        self.0.push(b':');
    }
}

/// `value` as a JSON string (serde_json's escaping, as the JSON formatter's).
fn string(out: &mut Vec<u8>, value: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.0, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's form of a float (`null` for one JSON cannot hold).
        let _ = serde_json::to_writer(&mut *self.0, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        string(self.0, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines both layers write for the same events: ours, and tracing-subscriber's
    /// JSON formatter as the audit stream was set up with it.
    fn both(emit: impl Fn()) -> (String, String) {
        let ours = Sink::default();
        let theirs = Sink::default();
        let (o, t) = (ours.clone(), theirs.clone());
        let subscriber = tracing_subscriber::registry()
            .with(AuditLines::new(move || o.clone()))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_target(false)
                    .with_writer(move || t.clone()),
            );
        tracing::subscriber::with_default(subscriber, emit);
        let text = |s: Sink| String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
        (text(ours), text(theirs))
    }

    #[test]
    fn each_event_is_the_json_formatter_s_object_on_one_line() {
        let (ours, theirs) = both(|| {
            let peer: Option<std::net::IpAddr> = Some([127, 0, 0, 1].into());
            let absent: Option<&str> = None;
            tracing::info!(
                request_id = "r-1",
                decision = "granted",
                cached = true,
                peer = peer.map(tracing::field::display),
                subject_jti = absent,
                detail = %"quote \" backslash \\ newline \n tab \t nul \u{0} é 😀",
                chain = ?["a", "b"],
                exp = 1_796_623_289_u64,
                skew = -5_i64,
                ratio = 0.5_f64,
            );
            tracing::warn!(stream = "audit", dropped = 3_u64, "records dropped");
        });
        let ours: Vec<&str> = ours.lines().collect();
        let theirs: Vec<&str> = theirs.lines().collect();
        assert_eq!(ours.len(), 2);
        for (o, t) in ours.iter().zip(&theirs) {
            let (mut o, mut t): (Value, Value) = (
                serde_json::from_str(o).unwrap(),
                serde_json::from_str(t).unwrap(),
            );
            // Written a few microseconds apart; the same form.
            let (ot, tt) = (o["timestamp"].take(), t["timestamp"].take());
            let shape = |v: &Value| {
                v.as_str()
                    .unwrap()
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '0' } else { c })
                    .collect::<String>()
            };
            assert_eq!(shape(&ot), "0000-00-00T00:00:00.000000Z");
            assert_eq!(shape(&ot), shape(&tt));
            assert_eq!(o, t);
        }
        assert!(ours[0].starts_with(r#"{"timestamp":""#), "{}", ours[0]);
        assert!(ours[0].contains(r#","level":"INFO","request_id":"r-1","#));
        assert!(
            !ours[0].contains("subject_jti"),
            "an absent field is left out"
        );
        assert!(ours[1].contains(r#""level":"WARN""#), "{}", ours[1]);
    }
}
