//! The admin paths rustack cannot serve, against LocalStack (started by scripts/test.sh, URL in
//! LOCALSTACK_ENDPOINT_URL): `queues dlq redrive` through SQS's own StartMessageMoveTask.
//!
//! Ignored in a plain `cargo test`; scripts/test.sh runs it with `--ignored`, and it fails (never
//! passes silently) when LOCALSTACK_ENDPOINT_URL is not set.

mod ops_support;

use ops_support::*;

fn localstack() -> String {
    std::env::var("LOCALSTACK_ENDPOINT_URL")
        .expect("LOCALSTACK_ENDPOINT_URL is not set: run this through scripts/test.sh")
}

#[tokio::test]
#[ignore = "needs LocalStack; run by scripts/test.sh with --ignored"]
async fn redrive_uses_start_message_move_task_where_sqs_has_it() {
    let endpoint = localstack();
    let sqs = sqs_at(&endpoint).await;
    let name = unique("movetask");
    let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), 30, None).await;
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let url = create_queue(&sqs, &name, 30, Some(&dlq_arn)).await;
    for i in 0..3 {
        sqs.send_message()
            .queue_url(&dlq_url)
            .message_body(events_message(&[format!("{name}-{i}")]))
            .send()
            .await
            .expect("send");
    }
    let dir = temp_dir("ops-movetask");
    let config = write_config_at(&endpoint, &dir, "postgres://unused/x", &[(&name, &url)], "");
    let (status, out, err) = mailroom(
        &config,
        &["queues", "dlq", "redrive", &name, "--method", "move-task"],
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("(StartMessageMoveTask)"), "{out}");
    eventually_async(30, "messages back on the queue", || async {
        depth(&sqs, &url).await.0 == 3 && depth(&sqs, &dlq_url).await == (0, 0)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
