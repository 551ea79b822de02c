//! The commit-ordered feed against real Postgres: a reader never skips a row that commits late,
//! never sees a rolled-back one, never reads one twice once acknowledged, and two readers of one
//! consumer take turns. The race test runs many writers with long and short transactions (some
//! rolling back) against a reader that reads and acknowledges as they go.

#[path = "data/store/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use mailroom::store::feed::{self, Position, Start, Stream};
use mailroom::store::{insert_events, EventRecord};
use mailroom_sendgrid::{parse_events, Event};
use rand::{Rng, SeedableRng};
use sqlx::{PgConnection, PgPool};
use support::*;

fn events(ids: &[String]) -> Vec<Event> {
    let body: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({"event": "delivered", "sg_event_id": id, "email": "a@example.com", "timestamp": 1764590000}))
        .collect();
    parse_events(&serde_json::to_vec(&body).expect("json")).expect("parses")
}

async fn insert(conn: &mut PgConnection, ids: &[String]) {
    let events = events(ids);
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
    insert_events(conn, &records).await.expect("insert");
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Read one page for `consumer` and acknowledge it in the same transaction; the sg_event_ids.
async fn read_and_ack(pool: &PgPool, consumer: &str, limit: i64) -> Vec<(Position, String)> {
    let mut tx = pool.begin().await.expect("begin");
    let rows = feed::read(&mut tx, consumer, Stream::Events, limit, false)
        .await
        .expect("read");
    if let Some(last) = rows.last() {
        feed::ack(&mut tx, consumer, last.position, rows.len() as i64)
            .await
            .expect("ack");
    }
    tx.commit().await.expect("commit");
    rows.into_iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.json).expect("payload json");
            (
                r.position,
                v["sg_event_id"].as_str().expect("id").to_string(),
            )
        })
        .collect()
}

/// Read and acknowledge until `want` rows came, within 30 s. The feed's horizon is the whole
/// server's oldest running transaction, so another test's (or another database's) open
/// transaction can hold rows back for a while: the wait is for that, not for this test's writes.
async fn drain(pool: &PgPool, consumer: &str, want: usize) -> Vec<(Position, String)> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while all.len() < want && tokio::time::Instant::now() < deadline {
        let page = read_and_ack(pool, consumer, 50).await;
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        all.extend(page);
    }
    all
}

