//! Fault injection on the SQS-compatible server: a private rustack on a fixed port, killed under
//! the running worker and started again. rustack keeps queues in memory, so after the restart
//! the test recreates the queue (same name, same URL) and sends the rest of the load. What this
//! proves: the worker backs off instead of crashing or spinning, logs once when SQS goes away
//! and once when it answers again (not once per failed poll), and resumes by itself.

mod fault_support;

use std::time::Duration;

use fault_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_server_restarted_mid_run_worker_backs_off_and_resumes() {
    let mut rustack = PrivateRustack::start();
    let endpoint = rustack.endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("fault-sqs");
    let url = create_queue(&sqs, &queue, 5, None).await;
    let admin = admin_url();
    let db_name = unique("fault_sqs");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("fault-sqs");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    // 4 receive loops, so "once per state change" is not an accident of there being one.
    cfg.extra_queue = "receive_loops = 4".into();
    let config = cfg.write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);

    let (first, first_events) = event_messages("sqs-a", 30, 3);
    send(&sqs, &url, &first).await;
    wait_stored(&db, first_events as i64, 0, 30, &mut worker).await;
    wait_drained(&sqs, &url, 20).await;

    rustack.kill();
    let down = if long() { 30 } else { 6 };
    tokio::time::sleep(Duration::from_secs(down)).await;
    assert!(
        worker.alive(),
        "the worker survives SQS going away: {}",
        worker.log_tail()
    );
    let outage_log = worker.log_text();

    rustack.start_again();
    let url_again = create_queue(&sqs, &queue, 5, None).await;
    assert_eq!(url_again, url, "same queue URL after the restart");
    let (second, second_events) = event_messages("sqs-b", 30, 3);
    send(&sqs, &url, &second).await;
    let total = (first_events + second_events) as i64;
    wait_stored(&db, total, 0, 60, &mut worker).await;
    let (rows, distinct, _, dead) = counts(&db).await.unwrap();
    assert_eq!((rows, distinct, dead), (total, total, 0));

    let log = worker.log_text();
    assert!(worker.terminate(15), "clean exit after SIGTERM");
    let failing = outage_log
        .lines()
        .filter(|l| l.contains("backing off"))
        .count();
    assert!(
        (1..=4).contains(&failing),
        "SQS going away is logged once per receive loop at most, not per retry ({failing} lines over {down}s):\n{outage_log}"
    );
    let receive_errors = outage_log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        .count();
    assert!(
        receive_errors <= 12,
        "no log line per failed poll: {receive_errors} warnings/errors in {down}s:\n{outage_log}"
    );
    assert!(
        log.contains("receiving again"),
        "recovery is logged:\n{log}"
    );
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}
