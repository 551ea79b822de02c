//! Maintenance of the partitioned event storage and of retention: what `mailroom maintain` and
//! the worker's maintenance task run (docs/retention.md).
//!
//! Why it is shaped this way:
//! - **Weeks by the event's own time.** `mailroom_events` is partitioned by `occurred_at` into
//!   UTC weeks (`mailroom_events_wYYYYMMDD`, named after the Monday they start) plus a default
//!   partition for rows no week covers. A duplicate of an event has the same timestamp, so it
//!   meets its original in the same partition's unique key, whenever it comes.
//! - **Ahead of time.** The current week and `premake_weeks` after it exist before events of
//!   those weeks arrive. A week is created standalone and attached (`ATTACH PARTITION` takes a
//!   SHARE UPDATE EXCLUSIVE lock on the parent, which inserts do not wait for); rows of that
//!   week that had landed in the default partition are moved into it first, in the same
//!   transaction (`mailroom_events_week_partition` in migration `20261203000020`).
//! - **Retention is DROP TABLE of a week**, never a DELETE: a week goes once all of it is older
//!   than `events_days`. Dropping a partition takes an ACCESS EXCLUSIVE lock on the parent for a
//!   moment; every DDL statement here runs with a short `lock_timeout` and is retried, so a long
//!   transaction holding the table cannot make inserts queue behind the DROP for long.
//! - **Inbound emails are not partitioned.** They are few next to events (one row per email;
//!   the bytes are in the attachments, which cascade), so they are deleted in bounded batches by
//!   the `received_at` index, each batch its own short transaction.
//! - **One process at a time**: a session advisory lock on a connection of its own, released
//!   when that connection closes, even if the process dies.
//! - **A pre-partitioning table** (renamed `mailroom_events_legacy` by the migration) is moved in
//!   batches of [`LEGACY_BATCH_ROWS`]: each batch deletes its rows there and inserts them here in
//!   one statement, ids and `feed_xid` kept, so at any snapshot a row is in exactly one of the
//!   two (the feed and the insert's duplicate check read both).

use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, TimeZone, Utc};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use super::StoreError;

/// The advisory lock key's text (`hashtext` of it): one maintenance run at a time per database.
const LOCK_NAME: &str = "mailroom_maintain";

/// How long a DDL statement waits for its lock before giving up and retrying.
pub const LOCK_TIMEOUT: Duration = Duration::from_millis(1000);

/// How many times a DDL statement is tried before the run reports the failure.
pub const LOCK_ATTEMPTS: u32 = 20;

/// Rows moved from a pre-partitioning table per transaction.
pub const LEGACY_BATCH_ROWS: i64 = 10_000;

/// Inbound emails deleted per transaction, and batches per run.
pub const INBOUND_BATCH_ROWS: i64 = 200;
pub const INBOUND_MAX_BATCHES: u32 = 5_000;

/// Events before this year get no week partition (the default partition keeps them).
const FIRST_PARTITION_YEAR: i32 = 2000;

/// What a maintenance run should do.
#[derive(Debug, Clone)]
pub struct MaintenancePlan {
    /// Days of events to keep; 0 keeps them forever.
    pub events_days: u32,
    /// Days of inbound emails to keep; 0 keeps them forever.
    pub inbound_days: u32,
    /// Weeks of partitions to create after the current one.
    pub premake_weeks: u32,
    /// Stop moving rows of a pre-partitioning table after this long (the rest is moved by the
    /// next run); `None`: until it is empty.
    pub legacy_budget: Option<Duration>,
}

/// What a maintenance run did.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceReport {
    /// Week partitions created, by name.
    pub created: Vec<String>,
    /// Week partitions dropped by retention, by name.
    pub dropped: Vec<String>,
    /// Rows moved out of the default partition into weeks created for them.
    pub moved_from_default: i64,
    /// Rows moved from a pre-partitioning table; `legacy_remaining` says whether any are left.
    pub legacy_moved: i64,
    pub legacy_remaining: bool,
    /// Inbound emails deleted by retention (their attachments went with them).
    pub inbound_deleted: u64,
    /// The longest a single DDL statement took (lock wait included), and how many attempts
    /// timed out waiting for a lock and were retried.
    pub longest_ddl: Duration,
    pub lock_retries: u32,
    /// Estimated rows in the default partition (undated and out-of-range events).
    pub default_rows_estimate: i64,
}

