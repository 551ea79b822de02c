//! The events insert on its own: UNNEST statements of bounded size for any batch size,
//! duplicates (in the batch and already stored) skipped, and it shares the caller's transaction.

#[path = "data/store/support.rs"]
mod support;

use mailroom::store::{insert_events, EventRecord, EVENTS_PER_STATEMENT};
use mailroom_sendgrid::{parse_events, Event};
use sqlx::PgPool;
use support::*;

/// Each event as from one SQS message `m-1` on the test queue.
fn records(events: &[Event]) -> Vec<EventRecord<'_>> {
    events
        .iter()
        .map(|event| EventRecord {
            event,
            sqs_message_id: "m-1",
            queue: QUEUE,
            received_at: None,
            source: None,
        })
        .collect()
}

#[sqlx::test(migrations = "./migrations")]
async fn duplicates_are_skipped_and_counted_out(pool: PgPool) {
    let events = parse_events(&fixture("events_all_types.json")).expect("fixture parses");
    let dup = parse_events(&fixture("events_duplicate_ids.json")).expect("fixture parses");
    let all: Vec<Event> = events.iter().chain(&dup).chain(&dup).cloned().collect();
    let records = records(&all);
    assert_eq!(records.len(), 14 + 6);
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(
        insert_events(&mut conn, &records).await.expect("insert"),
        16
    );
    assert_eq!(insert_events(&mut conn, &records).await.expect("again"), 0);
    assert_eq!(insert_events(&mut conn, &[]).await.expect("empty"), 0);
    assert_eq!(count(&pool, "mailroom_events").await, 16);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rolled_back_transaction_stores_nothing(pool: PgPool) {
    let events = parse_events(&fixture("events_all_types.json")).expect("fixture parses");
    let records = records(&events);
    let mut tx = pool.begin().await.expect("begin");
    assert_eq!(insert_events(&mut tx, &records).await.expect("insert"), 14);
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&pool, "mailroom_events").await, 0);
}

/// 10,000 events go in chunks of EVENTS_PER_STATEMENT; a duplicate that lands in another chunk
/// than its first occurrence is still skipped, and the chunks share the transaction.
#[sqlx::test(migrations = "./migrations")]
async fn ten_thousand_events_in_bounded_statements_one_transaction(pool: PgPool) {
    const { assert!(EVENTS_PER_STATEMENT < 5_000, "the batch below spans chunks") };
    let body: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({"event": "delivered", "sg_event_id": format!("e{}", i % 9_000), "email": "x@example.com"}))
        .collect();
    let events = parse_events(&serde_json::to_vec(&body).expect("json")).expect("parses");
    let records = records(&events);
    let mut tx = pool.begin().await.expect("begin");
    assert_eq!(
        insert_events(&mut tx, &records).await.expect("insert"),
        9_000
    );
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&pool, "mailroom_events").await, 0);

    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(
        insert_events(&mut conn, &records).await.expect("insert"),
        9_000
    );
    assert_eq!(count(&pool, "mailroom_events").await, 9_000);
}

/// Applications look events up by the send API's message id, a prefix of `sg_message_id`. There
/// is no index for it any more (migration 20261203000020, docs/schema.md): the time window from
/// `mailroom_message_status` bounds the scan to the partitions (and BRIN ranges) of that message.
#[sqlx::test(migrations = "./migrations")]
async fn sg_message_id_prefix_lookups_in_a_time_window_read_only_its_partitions(pool: PgPool) {
    let body = br#"[
        {"event":"processed","sg_event_id":"p1","sg_message_id":"msg1.filter0001.1.0","email":"a@example.com","timestamp":1764600000},
        {"event":"delivered","sg_event_id":"d1","sg_message_id":"msg1.filter0001.1.0","email":"a@example.com","timestamp":1764600060},
        {"event":"delivered","sg_event_id":"d2","sg_message_id":"msg2.filter0001.1.0","email":"b@example.com","timestamp":1764600060}
    ]"#;
    let events = parse_events(body).expect("parses");
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(
        insert_events(&mut conn, &records(&events))
            .await
            .expect("insert"),
        3
    );
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT e.sg_event_id FROM mailroom_events e WHERE e.sg_message_id LIKE 'msg1.%' \
         AND e.occurred_at BETWEEN $1 AND $2 ORDER BY e.occurred_at",
    )
    .bind(chrono::DateTime::from_timestamp(1764600000, 0))
    .bind(chrono::DateTime::from_timestamp(1764600060, 0))
    .fetch_all(&mut *conn)
    .await
    .expect("query");
    assert_eq!(found, vec!["p1", "d1"]);
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT * FROM mailroom_events WHERE sg_message_id LIKE 'msg1.%' \
         AND occurred_at BETWEEN '2025-12-01' AND '2025-12-02'",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    let plan = plan.join("\n");
    // Only the partition(s) of that window are read, not every week.
    assert!(!plan.contains("mailroom_events_w2026"), "{plan}");
}

