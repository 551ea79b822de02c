//! The engine against a real SQS-compatible server (rustack, from scripts/test.sh): delete after
//! success, retries by receive count, dead-lettering after the last interval, heartbeat,
//! backpressure, shutdown release, and two workers sharing a queue.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailroom::handler::Outcome;
use mailroom_envelope::Kind;

#[tokio::test]
async fn handled_message_is_deleted() {
    let sqs = sqs().await;
    let name = unique_dashed("handled");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 3).await;
    let handler = Recording::done();
    let dead = Arc::new(MemoryDeadLetters::default());
    let running = start(config(&name, &url, ""), handler.clone(), dead.clone()).await;
    eventually(20, "3 messages handled", || handler.seen().len() >= 3).await;
    let report = running.shutdown().await;
    assert_eq!(report.released, 0);
    assert_eq!(
        depth(&sqs, &url).await,
        (0, 0),
        "every handled message is deleted"
    );
    assert_eq!(handler.seen().len(), 3, "each handled once");
    assert!(dead.kept.lock().unwrap().is_empty());
}

#[tokio::test]
async fn failing_message_returns_after_its_retry_interval_then_is_dead_lettered() {
    let sqs = sqs().await;
    let name = unique_dashed("retry");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 1).await;
    let handler = Recording::new(
        Arc::new(|_| Outcome::retry("downstream said no")),
        Duration::ZERO,
    );
    let dead = Arc::new(MemoryDeadLetters::default());
    let started = std::time::Instant::now();
    let running = start(
        config(&name, &url, "retry_intervals_secs = [1, 2]"),
        handler.clone(),
        dead.clone(),
    )
    .await;
    eventually(30, "dead-lettered", || {
        !dead.kept.lock().unwrap().is_empty()
    })
    .await;
    let elapsed = started.elapsed();
    running.shutdown().await;

    let counts: Vec<u32> = handler.seen().iter().map(|(_, c, _)| *c).collect();
    assert_eq!(
        counts,
        vec![1, 2, 3],
        "receive count rises with each attempt, three attempts in all"
    );
    assert!(
        elapsed >= Duration::from_secs(3),
        "the retry intervals (1 s, 2 s) were waited: {elapsed:?}"
    );
    let kept = dead.kept.lock().unwrap().clone();
    assert_eq!(kept.len(), 1);
    assert!(
        kept[0]
            .reason
            .contains("gave up after 3 attempts: downstream said no"),
        "{}",
        kept[0].reason
    );
    assert_eq!(kept[0].receive_count, 3);
    assert!(
        kept[0].body.contains("\"mailroom\""),
        "the body is kept whole"
    );
    assert_eq!(
        depth(&sqs, &url).await,
        (0, 0),
        "deleted from SQS once kept"
    );
}

#[tokio::test]
async fn dead_letter_outcome_is_kept_then_deleted() {
    let sqs = sqs().await;
    let name = unique_dashed("dlq");
    let url = create_queue(&sqs, &name, 30, None).await;
    sqs.send_message()
        .queue_url(&url)
        .message_body("this is not an envelope")
        .send()
        .await
        .unwrap();
    let handler = Recording::done();
    let dead = Arc::new(MemoryDeadLetters::default());
    let running = start(config(&name, &url, ""), handler.clone(), dead.clone()).await;
    eventually(20, "dead-lettered", || {
        !dead.kept.lock().unwrap().is_empty()
    })
    .await;
    running.shutdown().await;
    assert!(
        handler.seen().is_empty(),
        "an undecodable message never reaches the handler"
    );
    let kept = dead.kept.lock().unwrap().clone();
    assert_eq!(kept[0].body, "this is not an envelope");
    assert!(
        kept[0].reason.starts_with("envelope: "),
        "{}",
        kept[0].reason
    );
    assert_eq!(depth(&sqs, &url).await, (0, 0));
}

