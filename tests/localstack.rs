//! SQS behaviours rustack cannot express, checked against LocalStack (started by scripts/test.sh,
//! URL in LOCALSTACK_ENDPOINT_URL). rustack reports success for a bad receipt handle inside
//! DeleteMessageBatch; LocalStack, like SQS, fails that one entry and deletes the rest.
//!
//! Ignored in a plain `cargo test`; scripts/test.sh runs them with `--ignored`, and they fail
//! (never pass silently) when LOCALSTACK_ENDPOINT_URL is not set.

use std::time::Duration;

use aws_sdk_sqs::Client;
use mailroom::acker::{Acker, QueueRef};

mod common;

fn localstack() -> String {
    std::env::var("LOCALSTACK_ENDPOINT_URL")
        .expect("LOCALSTACK_ENDPOINT_URL is not set: run these through scripts/test.sh")
}

#[tokio::test]
#[ignore = "needs LocalStack; run by scripts/test.sh with --ignored"]
async fn acker_reports_the_one_bad_entry_of_a_batch_and_deletes_the_rest() {
    let client = Client::new(&common::sdk_config(&localstack()).await);
    let name = common::unique_dashed("partial");
    let url = common::create_queue(&client, &name, 30, None).await;
    common::send_numbered(&client, &url, 3).await;
    let mut receipts = Vec::new();
    for _ in 0..10 {
        let out = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        receipts.extend(
            out.messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.receipt_handle),
        );
        if receipts.len() == 3 {
            break;
        }
    }
    assert_eq!(receipts.len(), 3);

    let (acker, task) = Acker::spawn(client.clone(), Duration::from_millis(20));
    let queue = QueueRef {
        name: name.as_str().into(),
        url: url.as_str().into(),
    };
    let mut waits: Vec<_> = receipts
        .iter()
        .map(|r| acker.delete(&queue, r.clone()))
        .collect();
    let bad = acker.delete(&queue, "not-a-receipt-handle".into());
    waits.push(bad);
    let mut results = Vec::new();
    for w in waits {
        results.push(w.await.expect("acker answered"));
    }
    drop(acker);
    task.await.unwrap();

    assert!(results[..3].iter().all(|r| r.is_ok()), "{results:?}");
    let err = results[3]
        .as_ref()
        .expect_err("the bad entry is reported")
        .to_string();
    assert!(
        err.contains("ReceiptHandleIsInvalid") || err.to_lowercase().contains("receipt"),
        "{err}"
    );
    let (visible, in_flight) = common::depth(&client, &url).await;
    assert_eq!(
        (visible, in_flight),
        (0, 0),
        "the three good entries were deleted"
    );
}

#[tokio::test]
#[ignore = "needs LocalStack; run by scripts/test.sh with --ignored"]
async fn engine_deletes_after_success_on_localstack_too() {
    // The same path as tests/engine.rs, on the more faithful server.
    std::env::set_var("AWS_ENDPOINT_URL", localstack());
    let client = Client::new(&common::sdk_config(&localstack()).await);
    let name = common::unique_dashed("ls-engine");
    let url = common::create_queue(&client, &name, 30, None).await;
    common::send_numbered(&client, &url, 12).await;
    let handler = common::Recording::done();
    let dead = std::sync::Arc::new(common::MemoryDeadLetters::default());
    let running = common::start(common::config(&name, &url, ""), handler.clone(), dead).await;
    common::eventually(60, "12 handled", || handler.seen().len() >= 12).await;
    running.shutdown().await;
    assert_eq!(handler.seen().len(), 12);
    assert_eq!(common::depth(&client, &url).await, (0, 0));
}
