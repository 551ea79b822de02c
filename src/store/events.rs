//! Event Webhook events: a whole batch (events of many SQS messages) in a few statements.
//!
//! One `INSERT ... SELECT FROM UNNEST($1::text[], ...)` per chunk of up to
//! [`EVENTS_PER_STATEMENT`] events keeps round trips and bind parameters few whatever the batch
//! size (28 parameters for 1 or 500 events). The chunk bound is for memory: the driver encodes
//! a statement's arguments, then copies them into the Bind message, in buffers that double as
//! they grow and that a pooled connection keeps; a 2,400-event statement cost about 17 MiB of
//! buffers this way, a 500-event one a sixth of that, for no measurable loss of speed.
//!
//! `categories` is a list per event, and Postgres arrays cannot be ragged, so each event's list
//! travels as one text array literal (`{"a","b"}`) and is cast to `text[]` in SQL; an earlier
//! version sent JSON arrays and unpacked them with a subquery per row, which cost more Postgres
//! time per event than the cast.
//!
//! Idempotency: `ON CONFLICT (sg_event_id, occurred_at) DO NOTHING`, the unique key of the
//! partitioned table (`NULLS NOT DISTINCT`, so events without a timestamp dedupe too: a duplicate
//! carries the same timestamp and lands in the same partition), plus `NOT EXISTS` in
//! `mailroom_events_legacy_rows`, the rows of a pre-partitioning table not moved yet (an empty
//! view, folded away by the planner, once they are). The payload travels as text and is cast to
//! `json`, which keeps SendGrid's exact text and only validates it. Duplicates inside one batch are removed
//! here first, first occurrence wins (Postgres accepts in-statement duplicates with DO NOTHING,
//! unlike DO UPDATE, but deduping here makes the winner explicit and the arrays smaller). Rows
//! are sent sorted by that key so two workers inserting overlapping batches take their row
//! locks in the same order and cannot deadlock.
//!
//! One rule, whatever the batching: an event is a duplicate exactly when its [`StoredKey`]
//! (the `sg_event_id` and the `occurred_at` as stored) equals one already stored or earlier in
//! the batch. The in-batch dedupe uses that same key, never the `sg_event_id` alone: with the
//! id alone, the second of two events with one id and two timestamps was dropped silently when
//! both came in one batch and stored when they came in two, and the derived tables and hooks
//! followed the batching (issue 26). The one exception is the legacy check: a pre-partitioning
//! table was unique on `sg_event_id` alone, so while its rows are not moved yet an event with
//! the same id is a duplicate of them whatever its time (`tests/partition_events.rs`); batching
//! does not change that either.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use mailroom_sendgrid::Event;
use sqlx::PgConnection;

use super::{sanitize, sanitize_opt, sanitize_raw_json, StoreError};

/// One event to store, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct EventRecord<'a> {
    pub event: &'a Event,
    /// The SQS message that carried it.
    pub sqs_message_id: &'a str,
    /// The configured queue name.
    pub queue: &'a str,
    /// When the edge received the request.
    pub received_at: Option<DateTime<Utc>>,
    /// The name of the webhook route that received it (`Source::webhook` of the envelope);
    /// `None` on the unnamed default routes.
    pub source: Option<&'a str>,
}

const INSERT_EVENTS: &str = r#"
INSERT INTO mailroom_events (
    sg_event_id, event, email, occurred_at, sg_message_id, smtp_id, categories, reason, status,
    response, attempt, bounce_type, bounce_classification, url, url_offset_index, useragent, ip,
    tls, sg_machine_open, asm_group_id, marketing_campaign_id, marketing_campaign_name, pool_name,
    pool_id, payload, sqs_message_id, queue, received_at, source
)
SELECT
    u.sg_event_id, u.event, u.email, u.occurred_at, u.sg_message_id, u.smtp_id,
    u.categories::text[],
    u.reason, u.status, u.response, u.attempt, u.bounce_type, u.bounce_classification, u.url,
    u.url_offset_index, u.useragent, u.ip, u.tls, u.sg_machine_open, u.asm_group_id,
    u.marketing_campaign_id, u.marketing_campaign_name, u.pool_name, u.pool_id, u.payload::json,
    u.sqs_message_id, u.queue, u.received_at, u.source
