//! Partitioned event storage against a real Postgres: dedup that survives week boundaries,
//! partitions created later and retention runs; the `source` column; maintenance running while
//! batches are written; one maintenance run at a time; the conversion of a pre-partitioning
//! table (ids and feed positions kept, readable by the feed while it is moved).

#[path = "data/store/support.rs"]
mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use mailroom::handler::Outcome;
use mailroom::store::partitions::week_start;
use mailroom::store::{insert_events, maintain, EventRecord, MaintenancePlan, MIGRATOR};
use mailroom_envelope::Kind;
use mailroom_sendgrid::{parse_events, Event};
use sqlx::PgPool;
use support::*;

fn plan(events_days: u32, premake_weeks: u32) -> MaintenancePlan {
    MaintenancePlan {
        events_days,
        inbound_days: 0,
        premake_weeks,
        legacy_budget: None,
    }
}

/// SendGrid events with these ids and timestamps (seconds; `None`: no timestamp at all).
fn events(items: &[(&str, Option<i64>)]) -> Vec<Event> {
    let body: Vec<serde_json::Value> = items
        .iter()
        .map(|(id, ts)| match ts {
            Some(ts) => serde_json::json!({"event": "delivered", "sg_event_id": id, "email": "a@example.com", "timestamp": ts}),
            None => serde_json::json!({"event": "delivered", "sg_event_id": id, "email": "a@example.com"}),
        })
        .collect();
    parse_events(&serde_json::to_vec(&body).expect("json")).expect("parses")
}

async fn deliver(pool: &PgPool, events: &[Event]) -> u64 {
    let records: Vec<EventRecord<'_>> = events
        .iter()
        .map(|event| EventRecord {
            event,
            sqs_message_id: "m-1",
            queue: QUEUE,
            received_at: None,
            source: None,
        })
        .collect();
    let mut tx = pool.begin().await.expect("begin");
    let n = insert_events(&mut tx, &records).await.expect("insert");
    tx.commit().await.expect("commit");
    n
}

/// Rows per sg_event_id, and the partition each one is in.
async fn placement(pool: &PgPool, id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM mailroom_events WHERE sg_event_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("placement")
}

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

/// The same event delivered before its week's partition existed (into the default partition),
/// after the partition was created (the row moved there), on both sides of a week boundary, and
/// after a retention run that dropped an older week: every event is stored once.
#[sqlx::test(migrations = "./migrations")]
async fn an_event_redelivered_across_partition_changes_and_retention_is_stored_once(pool: PgPool) {
    // Far from today, so the migration's weeks do not cover them.
    let t = at(2031, 3, 5, 12, 0, 0); // a Wednesday
    let sunday_last_second = at(2031, 3, 9, 23, 59, 59);
    let monday_first_second = at(2031, 3, 10, 0, 0, 0);
    let old = t - chrono::Duration::days(60);
    let batch = events(&[
        ("e-t", Some(t.timestamp())),
        ("e-sunday", Some(sunday_last_second.timestamp())),
        ("e-monday", Some(monday_first_second.timestamp())),
        ("e-old", Some(old.timestamp())),
        ("e-undated", None),
    ]);
    assert_eq!(deliver(&pool, &batch).await, 5);
    assert_eq!(placement(&pool, "e-t").await, ["mailroom_events_default"]);

    // Weeks from before `old` to after `t`: the rows move out of the default partition.
    let report = maintain(&pool, &plan(0, 12), old - chrono::Duration::days(3))
        .await
        .expect("maintain")
        .expect("not locked");
    assert_eq!(report.moved_from_default, 4, "{report:?}");
    assert_eq!(
        placement(&pool, "e-t").await,
        ["mailroom_events_w20310303"],
        "moved into its week"
    );
    assert_eq!(
        placement(&pool, "e-sunday").await,
        ["mailroom_events_w20310303"]
    );
    assert_eq!(
        placement(&pool, "e-monday").await,
        ["mailroom_events_w20310310"]
    );
    assert_eq!(
        placement(&pool, "e-undated").await,
        ["mailroom_events_default"]
    );
    assert_eq!(deliver(&pool, &batch).await, 0, "redelivery adds nothing");

    // Retention keeps 30 days as of t + 20 days: the week of `old` goes, t's stays.
    let report = maintain(&pool, &plan(30, 4), t + chrono::Duration::days(20))
        .await
        .expect("maintain")
        .expect("not locked");
    let old_week = format!("mailroom_events_w{}", week_start(old).format("%Y%m%d"));
    assert!(report.dropped.contains(&old_week), "{report:?}");
    assert!(!report
        .dropped
        .iter()
        .any(|w| w == "mailroom_events_w20310303"));
    assert!(
        placement(&pool, "e-old").await.is_empty(),
        "dropped by retention"
    );

    let again = events(&[
        ("e-t", Some(t.timestamp())),
        ("e-sunday", Some(sunday_last_second.timestamp())),
        ("e-monday", Some(monday_first_second.timestamp())),
        ("e-undated", None),
    ]);
    assert_eq!(
        deliver(&pool, &again).await,
        0,
        "stored once after retention"
    );
    for id in ["e-t", "e-sunday", "e-monday", "e-undated"] {
        assert_eq!(placement(&pool, id).await.len(), 1, "{id}");
    }
    // Payload is SendGrid's exact text.
    let payload: String =
        sqlx::query_scalar("SELECT payload::text FROM mailroom_events WHERE sg_event_id = 'e-t'")
            .fetch_one(&pool)
            .await
            .expect("payload");
    assert_eq!(payload, batch[0].raw.as_raw().get());
}