/// Wait (30 s at most) until `consumer` has `n` readable rows.
async fn wait_readable(pool: &PgPool, consumer: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = feed::status(pool, Some(consumer)).await.expect("status");
        if status[0].pending >= n || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tests of this file one at a time: each holds transactions open on purpose, and an open
/// transaction anywhere on the server holds every feed's horizon back.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The pitfall the feed exists for: transaction A takes smaller ids but commits after B. A
/// reader polling `id > last_seen` would pass A's rows; the feed holds B back until A is done.
#[sqlx::test(migrations = "./migrations")]
async fn rows_of_a_transaction_that_commits_late_are_not_skipped(pool: PgPool) {
    let _serial = serial().await;
    feed::subscribe(&pool, "billing", Stream::Events, Start::Beginning)
        .await
        .expect("subscribe");
    let mut a = pool.begin().await.expect("begin a");
    insert(&mut a, &names("a", 3)).await;
    let mut b = pool.begin().await.expect("begin b");
    insert(&mut b, &names("b", 2)).await;
    b.commit().await.expect("commit b");

    let seen = read_and_ack(&pool, "billing", 100).await;
    assert!(
        seen.is_empty(),
        "B committed but A (older) is still open: nothing is readable yet, got {seen:?}"
    );
    let ids_by_id: Vec<String> =
        sqlx::query_scalar("SELECT sg_event_id FROM mailroom_events ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("ids");
    assert_eq!(
        ids_by_id,
        ["b-0", "b-1"],
        "B's rows are visible to plain queries"
    );

    a.commit().await.expect("commit a");
    let seen: Vec<String> = drain(&pool, "billing", 5)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(
        seen,
        ["a-0", "a-1", "a-2", "b-0", "b-1"],
        "commit order, all of them"
    );
    assert!(
        read_and_ack(&pool, "billing", 100).await.is_empty(),
        "and never again"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn rows_of_a_rolled_back_transaction_never_appear(pool: PgPool) {
    let _serial = serial().await;
    feed::subscribe(&pool, "crm", Stream::Events, Start::Beginning)
        .await
        .expect("subscribe");
    let mut gone = pool.begin().await.expect("begin");
    insert(&mut gone, &names("gone", 2)).await;
    let mut conn = pool.acquire().await.expect("conn");
    insert(&mut conn, &names("kept", 2)).await;
    gone.rollback().await.expect("rollback");
    let seen: Vec<String> = drain(&pool, "crm", 2)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(seen, ["kept-0", "kept-1"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(read_and_ack(&pool, "crm", 100).await.is_empty());
}

#[sqlx::test(migrations = "./migrations")]
async fn an_unacknowledged_page_is_read_again_and_acks_are_idempotent(pool: PgPool) {
    let _serial = serial().await;
    feed::subscribe(&pool, "billing", Stream::Events, Start::Beginning)
        .await
        .expect("subscribe");
    let mut conn = pool.acquire().await.expect("conn");
    insert(&mut conn, &names("e", 4)).await;

    wait_readable(&pool, "billing", 4).await;
    let first = feed::read(&mut conn, "billing", Stream::Events, 2, false)
        .await
        .expect("read");
    let again = feed::read(&mut conn, "billing", Stream::Events, 2, false)
        .await
        .expect("read again");
    assert_eq!(
        first.iter().map(|r| r.id).collect::<Vec<_>>(),
        again.iter().map(|r| r.id).collect::<Vec<_>>(),
        "a crash before the ack reads the same rows again"
    );
    let last = first.last().expect("two rows").position;
    assert!(feed::ack(&mut conn, "billing", last, 2).await.expect("ack"));
    assert!(
        !feed::ack(&mut conn, "billing", last, 2)
            .await
            .expect("ack again"),
        "the same ack twice changes nothing"
    );
    let behind = first[0].position;
    assert!(
        !feed::ack(&mut conn, "billing", behind, 1)
            .await
            .expect("older ack"),
        "a late ack of an older position does not move the consumer back"
    );
    let rest = feed::read(&mut conn, "billing", Stream::Events, 10, false)
        .await
        .expect("rest");
    assert_eq!(rest.len(), 2);
    let status = feed::status(&pool, Some("billing")).await.expect("status");
    assert_eq!(status[0].acked_rows, 2, "the repeated ack was not counted");
    assert_eq!(status[0].pending, 2);
    assert_eq!(status[0].position, last);
}

#[sqlx::test(migrations = "./migrations")]
async fn an_ack_past_the_horizon_is_refused(pool: PgPool) {
    let _serial = serial().await;
    feed::subscribe(&pool, "billing", Stream::Events, Start::Beginning)
        .await
        .expect("subscribe");
    let mut conn = pool.acquire().await.expect("conn");
    let err = feed::ack(
        &mut conn,
        "billing",
        Position {
            xid: u64::MAX / 2,
            id: 1,
        },
        1,
    )
    .await
    .expect_err("a position no reader could have read");
    assert!(err.to_string().contains("past the feed horizon"), "{err}");
}

#[sqlx::test(migrations = "./migrations")]
async fn unknown_consumers_and_wrong_streams_are_clear_errors(pool: PgPool) {
    let _serial = serial().await;
    let mut conn = pool.acquire().await.expect("conn");
    let err = feed::read(&mut conn, "nobody", Stream::Events, 10, false)
        .await
        .expect_err("no such consumer");
    assert!(
        format!("{err:?}").contains("no consumer named \\\"nobody\\\""),
        "{err:?}"
    );
    feed::subscribe(&pool, "mail", Stream::InboundEmails, Start::Beginning)
        .await
        .expect("subscribe");
    let err = feed::read(&mut conn, "mail", Stream::Events, 10, false)
        .await
        .expect_err("wrong stream");
    assert!(
        format!("{err:?}").contains("reads stream inbound_emails"),
        "{err:?}"
    );
    let err = feed::subscribe(&pool, "mail", Stream::Events, Start::Beginning)
        .await
        .expect_err("same name, other stream");
    assert!(format!("{err:?}").contains("already reads"), "{err:?}");
    feed::subscribe(&pool, "mail", Stream::InboundEmails, Start::Now)
        .await
        .expect("subscribing again is a no-op");
    let err = sqlx::query("SELECT mailroom_feed_subscribe('bad name', 'events')")
        .execute(&pool)
        .await
        .expect_err("names are checked");
    assert!(err.to_string().contains("check constraint"), "{err}");
}

/// Rows stored before the feed migration carry feed_xid 0: a consumer from the beginning reads
/// them first, in id order; one from now does not.
#[sqlx::test(migrations = "./migrations")]
async fn rows_from_before_the_feed_are_read_first_and_from_now_skips_them(pool: PgPool) {
    let _serial = serial().await;
    let mut conn = pool.acquire().await.expect("conn");
    insert(&mut conn, &names("old", 3)).await;
    sqlx::query("UPDATE mailroom_events SET feed_xid = '0'")
        .execute(&pool)
        .await
        .expect("as if stored before the migration");
    feed::subscribe(&pool, "late", Stream::Events, Start::Now)
        .await
        .expect("subscribe now");
    feed::subscribe(&pool, "all", Stream::Events, Start::Beginning)
        .await
        .expect("subscribe beginning");
    insert(&mut conn, &names("new", 2)).await;
    let all: Vec<String> = drain(&pool, "all", 5)
        .await
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert_eq!(all, ["old-0", "old-1", "old-2", "new-0", "new-1"]);
    let late: Vec<String> = drain(&pool, "late", 2)
        .await
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert_eq!(late, ["new-0", "new-1"]);
}

/// Two readers of one consumer, each reading and acknowledging in its own transaction: the
/// second waits for the first's commit and reads what comes after, never the same page.
#[sqlx::test(migrations = "./migrations")]
async fn two_readers_of_one_consumer_take_turns(pool: PgPool) {
    let _serial = serial().await;
    feed::subscribe(&pool, "billing", Stream::Events, Start::Beginning)
        .await
        .expect("subscribe");
    let mut conn = pool.acquire().await.expect("conn");
    insert(&mut conn, &names("e", 10)).await;
    drop(conn);

    wait_readable(&pool, "billing", 10).await;
    let mut first = pool.begin().await.expect("begin");
    let page1 = feed::read(&mut first, "billing", Stream::Events, 5, false)
        .await
        .expect("read");
    let second = tokio::spawn({
        let pool = pool.clone();
        async move { read_and_ack(&pool, "billing", 5).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second reader waits for the first"
    );
    feed::ack(
        &mut first,
        "billing",
        page1.last().expect("rows").position,
        5,
    )
    .await
    .expect("ack");
    first.commit().await.expect("commit");
    let page2 = second.await.expect("second reader");
    let ids1: BTreeSet<i64> = page1.iter().map(|r| r.id).collect();
    assert_eq!(page2.len(), 5);
    assert!(
        page2.iter().all(|(p, _)| !ids1.contains(&p.id)),
        "no row read twice"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn the_inbound_stream_carries_each_email_with_its_attachments(pool: PgPool) {
    let _serial = serial().await;
    feed::subscribe(&pool, "mail", Stream::InboundEmails, Start::Beginning)
        .await
        .expect("subscribe");
    let outcomes = handler(&pool)
        .handle(&[inbound_job("m-parsed", fixture("inbound_parsed.multipart"))])
        .await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, mailroom::handler::Outcome::Done)),
        "{outcomes:?}"
    );
    wait_readable(&pool, "mail", 1).await;
    let mut conn = pool.acquire().await.expect("conn");
    let rows = feed::read(&mut conn, "mail", Stream::InboundEmails, 10, true)
        .await
        .expect("read");
    assert_eq!(rows.len(), 1);
    let email: serde_json::Value = serde_json::from_str(&rows[0].json).expect("json");
    assert_eq!(email["id"], rows[0].id);
    assert!(email["subject"].is_string(), "{email}");
    let attachments = email["attachments"].as_array().expect("attachments");
    assert!(!attachments.is_empty(), "{email}");
    for a in attachments {
        let content = a["content_base64"].as_str().expect("content asked for");
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            content.replace('\n', ""),
        )
        .expect("base64");
        assert_eq!(bytes.len() as i64, a["size_bytes"].as_i64().expect("size"));
        assert_eq!(sha256_hex(&bytes), a["sha256"].as_str().expect("sha"));
    }
    let without = feed::read(&mut conn, "mail", Stream::InboundEmails, 10, false)
        .await
        .expect("read");
    let email: serde_json::Value = serde_json::from_str(&without[0].json).expect("json");
    assert!(email["attachments"][0].get("content_base64").is_none());
}

/// Many writers (long and short transactions, one in five rolled back, overlapping in time) and
/// one reader that reads and acknowledges while they write. At the end the reader has seen
/// every committed row exactly once, in strictly increasing positions, and no rolled-back row.
/// Seeded, so a failure reproduces; MAILROOM_FEED_RACE_SEED picks another seed.
#[sqlx::test(migrations = "./migrations")]
async fn a_reader_racing_concurrent_writers_sees_every_committed_row_once(pool: PgPool) {
    let _serial = serial().await;
    let seed: u64 = std::env::var("MAILROOM_FEED_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202);
    feed::subscribe(&pool, "race", Stream::Events, Start::Beginning)
        .await
        .expect("subscribe");
    const WRITERS: u64 = 6;
    const TXS_PER_WRITER: usize = 25;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + w);
            let mut committed = Vec::new();
            for t in 0..TXS_PER_WRITER {
                let ids = names(&format!("w{w}-t{t}"), rng.random_range(1..20));
                let mut tx = pool.begin().await.expect("begin");
                insert(&mut tx, &ids[..ids.len() / 2]).await;
                // Long transactions hold their ids while later ones commit.
                let hold = if rng.random_bool(0.2) {
                    150
                } else {
                    rng.random_range(0..10)
                };
                tokio::time::sleep(Duration::from_millis(hold)).await;
                insert(&mut tx, &ids[ids.len() / 2..]).await;
                if rng.random_bool(0.2) {
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                    committed.extend(ids);
                }
            }
            committed
        }));
    }
    let writers_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let pool = pool.clone();
        let writers_done = writers_done.clone();
        async move {
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while tokio::time::Instant::now() < deadline {
                let done = writers_done.load(std::sync::atomic::Ordering::SeqCst);
                let page = read_and_ack(&pool, "race", 7).await;
                if page.is_empty() {
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen.extend(page);
            }
            seen
        }
    });
    let mut committed = BTreeSet::new();
    for w in writers {
        committed.extend(w.await.expect("writer"));
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seen = reader.await.expect("reader");
    let missing = committed.len().saturating_sub(seen.len());
    seen.extend(drain(&pool, "race", missing).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        read_and_ack(&pool, "race", 100).await.is_empty(),
        "nothing more"
    );

    let positions: Vec<Position> = seen.iter().map(|(p, _)| *p).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions strictly increase"
    );
    let seen_ids: Vec<String> = seen.into_iter().map(|(_, id)| id).collect();
    let unique: BTreeSet<String> = seen_ids.iter().cloned().collect();
    assert_eq!(unique.len(), seen_ids.len(), "no row seen twice");
    assert_eq!(
        unique, committed,
        "exactly the committed rows (seed {seed})"
    );
    assert!(
        committed.len() > 500,
        "the race wrote enough: {}",
        committed.len()
    );
}

/// `notify_feed = true`: one notification per batch that stored something new, per stream, not
/// per row; a batch of redeliveries sends none.
#[sqlx::test(migrations = "./migrations")]
async fn notify_feed_sends_one_notification_per_batch_not_per_row(pool: PgPool) {
    let _serial = serial().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .expect("listener");
    listener.listen("mailroom_feed").await.expect("listen");
    let config = mailroom::handlers::SendgridHandlerConfig {
        notify_feed: true,
        ..Default::default()
    };
    let handler =
        mailroom::handlers::SendgridHandler::new(mailroom::Store::from_pool(pool.clone()), config)
            .expect("handler");
    assert!(handler
        .hook_names()
        .contains(&mailroom::handlers::sendgrid::FEED_NOTIFY_HOOK));
    let body = |prefix: &str| {
        let events: Vec<serde_json::Value> = (0..25)
            .map(|i| serde_json::json!({"event": "delivered", "sg_event_id": format!("{prefix}-{i}"), "email": "n@example.com"}))
            .collect();
        serde_json::to_vec(&events).expect("json")
    };
    let jobs = [
        events_job("m-1", body("one")),
        events_job("m-2", body("two")),
        inbound_job("m-3", fixture("inbound_parsed.multipart")),
    ];
    let outcomes = handler.handle(&jobs).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, mailroom::handler::Outcome::Done)),
        "{outcomes:?}"
    );
    let mut got = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        got.push(n.payload().to_string());
    }
    got.sort();
    assert_eq!(
        got,
        ["events", "inbound_emails"],
        "50 events and an email in one batch: one notification per stream"
    );
    // Redelivered: nothing new, no hook call, no notification.
    let outcomes = handler.handle(&jobs).await;
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, mailroom::handler::Outcome::Done)));
    let again = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(
        again.is_err(),
        "no notification for a batch of redeliveries: {again:?}"
    );
}