/// Monday 00:00 UTC of the week holding `t`.
pub fn week_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let date = t.date_naive();
    let monday = date - Days::days(i64::from(date.weekday().num_days_from_monday()));
    Utc.from_utc_datetime(&monday.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The partition holding the week that starts at `week` (a Monday).
pub fn week_partition_name(week: DateTime<Utc>) -> String {
    format!("mailroom_events_w{}", week.format("%Y%m%d"))
}

/// The Monday a week partition's name stands for; `None` for any other name.
fn week_of_partition(name: &str) -> Option<DateTime<Utc>> {
    let digits = name.strip_prefix("mailroom_events_w")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = NaiveDate::parse_from_str(digits, "%Y%m%d").ok()?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?))
}

/// Run maintenance as of `now`. Returns `None` when another process holds the maintenance lock
/// (it is doing the same work).
pub async fn maintain(
    pool: &PgPool,
    plan: &MaintenancePlan,
    now: DateTime<Utc>,
) -> Result<Option<MaintenanceReport>, StoreError> {
    // Batches of the move and DDL waits are slow by design: not worth a slow-statement warning
    // each (the worker shows recent warnings on its status page); the run logs its own summary.
    let options = (*pool.connect_options())
        .clone()
        .disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(StoreError::query("connecting for maintenance"))?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(LOCK_NAME)
        .fetch_one(&mut conn)
        .await
        .map_err(StoreError::query("taking the maintenance lock"))?;
    if !locked {
        let _ = conn.close().await;
        return Ok(None);
    }
    let result = run(&mut conn, plan, now).await;
    // Unlock explicitly: closing the connection releases the lock only once the server's
    // backend has exited, which happens after `close` returns, so the next run (the worker's
    // next tick, a timer right after) could find it still held and skip its work. Closing stays
    // the release when the unlock cannot run (the connection broke, the process died).
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(LOCK_NAME)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result.map(Some)
}

async fn run(
    conn: &mut PgConnection,
    plan: &MaintenancePlan,
    now: DateTime<Utc>,
) -> Result<MaintenanceReport, StoreError> {
    let mut report = MaintenanceReport::default();
    let this_week = week_start(now);
    let horizon = this_week + Days::days(7 * (i64::from(plan.premake_weeks) + 1));
    for w in 0..=i64::from(plan.premake_weeks) {
        ensure_week(conn, this_week + Days::days(7 * w), &mut report).await?;
    }
    if legacy_exists(conn).await? {
        move_legacy(conn, plan, horizon, &mut report).await?;
    }
    if plan.events_days > 0 {
        drop_expired_weeks(
            conn,
            now - Days::days(i64::from(plan.events_days)),
            &mut report,
        )
        .await?;
    }
    if plan.inbound_days > 0 {
        report.inbound_deleted =
            delete_expired_inbound(conn, now - Days::days(i64::from(plan.inbound_days))).await?;
    }
    report.default_rows_estimate = sqlx::query_scalar(
        "SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = 'mailroom_events_default'::regclass",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::query("reading the default partition's size"))?;
    Ok(report)
}

/// What a [`ddl`] statement binds as `$1`.
#[derive(Debug, Clone, Copy)]
enum Bind {
    Nothing,
    Week(DateTime<Utc>),
    AfterId(i64),
}