FROM UNNEST(
    $1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::int4[], $12::text[], $13::text[], $14::text[],
    $15::int4[], $16::text[], $17::text[], $18::bool[], $19::bool[], $20::int8[], $21::int8[],
    $22::text[], $23::text[], $24::int8[], $25::text[], $26::text[], $27::text[],
    $28::timestamptz[], $29::text[]
) AS u(
    sg_event_id, event, email, occurred_at, sg_message_id, smtp_id, categories, reason, status,
    response, attempt, bounce_type, bounce_classification, url, url_offset_index, useragent, ip,
    tls, sg_machine_open, asm_group_id, marketing_campaign_id, marketing_campaign_name, pool_name,
    pool_id, payload, sqs_message_id, queue, received_at, source
)
WHERE NOT EXISTS (
    SELECT 1 FROM mailroom_events_legacy_rows l WHERE l.sg_event_id = u.sg_event_id
)
ON CONFLICT (sg_event_id, occurred_at) DO NOTHING
"#;

/// The same statement, answering with the rows it inserted (for SendGrid hooks, which must see
/// each event once: a duplicate is skipped by `DO NOTHING` and so is not returned).
const RETURNING: &str = "RETURNING id, sg_event_id, occurred_at";

/// Postgres timestamps start at 4713 BC (astronomical year -4712); chrono reaches further back.
/// An event whose timestamp is before that is still stored, with `occurred_at` NULL (the payload
/// keeps the original), rather than failing its whole message.
fn in_postgres_range(t: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    t.year() >= -4712
}

/// A Postgres array literal of quoted elements: `{"a","b \"c\""}`. Inside double quotes only
/// `"` and `\` need a backslash, so every element (empty, `NULL`, commas, braces, spaces)
/// reads back exactly; NUL is removed as everywhere else.
fn text_array_literal(items: &[String]) -> Cow<'static, str> {
    if items.is_empty() {
        return Cow::Borrowed("{}");
    }
    let mut out = String::with_capacity(2 + items.iter().map(|i| i.len() + 3).sum::<usize>());
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\0' => {}
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    Cow::Owned(out)
}

/// Most events bound to one INSERT statement. See the module docs.
pub const EVENTS_PER_STATEMENT: usize = 500;

/// Insert events; returns how many rows were new (duplicates, in the batch or already stored,
/// are skipped). Give it a transaction (`&mut tx`) to make the whole batch atomic: the chunks
/// are separate statements.
pub async fn insert_events(
    conn: &mut PgConnection,
    records: &[EventRecord<'_>],
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    for chunk in dedupe(records).chunks(EVENTS_PER_STATEMENT) {
        inserted += match insert_chunk(conn, chunk, false).await? {
            Inserted::Count(n) => n,
            Inserted::Rows(rows) => rows.len() as u64,
        };
    }
    Ok(inserted)
}

/// An event row this transaction inserted: its `mailroom_events.id` and the record it came
/// from.
#[derive(Debug, Clone, Copy)]
pub struct InsertedEvent<'r, 'a> {
    pub id: i64,
    pub record: &'r EventRecord<'a>,
}

/// [`insert_events`], answering with the rows that were new, in insertion (`id`) order. An event
/// already stored (by an earlier delivery, another process, or earlier in this batch) is not
/// in the answer: that is what lets a hook act exactly once per event.
pub async fn insert_new_events<'r, 'a>(
    conn: &mut PgConnection,
    records: &'r [EventRecord<'a>],
) -> Result<Vec<InsertedEvent<'r, 'a>>, StoreError> {
    let unique = dedupe(records);
    let mut new = Vec::new();
    for chunk in unique.chunks(EVENTS_PER_STATEMENT) {
        let Inserted::Rows(rows) = insert_chunk(conn, chunk, true).await? else {
            continue;
        };
        for (id, key) in rows {
            // Keys come back as bound; the chunk is sorted by key.
            if let Ok(i) = chunk.binary_search_by(|(k, _)| k.cmp(&key)) {
                new.push(InsertedEvent {
                    id,
                    record: chunk[i].1,
                });
            }
        }
    }
    new.sort_by_key(|e| e.id);
    Ok(new)
}