/// An envelope from the route named "marketing" stores `source = 'marketing'` on its events
/// and on an inbound email; the default route stores NULL.
#[sqlx::test(migrations = "./migrations")]
async fn the_webhook_route_is_stored_as_source_on_events_and_inbound_emails(pool: PgPool) {
    let named = |mut job: mailroom::handler::Job| {
        if let Some(s) = job.envelope.source.as_mut() {
            s.webhook = Some("marketing".into());
        }
        job
    };
    let h = handler(&pool);
    let out = h
        .handle(&[
            named(events_job("m-named", fixture("events_all_types.json"))),
            events_job(
                "m-default",
                br#"[{"event":"open","sg_event_id":"default-route-1","timestamp":1700000000}]"#
                    .to_vec(),
            ),
            named(job(
                "m-inbound",
                envelope(
                    Kind::Inbound,
                    FORM_CONTENT_TYPE,
                    fixture("inbound_parsed.multipart"),
                    &[],
                ),
            )),
        ])
        .await;
    assert_eq!(out, vec![Outcome::Done, Outcome::Done, Outcome::Done]);
    let by_source: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT source, count(*) FROM mailroom_events GROUP BY source ORDER BY source NULLS LAST",
    )
    .fetch_all(&pool)
    .await
    .expect("events");
    assert_eq!(by_source, vec![(Some("marketing".into()), 14), (None, 1)]);
    let inbound: Vec<Option<String>> =
        sqlx::query_scalar("SELECT source FROM mailroom_inbound_emails")
            .fetch_all(&pool)
            .await
            .expect("inbound");
    assert_eq!(inbound, vec![Some("marketing".to_string())]);
    // "Events of source X in a time range" has an index.
    let mut conn = pool.acquire().await.expect("conn");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .expect("set");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT * FROM mailroom_events WHERE source = 'marketing' \
         AND occurred_at >= '2020-01-01' AND occurred_at < '2030-01-01'",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(
        plan.contains("source") && !plan.contains("Seq Scan"),
        "{plan}"
    );
}