/// Run `sql` (one statement, binding `bind` as `$1`) in a transaction of its own with
/// a short lock timeout, retried while it times out waiting for a lock. Returns the text `sql`
/// answered in its first row and column, if any.
async fn ddl(
    conn: &mut PgConnection,
    sql: &str,
    bind: Bind,
    context: &'static str,
    report: &mut MaintenanceReport,
) -> Result<Option<String>, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let result: Result<Option<String>, sqlx::Error> = async {
            let mut tx = conn.begin().await?;
            sqlx::query(&format!(
                "SET LOCAL lock_timeout = '{}ms'",
                LOCK_TIMEOUT.as_millis()
            ))
            .execute(&mut *tx)
            .await?;
            let query = sqlx::query_scalar::<_, Option<String>>(sql);
            let query = match bind {
                Bind::Nothing => query,
                Bind::Week(week) => query.bind(week),
                Bind::AfterId(id) => query.bind(id),
            };
            let answer = query.fetch_optional(&mut *tx).await?.flatten();
            tx.commit().await?;
            Ok(answer)
        }
        .await;
        report.longest_ddl = report.longest_ddl.max(started.elapsed());
        match result {
            Ok(answer) => return Ok(answer),
            Err(e) if attempt < LOCK_ATTEMPTS && lock_timed_out(&e) => {
                report.lock_retries += 1;
                tracing::info!(
                    attempt,
                    "maintenance: {context}: waiting for a lock, retrying"
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
            }
            Err(source) => return Err(StoreError::Query { context, source }),
        }
    }
}

/// A lock wait that gave up (55P03 lock_not_available, from `lock_timeout`) or lost a
/// deadlock (40P01): worth another try.
fn lock_timed_out(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("55P03") | Some("40P01")))
}

/// Create the week partition starting at `week` unless it exists.
async fn ensure_week(
    conn: &mut PgConnection,
    week: DateTime<Utc>,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let name = week_partition_name(week);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&name)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query("looking up a week partition"))?;
    if exists {
        return Ok(());
    }
    let in_default: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM mailroom_events_default WHERE occurred_at >= $1 AND occurred_at < $2",
    )
    .bind(week)
    .bind(week + Days::days(7))
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::query(
        "counting default-partition rows of a week",
    ))?;
    ddl(
        conn,
        "SELECT mailroom_events_week_partition($1)",
        Bind::Week(week),
        "creating a week partition",
        report,
    )
    .await?;
    tracing::info!(partition = %name, moved_from_default = in_default, "maintenance: created");
    report.moved_from_default += in_default;
    report.created.push(name);
    Ok(())
}

/// Drop every week partition that ends at or before `before`.
async fn drop_expired_weeks(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'mailroom_events'::regclass ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::query("listing event partitions"))?;
    for name in names {
        let Some(week) = week_of_partition(&name) else {
            continue;
        };
        if week + Days::days(7) > before {
            continue;
        }
        // The name was produced by week_partition_name and parsed back: only digits vary.
        ddl(
            conn,
            &format!("DROP TABLE IF EXISTS \"{name}\""),
            Bind::Nothing,
            "dropping an expired week partition",
            report,
        )
        .await?;
        tracing::info!(partition = %name, "maintenance: dropped (retention)");
        report.dropped.push(name);
    }
    Ok(())
}

async fn legacy_exists(conn: &mut PgConnection) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT to_regclass('mailroom_events_legacy') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query(
            "looking for a pre-partitioning events table",
        ))
}

/// Columns of `mailroom_events`, in order, as the legacy table's move selects them.
const COLUMNS: &str = "id, sg_event_id, event, email, occurred_at, sg_message_id, smtp_id, \
    categories, reason, status, response, attempt, bounce_type, bounce_classification, url, \
    url_offset_index, useragent, ip, tls, sg_machine_open, asm_group_id, marketing_campaign_id, \
    marketing_campaign_name, pool_name, pool_id, payload, sqs_message_id, queue, received_at, \
    stored_at, feed_xid, source";

