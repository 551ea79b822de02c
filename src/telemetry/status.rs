//! The status page's data (`/`, `/status` as HTML; `/status.json` for scripts): per queue the
//! depth, counts and rates, in-flight; the worker's phase and uptime; the last warnings and
//! errors; the newest dead letters and the feed consumers from Postgres.
//!
//! Where the numbers come from, and why:
//!
//! - **Counts, in-flight, depth, forwarders: parsed from the Prometheus handle's own text**
//!   (what `/metrics` serves). The counters are already the source of truth, updated where
//!   the engine emits them; a second snapshot struct would need a write beside every
//!   `metrics::counter!` in the engine, in the hot path, and could drift from `/metrics`.
//!   Rendering costs one pass over a few hundred series, only when someone looks. Depth is the
//!   depth poller's last reading (its gauges are absent until the first poll: "not read yet").
//! - **Rates are since start** (count / uptime): no history is kept; Prometheus has the rates
//!   over any window.
//! - **Recent errors: a ring buffer fed by a log layer** (`recent.rs`).
//! - **Dead letters and feed consumers: Postgres**, through `crate::store` (the only module that
//!   holds SQL), on a pool of its own with one connection and a server-side statement timeout,
//!   newest [`DEAD_LETTERS_SHOWN`] dead letters only, the whole read bounded by
//!   [`PG_TIMEOUT`] and cached for [`PG_CACHE`] (so a page refreshing every 5 s in several
//!   tabs costs one read per 5 s). When Postgres is down or slow, those sections say
//!   "unavailable" with the reason; the page itself still answers at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::recent::{recent_errors, LogEntry};
use super::{Health, Phase};
use crate::store::admin::DeadLetterSummary;

/// How many dead letters the page shows.
pub const DEAD_LETTERS_SHOWN: i64 = 20;
/// The Postgres read's bound: statement timeout, acquire timeout, and the whole read.
pub const PG_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the Postgres sections are reused.
pub const PG_CACHE: Duration = Duration::from_secs(5);

/// What the page needs beside the metrics: the configuration's queues and forwarders, the
/// start time, and Postgres.
pub struct StatusSource {
    started: Instant,
    started_at: DateTime<Utc>,
    /// (queue label, handler name), in config order.
    queues: Vec<(String, String)>,
    forwarders: Vec<String>,
    db: Option<PgPool>,
    pg_cache: Mutex<Option<(Instant, PgSections)>>,
}

