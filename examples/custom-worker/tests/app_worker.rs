//! The example application's worker (`mailroom-app`: Mailroom's builder with an orders handler
//! and a SendGrid hook), run as a real process against rustack and Postgres with the same fault
//! harness as Mailroom's own fault tests. What it proves:
//! - the hook's effect happens exactly once per event under duplicated messages, the same
//!   sg_event_id in several batches, two worker processes, and a kill -9 between the hook and
//!   the commit;
//! - a failing hook leaves neither the events nor its own writes, and the message comes back;
//! - the orders handler stores each order once and dead-letters a bad one with its reason;
//! - `check` refuses a bad `[handlers.orders]` section exactly as `run` does.

#[path = "../../../tests/fault_support/mod.rs"]
mod fault_support;

use std::path::Path;
use std::time::Duration;

use fault_support::*;
use mailroom_envelope::Kind;
use sqlx::{Connection, PgConnection};

async fn app_db(name: &str) -> (String, String) {
    let admin = admin_url();
    let db = fresh_db(&admin, &unique(name)).await;
    (admin, db)
}

async fn apply_app_schema(db: &str) {
    let mut conn = PgConnection::connect(db).await.expect("connect");
    sqlx::raw_sql(mailroom_example_app::SCHEMA)
        .execute(&mut conn)
        .await
        .expect("app schema");
}

async fn scalar(db: &str, sql: &str) -> i64 {
    let mut conn = PgConnection::connect(db).await.expect("connect");
    sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect(sql)
}

/// Effects per event: (events with exactly one effect, events with more than one).
async fn effects(db: &str) -> (i64, i64) {
    let once = scalar(
        db,
        "SELECT count(*) FROM (SELECT sg_event_id FROM app_email_status_changes GROUP BY 1 HAVING count(*) = 1) t",
    )
    .await;
    let more = scalar(
        db,
        "SELECT count(*) FROM (SELECT sg_event_id FROM app_email_status_changes GROUP BY 1 HAVING count(*) > 1) t",
    )
    .await;
    (once, more)
}

/// A batch of SendGrid events: for each `i` in `ids`, a suppressing event for
/// `user{i}@example.com` (cycling through the suppressing types), a `delivered` (no effect) and a
/// `bounce` of type `blocked` (no effect).
fn sendgrid_batch(ids: impl IntoIterator<Item = usize>) -> Vec<u8> {
    let kinds = [
        "bounce",
        "dropped",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
    ];
    let mut events = Vec::new();
    for i in ids {
        let mut e = serde_json::json!({
            "email": format!("User{i}@Example.com"),
            "timestamp": 1_764_000_000 + i as i64,
            "event": kinds[i % kinds.len()],
            "sg_event_id": format!("supp-{i}"),
            "sg_message_id": format!("msg-{i}.filter"),
        });
        if kinds[i % kinds.len()] == "bounce" {
            e["type"] = "bounce".into();
        }
        events.push(e);
        events.push(serde_json::json!({
            "email": format!("user{i}@example.com"), "timestamp": 1_764_000_000,
            "event": "delivered", "sg_event_id": format!("deliv-{i}"),
        }));
        events.push(serde_json::json!({
            "email": format!("user{i}@example.com"), "timestamp": 1_764_000_000,
            "event": "bounce", "type": "blocked", "sg_event_id": format!("blocked-{i}"),
        }));
    }
    serde_json::to_vec(&events).unwrap()
}

fn events_message(ids: impl IntoIterator<Item = usize>) -> String {
    envelope(Kind::Events, "application/json", &sendgrid_batch(ids))
}