/// Move the rows of the pre-partitioning table into the partitioned one: first a week partition
/// for every week it has rows in (so retention can later drop them), then the rows in batches,
/// then (when empty) the table itself.
async fn move_legacy(
    conn: &mut PgConnection,
    plan: &MaintenancePlan,
    horizon: DateTime<Utc>,
    report: &mut MaintenanceReport,
) -> Result<(), StoreError> {
    let first = Utc
        .with_ymd_and_hms(FIRST_PARTITION_YEAR, 1, 1, 0, 0, 0)
        .unwrap();
    let mut cursor = first;
    // One index probe per week that has rows, not a scan of the table.
    while cursor < horizon {
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(occurred_at) FROM mailroom_events_legacy \
             WHERE occurred_at >= $1 AND occurred_at < $2",
        )
        .bind(cursor)
        .bind(horizon)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query(
            "finding the weeks of the pre-partitioning table",
        ))?;
        let Some(next) = next else { break };
        let week = week_start(next);
        ensure_week(conn, week, report).await?;
        cursor = week + Days::days(7);
    }
    let started = Instant::now();
    // In id order from a cursor: starting each batch from the lowest id would walk the index
    // entries of every row moved so far, again and again.
    let sql = format!(
        "WITH batch AS (SELECT id FROM mailroom_events_legacy WHERE id > $1 \
                        ORDER BY id LIMIT {LEGACY_BATCH_ROWS}), \
         moved AS (DELETE FROM mailroom_events_legacy l USING batch b WHERE l.id = b.id \
                   RETURNING l.*), \
         ins AS (INSERT INTO mailroom_events ({COLUMNS}) \
                 SELECT {} FROM moved \
                 ON CONFLICT (sg_event_id, occurred_at) DO NOTHING RETURNING 1) \
         SELECT (SELECT count(*) FROM moved) || ':' || coalesce((SELECT max(id) FROM moved), $1)",
        COLUMNS.replace("payload,", "payload::json,")
    );
    let mut after_id = i64::MIN;
    loop {
        if plan.legacy_budget.is_some_and(|b| started.elapsed() >= b) {
            report.legacy_remaining = true;
            return Ok(());
        }
        let answer = ddl(
            conn,
            &sql,
            Bind::AfterId(after_id),
            "moving rows of the pre-partitioning table",
            report,
        )
        .await?
        .unwrap_or_default();
        let (moved, last) = answer.split_once(':').unwrap_or(("0", ""));
        let moved: i64 = moved.parse().unwrap_or(0);
        after_id = last.parse().unwrap_or(after_id);
        report.legacy_moved += moved;
        if moved < LEGACY_BATCH_ROWS {
            break;
        }
    }
    ddl(
        conn,
        "SELECT mailroom_events_legacy_finish()::text",
        Bind::Nothing,
        "dropping the emptied pre-partitioning table",
        report,
    )
    .await?;
    tracing::info!(
        rows = report.legacy_moved,
        "maintenance: pre-partitioning events table moved and dropped"
    );
    Ok(())
}

/// Delete inbound emails received before `before`, in bounded batches (attachments cascade).
async fn delete_expired_inbound(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for _ in 0..INBOUND_MAX_BATCHES {
        let done = sqlx::query(
            "WITH doomed AS (SELECT id FROM mailroom_inbound_emails WHERE received_at < $1 \
                             ORDER BY received_at LIMIT $2) \
             DELETE FROM mailroom_inbound_emails m USING doomed d WHERE m.id = d.id",
        )
        .bind(before)
        .bind(INBOUND_BATCH_ROWS)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::query("deleting expired inbound emails"))?;
        deleted += done.rows_affected();
        if done.rows_affected() < INBOUND_BATCH_ROWS as u64 {
            break;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_utc_and_names_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 12, 2, 5, 21, 0).unwrap(); // a Wednesday
        let w = week_start(t);
        assert_eq!(w, Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap());
        assert_eq!(week_start(w), w, "a Monday at midnight starts its own week");
        assert_eq!(week_partition_name(w), "mailroom_events_w20261130");
        assert_eq!(week_of_partition("mailroom_events_w20261130"), Some(w));
        assert_eq!(week_of_partition("mailroom_events_default"), None);
        assert_eq!(week_of_partition("mailroom_events_w2026113"), None);
    }
}