/// Maintenance creating weeks (moving rows out of the default partition) and dropping an
/// expired one while four writers insert batches into those weeks: no batch fails, no row is
/// lost or doubled, and no batch waits long.
#[sqlx::test(migrations = "./migrations")]
async fn maintenance_while_batches_are_written_loses_nothing_and_blocks_briefly(pool: PgPool) {
    let base = at(2032, 1, 5, 0, 0, 0); // a Monday
                                        // An old week to be dropped by retention during the run.
    let expired = events(&[(
        "expired-1",
        Some((base - chrono::Duration::days(100)).timestamp()),
    )]);
    maintain(&pool, &plan(0, 1), base - chrono::Duration::days(100))
        .await
        .expect("maintain")
        .expect("not locked");
    assert_eq!(deliver(&pool, &expired).await, 1);

    const WRITERS: usize = 4;
    const BATCHES: usize = 25;
    const PER_BATCH: usize = 200;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                for b in 0..BATCHES {
                    // Spread over 10 weeks from `base`, most not created yet when written.
                    let items: Vec<(String, Option<i64>)> = (0..PER_BATCH)
                        .map(|i| {
                            let n = (w * BATCHES + b) * PER_BATCH + i;
                            let ts = base.timestamp() + (n as i64 * 3_037) % (70 * 86_400);
                            (format!("w{w}-b{b}-{i}"), Some(ts))
                        })
                        .collect();
                    let refs: Vec<(&str, Option<i64>)> =
                        items.iter().map(|(id, ts)| (id.as_str(), *ts)).collect();
                    let batch = events(&refs);
                    let started = Instant::now();
                    // Each batch twice: the second must add nothing.
                    assert_eq!(deliver(&pool, &batch).await, PER_BATCH as u64);
                    assert_eq!(deliver(&pool, &batch).await, 0);
                    slowest = slowest.max(started.elapsed());
                }
                slowest
            })
        })
        .collect();

    // Meanwhile: weeks created one "day" at a time across the writers' range, then retention.
    let mut longest_ddl = Duration::ZERO;
    let mut moved = 0;
    for day in 0..70 {
        let report = maintain(&pool, &plan(0, 1), base + chrono::Duration::days(day))
            .await
            .expect("maintain")
            .expect("not locked");
        longest_ddl = longest_ddl.max(report.longest_ddl);
        moved += report.moved_from_default;
    }
    let report = maintain(&pool, &plan(60, 1), base + chrono::Duration::days(20))
        .await
        .expect("retention")
        .expect("not locked");
    longest_ddl = longest_ddl.max(report.longest_ddl);
    let expired_week = format!(
        "mailroom_events_w{}",
        week_start(base - chrono::Duration::days(100)).format("%Y%m%d")
    );
    assert!(report.dropped.contains(&expired_week), "{report:?}");
    assert!(placement(&pool, "expired-1").await.is_empty());

    let mut slowest = Duration::ZERO;
    for w in writers {
        slowest = slowest.max(w.await.expect("writer"));
    }
    let total = (WRITERS * BATCHES * PER_BATCH) as i64;
    assert_eq!(count(&pool, "mailroom_events").await, total);
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT sg_event_id) FROM mailroom_events")
            .fetch_one(&pool)
            .await
            .expect("distinct");
    assert_eq!(distinct, total, "no event twice");
    // Every week of the range exists now, so only undated events could be left in the default.
    assert_eq!(count(&pool, "mailroom_events_default").await, 0);
    println!(
        "rows moved from the default partition: {moved}; longest DDL statement {longest_ddl:?}; \
         slowest batch (insert + redelivery) {slowest:?}"
    );
    assert!(
        slowest < Duration::from_secs(10),
        "a batch waited {slowest:?}"
    );
}

/// A second run while one holds the lock does nothing and says so.
#[sqlx::test(migrations = "./migrations")]
async fn only_one_maintenance_run_at_a_time(pool: PgPool) {
    let mut holder = pool.acquire().await.expect("conn");
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('mailroom_maintain'))")
            .fetch_one(&mut *holder)
            .await
            .expect("lock");
    assert!(locked);
    let second = maintain(&pool, &plan(0, 4), Utc::now())
        .await
        .expect("runs");
    assert!(second.is_none(), "refused while locked");
    sqlx::query("SELECT pg_advisory_unlock(hashtext('mailroom_maintain'))")
        .execute(&mut *holder)
        .await
        .expect("unlock");
    let third = maintain(&pool, &plan(0, 4), Utc::now())
        .await
        .expect("runs");
    assert!(third.is_some());
}

/// A run released its lock by closing its connection, which frees it only once the server's
/// backend has exited: the next run right after (the CI run of the concurrent-writers test)
/// could find it still held and report "locked" with nothing done. Now every run unlocks first.
#[sqlx::test(migrations = "./migrations")]
async fn back_to_back_runs_found_the_previous_runs_lock_still_held(pool: PgPool) {
    for run in 0..30 {
        let report = maintain(&pool, &plan(0, 1), Utc::now())
            .await
            .expect("runs");
        assert!(report.is_some(), "run {run} found the lock held");
    }
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&pool)
    .await
    .expect("pg_locks");
    assert_eq!(held, 0, "no run left its lock behind");
}

/// Inbound emails older than inbound_days are deleted with their attachments; newer ones stay.
#[sqlx::test(migrations = "./migrations")]
async fn inbound_retention_deletes_old_emails_with_their_attachments(pool: PgPool) {
    let h = handler(&pool);
    let out = h
        .handle(&[inbound_job(
            "m-inbound",
            fixture("inbound_parsed.multipart"),
        )])
        .await;
    assert_eq!(out, vec![Outcome::Done]);
    assert!(count(&pool, "mailroom_inbound_attachments").await > 0);
    let keep = MaintenancePlan {
        inbound_days: 30,
        ..plan(0, 4)
    };
    // received_at() is 2026-11-26: 29 days later it stays, 31 days later it goes.
    let r = maintain(&pool, &keep, received_at() + chrono::Duration::days(29))
        .await
        .expect("maintain")
        .expect("not locked");
    assert_eq!(r.inbound_deleted, 0);
    let r = maintain(&pool, &keep, received_at() + chrono::Duration::days(31))
        .await
        .expect("maintain")
        .expect("not locked");
    assert_eq!(r.inbound_deleted, 1);
    assert_eq!(count(&pool, "mailroom_inbound_emails").await, 0);
    assert_eq!(count(&pool, "mailroom_inbound_attachments").await, 0);
}

