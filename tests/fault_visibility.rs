//! Fault injection: the visibility timeout expires while the handler is still running. The test
//! holds `LOCK TABLE mailroom_events IN ACCESS EXCLUSIVE MODE` in its own transaction, so the
//! worker's INSERT blocks; with the heartbeat disabled and a 1 s visibility timeout, SQS hands
//! the same messages out again and a second handler blocks behind the first. When the lock is
//! released both deliveries write: the duplicate writes no second row, and the queue drains.

mod fault_support;

use std::time::{Duration, Instant};

use fault_support::*;
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_expiry_mid_handler_redelivery_writes_no_second_row() {
    let admin = admin_url();
    let db_name = unique("fault_vis");
    let db = fresh_db(&admin, &db_name).await;
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("fault-vis");
    let url = create_queue(&sqs, &queue, 1, None).await;
    let dir = temp_dir("fault-vis");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.visibility_timeout_secs = 1;
    cfg.heartbeat_secs = 0;
    cfg.retry_intervals_secs = "[1, 1, 1, 1, 1]".into();
    let config = cfg.write(&dir);

    let mut lock = PgConnection::connect(&db).await.unwrap();
    let mut tx = lock.begin().await.unwrap();
    sqlx::query("LOCK TABLE mailroom_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();

    let (bodies, events) = event_messages("vis", 5, 10);
    send(&sqs, &url, &bodies).await;
    let mut worker = Worker::start_numbered(&config, 0);

    // Wait until at least two transactions of the worker are blocked on the lock: the first
    // delivery's and the redelivery's.
    let mut watch = PgConnection::connect(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut blocked = 0i64;
    while blocked < 2 {
        blocked = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query ILIKE '%INSERT INTO mailroom_events%'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        assert!(
            Instant::now() < deadline,
            "the redelivered message never reached the handler while the first ran ({blocked} blocked): {}",
            worker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.commit().await.unwrap();

    wait_stored(&db, events as i64, 0, 30, &mut worker).await;
    wait_drained(&sqs, &url, 30).await;
    let (rows, distinct, _, dead) = counts(&db).await.unwrap();
    assert_eq!(
        rows, events as i64,
        "the duplicate delivery wrote no second row"
    );
    assert_eq!(distinct, events as i64);
    assert_eq!(dead, 0);
    assert!(worker.terminate(15));
    drop(watch);
    drop(lock);
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}