/// The table's unique key, `(sg_event_id, occurred_at)` `NULLS NOT DISTINCT`, as the row will
/// hold it: the id as [`event_key`] stores it, the time as [`stored_occurred_at`] does (`None`
/// equals `None`, as under `NULLS NOT DISTINCT`). Two records are one row exactly when their
/// keys are equal, in one batch or across batches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StoredKey<'a> {
    pub sg_event_id: Cow<'a, str>,
    pub occurred_at: Option<DateTime<Utc>>,
}

impl<'a> StoredKey<'a> {
    pub(crate) fn of(event: &'a Event) -> Self {
        Self {
            sg_event_id: event_key(&event.sg_event_id),
            occurred_at: stored_occurred_at(event),
        }
    }
}

/// `occurred_at` as stored: the event's time, NULL when it has none or Postgres cannot hold it.
fn stored_occurred_at(event: &Event) -> Option<DateTime<Utc>> {
    event.occurred_at.filter(|t| in_postgres_range(*t))
}

/// Dedupe on the key as stored ([`StoredKey`]), keep the first occurrence, sort by key (across
/// chunks too, so lock order stays global). A stable sort of one vector, then adjacent
/// duplicates dropped: the first occurrence is the first of its run.
fn dedupe<'r, 'a>(records: &'r [EventRecord<'a>]) -> Vec<(StoredKey<'r>, &'r EventRecord<'a>)> {
    let mut unique: Vec<(StoredKey<'r>, &'r EventRecord<'a>)> = records
        .iter()
        .map(|r| (StoredKey::of(r.event), r))
        .collect();
    unique.sort_by(|a, b| a.0.cmp(&b.0));
    unique.dedup_by(|later, first| later.0 == first.0);
    unique
}

/// The `sg_event_id` as stored. Postgres text cannot hold NUL, and removing it would merge two
/// distinct ids (`a\0b` and `ab`) into one row, silently. An id holding NUL is stored escaped
/// instead: U+0001 (which no SendGrid id contains) then the id with `%` as `%25` and NUL as
/// `%00`, which is one-to-one and cannot equal an id without NUL. Every other id, that is every
/// real one, is stored exactly as sent.
pub(crate) fn event_key(id: &str) -> Cow<'_, str> {
    if id.contains('\0') {
        Cow::Owned(format!(
            "\u{1}{}",
            id.replace('%', "%25").replace('\0', "%00")
        ))
    } else {
        Cow::Borrowed(id)
    }
}