/// A pre-partitioning table too large for the migration to move (over 100,000 rows) stays
/// readable by the feed and is deduplicated against while `mailroom maintain` moves it; the
/// moved rows keep their ids and feed positions.
#[sqlx::test(migrations = false)]
async fn a_large_pre_partitioning_table_is_moved_with_ids_and_feed_positions(pool: PgPool) {
    let earlier = sqlx::migrate::Migrator {
        migrations: MIGRATOR
            .iter()
            .filter(|m| m.version < 20261203000020)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    earlier.run(&pool).await.expect("earlier migrations");
    sqlx::query(
        "INSERT INTO mailroom_events (sg_event_id, event, occurred_at, payload, sqs_message_id, queue) \
         SELECT 'old-' || g, 'delivered', now() - (g % 400) * interval '1 hour', \
                jsonb_build_object('n', g), 'm', 'q' \
         FROM generate_series(1, 100500) g",
    )
    .execute(&pool)
    .await
    .expect("old rows");
    let before: (i64, String, i64) = sqlx::query_as(
        "SELECT sum(id)::int8, md5(string_agg(id::text || ':' || feed_xid::text || ':' || sg_event_id, ',' ORDER BY id)), count(*) FROM mailroom_events",
    )
    .fetch_one(&pool)
    .await
    .expect("before");
    sqlx::query("SELECT mailroom_feed_subscribe('reader', 'events', 'beginning')")
        .execute(&pool)
        .await
        .expect("subscribe");

    MIGRATOR.run(&pool).await.expect("the conversion migration");
    assert_eq!(
        count(&pool, "mailroom_events_legacy").await,
        100_500,
        "left for maintenance"
    );

    // The feed reads the old rows; a redelivered old event is not stored again.
    let first: Vec<String> =
        sqlx::query_scalar("SELECT sg_event_id FROM mailroom_feed_events('reader', 3)")
            .fetch_all(&pool)
            .await
            .expect("feed");
    assert_eq!(first.len(), 3);
    let old = events(&[("old-7", None)]);
    // The stored copy has a timestamp and this one none: still the same sg_event_id.
    assert_eq!(
        deliver(&pool, &old).await,
        0,
        "deduplicated against the old table"
    );
    assert_eq!(
        deliver(&pool, &events(&[("new-1", Some(Utc::now().timestamp()))])).await,
        1
    );

    let report = maintain(&pool, &plan(0, 4), Utc::now())
        .await
        .expect("maintain")
        .expect("not locked");
    assert_eq!(report.legacy_moved, 100_500);
    assert!(!report.legacy_remaining);
    let gone: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('mailroom_events_legacy')::text")
            .fetch_one(&pool)
            .await
            .expect("regclass");
    assert_eq!(gone, None, "the old table is dropped");

    let after: (i64, String, i64) = sqlx::query_as(
        "SELECT sum(id)::int8, md5(string_agg(id::text || ':' || feed_xid::text || ':' || sg_event_id, ',' ORDER BY id)), count(*) \
         FROM mailroom_events WHERE sg_event_id LIKE 'old-%'",
    )
    .fetch_one(&pool)
    .await
    .expect("after");
    assert_eq!(after, before, "same ids, feed positions and keys");
    assert_eq!(
        count(&pool, "mailroom_events_default").await,
        0,
        "every row in its week"
    );
    // The feed reads the moved rows at the same positions: unacknowledged, the same page again.
    let again: Vec<String> =
        sqlx::query_scalar("SELECT sg_event_id FROM mailroom_feed_events('reader', 3)")
            .fetch_all(&pool)
            .await
            .expect("feed");
    assert_eq!(again, first);
}

/// `mailroom maintain` (the systemd timer's command) creates a missing week ahead and says so.
#[sqlx::test(migrations = "./migrations")]
async fn the_maintain_command_creates_missing_weeks_and_reports_them(pool: PgPool) {
    let next_week = week_start(Utc::now()) + chrono::Duration::days(7);
    let name = format!("mailroom_events_w{}", next_week.format("%Y%m%d"));
    sqlx::query(&format!("DROP TABLE {name}"))
        .execute(&pool)
        .await
        .expect("drop a week ahead");
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("db name");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let url = format!(
        "{}/{db}",
        base.rsplit_once('/').expect("a URL with a path").0
    );
    let dir = std::env::temp_dir().join(format!("mailroom-maintain-{db}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("mailroom.toml");
    std::fs::write(
        &config,
        "[retention]\nevents_days = 90\n\n[[queue]]\nname = \"unused\"\nhandler = \"sendgrid\"\n",
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["--config", config.to_str().expect("utf-8"), "maintain"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("created: {name}")), "{stdout}");
    let back: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&name)
        .fetch_one(&pool)
        .await
        .expect("regclass");
    assert_eq!(back.as_deref(), Some(name.as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A retention shorter than any redelivery could still arrive is refused, naming the key.
#[test]
fn a_retention_shorter_than_redelivery_is_refused() {
    let text = |retention: &str| {
        format!("{retention}\n[[queue]]\nname = \"unused\"\nhandler = \"sendgrid\"\n")
    };
    let err = mailroom::config::Config::parse(&text("[retention]\nevents_days = 7"), "test")
        .expect_err("7 days is refused");
    assert!(err.to_string().contains("retention.events_days"), "{err}");
    let err = mailroom::config::Config::parse(&text("[retention]\ninbound_days = 3"), "test")
        .expect_err("3 days is refused");
    assert!(err.to_string().contains("retention.inbound_days"), "{err}");
    let ok = mailroom::config::Config::parse(&text("[retention]\nevents_days = 90"), "test")
        .expect("90 days is fine");
    assert_eq!(ok.retention.events_days, 90);
    assert_eq!(ok.retention.premake_weeks, 4, "default");
    let forever = mailroom::config::Config::parse(&text(""), "test").expect("no section");
    assert_eq!(forever.retention.events_days, 0, "keep forever by default");
}

/// Tuples read from the events tables (every partition) by this transaction so far.
async fn tuples_read_in_transaction(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0)::int8 \
         FROM pg_stat_xact_user_tables WHERE relname LIKE 'mailroom_events%'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("pg_stat_xact_user_tables")
}

/// Once the pre-partitioning table was gone, a feed page still read through a UNION ALL with its
/// (empty) view, which kept the planner from merging the partitions' `(feed_xid, id)` indexes:
/// every page read and sorted every pending row (144 ms for 320,000 pending). A page of 10 now
/// reads about 10 rows per partition, whatever is pending.
#[sqlx::test(migrations = "./migrations")]
async fn a_feed_page_read_every_pending_row_after_the_old_table_was_gone(pool: PgPool) {
    // This week and four ahead, so the pending rows are spread over five partitions.
    maintain(&pool, &plan(0, 4), Utc::now())
        .await
        .expect("maintain")
        .expect("not locked");
    const PENDING: i64 = 30_000;
    sqlx::query(
        "INSERT INTO mailroom_events (sg_event_id, event, occurred_at, payload, sqs_message_id, queue) \
         SELECT 'pending-' || g, 'delivered', now() + (g % 28) * interval '1 day', \
                json_build_object('n', g), 'm', 'q' \
         FROM generate_series(1, $1) g",
    )
    .bind(PENDING)
    .execute(&pool)
    .await
    .expect("pending rows");
    sqlx::query("ANALYZE mailroom_events")
        .execute(&pool)
        .await
        .expect("analyze");
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tableoid) FROM mailroom_events WHERE sg_event_id LIKE 'pending-%'",
    )
    .fetch_one(&pool)
    .await
    .expect("partitions");
    assert!(partitions >= 4, "rows in {partitions} partitions");
    sqlx::query("SELECT mailroom_feed_subscribe('reader', 'events', 'beginning')")
        .execute(&pool)
        .await
        .expect("subscribe");

    // The horizon is the oldest running transaction of the whole server, so tests running
    // beside this one can hold the rows back for a moment: read until the page is full.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (page, read) = loop {
        let mut tx = pool.begin().await.expect("begin");
        let before = tuples_read_in_transaction(&mut tx).await;
        let page: Vec<String> =
            sqlx::query_scalar("SELECT sg_event_id FROM mailroom_feed_events('reader', 10)")
                .fetch_all(&mut *tx)
                .await
                .expect("feed page");
        let read = tuples_read_in_transaction(&mut tx).await - before;
        tx.rollback().await.expect("rollback");
        if page.len() == 10 || Instant::now() > deadline {
            break (page, read);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(page.len(), 10);
    assert!(
        read <= 20 * partitions,
        "a page of 10 read {read} rows of {PENDING} pending ({partitions} partitions)"
    );
}