#[tokio::test]
async fn panicking_handler_is_a_retry_not_a_crash() {
    let sqs = sqs().await;
    let name = unique_dashed("panic");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 1).await;
    let handler = Recording::new(
        Arc::new(|job| {
            if job.receive_count == 1 {
                panic!("boom")
            } else {
                Outcome::Done
            }
        }),
        Duration::ZERO,
    );
    let dead = Arc::new(MemoryDeadLetters::default());
    let running = start(
        config(&name, &url, "retry_intervals_secs = [1]"),
        handler.clone(),
        dead.clone(),
    )
    .await;
    eventually(20, "handled on the second attempt", || {
        handler.seen().len() >= 2
    })
    .await;
    running.shutdown().await;
    assert_eq!(depth(&sqs, &url).await, (0, 0));
    assert!(dead.kept.lock().unwrap().is_empty());
}

#[tokio::test]
async fn heartbeat_keeps_a_slow_message_from_being_redelivered() {
    let sqs = sqs().await;
    let name = unique_dashed("heartbeat");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 1).await;
    let handler = Recording::new(Arc::new(|_| Outcome::Done), Duration::from_secs(8));
    let dead = Arc::new(MemoryDeadLetters::default());
    let running = start(
        config(
            &name,
            &url,
            "visibility_timeout_secs = 3\nheartbeat_secs = 1",
        ),
        handler.clone(),
        dead,
    )
    .await;
    eventually(10, "the worker received it", || running.inflight.len() == 1).await;
    // While the handler runs for more than two visibility timeouts, nobody else can receive it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut stolen = 0;
    while tokio::time::Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        stolen += out.messages.unwrap_or_default().len();
    }
    eventually(15, "handled", || !handler.seen().is_empty()).await;
    running.shutdown().await;
    assert_eq!(
        stolen, 0,
        "the message stayed invisible while its handler ran"
    );
    assert_eq!(handler.seen().len(), 1);
    assert_eq!(depth(&sqs, &url).await, (0, 0));
}

/// Regression: the retry's visibility change was queued while the message was still in the
/// in-flight registry, so a heartbeat tick in between could queue an extension after it and
/// override the retry's delay. Here every handling runs past its heartbeat period, so an
/// extension is always due when the retry is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_delay_is_not_overridden_by_a_heartbeat_extension() {
    let sqs = sqs().await;
    let name = unique_dashed("retry-hb");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 1).await;
    let handler = Recording::new(
        Arc::new(|_| {
            Outcome::Retry(mailroom::Retry {
                reason: "later".into(),
                after: Some(Duration::from_secs(5)),
                transient: false,
            })
        }),
        Duration::from_millis(1300),
    );
    let dead = Arc::new(MemoryDeadLetters::default());
    let running = start(
        config(
            &name,
            &url,
            "visibility_timeout_secs = 2\nheartbeat_secs = 1\nretry_intervals_secs = [5, 5, 5]",
        ),
        handler.clone(),
        dead,
    )
    .await;
    eventually(10, "first attempt", || handler.seen().len() == 1).await;
    let first_done = std::time::Instant::now();
    eventually(15, "second attempt", || handler.seen().len() == 2).await;
    // The second handling ends 1.3 s after it starts; it starts >= 5 s after the first ended.
    let gap = first_done.elapsed();
    running.shutdown().await;
    assert!(
        gap >= Duration::from_millis(5_800),
        "the message came back {gap:?} after its retry, before the 5 s delay"
    );
}

/// Regression: a shutdown during a Postgres outage hid the messages that had just failed
/// transiently for the longest retry interval (15 minutes by default) instead of releasing them
/// to the next process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_during_shutdown_releases_the_message() {
    let sqs = sqs().await;
    let name = unique_dashed("stop-transient");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 1).await;
    let handler = Recording::new(
        Arc::new(|_| Outcome::transient("database unavailable")),
        Duration::from_millis(1500),
    );
    let dead = Arc::new(MemoryDeadLetters::default());
    let mut running = start(
        config(&name, &url, "retry_intervals_secs = [900]"),
        handler.clone(),
        dead,
    )
    .await;
    eventually(10, "received", || running.inflight.len() == 1).await;
    running.signal_stop(); // while the handler still runs
    running.shutdown().await;
    assert_eq!(handler.seen().len(), 1);
    assert_eq!(
        depth(&sqs, &url).await,
        (1, 0),
        "the message is visible again for the next process, not hidden for 900 s"
    );
}

