//! The last few warnings and errors, for the status page: a bounded ring buffer fed by a
//! `tracing` layer (installed by `crate::logging::init`).
//!
//! Why a log layer and not a call at each counter: the places that count faults (receive,
//! handler, dead-letter, acker, readiness, forwarder errors) all log them at WARN or ERROR with
//! their context (queue, message id, error), and a layer sees every one of them, including
//! those of code added later, without the engine knowing about the page. It sees what the log
//! prints (the `RUST_LOG` filter applies first), so the page and the journal agree.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How many events the buffer keeps.
pub const RECENT_ERRORS: usize = 10;
/// Each event's text (message and fields) is cut to this many characters.
const MAX_TEXT_CHARS: usize = 1000;

/// One WARN or ERROR event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogEntry {
    pub at: DateTime<Utc>,
    /// `"WARN"` or `"ERROR"`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    pub message: String,
    /// The other fields, `key=value` separated by spaces.
    pub fields: String,
}

static RECENT: Mutex<VecDeque<LogEntry>> = Mutex::new(VecDeque::new());

/// Add an entry, dropping the oldest beyond [`RECENT_ERRORS`].
pub fn record(entry: LogEntry) {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() >= RECENT_ERRORS {
        recent.pop_front();
    }
    recent.push_back(entry);
}

/// The entries, newest first.
pub fn recent_errors() -> Vec<LogEntry> {
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.iter().rev().cloned().collect()
}

/// The layer: keeps WARN and ERROR events in the ring buffer.
pub struct RecentErrorsLayer;

impl<S: Subscriber> Layer<S> for RecentErrorsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // More verbose levels compare greater: INFO > WARN > ERROR.
        if level > Level::WARN {
            return;
        }
        let mut visit = Fields::default();
        event.record(&mut visit);
        record(LogEntry {
            at: Utc::now(),
            level: level.to_string(),
            target: event.metadata().target().to_string(),
            message: cut(visit.message),
            fields: cut(visit.fields),
        });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if field.name() == "message" {
            let _ = self.message.write_fmt(value);
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={}", field.name(), value);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format_args!("{value:?}"));
    }
}

fn cut(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_TEXT_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn keeps_the_last_warnings_and_errors_newest_first() {
        let subscriber = tracing_subscriber::registry().with(RecentErrorsLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            for i in 0..(RECENT_ERRORS + 3) {
                tracing::warn!(queue = "q<1>", n = i, "warning {i}");
            }
            tracing::error!(error = %"boom", "receive failed");
        });
        let recent = recent_errors();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(recent[0].level, "ERROR");
        assert_eq!(recent[0].message, "receive failed");
        assert_eq!(recent[0].fields, "error=boom");
        assert!(recent.iter().all(|e| e.message != "not kept"));
        let newest_warning = &recent[1];
        assert_eq!(
            newest_warning.message,
            format!("warning {}", RECENT_ERRORS + 2)
        );
        assert_eq!(
            newest_warning.fields,
            format!("queue=q<1> n={}", RECENT_ERRORS + 2)
        );
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(MAX_TEXT_CHARS + 10);
        let text = cut(long);
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS + 1);
        assert!(text.ends_with('…'));
        assert_eq!(cut("short".into()), "short");
    }
}