fn write_config(dir: &Path, cfg: &WorkerConfig) -> std::path::PathBuf {
    cfg.write(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_acts_once_per_event_under_duplicates_overlapping_batches_and_two_workers() {
    let sqs = sqs_client(&endpoint()).await;
    let queue = unique("app-hook");
    let url = create_queue(&sqs, &queue, 5, None).await;
    let (admin, db) = app_db("app_hook").await;
    let dir = temp_dir("app-hook");
    let mut cfg = WorkerConfig::new(&endpoint(), &queue, &url, &db);
    cfg.concurrency = 8;
    let config = write_config(&dir, &cfg);
    migrate(&config);
    apply_app_schema(&db).await;

    // 40 events with an effect, in 20 messages of 4; every message sent twice (duplicate
    // messages), and 10 more messages that overlap the first ones (the same sg_event_ids in
    // other batches).
    let mut bodies = Vec::new();
    for m in 0..20 {
        let ids: Vec<usize> = (m * 2..m * 2 + 4).map(|i| i % 40).collect();
        bodies.push(events_message(ids.clone()));
        bodies.push(events_message(ids));
    }
    for m in 0..10 {
        bodies.push(events_message((m * 4..m * 4 + 4).map(|i| (i + 1) % 40)));
    }
    send(&sqs, &url, &bodies).await;

    let mut first = Worker::start_numbered(&config, 0);
    let mut second = Worker::start_numbered(&config, 1);
    // 40 suppressing + 40 delivered + 40 blocked events.
    wait_stored(&db, 120, 0, 60, &mut first).await;
    wait_drained(&sqs, &url, 60).await;
    assert!(first.terminate(15), "first worker exits cleanly");
    assert!(second.terminate(15), "second worker exits cleanly");

    let (once, more) = effects(&db).await;
    assert_eq!(more, 0, "no event had a second effect");
    assert_eq!(once, 40, "every suppressing event had its effect");
    let blocked = scalar(
        &db,
        "SELECT count(*) FROM app_users WHERE email_status = 'ok'",
    )
    .await;
    assert_eq!(blocked, 0, "no row is created for non-suppressing events");
    let marked = scalar(
        &db,
        "SELECT count(*) FROM app_users WHERE email_status <> 'ok'",
    )
    .await;
    assert_eq!(marked, 40, "each address marked, lower-cased");
    drop_db(&admin, db.rsplit('/').next().unwrap()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_the_hook_and_the_commit_leaves_nothing_then_the_hook_acts_once() {
    let sqs = sqs_client(&endpoint()).await;
    let queue = unique("app-kill");
    let url = create_queue(&sqs, &queue, 5, None).await;
    let (admin, db) = app_db("app_kill").await;
    let dir = temp_dir("app-kill");
    let mut cfg = WorkerConfig::new(&endpoint(), &queue, &url, &db);
    cfg.visibility_timeout_secs = 3;
    cfg.heartbeat_secs = 1;
    let config = write_config(&dir, &cfg);
    migrate(&config);
    apply_app_schema(&db).await;
    send(&sqs, &url, &[events_message(0..5)]).await;

    let mut paused = Worker::start(
        &config,
        dir.join("paused.log"),
        &[("APP_HOOK_PAUSE_BEFORE_COMMIT_MS", "30000")],
    );
    paused
        .wait_log("hook done, pausing before commit", 30)
        .await;
    paused.kill9();
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM mailroom_events").await,
        0,
        "the killed transaction stored no event"
    );
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM app_email_status_changes").await,
        0,
        "and none of the hook's writes"
    );

    let mut worker = Worker::start_numbered(&config, 1);
    wait_stored(&db, 15, 0, 60, &mut worker).await;
    wait_drained(&sqs, &url, 30).await;
    assert!(worker.terminate(15));
    assert_eq!(
        effects(&db).await,
        (5, 0),
        "each event's effect once, after the crash"
    );
    drop_db(&admin, db.rsplit('/').next().unwrap()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_stores_nothing_and_the_message_comes_back() {
    let sqs = sqs_client(&endpoint()).await;
    let queue = unique("app-fail");
    let url = create_queue(&sqs, &queue, 10, None).await;
    let (admin, db) = app_db("app_fail").await;
    let dir = temp_dir("app-fail");
    let mut cfg = WorkerConfig::new(&endpoint(), &queue, &url, &db);
    cfg.retry_intervals_secs = "[1, 1, 1, 1, 1, 1, 1, 1]".into();
    let config = write_config(&dir, &cfg);
    migrate(&config);
    // No app schema yet: the hook's UPDATE fails (undefined table).
    send(&sqs, &url, &[events_message(0..3)]).await;

    let mut worker = Worker::start_numbered(&config, 0);
    worker.wait_log("sendgrid hook suppressions", 30).await;
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM mailroom_events").await,
        0,
        "the hook's error rolled the events back"
    );
    assert!(
        dead_letters(&db).await.is_empty(),
        "a hook failure is a retry, not a dead letter"
    );

    // The application's tables arrive; the message comes back and is stored, hook and all.
    apply_app_schema(&db).await;
    wait_stored(&db, 9, 0, 60, &mut worker).await;
    wait_drained(&sqs, &url, 30).await;
    assert!(worker.terminate(15));
    assert_eq!(effects(&db).await, (3, 0));
    drop_db(&admin, db.rsplit('/').next().unwrap()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_stored_once_and_a_bad_order_is_a_dead_letter_with_its_reason() {
    let sqs = sqs_client(&endpoint()).await;
    let events_queue = unique("app-ev");
    let events_url = create_queue(&sqs, &events_queue, 5, None).await;
    let orders_queue = unique("app-orders");
    let orders_url = create_queue(&sqs, &orders_queue, 5, None).await;
    let (admin, db) = app_db("app_orders").await;
    let dir = temp_dir("app-orders");
    let mut cfg = WorkerConfig::new(&endpoint(), &events_queue, &events_url, &db);
    cfg.extra_queue = format!(
        "[[queue]]\nname = \"{orders_queue}\"\nurl = \"{orders_url}\"\nhandler = \"orders\"\n\
         message_format = \"plain\"\nwait_time_secs = 1\nretry_intervals_secs = [1]\n\
         [handlers.orders]\ndefault_currency = \"EUR\"\nmax_total_cents = 100000\n"
    );
    let config = write_config(&dir, &cfg);
    migrate(&config);
    apply_app_schema(&db).await;

    let mut bodies = Vec::new();
    for i in 0..5 {
        let order = format!(
            r#"{{"order_id":"o-{i}","customer_email":"c{i}@example.com","total_cents":{}}}"#,
            100 * (i + 1)
        );
        bodies.push(order.clone());
        bodies.push(order); // a duplicate message
    }
    bodies.push(r#"{"order_id": "o-bad", "total": "lots"}"#.to_string());
    bodies.push(
        r#"{"order_id":"o-big","customer_email":"b@example.com","total_cents":999999}"#.to_string(),
    );
    send(&sqs, &orders_url, &bodies).await;

    let mut worker = Worker::start_numbered(&config, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while scalar(&db, "SELECT count(*) FROM app_orders").await < 5
        || dead_letters(&db).await.len() < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "orders not stored: {}",
            worker.log_tail()
        );
        assert!(worker.alive(), "worker died: {}", worker.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_drained(&sqs, &orders_url, 30).await;
    assert!(worker.terminate(15));
    assert_eq!(scalar(&db, "SELECT count(*) FROM app_orders").await, 5);
    assert_eq!(
        scalar(
            &db,
            "SELECT count(*) FROM app_orders WHERE currency = 'EUR'"
        )
        .await,
        5,
        "[handlers.orders] default_currency applied"
    );
    let reasons: Vec<String> = dead_letters(&db)
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("not a valid order")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("above max_total_cents")),
        "{reasons:?}"
    );
    drop_db(&admin, db.rsplit('/').next().unwrap()).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `check` and `run` refuse the same handler configs, for a custom binary's own handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_wherever_run_would_on_handler_config() {
    let sqs = sqs_client(&endpoint()).await;
    let queue = unique("app-check");
    let url = create_queue(&sqs, &queue, 5, None).await;
    let (admin, db) = app_db("app_check").await;
    let dir = temp_dir("app-check");
    let base = WorkerConfig::new(&endpoint(), &queue, &url, &db);
    migrate(&base.write(&dir));

    let cases = [
        (
            "unknown key in [handlers.orders]",
            "[handlers.orders]\ndefault_curency = \"EUR\"\n",
            "default_curency",
        ),
        (
            "a value the factory refuses",
            "[handlers.orders]\ndefault_currency = \"euro\"\n",
            "three-letter code",
        ),
        (
            "a section for no registered handler",
            "[handlers.ordres]\n",
            "registered: orders, sendgrid",
        ),
        (
            "a queue naming no registered handler",
            "[[queue]]\nname = \"x\"\nurl = \"http://unused\"\nhandler = \"sendgird\"\n",
            "no handler named \"sendgird\"",
        ),
    ];
    for (what, extra, says) in cases {
        let mut cfg = base.clone();
        cfg.extra_queue = extra.to_string();
        let config = cfg.write(&dir);
        let (status, out, err) = mailroom(&config, &["check"]);
        assert!(!status.success(), "check passed {what}:\n{out}{err}");
        assert!(
            out.contains(says),
            "check on {what} does not say {says:?}:\n{out}"
        );
        let (status, out, err) = mailroom(&config, &["run"]);
        assert!(!status.success(), "run started with {what}:\n{out}{err}");
        assert!(
            err.contains(says),
            "run on {what} does not say {says:?}:\n{err}"
        );
    }
    drop_db(&admin, db.rsplit('/').next().unwrap()).await;
    let _ = std::fs::remove_dir_all(dir);
}
