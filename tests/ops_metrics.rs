//! Metrics and health end to end: the real binary with `[telemetry] listen` on a free port,
//! against rustack and a fresh database. Proves /metrics exposes the engine's counters and they
//! move (received, handled, deleted), the depth gauges and histogram buckets are there, /health
//! is 200, and /ready is 200 while receiving, 503 when quiet (SIGUSR1), 200 again on SIGUSR2,
//! and 503 naming Postgres once the database is gone.

mod ops_support;

use ops_support::*;

/// Sum of the samples of `metric` whose labels contain every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if !labels.iter().all(|l| rest.contains(l)) {
            continue;
        }
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

#[tokio::test]
async fn metrics_move_and_readiness_follows_state() {
    let sqs = sqs().await;
    let name = unique("metrics");
    let url = create_queue(&sqs, &name, 30, None).await;
    let db = TestDb::create().await;
    let dir = temp_dir("ops-metrics");
    let port = free_port();
    let config = write_config(
        &dir,
        &db.url,
        &[(&name, &url)],
        &format!("[telemetry]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    migrate(&config);
    let mut worker = Worker::start(&config, dir.join("worker.log"), &[]);
    worker.wait_log("\"receiving\"", 30).await;
    eventually_async(15, "/ready 200", || async {
        matches!(http_get(port, "/ready").await, Some((200, _)))
    })
    .await;
    assert_eq!(http_get(port, "/health").await.map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/nope").await.map(|r| r.0), Some(404));

    // Regression: counters for what had not happened yet did not exist, so an alert on
    // `increase(...) > 0` missed the first event after a restart. Before any traffic, each is 0.
    let (_, before) = http_get(port, "/metrics").await.expect("/metrics");
    let queue_label = format!("queue=\"{name}\"");
    for metric in [
        "mailroom_messages_dead_lettered_total",
        "mailroom_messages_retried_total",
        "mailroom_sqs_errors_total",
        "mailroom_ack_failures_total",
        "mailroom_messages_handled_total",
        "mailroom_messages_deleted_total",
    ] {
        assert_eq!(
            sample(&before, metric, &[&queue_label]),
            Some(0.0),
            "{metric} is registered at 0 at start:\n{before}"
        );
    }
    assert_eq!(
        sample(
            &before,
            "mailroom_postgres_errors_total",
            &["op=\"handler\""]
        ),
        Some(0.0),
        "{before}"
    );

    let mut ids = Vec::new();
    for m in 0..5 {
        let batch: Vec<String> = (0..2).map(|e| format!("{name}-{m}-{e}")).collect();
        sqs.send_message()
            .queue_url(&url)
            .message_body(events_message(&batch))
            .send()
            .await
            .expect("send");
        ids.extend(batch);
    }
    eventually_async(30, "10 events stored", || async {
        count(&db, "select count(*) from mailroom_events").await == 10
    })
    .await;
    let q = format!("queue=\"{name}\"");
    eventually_async(15, "counters moved", || async {
        let Some((200, text)) = http_get(port, "/metrics").await else {
            return false;
        };
        sample(&text, "mailroom_messages_received_total", &[&q]) == Some(5.0)
            && sample(
                &text,
                "mailroom_messages_handled_total",
                &[&q, "outcome=\"done\"", "handler=\"sendgrid\""],
            ) == Some(5.0)
            && sample(&text, "mailroom_messages_deleted_total", &[&q]) == Some(5.0)
    })
    .await;
    let (_, text) = http_get(port, "/metrics").await.expect("metrics");
    for present in [
        "mailroom_queue_messages{",
        "mailroom_handler_duration_seconds_bucket{",
        "mailroom_handler_batch_messages_bucket{",
        "mailroom_ack_batch_size_bucket{",
        "mailroom_in_flight{",
    ] {
        assert!(text.contains(present), "{present} missing from:\n{text}");
    }
    assert!(
        sample(&text, "mailroom_queue_messages", &[&q, "state=\"visible\""]).is_some(),
        "{text}"
    );

    worker.signal("USR1");
    eventually_async(10, "/ready 503 while quiet", || async {
        matches!(http_get(port, "/ready").await, Some((503, body)) if body.contains("quiet"))
    })
    .await;
    assert_eq!(http_get(port, "/health").await.map(|r| r.0), Some(200));
    worker.signal("USR2");
    eventually_async(10, "/ready 200 after resume", || async {
        matches!(http_get(port, "/ready").await, Some((200, _)))
    })
    .await;

    db.drop_db().await;
    eventually_async(20, "/ready 503 naming postgres", || async {
        matches!(http_get(port, "/ready").await, Some((503, body)) if body.contains("postgres"))
    })
    .await;
    let (_, text) = http_get(port, "/metrics").await.expect("metrics");
    assert!(
        sample(&text, "mailroom_postgres_errors_total", &["op=\"ready\""]).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    let status = worker.stop(30).await;
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
