//! Each SendGrid message's current status per recipient (`mailroom_message_status`) and the
//! addresses not to mail (`mailroom_suppressions`), kept up to date from newly stored events by
//! the sendgrid handler's built-in hooks (`handlers/sendgrid/status.rs`), in the batch's
//! transaction.
//!
//! Why it is shaped this way:
//! - **A pure function of the set of events.** SendGrid's events arrive out of order (a
//!   `delivered` after a `bounce`, opens before `delivered`), so nothing here depends on arrival:
//!   the delivery state is the event of highest precedence (`mailroom_delivery_rank`; equal
//!   ranks: later `occurred_at`, NULL lowest, then larger `sg_event_id` in byte order), counts
//!   are sums, timestamps are minima or maxima, and a suppression is set by its latest event
//!   (`occurred_at`, then a suppression over a resubscribe, then `sg_event_id`). Folding a batch
//!   into a row therefore gives the same row as folding all events at once, which is what
//!   `mailroom_rebuild_message_status()` and `mailroom_rebuild_suppressions()` (the migration's
//!   backfill) do; the rules themselves are SQL functions in migration `20261202000020`,
//!   shared by both.
//! - **Once per event.** The statements read only the rows this transaction inserted (the ids
//!   `insert ... RETURNING` gave back), so a redelivered event, which is not inserted again,
//!   is not counted again. They find those rows by `feed_xid = pg_current_xact_id()` (the
//!   `(feed_xid, id)` index: one descent per partition of the partitioned `mailroom_events`,
//!   which has no index on `id` alone) and keep the id list a hashed filter (`id + 0`): as an
//!   index condition it would be one descent per id in every partition.
//! - **Set-based and deadlock-free.** One `INSERT ... SELECT ... GROUP BY / DISTINCT ON ... ON
//!   CONFLICT DO UPDATE` per table per batch, rows in key order, so two workers upserting
//!   overlapping keys lock them in the same order. A batch locks event keys, then status keys,
//!   then suppression keys, each phase in order, so no two batches wait on each other in a
//!   cycle.

use sqlx::PgConnection;

use super::StoreError;

/// Fold the given (newly inserted) `mailroom_events` rows into `mailroom_message_status`.
const UPSERT_MESSAGE_STATUS: &str = r#"
WITH keyed AS (
    SELECT mailroom_message_id(e.sg_message_id) AS message_id,
           mailroom_normalize_email(e.email) AS email,
           mailroom_delivery_state(e.event, e.bounce_type) AS state,
           e.sg_event_id, e.event, e.occurred_at, e.reason, e.status, e.response,
           e.bounce_type, e.bounce_classification, e.sg_machine_open
    FROM mailroom_events e
    WHERE e.feed_xid = pg_current_xact_id() AND (e.id + 0) = ANY($1::bigint[])
      AND mailroom_message_id(e.sg_message_id) IS NOT NULL
      AND mailroom_normalize_email(e.email) IS NOT NULL
),
agg AS (
    SELECT message_id, email,
           min(occurred_at) AS first_event_at,
           max(occurred_at) AS last_event_at,
           count(*)::int AS event_count,
           (count(*) FILTER (WHERE event = 'deferred'))::int AS deferred_count,
           (count(*) FILTER (WHERE event = 'open'))::int AS open_count,
           (count(*) FILTER (WHERE event = 'open' AND sg_machine_open))::int AS machine_open_count,
           (count(*) FILTER (WHERE event = 'click'))::int AS click_count,
           min(occurred_at) FILTER (WHERE event = 'open') AS first_opened_at,
           max(occurred_at) FILTER (WHERE event = 'open') AS last_opened_at,
           min(occurred_at) FILTER (WHERE event = 'click') AS first_clicked_at,
           max(occurred_at) FILTER (WHERE event = 'click') AS last_clicked_at,
           min(occurred_at) FILTER (WHERE event = 'spamreport') AS spam_reported_at,
           min(occurred_at) FILTER (WHERE event IN ('unsubscribe', 'group_unsubscribe'))
               AS unsubscribed_at
    FROM keyed
    GROUP BY message_id, email
),
best AS (
    SELECT DISTINCT ON (message_id, email)
           message_id, email, state, mailroom_delivery_rank(state) AS state_rank,
           sg_event_id, occurred_at, reason, status, response, bounce_type, bounce_classification
    FROM keyed
    WHERE state IS NOT NULL
    ORDER BY message_id, email, mailroom_delivery_rank(state) DESC,
             occurred_at DESC NULLS LAST, sg_event_id COLLATE "C" DESC
)
INSERT INTO mailroom_message_status AS s (
    message_id, email, state, state_rank, state_sg_event_id, state_occurred_at, reason,
    smtp_status, response, bounce_type, bounce_classification, first_event_at, last_event_at,
    event_count, deferred_count, open_count, machine_open_count, click_count,
    first_opened_at, last_opened_at, first_clicked_at, last_clicked_at, spam_reported_at,
    unsubscribed_at
)
SELECT a.message_id, a.email, b.state, coalesce(b.state_rank, 0), b.sg_event_id,
       b.occurred_at, b.reason, b.status, b.response, b.bounce_type, b.bounce_classification,
       a.first_event_at, a.last_event_at, a.event_count, a.deferred_count, a.open_count,
       a.machine_open_count, a.click_count, a.first_opened_at, a.last_opened_at,
       a.first_clicked_at, a.last_clicked_at, a.spam_reported_at, a.unsubscribed_at
