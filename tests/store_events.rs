//! The events insert on its own: one UNNEST statement for any batch size, duplicates (in the
//! batch and already stored) skipped, and it shares the caller's transaction.

#[path = "data/store/support.rs"]
mod support;

use mailroom::store::{insert_events, EventRecord};
use mailroom_sendgrid::parse_events;
use sqlx::PgPool;
use support::*;

#[sqlx::test(migrations = "./migrations")]
async fn duplicates_are_skipped_and_counted_out(pool: PgPool) {
    let events = parse_events(&fixture("events_all_types.json")).expect("fixture parses");
    let dup = parse_events(&fixture("events_duplicate_ids.json")).expect("fixture parses");
    let records: Vec<EventRecord<'_>> = events
        .iter()
        .chain(&dup)
        .chain(&dup)
        .map(|event| EventRecord {
            event,
            sqs_message_id: "m-1",
            queue: QUEUE,
            received_at: None,
        })
        .collect();
    assert_eq!(records.len(), 14 + 6);
    assert_eq!(insert_events(&pool, &records).await.expect("insert"), 16);
    assert_eq!(insert_events(&pool, &records).await.expect("again"), 0);
    assert_eq!(insert_events(&pool, &[]).await.expect("empty"), 0);
    assert_eq!(count(&pool, "mailroom_events").await, 16);
}

#[sqlx::test(migrations = "./migrations")]
async fn a_rolled_back_transaction_stores_nothing(pool: PgPool) {
    let events = parse_events(&fixture("events_all_types.json")).expect("fixture parses");
    let records: Vec<EventRecord<'_>> = events
        .iter()
        .map(|event| EventRecord {
            event,
            sqs_message_id: "m-1",
            queue: QUEUE,
            received_at: None,
        })
        .collect();
    let mut tx = pool.begin().await.expect("begin");
    assert_eq!(insert_events(&mut *tx, &records).await.expect("insert"), 14);
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&pool, "mailroom_events").await, 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn ten_thousand_events_in_one_statement(pool: PgPool) {
    let body: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({"event": "delivered", "sg_event_id": format!("e{i}"), "email": "x@example.com"}))
        .collect();
    let events = parse_events(&serde_json::to_vec(&body).expect("json")).expect("parses");
    let records: Vec<EventRecord<'_>> = events
        .iter()
        .map(|event| EventRecord {
            event,
            sqs_message_id: "m-1",
            queue: QUEUE,
            received_at: None,
        })
        .collect();
    assert_eq!(
        insert_events(&pool, &records).await.expect("insert"),
        10_000
    );
}

/// Applications look events up by the send API's message id, a prefix of `sg_message_id`.
#[sqlx::test(migrations = "./migrations")]
async fn sg_message_id_prefix_lookups_can_use_an_index(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .expect("set");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT * FROM mailroom_events WHERE sg_message_id LIKE 'msg1.%'",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(
        plan.contains("mailroom_events_sg_message_id_prefix_idx"),
        "{plan}"
    );
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
    }];
    assert_eq!(insert_events(&pool, &records).await.expect("insert"), 1);
    let (occurred_at, ts): (Option<chrono::DateTime<chrono::Utc>>, serde_json::Value) =
        sqlx::query_as("SELECT occurred_at, payload->'timestamp' FROM mailroom_events")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(occurred_at, None);
    assert_eq!(ts, serde_json::json!(-8_000_000_000_000_000_i64));
}
