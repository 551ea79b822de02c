//! Event Webhook events: a whole batch (events of many SQS messages) in ONE statement.
//!
//! One `INSERT ... SELECT FROM UNNEST($1::text[], ...)` per batch keeps the number of round
//! trips and bind parameters constant whatever the batch size (28 parameters for 1 or 10,000
//! events). `categories` is a list per event, and Postgres arrays cannot be ragged, so it travels
//! as a `jsonb[]` of JSON arrays and is turned back into `text[]` in SQL.
//!
//! Idempotency: `ON CONFLICT (sg_event_id) DO NOTHING`. Duplicates inside one batch are removed
//! here first, first occurrence wins (Postgres accepts in-statement duplicates with DO NOTHING,
//! unlike DO UPDATE, but deduping here makes the winner explicit and the arrays smaller). Rows
//! are sent sorted by `sg_event_id` so two workers inserting overlapping batches take their row
//! locks in the same order and cannot deadlock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mailroom_sendgrid::Event;
use sqlx::PgExecutor;

use super::{sanitize, sanitize_json, sanitize_opt, StoreError};

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
}

const INSERT_EVENTS: &str = r#"
INSERT INTO mailroom_events (
    sg_event_id, event, email, occurred_at, sg_message_id, smtp_id, categories, reason, status,
    response, attempt, bounce_type, bounce_classification, url, url_offset_index, useragent, ip,
    tls, sg_machine_open, asm_group_id, marketing_campaign_id, marketing_campaign_name, pool_name,
    pool_id, payload, sqs_message_id, queue, received_at
)
SELECT
    u.sg_event_id, u.event, u.email, u.occurred_at, u.sg_message_id, u.smtp_id,
    ARRAY(
        SELECT c.value
        FROM jsonb_array_elements_text(u.categories) WITH ORDINALITY AS c(value, ord)
        ORDER BY c.ord
    ),
    u.reason, u.status, u.response, u.attempt, u.bounce_type, u.bounce_classification, u.url,
    u.url_offset_index, u.useragent, u.ip, u.tls, u.sg_machine_open, u.asm_group_id,
    u.marketing_campaign_id, u.marketing_campaign_name, u.pool_name, u.pool_id, u.payload,
    u.sqs_message_id, u.queue, u.received_at
FROM UNNEST(
    $1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::jsonb[],
    $8::text[], $9::text[], $10::text[], $11::int4[], $12::text[], $13::text[], $14::text[],
    $15::int4[], $16::text[], $17::text[], $18::bool[], $19::bool[], $20::int8[], $21::int8[],
    $22::text[], $23::text[], $24::int8[], $25::jsonb[], $26::text[], $27::text[],
    $28::timestamptz[]
) AS u(
    sg_event_id, event, email, occurred_at, sg_message_id, smtp_id, categories, reason, status,
    response, attempt, bounce_type, bounce_classification, url, url_offset_index, useragent, ip,
    tls, sg_machine_open, asm_group_id, marketing_campaign_id, marketing_campaign_name, pool_name,
    pool_id, payload, sqs_message_id, queue, received_at
)
ON CONFLICT (sg_event_id) DO NOTHING
"#;

/// Postgres timestamps start at 4713 BC (astronomical year -4712); chrono reaches further back.
/// An event whose timestamp is before that is still stored, with `occurred_at` NULL (the payload
/// keeps the original), rather than failing its whole message.
fn in_postgres_range(t: DateTime<Utc>) -> bool {
    use chrono::Datelike;
    t.year() >= -4712
}

/// Insert events in one statement; returns how many rows were new (duplicates, in the batch or
/// already stored, are skipped).
pub async fn insert_events<'e>(
    conn: impl PgExecutor<'e>,
    records: &[EventRecord<'_>],
) -> Result<u64, StoreError> {
    // Dedupe on the key as stored (sanitized), keep the first occurrence, sort by key.
    let mut unique: BTreeMap<String, &EventRecord<'_>> = BTreeMap::new();
    for r in records {
        unique
            .entry(sanitize(&r.event.sg_event_id).into_owned())
            .or_insert(r);
    }
    if unique.is_empty() {
        return Ok(0);
    }

    let n = unique.len();
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

    for (key, r) in unique {
        let e = r.event;
        sg_event_id.push(key);
        event.push(sanitize(&e.event).into_owned());
        email.push(sanitize_opt(e.email.as_deref()));
        occurred_at.push(e.occurred_at.filter(|t| in_postgres_range(*t)));
        sg_message_id.push(sanitize_opt(e.sg_message_id.as_deref()));
        smtp_id.push(sanitize_opt(e.smtp_id.as_deref()));
        categories.push(serde_json::Value::Array(
            e.categories
                .iter()
                .map(|c| serde_json::Value::String(sanitize(c).into_owned()))
                .collect(),
        ));
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
        // Borrowed unless it holds a NUL: no copy of the event's JSON per row.
        payload.push(sqlx::types::Json(sanitize_json(&e.raw)));
        sqs_message_id.push(sanitize(r.sqs_message_id).into_owned());
        queue.push(sanitize(r.queue).into_owned());
        received_at.push(r.received_at);
    }

    let done = sqlx::query(INSERT_EVENTS)
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
        .bind(payload)
        .bind(sqs_message_id)
        .bind(queue)
        .bind(received_at)
        .execute(conn)
        .await
        .map_err(StoreError::query("inserting events"))?;
    Ok(done.rows_affected())
}