#[tokio::test]
async fn in_flight_never_exceeds_the_queue_concurrency() {
    let sqs = sqs().await;
    let name = unique_dashed("backpressure");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 30).await;
    let handler = Recording::new(Arc::new(|_| Outcome::Done), Duration::from_millis(300));
    let dead = Arc::new(MemoryDeadLetters::default());
    let running = start(
        config(&name, &url, "concurrency = 3\nbatch_size = 10"),
        handler.clone(),
        dead,
    )
    .await;
    let inflight = running.inflight.clone();
    let mut max_received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handler.seen().len() < 30 && tokio::time::Instant::now() < deadline {
        max_received = max_received.max(inflight.len());
        // What SQS counts as in flight: messages received but not yet handled (at most the
        // concurrency) and handled ones whose delete SQS has not confirmed yet (at most the
        // concurrency again: a handler permit is freed when the ack is queued).
        let (_, not_visible) = depth(&sqs, &url).await;
        assert!(
            not_visible <= 6,
            "SQS saw {not_visible} messages in flight with concurrency 3"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
    assert_eq!(handler.seen().len(), 30);
    assert!(
        max_received <= 3,
        "received-but-unfinished peaked at {max_received}"
    );
    assert!(handler.max_running.load(Ordering::SeqCst) <= 3);
    assert!(
        handler.max_running.load(Ordering::SeqCst) >= 2,
        "the concurrency was actually used"
    );
}

#[tokio::test]
async fn shutdown_releases_unfinished_messages_for_another_worker_at_once() {
    let sqs = sqs().await;
    let name = unique_dashed("release");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 4).await;
    // Handlers far slower than the shutdown timeout: they will be abandoned and released.
    let slow = Recording::new(Arc::new(|_| Outcome::Done), Duration::from_secs(60));
    let dead = Arc::new(MemoryDeadLetters::default());
    let cfg = config(
        &name,
        &url,
        "concurrency = 4\nvisibility_timeout_secs = 120",
    );
    let mut cfg = cfg;
    cfg.worker.shutdown_timeout_secs = 1;
    let running = start(cfg, slow.clone(), dead.clone()).await;
    eventually(20, "4 messages received", || running.inflight.len() == 4).await;
    let report = running.shutdown().await;
    assert_eq!(report.released, 4);
    assert!(
        report.abandoned >= 1,
        "the running batches were abandoned: {report:?}"
    );

    // A second worker receives them immediately, not after the 120 s visibility timeout.
    let fast = Recording::done();
    let started = std::time::Instant::now();
    let second = start(config(&name, &url, ""), fast.clone(), dead).await;
    eventually(10, "second worker handled all 4", || fast.seen().len() == 4).await;
    second.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(depth(&sqs, &url).await, (0, 0));
}

#[tokio::test]
async fn two_workers_on_one_queue_handle_every_message_once() {
    let sqs = sqs().await;
    let name = unique_dashed("two-workers");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 200).await;
    let a = Recording::done();
    let b = Recording::done();
    let dead = Arc::new(MemoryDeadLetters::default());
    let wa = start(
        config(&name, &url, "concurrency = 8"),
        a.clone(),
        dead.clone(),
    )
    .await;
    let wb = start(
        config(&name, &url, "concurrency = 8"),
        b.clone(),
        dead.clone(),
    )
    .await;
    eventually(60, "200 handled", || a.seen().len() + b.seen().len() >= 200).await;
    wa.shutdown().await;
    wb.shutdown().await;
    let mut counts = a.counts_by_body();
    for (body, n) in b.counts_by_body() {
        *counts.entry(body).or_insert(0) += n;
    }
    assert_eq!(counts.len(), 200, "every message handled");
    assert!(
        counts.values().all(|&n| n == 1),
        "no message handled twice when no fault occurs"
    );
    assert!(
        !a.seen().is_empty() && !b.seen().is_empty(),
        "both workers took a share"
    );
    assert_eq!(depth(&sqs, &url).await, (0, 0));
}

