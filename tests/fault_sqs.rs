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

/// Regression: with SQS not answering, SIGTERM took 45 s and 150 s to exit against
/// `shutdown_timeout_secs = 25` (systemd's TimeoutStopSec=40 then kills it), and the log blamed
/// "handlers still running" with abandoned=0. The exit is bounded by the shutdown timeout plus
/// the release grace whatever SQS does, and the log names the open long polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_while_sqs_does_not_answer() {
    let rustack = PrivateRustack::start();
    let endpoint = rustack.endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("fault-sqs-stop");
    let url = create_queue(&sqs, &queue, 5, None).await;
    let admin = admin_url();
    let db_name = unique("fault_sqs_stop");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("fault-sqs-stop");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.extra_queue = "receive_loops = 2".into();
    // Received messages wait in a long batch window, so at the shutdown they are in flight and
    // must be released to an SQS that does not answer.
    cfg.batch_window_ms = 60_000;
    let config = cfg.write(&dir); // shutdown_timeout_secs = 3
    let mut worker = Worker::start_numbered(&config, 0);
    worker.wait_log("\"receiving\"", 30).await;
    let (messages, _) = event_messages("sqs-stop", 3, 1);
    send(&sqs, &url, &messages).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while depth(&sqs, &url).await != (0, 3) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not receive them"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    rustack.signal("STOP");
    // Let the next long polls go out into the silence.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let started = std::time::Instant::now();
    worker.signal("TERM");
    let status = worker.wait(30).await;
    let took = started.elapsed();
    rustack.signal("CONT");
    let log = worker.log_text();
    assert!(status.success(), "exit 0: {log}");
    assert!(
        took <= Duration::from_secs(3 + 5 + 3),
        "exit took {took:?}, over shutdown_timeout_secs (3) + the release grace (5)"
    );
    assert!(
        log.contains("long polls still open"),
        "the log says what held the exit:\n{log}"
    );
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}
