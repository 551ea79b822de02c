//! Dead letters: messages kept whole (exact SQS body, attributes) with the reason they will
//! never be handled as they are, so an operator can inspect, fix and replay them.
//!
//! Keyed by `(queue, sqs_message_id)`: if a message is dead-lettered again (the SQS delete after
//! the first `keep` was lost, so it came back), the row is updated with the latest reason and
//! receive count instead of duplicated. A batch of letters is one UNNEST upsert.

use std::collections::BTreeMap;

use sqlx::PgExecutor;

use super::{sanitize, sanitize_opt, Store, StoreError};
use crate::handler::{BoxFuture, DeadLetter, DeadLetterSink, KeepError};

const UPSERT_DEAD_LETTERS: &str = r#"
INSERT INTO mailroom_dead_letters (
    queue, sqs_message_id, body, attributes, receive_count, handler, reason
)
SELECT u.queue, u.sqs_message_id, u.body, u.attributes, u.receive_count, u.handler, u.reason
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int4[], $6::text[], $7::text[])
    AS u(queue, sqs_message_id, body, attributes, receive_count, handler, reason)
ON CONFLICT (queue, sqs_message_id) DO UPDATE SET
    body = EXCLUDED.body,
    attributes = EXCLUDED.attributes,
    receive_count = EXCLUDED.receive_count,
    handler = EXCLUDED.handler,
    reason = EXCLUDED.reason,
    failed_at = now(),
    attempts = mailroom_dead_letters.attempts + 1
"#;

/// Upsert dead letters in one statement; returns the number of rows inserted or updated.
/// Duplicates of one `(queue, message_id)` in the slice collapse to the last one (an upsert
/// cannot touch a row twice in one statement).
pub async fn keep_dead_letters<'e>(
    conn: impl PgExecutor<'e>,
    letters: &[DeadLetter],
) -> Result<u64, StoreError> {
    let mut unique: BTreeMap<(String, String), &DeadLetter> = BTreeMap::new();
    for l in letters {
        unique.insert(
            (
                sanitize(&l.queue).into_owned(),
                sanitize(&l.message_id).into_owned(),
            ),
            l,
        );
    }
    if unique.is_empty() {
        return Ok(0);
    }
    let n = unique.len();
    let mut queue = Vec::with_capacity(n);
    let mut message_id = Vec::with_capacity(n);
    let mut body = Vec::with_capacity(n);
    let mut attributes = Vec::with_capacity(n);
    let mut receive_count = Vec::with_capacity(n);
    let mut handler = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    for ((q, m), l) in unique {
        queue.push(q);
        message_id.push(m);
        body.push(sanitize(&l.body).into_owned());
        let attrs: BTreeMap<String, String> = l
            .attributes
            .iter()
            .map(|(k, v)| (sanitize(k).into_owned(), sanitize(v).into_owned()))
            .collect();
        attributes.push(serde_json::to_value(attrs).unwrap_or_default());
        receive_count.push(i32::try_from(l.receive_count).unwrap_or(i32::MAX));
        handler.push(sanitize_opt(l.handler.as_deref()));
        reason.push(sanitize(&l.reason).into_owned());
    }
    let done = sqlx::query(UPSERT_DEAD_LETTERS)
        .bind(queue)
        .bind(message_id)
        .bind(body)
        .bind(attributes)
        .bind(receive_count)
        .bind(handler)
        .bind(reason)
        .execute(conn)
        .await
        .map_err(StoreError::query("keeping dead letters"))?;
    Ok(done.rows_affected())
}

impl Store {
    /// Upsert dead letters (see [`keep_dead_letters`]).
    pub async fn keep_dead_letters(&self, letters: &[DeadLetter]) -> Result<u64, StoreError> {
        keep_dead_letters(self.pool(), letters).await
    }
}

/// The engine keeps dead letters here before deleting them from SQS. An `Err` makes the engine
/// retry the message later, never drop it.
impl DeadLetterSink for Store {
    fn keep<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), KeepError>> {
        Box::pin(async move {
            self.keep_dead_letters(letters)
                .await
                .map(|_| ())
                .map_err(KeepError::new)
        })
    }
}