enum Inserted {
    Count(u64),
    Rows(Vec<(i64, StoredKey<'static>)>),
}

/// One INSERT statement for sorted, deduplicated events.
async fn insert_chunk(
    conn: &mut PgConnection,
    chunk: &[(StoredKey<'_>, &EventRecord<'_>)],
    returning: bool,
) -> Result<Inserted, StoreError> {
    let n = chunk.len();
    let mut sg_event_id = Vec::with_capacity(n);
    let mut event = Vec::with_capacity(n);
    let mut email = Vec::with_capacity(n);
    let mut occurred_at = Vec::with_capacity(n);
    let mut sg_message_id = Vec::with_capacity(n);
    let mut smtp_id = Vec::with_capacity(n);
    let mut categories = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut response = Vec::with_capacity(n);
    let mut attempt = Vec::with_capacity(n);
    let mut bounce_type = Vec::with_capacity(n);
    let mut bounce_classification = Vec::with_capacity(n);
    let mut url = Vec::with_capacity(n);
    let mut url_offset_index = Vec::with_capacity(n);
    let mut useragent = Vec::with_capacity(n);
    let mut ip = Vec::with_capacity(n);
    let mut tls = Vec::with_capacity(n);
    let mut sg_machine_open = Vec::with_capacity(n);
    let mut asm_group_id = Vec::with_capacity(n);
    let mut marketing_campaign_id = Vec::with_capacity(n);
    let mut marketing_campaign_name = Vec::with_capacity(n);
    let mut pool_name = Vec::with_capacity(n);
    let mut pool_id = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    let mut sqs_message_id = Vec::with_capacity(n);
    let mut queue = Vec::with_capacity(n);
    let mut received_at = Vec::with_capacity(n);
    let mut source = Vec::with_capacity(n);

    for (key, r) in chunk {
        let e = r.event;
        sg_event_id.push(key.sg_event_id.as_ref());
        event.push(sanitize(&e.event));
        email.push(sanitize_opt(e.email.as_deref()));
        occurred_at.push(key.occurred_at);
        sg_message_id.push(sanitize_opt(e.sg_message_id.as_deref()));
        smtp_id.push(sanitize_opt(e.smtp_id.as_deref()));
        categories.push(text_array_literal(&e.categories));
        reason.push(sanitize_opt(e.reason.as_deref()));
        status.push(sanitize_opt(e.status.as_deref()));
        response.push(sanitize_opt(e.response.as_deref()));
        attempt.push(e.attempt);
        bounce_type.push(sanitize_opt(e.bounce_type.as_deref()));
        bounce_classification.push(sanitize_opt(e.bounce_classification.as_deref()));
        url.push(sanitize_opt(e.url.as_deref()));
        url_offset_index.push(e.url_offset_index);
        useragent.push(sanitize_opt(e.useragent.as_deref()));
        ip.push(sanitize_opt(e.ip.as_deref()));
        tls.push(e.tls);
        sg_machine_open.push(e.sg_machine_open);
        asm_group_id.push(e.asm_group_id);
        marketing_campaign_id.push(e.marketing_campaign_id);
        marketing_campaign_name.push(sanitize_opt(e.marketing_campaign_name.as_deref()));
        pool_name.push(sanitize_opt(e.pool_name.as_deref()));
        pool_id.push(e.pool_id);
        // The event's JSON text, borrowed unless it holds an escaped NUL: serialized verbatim,
        // so no copy or re-encoding per row.
        payload.push(sanitize_raw_json(e.raw.as_raw()));
        sqs_message_id.push(sanitize(r.sqs_message_id));
        queue.push(sanitize(r.queue));
        received_at.push(r.received_at);
        source.push(r.source.map(sanitize));
    }

    let returning_sql;
    let sql = if returning {
        returning_sql = format!("{INSERT_EVENTS}{RETURNING}");
        returning_sql.as_str()
    } else {
        INSERT_EVENTS
    };
    let query = sqlx::query(sql)
        .bind(sg_event_id)
        .bind(event)
        .bind(email)
        .bind(occurred_at)
        .bind(sg_message_id)
        .bind(smtp_id)
        .bind(categories)
        .bind(reason)
        .bind(status)
        .bind(response)
        .bind(attempt)
        .bind(bounce_type)
        .bind(bounce_classification)
        .bind(url)
        .bind(url_offset_index)
        .bind(useragent)
        .bind(ip)
        .bind(tls)
        .bind(sg_machine_open)
        .bind(asm_group_id)
        .bind(marketing_campaign_id)
        .bind(marketing_campaign_name)
        .bind(pool_name)
        .bind(pool_id)
        .bind(payload.iter().map(|p| p.get()).collect::<Vec<&str>>())
        .bind(sqs_message_id)
        .bind(queue)
        .bind(received_at)
        .bind(source);
    if returning {
        use sqlx::Row;
        let rows = query
            .fetch_all(conn)
            .await
            .map_err(StoreError::query("inserting events"))?;
        rows.iter()
            .map(|row| {
                let key = StoredKey {
                    sg_event_id: Cow::Owned(row.try_get(1)?),
                    occurred_at: row.try_get(2)?,
                };
                Ok((row.try_get(0)?, key))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map(Inserted::Rows)
            .map_err(StoreError::query("reading inserted events"))
    } else {
        let done = query
            .execute(conn)
            .await
            .map_err(StoreError::query("inserting events"))?;
        Ok(Inserted::Count(done.rows_affected()))
    }
}

#[cfg(test)]
mod tests {
    use super::text_array_literal;

    /// Regression (issue 26): the in-batch dedupe keyed on `sg_event_id` alone, so one id with
    /// two timestamps was one row in one batch and two rows in two. It keys on exactly the
    /// table's unique key as stored: a time Postgres cannot hold is stored NULL, so it meets an
    /// undated copy (`NULLS NOT DISTINCT`).
    #[test]
    fn the_batch_dedupe_uses_the_tables_unique_key_as_stored() {
        use super::{dedupe, EventRecord};
        let events = mailroom_sendgrid::parse_events(
            br#"[
                {"sg_event_id": "a", "event": "open", "timestamp": 1700000000},
                {"sg_event_id": "a", "event": "open", "timestamp": 1700000001},
                {"sg_event_id": "a", "event": "click", "timestamp": 1700000000},
                {"sg_event_id": "b", "event": "open"},
                {"sg_event_id": "b", "event": "open", "timestamp": -250000000000000},
                {"sg_event_id": "b", "event": "open", "timestamp": 1700000000}
            ]"#,
        )
        .expect("events");
        let records: Vec<EventRecord<'_>> = events
            .iter()
            .map(|event| EventRecord {
                event,
                sqs_message_id: "m",
                queue: "q",
                received_at: None,
                source: None,
            })
            .collect();
        let unique = dedupe(&records);
        let kept: Vec<(&str, Option<i64>, &str)> = unique
            .iter()
            .map(|(k, r)| {
                let at = k.occurred_at.map(|t| t.timestamp());
                (k.sg_event_id.as_ref(), at, r.event.event.as_str())
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("a", Some(1_700_000_000), "open"),
                ("a", Some(1_700_000_001), "open"),
                ("b", None, "open"),
                ("b", Some(1_700_000_000), "open"),
            ],
            "first occurrence of each key wins, sorted by key"
        );
    }

    /// Regression: two event ids that differ only by a NUL byte merged into one row (the NUL
    /// was removed before the unique key).
    #[test]
    fn event_ids_that_differ_only_by_nul_keep_distinct_keys() {
        use super::event_key;
        let ids = ["ab", "a\0b", "a\0\0b", "\0ab", "a%00b", "a\0%b"];
        let keys: std::collections::HashSet<String> =
            ids.iter().map(|id| event_key(id).into_owned()).collect();
        assert_eq!(keys.len(), ids.len(), "{keys:?}");
        assert!(
            keys.iter().all(|k| !k.contains('\0')),
            "Postgres can store every key"
        );
        assert_eq!(
            event_key("abc.filter0001"),
            "abc.filter0001",
            "real ids are unchanged"
        );
    }

    #[test]
    fn text_array_literal_quotes_every_element() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(text_array_literal(&[]), "{}");
        assert_eq!(text_array_literal(&items(&["a", "b c"])), r#"{"a","b c"}"#);
        assert_eq!(
            text_array_literal(&items(&["q\"x", "back\\slash", "", "NULL", "{,}", "n\0ul"])),
            r#"{"q\"x","back\\slash","","NULL","{,}","nul"}"#
        );
    }
}