FROM agg a LEFT JOIN best b USING (message_id, email)
ORDER BY a.message_id, a.email
ON CONFLICT (message_id, email) DO UPDATE SET
    (state, state_rank, state_sg_event_id, state_occurred_at, reason, smtp_status, response,
     bounce_type, bounce_classification) = (
        SELECT c.state, c.state_rank, c.state_sg_event_id, c.state_occurred_at, c.reason,
               c.smtp_status, c.response, c.bounce_type, c.bounce_classification
        FROM (VALUES
            (s.state, s.state_rank, s.state_sg_event_id, s.state_occurred_at, s.reason,
             s.smtp_status, s.response, s.bounce_type, s.bounce_classification),
            (EXCLUDED.state, EXCLUDED.state_rank, EXCLUDED.state_sg_event_id,
             EXCLUDED.state_occurred_at, EXCLUDED.reason, EXCLUDED.smtp_status,
             EXCLUDED.response, EXCLUDED.bounce_type, EXCLUDED.bounce_classification)
        ) AS c(state, state_rank, state_sg_event_id, state_occurred_at, reason, smtp_status,
               response, bounce_type, bounce_classification)
        ORDER BY c.state_rank DESC, c.state_occurred_at DESC NULLS LAST,
                 c.state_sg_event_id COLLATE "C" DESC NULLS LAST
        LIMIT 1
    ),
    first_event_at = LEAST(s.first_event_at, EXCLUDED.first_event_at),
    last_event_at = GREATEST(s.last_event_at, EXCLUDED.last_event_at),
    event_count = s.event_count + EXCLUDED.event_count,
    deferred_count = s.deferred_count + EXCLUDED.deferred_count,
    open_count = s.open_count + EXCLUDED.open_count,
    machine_open_count = s.machine_open_count + EXCLUDED.machine_open_count,
    click_count = s.click_count + EXCLUDED.click_count,
    first_opened_at = LEAST(s.first_opened_at, EXCLUDED.first_opened_at),
    last_opened_at = GREATEST(s.last_opened_at, EXCLUDED.last_opened_at),
    first_clicked_at = LEAST(s.first_clicked_at, EXCLUDED.first_clicked_at),
    last_clicked_at = GREATEST(s.last_clicked_at, EXCLUDED.last_clicked_at),
    spam_reported_at = LEAST(s.spam_reported_at, EXCLUDED.spam_reported_at),
    unsubscribed_at = LEAST(s.unsubscribed_at, EXCLUDED.unsubscribed_at),
    updated_at = now()
"#;

/// Fold the given (newly inserted) `mailroom_events` rows into `mailroom_suppressions`: per
/// (email, group) the batch's latest event, kept only if it is later than the stored one.
const UPSERT_SUPPRESSIONS: &str = r#"
INSERT INTO mailroom_suppressions AS s (
    email, asm_group_id, active, reason, detail, sg_event_id, occurred_at, message_id
)
SELECT DISTINCT ON (email, asm_group_id)
       email, asm_group_id, active, reason, detail, sg_event_id, occurred_at, message_id
