//! The operations-side SQL (`mailroom dead-letters list|replay`, the readiness ping) against a
//! real Postgres: letters kept by the sink read back whole, and can be re-reasoned and removed.

use std::collections::HashMap;

use mailroom::handler::DeadLetter;
use mailroom::store::{admin, Store};
use sqlx::PgPool;

fn letter(message_id: &str, reason: &str) -> DeadLetter {
    DeadLetter {
        queue: "sendgrid-inbound".into(),
        message_id: message_id.into(),
        body: format!("{{\"body\":\"{message_id}\"}}"),
        attributes: HashMap::from([("mailroom.kind".to_string(), "inbound".to_string())]),
        receive_count: 2,
        handler: Some("sendgrid".into()),
        reason: reason.into(),
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn dead_letters_list_update_and_remove(pool: PgPool) {
    admin::ping(&pool).await.expect("ping");
    let store = Store::from_pool(pool.clone());
    store
        .keep_dead_letters(&[
            letter("m-1", "inbound parse: a"),
            letter("m-2", "inbound parse: b"),
        ])
        .await
        .expect("keep");

    let all = admin::dead_letters(&pool, None, 100).await.expect("list");
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].sqs_message_id, "m-1");
    assert_eq!(all[0].body, "{\"body\":\"m-1\"}");
    assert_eq!(all[0].attributes, letter("m-1", "").attributes);
    assert_eq!(all[0].receive_count, 2);
    assert_eq!(all[0].handler.as_deref(), Some("sendgrid"));
    assert_eq!(all[0].reason, "inbound parse: a");
    assert_eq!(
        admin::dead_letters(&pool, None, 1)
            .await
            .expect("limit")
            .len(),
        1
    );

    let picked = admin::dead_letters(&pool, Some(&[all[1].id]), 100)
        .await
        .expect("by id");
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].sqs_message_id, "m-2");

    admin::record_failed_replay(&pool, all[1].id, "replay failed: \0still bad", "ops")
        .await
        .expect("update");
    let again = admin::dead_letters(&pool, Some(&[all[1].id]), 100)
        .await
        .expect("by id");
    assert_eq!(again[0].reason, "replay failed: still bad");
    // Regression: replay overwrote the failure time and kept the tries count at 1.
    assert_eq!(again[0].attempts, 2, "a failed replay is one more attempt");
    assert_eq!(
        again[0].first_failed_at, picked[0].first_failed_at,
        "the first failure is kept"
    );
    assert!(again[0].failed_at >= picked[0].failed_at);
    assert_eq!(again[0].replayed_by.as_deref(), Some("ops"));

    assert!(admin::remove_dead_letter(&pool, all[0].id)
        .await
        .expect("remove"));
    assert!(!admin::remove_dead_letter(&pool, all[0].id)
        .await
        .expect("remove twice"));
    assert_eq!(
        admin::dead_letters(&pool, None, 100)
            .await
            .expect("list")
            .len(),
        1
    );
}
