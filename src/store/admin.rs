//! SQL for the operations side: the readiness probe's `select 1`, what
//! `mailroom dead-letters list|replay` reads and removes in `mailroom_dead_letters`, and the
//! status page's bounded read of the newest dead letters (with its own small pool).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use super::StoreError;

/// `select 1`: is Postgres there and answering?
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(StoreError::query("select 1"))?;
    Ok(())
}

/// One row of `mailroom_dead_letters`.
#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub id: i64,
    pub queue: String,
    pub sqs_message_id: String,
    pub body: String,
    pub attributes: HashMap<String, String>,
    pub receive_count: i32,
    pub handler: Option<String>,
    pub reason: String,
    /// The last failure.
    pub failed_at: DateTime<Utc>,
    pub first_failed_at: DateTime<Utc>,
    /// Failures so far: the first, then one per failed replay or redelivery.
    pub attempts: i32,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replayed_by: Option<String>,
    pub edited_at: Option<DateTime<Utc>>,
    pub edited_by: Option<String>,
}

const SELECT: &str = "SELECT id, queue, sqs_message_id, body, attributes, receive_count, handler, \
                      reason, failed_at, first_failed_at, attempts, replayed_at, replayed_by, \
                      edited_at, edited_by FROM mailroom_dead_letters";

/// Dead letters, oldest first: those with `ids`, or all of them when `ids` is None; at most
/// `limit`.
pub async fn dead_letters(
    pool: &PgPool,
    ids: Option<&[i64]>,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, StoreError> {
    let rows = match ids {
        Some(ids) => {
            sqlx::query(&format!("{SELECT} WHERE id = ANY($1) ORDER BY id LIMIT $2"))
                .bind(ids)
                .bind(limit)
                .fetch_all(pool)
                .await
        }
        None => {
            sqlx::query(&format!("{SELECT} ORDER BY id LIMIT $1"))
                .bind(limit)
                .fetch_all(pool)
                .await
        }
    }
    .map_err(StoreError::query("reading dead letters"))?;
    rows.into_iter()
        .map(|row| {
            let attributes: serde_json::Value = row
                .try_get("attributes")
                .map_err(StoreError::query("reading dead letters"))?;
            let attributes = attributes
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Ok(DeadLetterRow {
                id: row
                    .try_get("id")
                    .map_err(StoreError::query("reading dead letters"))?,
                queue: row
                    .try_get("queue")
                    .map_err(StoreError::query("reading dead letters"))?,
                sqs_message_id: row
                    .try_get("sqs_message_id")
                    .map_err(StoreError::query("reading dead letters"))?,
                body: row
                    .try_get("body")
                    .map_err(StoreError::query("reading dead letters"))?,
                attributes,
                receive_count: row
                    .try_get("receive_count")
                    .map_err(StoreError::query("reading dead letters"))?,
                handler: row
                    .try_get("handler")
                    .map_err(StoreError::query("reading dead letters"))?,
                reason: row
                    .try_get("reason")
                    .map_err(StoreError::query("reading dead letters"))?,
                failed_at: row
                    .try_get("failed_at")
                    .map_err(StoreError::query("reading dead letters"))?,
                first_failed_at: row
                    .try_get("first_failed_at")
                    .map_err(StoreError::query("reading dead letters"))?,
                attempts: row
                    .try_get("attempts")
                    .map_err(StoreError::query("reading dead letters"))?,
                replayed_at: row
                    .try_get("replayed_at")
                    .map_err(StoreError::query("reading dead letters"))?,
                replayed_by: row
                    .try_get("replayed_by")
                    .map_err(StoreError::query("reading dead letters"))?,
                edited_at: row
                    .try_get("edited_at")
                    .map_err(StoreError::query("reading dead letters"))?,
                edited_by: row
                    .try_get("edited_by")
                    .map_err(StoreError::query("reading dead letters"))?,
            })
        })
        .collect()
}

/// Remove a replayed dead letter.
pub async fn remove_dead_letter(pool: &PgPool, id: i64) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM mailroom_dead_letters WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map_err(StoreError::query("removing a dead letter"))?;
    Ok(done.rows_affected() == 1)
}

/// Keep a dead letter that failed its replay: the new reason as its last failure, one more
/// attempt, and who replayed it. The first failure stays as it was.
pub async fn record_failed_replay(
    pool: &PgPool,
    id: i64,
    reason: &str,
    replayed_by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE mailroom_dead_letters SET reason = $2, failed_at = now(), \
         attempts = attempts + 1, replayed_at = now(), replayed_by = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(super::sanitize(reason).as_ref())
    .bind(super::sanitize(replayed_by).as_ref())
    .execute(pool)
    .await
    .map_err(StoreError::query("updating a dead letter"))?;
    Ok(())
}

/// Replace a dead letter's body with an operator's fix, keeping the body it first had.
pub async fn replace_dead_letter_body(
    pool: &PgPool,
    id: i64,
    body: &str,
    edited_by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE mailroom_dead_letters SET original_body = coalesce(original_body, body), \
         body = $2, edited_at = now(), edited_by = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(super::sanitize(body).as_ref())
    .bind(super::sanitize(edited_by).as_ref())
    .execute(pool)
    .await
    .map_err(StoreError::query("replacing a dead letter's body"))?;
    Ok(())
}

/// The status page's pool: one connection at most (a page load can never take a handler's
/// connection, and concurrent loads queue behind each other), opened on demand and closed
/// after a minute idle, every statement limited server-side to `statement_timeout` (so a
/// slow query is cancelled by Postgres, not only abandoned by the page), and an acquire that
/// gives up after `statement_timeout` too (Postgres down or unreachable).
pub fn page_pool(pool: &PgPool, statement_timeout: Duration) -> PgPool {
    let millis = statement_timeout.as_millis().max(1);
    let options = (*pool.connect_options())
        .clone()
        .options([("statement_timeout", millis.to_string())]);
    PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(statement_timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(options)
}

/// A dead letter as the status page shows it: the reason and the body cut to a few hundred
/// characters by Postgres (a body can be megabytes).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterSummary {
    pub id: i64,
    pub queue: String,
    pub handler: Option<String>,
    pub reason: String,
    /// The body's first [`SUMMARY_BODY_CHARS`] characters.
    pub body_start: String,
    pub body_bytes: i64,
    pub receive_count: i32,
    pub attempts: i32,
    pub failed_at: DateTime<Utc>,
}

/// How much of a reason the summary keeps.
pub const SUMMARY_REASON_CHARS: i32 = 500;
/// How much of a body the summary keeps.
pub const SUMMARY_BODY_CHARS: i32 = 200;

/// The newest `limit` dead letters (by id: the most recently kept), newest first.
pub async fn recent_dead_letters(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<DeadLetterSummary>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, queue, handler, left(reason, $2), left(body, $3), octet_length(body)::int8, \
         receive_count, attempts, failed_at FROM mailroom_dead_letters ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .bind(SUMMARY_REASON_CHARS)
    .bind(SUMMARY_BODY_CHARS)
    .fetch_all(pool)
    .await
    .map_err(StoreError::query("reading recent dead letters"))?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetterSummary {
                id: row.try_get(0)?,
                queue: row.try_get(1)?,
                handler: row.try_get(2)?,
                reason: row.try_get(3)?,
                body_start: row.try_get(4)?,
                body_bytes: row.try_get(5)?,
                receive_count: row.try_get(6)?,
                attempts: row.try_get(7)?,
                failed_at: row.try_get(8)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::query("reading recent dead letters"))
}