impl StatusSource {
    /// `store`: the worker's pool; the page opens its own small pool from its options.
    pub fn new(
        queues: Vec<(String, String)>,
        forwarders: Vec<String>,
        store: Option<&PgPool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            started_at: Utc::now(),
            queues,
            forwarders,
            db: store.map(|pool| crate::store::admin::page_pool(pool, PG_TIMEOUT)),
            pg_cache: Mutex::new(None),
        })
    }

    /// Everything the page shows, now. `metrics`: the Prometheus text.
    pub async fn snapshot(&self, metrics: &str, health: &Health) -> Snapshot {
        let uptime = self.started.elapsed();
        let samples = parse_samples(metrics);
        let secs = uptime.as_secs_f64().max(1.0);
        let queues = self
            .queues
            .iter()
            .map(|(name, handler)| {
                let of = |metric: &str, label: &str, value: &str| {
                    sum(&samples, metric, &[("queue", name), (label, value)])
                };
                let received = sum(
                    &samples,
                    "mailroom_messages_received_total",
                    &[("queue", name)],
                );
                let handled: BTreeMap<String, u64> = ["done", "retry", "transient", "dead_letter"]
                    .into_iter()
                    .map(|o| {
                        (
                            o.to_string(),
                            of("mailroom_messages_handled_total", "outcome", o) as u64,
                        )
                    })
                    .collect();
                let handled_total: u64 = handled.values().sum();
                let depth_of = |state: &str| {
                    find(
                        &samples,
                        "mailroom_queue_messages",
                        &[("queue", name), ("state", state)],
                    )
                };
                let depth = match (
                    depth_of("visible"),
                    depth_of("in_flight"),
                    depth_of("delayed"),
                ) {
                    (Some(v), Some(f), Some(d)) => Some(Depth {
                        visible: v as u64,
                        in_flight: f as u64,
                        delayed: d as u64,
                    }),
                    _ => None,
                };
                QueueStatus {
                    name: name.clone(),
                    handler: handler.clone(),
                    depth,
                    dlq_visible: find(&samples, "mailroom_dlq_messages", &[("queue", name)])
                        .map(|v| v as u64),
                    received: received as u64,
                    handled,
                    dead_lettered: sum(
                        &samples,
                        "mailroom_messages_dead_lettered_total",
                        &[("queue", name)],
                    ) as u64,
                    received_per_sec: received / secs,
                    handled_per_sec: handled_total as f64 / secs,
                    in_flight: sum(&samples, "mailroom_in_flight", &[("queue", name)]) as u64,
                }
            })
            .collect();
        let forwarders = self
            .forwarders
            .iter()
            .map(|name| {
                let of = |outcome: &str| {
                    sum(
                        &samples,
                        "mailroom_forward_deliveries_total",
                        &[("forwarder", name), ("outcome", outcome)],
                    ) as u64
                };
                ForwarderStatus {
                    name: name.clone(),
                    delivered: of("delivered"),
                    retried: of("retried"),
                    slowed: of("slowed"),
                    dead_lettered: of("dead_lettered"),
                    lag_secs: sum(
                        &samples,
                        "mailroom_forward_lag_seconds",
                        &[("forwarder", name)],
                    ),
                }
            })
            .collect();
        let pg = self.pg_sections().await;
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            phase: phase_label(health.phase(), health.is_quiet()),
            started_at: self.started_at,
            uptime_secs: uptime.as_secs(),
            generated_at: Utc::now(),
            queues,
            forwarders,
            recent_errors: recent_errors(),
            dead_letters: pg.dead_letters,
            feed_consumers: pg.feed_consumers,
        }
    }

    async fn pg_sections(&self) -> PgSections {
        let Some(db) = &self.db else {
            let none = "no database configured".to_string();
            return PgSections {
                dead_letters: Section::unavailable(none.clone()),
                feed_consumers: Section::unavailable(none),
            };
        };
        // Held while reading, so concurrent loads wait for this read and reuse it.
        let mut cache = self.pg_cache.lock().await;
        if let Some((at, sections)) = cache.as_ref() {
            if at.elapsed() < PG_CACHE {
                return sections.clone();
            }
        }
        let read = async {
            let dead = crate::store::admin::recent_dead_letters(db, DEAD_LETTERS_SHOWN).await;
            let feed = crate::store::feed::status(db, None).await;
            (dead, feed)
        };
        let sections = match tokio::time::timeout(PG_TIMEOUT + Duration::from_secs(1), read).await {
            Ok((dead, feed)) => PgSections {
                dead_letters: Section::from_result(dead),
                feed_consumers: Section::from_result(feed.map(|rows| {
                    rows.into_iter()
                        .map(|c| ConsumerStatus {
                            name: c.name,
                            stream: c.stream.as_str().to_string(),
                            position: c.position.to_string(),
                            pending: c.pending,
                            pending_capped: c.pending >= crate::store::feed::PENDING_COUNT_CAP,
                            oldest_pending_stored_at: c.oldest_pending_stored_at,
                            acked_at: c.acked_at,
                        })
                        .collect()
                })),
            },
            Err(_) => {
                let why = format!(
                    "Postgres did not answer within {} s",
                    PG_TIMEOUT.as_secs() + 1
                );
                PgSections {
                    dead_letters: Section::unavailable(why.clone()),
                    feed_consumers: Section::unavailable(why),
                }
            }
        };
        *cache = Some((Instant::now(), sections.clone()));
        sections
    }
}

fn phase_label(phase: Phase, quiet: bool) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Draining => "draining",
        Phase::Receiving if quiet => "quiet",
        Phase::Receiving => "receiving",
    }
}

#[derive(Clone)]
struct PgSections {
    dead_letters: Section<DeadLetterSummary>,
    feed_consumers: Section<ConsumerStatus>,
}