#[tokio::test]
async fn message_arriving_during_the_last_long_poll_of_a_shutdown_is_released_not_hidden() {
    let sqs = sqs().await;
    let name = unique_dashed("last-poll");
    let url = create_queue(&sqs, &name, 30, None).await;
    let handler = Recording::done();
    let dead = Arc::new(MemoryDeadLetters::default());
    let mut cfg = config(
        &name,
        &url,
        "visibility_timeout_secs = 120\nreceive_loops = 1",
    );
    cfg.worker.shutdown_timeout_secs = 10;
    cfg.queues[0].wait_time_secs = 5;
    let mut running = start(cfg, handler.clone(), dead).await;
    // Let the worker's long poll begin on the empty queue, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.signal_stop();
    // A message arrives while that long poll is still open: SQS hands it to the worker.
    send_numbered(&sqs, &url, 1).await;
    let report = running.shutdown().await;
    assert_eq!(
        report.released, 1,
        "the message the last poll brought was released: {report:?}"
    );
    assert!(handler.seen().is_empty(), "nothing starts after the stop");
    // Another consumer gets it at once, not after the 120 s visibility timeout.
    let out = sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    assert_eq!(out.messages.unwrap_or_default().len(), 1);
}

/// Under strict priority a lower queue waits while a higher one has messages, including a
/// receive loop that was already waiting for permits when the higher queue turned busy (it
/// used to take the permits the higher queue freed, and interleave).
#[tokio::test]
async fn strict_priority_drains_the_higher_queue_first() {
    let sqs = sqs().await;
    let high_name = unique_dashed("prio-high");
    let low_name = unique_dashed("prio-low");
    let high = create_queue(&sqs, &high_name, 30, None).await;
    let low = create_queue(&sqs, &low_name, 30, None).await;
    let bodies = |tag: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                envelope(
                    Kind::Events,
                    "application/json",
                    format!("{tag}-{i}").as_bytes(),
                )
            })
            .collect()
    };
    send(&sqs, &high, &bodies("high", 30)).await;
    send(&sqs, &low, &bodies("low", 10)).await;

    let text = format!(
        r#"
        [worker]
        total_concurrency = 2
        scheduling = "strict_priority"
        shutdown_timeout_secs = 5
        [store]
        database_url = "postgres://unused"
        [sqs]
        endpoint_url = "{endpoint}"
        region = "us-east-1"
        [[queue]]
        name = "{high_name}"
        url = "{high}"
        handler = "test"
        priority = 10
        wait_time_secs = 1
        batch_size = 2
        receive_loops = 2
        [[queue]]
        name = "{low_name}"
        url = "{low}"
        handler = "test"
        priority = 0
        wait_time_secs = 1
        batch_size = 1
        receive_loops = 2
        "#,
        endpoint = endpoint()
    );
    let config = mailroom::config::Config::parse(&text, "test").expect("config");
    let handler = Recording::new(Arc::new(|_| Outcome::Done), Duration::from_millis(20));
    let dead = Arc::new(MemoryDeadLetters::default());
    let running = start(config, handler.clone(), dead).await;
    eventually(60, "all 40 messages handled", || handler.seen().len() >= 40).await;
    running.shutdown().await;

    let order: Vec<String> = handler
        .seen()
        .iter()
        .map(|(_, _, body)| String::from_utf8_lossy(body).into_owned())
        .collect();
    let last_high = order
        .iter()
        .rposition(|b| b.starts_with("high-"))
        .expect("high handled");
    let low_before = order[..last_high]
        .iter()
        .filter(|b| b.starts_with("low-"))
        .count();
    // At start no queue has been seen busy yet, so each low receive loop may take one message
    // before the first high receive returns; after that, none until high is drained.
    assert!(
        low_before <= 2,
        "{low_before} low messages handled before the last high one: {order:?}"
    );
    assert_eq!(order.len(), 40, "each handled once: {order:?}");
}
