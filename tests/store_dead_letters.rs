//! The dead-letter store: letters are kept whole (exact body, attributes, reason) in one
//! statement, and a message dead-lettered again updates its row instead of adding one.

#[path = "data/store/support.rs"]
mod support;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mailroom::handler::{DeadLetter, DeadLetterSink};
use mailroom::store::Store;
use sqlx::PgPool;

fn letter(message_id: &str, body: &str, reason: &str, receive_count: u32) -> DeadLetter {
    DeadLetter {
        queue: "sendgrid-events".into(),
        message_id: message_id.into(),
        body: body.into(),
        attributes: HashMap::from([
            ("mailroom.kind".to_string(), "events".to_string()),
            ("mailroom.version".to_string(), "1".to_string()),
        ]),
        receive_count,
        handler: Some("sendgrid".into()),
        reason: reason.into(),
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    queue: String,
    sqs_message_id: String,
    body: String,
    attributes: serde_json::Value,
    receive_count: i32,
    handler: Option<String>,
    reason: String,
    failed_at: DateTime<Utc>,
}

async fn rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as("SELECT * FROM mailroom_dead_letters ORDER BY sqs_message_id")
        .fetch_all(pool)
        .await
        .expect("rows")
}

#[sqlx::test(migrations = "./migrations")]
async fn letters_are_kept_whole_and_re_keeping_updates(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    let body = r#"{"v":1,"kind":"events","body":"W3siZXZlbnQiOi"}  "#;
    let n = store
        .keep_dead_letters(&[
            letter("m-1", body, "event webhook body: not JSON", 1),
            letter("m-2", "x", "r2", 3),
        ])
        .await
        .expect("keep");
    assert_eq!(n, 2);
    let first = rows(&pool).await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].queue, "sendgrid-events");
    assert_eq!(first[0].sqs_message_id, "m-1");
    assert_eq!(first[0].body, body, "body exact, whitespace included");
    assert_eq!(
        first[0].attributes,
        serde_json::json!({"mailroom.kind": "events", "mailroom.version": "1"})
    );
    assert_eq!(first[0].receive_count, 1);
    assert_eq!(first[0].handler.as_deref(), Some("sendgrid"));
    assert_eq!(first[0].reason, "event webhook body: not JSON");

    // The same message dead-lettered again (its SQS delete was lost): one row, updated.
    DeadLetterSink::keep(&store, &[letter("m-1", body, "second reason", 4)])
        .await
        .expect("keep again");
    let second = rows(&pool).await;
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].reason, "second reason");
    assert_eq!(second[0].receive_count, 4);
    assert!(second[0].failed_at >= first[0].failed_at);
    assert_eq!(second[1].reason, "r2", "other rows untouched");
}

#[sqlx::test(migrations = "./migrations")]
async fn duplicates_in_one_call_collapse_to_the_last(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    store
        .keep_dead_letters(&[
            letter("m-1", "a", "first", 1),
            letter("m-1", "a", "last", 2),
        ])
        .await
        .expect("keep");
    let r = rows(&pool).await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].reason, "last");
    assert_eq!(store.keep_dead_letters(&[]).await.expect("empty"), 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn nul_in_a_letter_is_removed_not_fatal(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    store
        .keep_dead_letters(&[letter("m-nul", "a\0b", "bad\0reason", 1)])
        .await
        .expect("keep");
    let r = rows(&pool).await;
    assert_eq!(r[0].body, "ab");
    assert_eq!(r[0].reason, "badreason");
}

#[sqlx::test(migrations = "./migrations")]
async fn the_sink_reports_an_outage_as_an_error(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    pool.close().await;
    let err = DeadLetterSink::keep(&store, &[letter("m-1", "a", "r", 1)])
        .await
        .expect_err("closed");
    assert!(err.to_string().contains("keeping dead letters"), "{err}");
}
