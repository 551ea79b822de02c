//! Fault injection on Postgres, with the real worker:
//! - a PRIVATE Postgres cluster (initdb in a temp dir, its own port) restarted, and stopped for a
//!   few seconds, while messages flow: the worker retries (transient: never dead-lettered),
//!   stays up, and stores every event exactly once;
//! - INSERT on mailroom_events revoked from the worker's role (on the shared Postgres, in the
//!   test's own database and role): messages stay in SQS (not deleted, not dead-lettered), the
//!   log says why, and after GRANT they are stored.

mod fault_support;

use std::time::{Duration, Instant};

use fault_support::*;
use mailroom_envelope::Kind;
use sqlx::{Connection, PgConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_stopped_mid_run_loses_and_doubles_nothing() {
    let pg = PrivatePostgres::start();
    let admin = pg.admin_url();
    let db = fresh_db(&admin, "faultpg").await;
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("fault-pg");
    let url = create_queue(&sqs, &queue, 5, None).await;
    let dir = temp_dir("fault-pg");
    let config = WorkerConfig::new(&endpoint, &queue, &url, &db).write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);

    let mut sent = 0usize;
    let mut batch = |n: usize| {
        let bodies: Vec<String> = (0..n)
            .map(|_| {
                let body = events_body("pg", sent, 5);
                sent += 5;
                envelope(Kind::Events, "application/json", &body)
            })
            .collect();
        bodies
    };
    let rounds = if long() { 6 } else { 2 };
    for _ in 0..rounds {
        send(&sqs, &url, &batch(40)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg.restart();
        send(&sqs, &url, &batch(40)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg.stop();
        send(&sqs, &url, &batch(40)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            worker.alive(),
            "the worker stays up while Postgres is down: {}",
            worker.log_tail()
        );
        pg.start_again();
    }
    wait_stored(&db, sent as i64, 0, 90, &mut worker).await;
    wait_drained(&sqs, &url, 60).await;
    let (rows, distinct, _, dead) = counts(&db).await.unwrap();
    assert_eq!(rows, sent as i64, "every event stored once");
    assert_eq!(distinct, sent as i64);
    assert_eq!(dead, 0, "a database outage never dead-letters a message");
    assert!(
        worker.alive(),
        "no crash (loop): the same process ran throughout"
    );
    let log = worker.log_text();
    assert!(worker.terminate(15), "clean exit after SIGTERM");
    // Short outages are absorbed by the pool's acquire wait (a slow-acquire warning); longer
    // ones fail the transaction (a "storing ... failed" warning) and retry. Either is logged.
    assert!(
        log.contains("\"level\":\"WARN\"") || log.contains("\"level\":\"ERROR\""),
        "the outage was logged:\n{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `postgres://role@host:port/db` from an admin URL on the same server.
fn url_as(admin_url: &str, role: &str, db: &str) -> String {
    let rest = admin_url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(admin_url);
    let hostport = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    format!("postgres://{role}@{hostport}/{db}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_insert_keeps_messages_in_sqs_until_granted() {
    let admin = admin_url();
    let db_name = unique("fault_grant");
    let db = fresh_db(&admin, &db_name).await;
    let role = unique("mailroom_limited");
    let mut owner = PgConnection::connect(&db).await.unwrap();
    for sql in [
        format!("CREATE ROLE \"{role}\" LOGIN"),
        format!("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO \"{role}\""),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO \"{role}\""),
        format!("REVOKE INSERT ON mailroom_events FROM \"{role}\""),
    ] {
        sqlx::query(&sql).execute(&mut owner).await.unwrap();
    }

    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("fault-grant");
    let url = create_queue(&sqs, &queue, 5, None).await;
    let (bodies, events) = event_messages("grant", 6, 4);
    send(&sqs, &url, &bodies).await;
    let dir = temp_dir("fault-grant");
    let config =
        WorkerConfig::new(&endpoint, &queue, &url, &url_as(&admin, &role, &db_name)).write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);

    // Several attempts (retry interval 2 s) while INSERT is revoked.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !worker.log_text().contains("permission denied") {
        assert!(
            Instant::now() < deadline,
            "no permission error logged: {}",
            worker.log_tail()
        );
        assert!(worker.alive(), "{}", worker.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rows, _, _, dead) = counts(&db).await.unwrap();
    assert_eq!(rows, 0);
    assert_eq!(
        dead, 0,
        "a missing privilege is not the message's fault: nothing dead-lettered"
    );
    let (visible, inflight) = depth(&sqs, &url).await;
    assert_eq!(visible + inflight, 6, "every message is still in SQS");
    let log = worker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("permission denied"))
        .unwrap_or_default();
    assert!(
        line.contains("mailroom_events"),
        "the error names the table: {line}"
    );

    sqlx::query(&format!("GRANT INSERT ON mailroom_events TO \"{role}\""))
        .execute(&mut owner)
        .await
        .unwrap();
    wait_stored(&db, events as i64, 0, 30, &mut worker).await;
    wait_drained(&sqs, &url, 30).await;
    let (rows, distinct, _, dead) = counts(&db).await.unwrap();
    assert_eq!((rows, distinct, dead), (events as i64, events as i64, 0));
    assert!(worker.terminate(15));
    drop(owner);
    drop_db(&admin, &db_name).await;
    if let Ok(mut a) = PgConnection::connect(&admin).await {
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
            .execute(&mut a)
            .await;
    }
    let _ = std::fs::remove_dir_all(dir);
}