FROM (
    SELECT mailroom_normalize_email(e.email) AS email,
           mailroom_suppression_group(e.event, e.bounce_type, e.reason, e.asm_group_id)
               AS asm_group_id,
           e.event <> 'group_resubscribe' AS active,
           e.event AS reason, e.reason AS detail, e.sg_event_id, e.occurred_at,
           mailroom_message_id(e.sg_message_id) AS message_id
    FROM mailroom_events e
    WHERE e.feed_xid = pg_current_xact_id() AND (e.id + 0) = ANY($1::bigint[])
) n
WHERE email IS NOT NULL AND asm_group_id IS NOT NULL
ORDER BY email, asm_group_id, occurred_at DESC NULLS LAST, active DESC,
         sg_event_id COLLATE "C" DESC
ON CONFLICT (email, asm_group_id) DO UPDATE SET
    active = EXCLUDED.active,
    reason = EXCLUDED.reason,
    detail = EXCLUDED.detail,
    sg_event_id = EXCLUDED.sg_event_id,
    occurred_at = EXCLUDED.occurred_at,
    message_id = EXCLUDED.message_id,
    updated_at = now()
WHERE (coalesce(EXCLUDED.occurred_at, '-infinity'), EXCLUDED.active,
       EXCLUDED.sg_event_id COLLATE "C")
    > (coalesce(s.occurred_at, '-infinity'), s.active, s.sg_event_id COLLATE "C")
"#;

/// The event types that can change a suppression (the SQL decides which of them do).
pub const SUPPRESSION_EVENTS: &[&str] = &[
    "bounce",
    "dropped",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
];

/// Fold newly inserted events (their `mailroom_events.id`s) into `mailroom_message_status`.
/// Call it once per event, in the transaction that inserted them: an id given twice is counted
/// twice. Events without an `sg_message_id` or an `email` are skipped. Returns the rows written.
pub async fn update_message_status(
    conn: &mut PgConnection,
    event_ids: &[i64],
) -> Result<u64, StoreError> {
    if event_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(UPSERT_MESSAGE_STATUS)
        .bind(event_ids)
        .execute(conn)
        .await
        .map_err(StoreError::query("updating message status"))?;
    Ok(done.rows_affected())
}

/// Fold newly inserted events into `mailroom_suppressions`. Unlike the status, this is
/// idempotent even for an id given twice (the latest event wins, and the same event is not
/// later than itself). Returns the rows inserted or changed.
pub async fn update_suppressions(
    conn: &mut PgConnection,
    event_ids: &[i64],
) -> Result<u64, StoreError> {
    if event_ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(UPSERT_SUPPRESSIONS)
        .bind(event_ids)
        .execute(conn)
        .await
        .map_err(StoreError::query("updating suppressions"))?;
    Ok(done.rows_affected())
}

/// `mailroom_may_send(email, asm_group_id)`: false when the address is suppressed globally or
/// in the given unsubscribe group; `None` for an address that is empty once trimmed.
pub async fn may_send(
    conn: &mut PgConnection,
    email: &str,
    asm_group_id: Option<i64>,
) -> Result<Option<bool>, StoreError> {
    sqlx::query_scalar("SELECT mailroom_may_send($1, $2)")
        .bind(email)
        .bind(asm_group_id)
        .fetch_one(conn)
        .await
        .map_err(StoreError::query("reading suppressions"))
}

/// Recompute both tables from every stored event (`mailroom_rebuild_message_status()`,
/// `mailroom_rebuild_suppressions()`): what the migration's backfill runs. Safe while workers
/// run (each table is locked for the rebuild). Returns the rows of each.
pub async fn rebuild_status_tables(conn: &mut PgConnection) -> Result<(i64, i64), StoreError> {
    let status: i64 = sqlx::query_scalar("SELECT mailroom_rebuild_message_status()")
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query("rebuilding message status"))?;
    let suppressions: i64 = sqlx::query_scalar("SELECT mailroom_rebuild_suppressions()")
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query("rebuilding suppressions"))?;
    Ok((status, suppressions))
}
