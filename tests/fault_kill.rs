//! Fault injection: `kill -9` of the real worker at random points under a steady load, repeated
//! (3 kills here, 10 with MAILROOM_LONG_FAULTS=1). Whatever was in flight when the process died
//! (received, half-written, committed but not yet deleted) comes back after the visibility
//! timeout and is stored again idempotently: at the end every event is stored exactly once
//! (rows == distinct sg_event_ids == sent) and nothing is dead-lettered.

mod fault_support;

use std::time::Duration;

use fault_support::*;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_points_stores_every_event_exactly_once() {
    let kills = if long() { 10 } else { 3 };
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("fault-kill");
    let url = create_queue(&sqs, &queue, 3, None).await;
    let admin = admin_url();
    let db_name = unique("fault_kill");
    let db = fresh_db(&admin, &db_name).await;

    // Steady load: a sender puts 20 messages of 1-25 events on the queue every 100 ms.
    let rounds = if long() { 60 } else { 25 };
    let (sender_sqs, sender_url) = (sqs.clone(), url.clone());
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        let mut next = 0usize;
        for r in 0..rounds {
            let bodies: Vec<String> = (0..20)
                .map(|m| {
                    let count = 1 + (r * 7 + m * 13) % 25;
                    let body = events_body("kill", next, count);
                    next += count;
                    sent += count;
                    envelope(mailroom_envelope::Kind::Events, "application/json", &body)
                })
                .collect();
            send(&sender_sqs, &sender_url, &bodies).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });

    let dir = temp_dir("fault-kill");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.visibility_timeout_secs = 3;
    cfg.heartbeat_secs = 1;
    let config = cfg.write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);
    for k in 0..kills {
        let wait = rand::rng().random_range(150..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert!(
            worker.alive(),
            "worker died on its own: {}",
            worker.log_tail()
        );
        worker.kill9();
        worker = Worker::start_numbered(&config, k + 1);
    }
    let sent = sender.await.unwrap() as i64;
    wait_stored(&db, sent, 0, 90, &mut worker).await;
    // Redeliveries of already-stored messages come back and are handled (no new rows) until
    // the queue is empty.
    wait_drained(&sqs, &url, 60).await;
    let (rows, distinct, _, dead) = counts(&db).await.unwrap();
    assert!(worker.terminate(15), "clean exit after SIGTERM");
    assert_eq!(rows, sent, "every event stored once: rows == sent");
    assert_eq!(distinct, sent, "no event lost: distinct == sent");
    assert_eq!(dead, 0, "nothing dead-lettered by a crash");
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}