/// A timestamp Postgres cannot represent (before 4713 BC) must not fail the message: the event
/// is stored with `occurred_at` NULL and the original kept in the payload.
#[sqlx::test(migrations = "./migrations")]
async fn an_unrepresentable_timestamp_is_stored_as_null(pool: PgPool) {
    let body = br#"[{"event":"open","sg_event_id":"evt-ancient","timestamp":-8000000000000000}]"#;
    let events = parse_events(body).expect("parses");
    assert!(
        events[0].occurred_at.is_some(),
        "chrono can represent it, Postgres cannot"
    );
    let records = [EventRecord {
        event: &events[0],
        sqs_message_id: "m-1",
        queue: QUEUE,
        received_at: None,
        source: None,
    }];
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(insert_events(&mut conn, &records).await.expect("insert"), 1);
    let (occurred_at, ts): (Option<chrono::DateTime<chrono::Utc>>, serde_json::Value) =
        sqlx::query_as("SELECT occurred_at, payload->'timestamp' FROM mailroom_events")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(occurred_at, None);
    assert_eq!(ts, serde_json::json!(-8_000_000_000_000_000_i64));
}

/// Categories travel as Postgres array literals; every element must read back exactly, however
/// it is spelled, and in order.
#[sqlx::test(migrations = "./migrations")]
async fn categories_read_back_exactly_whatever_they_hold(pool: PgPool) {
    let tricky = [
        "q\"x",
        "back\\slash",
        "",
        "NULL",
        "{,}",
        " padded ",
        "ünï €",
        "a\u{0}b",
    ];
    let body = serde_json::json!([
        {"event": "open", "sg_event_id": "evt-tricky", "category": tricky},
        {"event": "open", "sg_event_id": "evt-none"},
        {"event": "open", "sg_event_id": "evt-empty", "category": []},
    ]);
    let events = parse_events(&serde_json::to_vec(&body).expect("json")).expect("parses");
    let records = records(&events);
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(insert_events(&mut conn, &records).await.expect("insert"), 3);
    let rows: Vec<(String, Vec<String>)> =
        sqlx::query_as("SELECT sg_event_id, categories FROM mailroom_events ORDER BY sg_event_id")
            .fetch_all(&pool)
            .await
            .expect("rows");
    let mut expected: Vec<String> = tricky.iter().map(|s| s.to_string()).collect();
    expected[7] = "ab".into(); // NUL is removed, as from every text column
    assert_eq!(
        rows,
        vec![
            ("evt-empty".to_string(), vec![]),
            ("evt-none".to_string(), vec![]),
            ("evt-tricky".to_string(), expected),
        ]
    );
}

/// The payload goes to Postgres as the event's own JSON text, so a number keeps every digit
/// SendGrid sent (a parsed f64 would round it), and custom args come through untouched.
#[sqlx::test(migrations = "./migrations")]
async fn payload_numbers_keep_every_digit(pool: PgPool) {
    let body = br#"[{"event":"open","sg_event_id":"evt-precise","n":1700000000.123456789123,"big":123456789012345678901234567890,"custom":{"k":[1,"two"]}}]"#;
    let events = parse_events(body).expect("parses");
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(
        insert_events(&mut conn, &records(&events))
            .await
            .expect("insert"),
        1
    );
    let (n, big, custom): (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT payload->>'n', payload->>'big', payload->'custom' FROM mailroom_events",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(n, "1700000000.123456789123");
    assert_eq!(big, "123456789012345678901234567890");
    assert_eq!(custom, serde_json::json!({"k": [1, "two"]}));
}