/// Everything on the page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub pid: u32,
    /// `starting`, `receiving`, `quiet` or `draining`.
    pub phase: &'static str,
    pub started_at: DateTime<Utc>,
    pub uptime_secs: u64,
    pub generated_at: DateTime<Utc>,
    pub queues: Vec<QueueStatus>,
    pub forwarders: Vec<ForwarderStatus>,
    /// Newest first.
    pub recent_errors: Vec<LogEntry>,
    /// Newest first.
    pub dead_letters: Section<DeadLetterSummary>,
    pub feed_consumers: Section<ConsumerStatus>,
}

/// A section read from Postgres: its rows, or why it is unavailable.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Section<T> {
    pub rows: Vec<T>,
    /// Set when the section could not be read (then `rows` is empty).
    pub unavailable: Option<String>,
}

impl<T> Section<T> {
    pub fn ok(rows: Vec<T>) -> Self {
        Self {
            rows,
            unavailable: None,
        }
    }

    pub fn unavailable(why: String) -> Self {
        Self {
            rows: Vec::new(),
            unavailable: Some(why),
        }
    }

    fn from_result(result: Result<Vec<T>, crate::store::StoreError>) -> Self {
        match result {
            Ok(rows) => Self::ok(rows),
            Err(e) => Self::unavailable(crate::error_text::chain_text(&e)),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueStatus {
    pub name: String,
    pub handler: String,
    /// The depth poller's last reading; None before the first.
    pub depth: Option<Depth>,
    /// Visible messages in the queue's DLQ, when it has one and it was read.
    pub dlq_visible: Option<u64>,
    pub received: u64,
    /// By outcome: `done`, `retry`, `transient`, `dead_letter`.
    pub handled: BTreeMap<String, u64>,
    pub dead_lettered: u64,
    pub received_per_sec: f64,
    pub handled_per_sec: f64,
    /// Received and not yet acked, in this process.
    pub in_flight: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ForwarderStatus {
    pub name: String,
    pub delivered: u64,
    pub retried: u64,
    pub slowed: u64,
    pub dead_lettered: u64,
    pub lag_secs: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerStatus {
    pub name: String,
    pub stream: String,
    pub position: String,
    pub pending: i64,
    /// `pending` stopped counting at the cap.
    pub pending_capped: bool,
    pub oldest_pending_stored_at: Option<DateTime<Utc>>,
    pub acked_at: Option<DateTime<Utc>>,
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parse `name{label="value",...} value` lines (comments and unparsable lines are skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &inner[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn matches(sample: &Sample, name: &str, labels: &[(&str, &str)]) -> bool {
    sample.name == name
        && labels
            .iter()
            .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v))
}

/// The sum of the samples of `name` that carry `labels` (0 when there are none).
fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| matches(s, name, labels))
        .map(|s| s.value)
        .sum()
}

/// The first sample of `name` with `labels`, if there is one.
fn find(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| matches(s, name, labels))
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_prometheus_text_with_escaped_labels() {
        let text = "# HELP x\n# TYPE mailroom_in_flight gauge\n\
                    mailroom_in_flight{queue=\"a\\\"<b>\\\\\"} 3\n\
                    mailroom_messages_received_total{queue=\"q\",x=\"1\"} 12\n\
                    up 1\n\
                    mailroom_handler_duration_seconds_bucket{queue=\"q\",le=\"+Inf\"} 4\n\
                    garbage{unterminated=\"\n";
        let samples = parse_samples(text);
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(samples[0].labels, vec![("queue".into(), "a\"<b>\\".into())]);
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(
            sum(
                &samples,
                "mailroom_messages_received_total",
                &[("queue", "q")]
            ),
            12.0
        );
        assert_eq!(samples[2].name, "up");
        assert_eq!(
            find(&samples, "mailroom_in_flight", &[("queue", "missing")]),
            None
        );
    }

    #[test]
    fn phases() {
        assert_eq!(phase_label(Phase::Receiving, true), "quiet");
        assert_eq!(phase_label(Phase::Receiving, false), "receiving");
        assert_eq!(phase_label(Phase::Draining, true), "draining");
        assert_eq!(phase_label(Phase::Starting, false), "starting");
    }
}
