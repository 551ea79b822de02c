//! SQS: the endpoint and credentials, clients, queues, sending and queue depth.

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use chrono::Utc;
use mailroom_envelope::{Envelope, Kind, Origin, Source};

/// The shared SQS-compatible server: `AWS_ENDPOINT_URL`, else rustack's default port.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// Dummy credentials and region, unless already set (tests set the same values, so racing
/// writes are identical).
pub fn set_aws_env() {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var(k).is_err() {
            std::env::set_var(k, v);
        }
    }
}

/// The SDK config the worker itself builds (`mailroom::sqs::aws_config`) for `endpoint`.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    set_aws_env();
    let sqs = mailroom::config::SqsConfig {
        endpoint_url: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    mailroom::sqs::aws_config(&sqs).await
}

/// An SQS client for the shared server, with the worker's SDK settings.
pub async fn sqs() -> Client {
    sqs_at(&endpoint()).await
}

/// An SQS client for `endpoint`, with the worker's SDK settings.
pub async fn sqs_at(endpoint: &str) -> Client {
    Client::new(&sdk_config(endpoint).await)
}

/// Create queue `name` with this visibility timeout and, given a DLQ's ARN, a redrive policy
/// (5 receives); returns its URL.
pub async fn create_queue(
    client: &Client,
    name: &str,
    visibility_secs: u32,
    dlq_arn: Option<&str>,
) -> String {
    let mut req = client.create_queue().queue_name(name).attributes(
        QueueAttributeName::VisibilityTimeout,
        visibility_secs.to_string(),
    );
    if let Some(arn) = dlq_arn {
        req = req.attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":5}}"#),
        );
    }
    req.send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

pub async fn queue_arn(client: &Client, url: &str) -> String {
    mailroom::sqs::attributes(client, url)
        .await
        .expect("attributes")
        .get("QueueArn")
        .cloned()
        .expect("QueueArn")
}

/// Send bodies, 10 per batch. Panics on any failure.
pub async fn send(client: &Client, url: &str, bodies: &[String]) {
    for (c, chunk) in bodies.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{c}x{i}"))
                    .message_body(b)
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send batch");
        assert!(out.failed.is_empty(), "send failed: {:?}", out.failed);
    }
}

/// Messages (visible, in flight) on a queue.
pub async fn depth(client: &Client, url: &str) -> (u64, u64) {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes");
    let attrs = out.attributes.unwrap_or_default();
    let get = |k: QueueAttributeName| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// A router envelope around `body`, as mailroom-router writes it, encoded as an SQS body.
pub fn envelope(kind: Kind, content_type: &str, body: &[u8]) -> String {
    let path = match kind {
        Kind::Events => "/sendgrid/events",
        Kind::Inbound => "/sendgrid/inbound",
        Kind::Message => "/",
    };
    mailroom_envelope::encode(&Envelope {
        origin: Origin::Router {
            version: mailroom_envelope::ENVELOPE_VERSION,
        },
        kind,
        received_at: Some(Utc::now()),
        source: Some(Source {
            path: path.into(),
            stage: None,
            request_id: Some("test".into()),
            webhook: None,
        }),
        headers: vec![("content-type".into(), content_type.into())],
        content_type: Some(content_type.into()),
        body: body.to_vec().into(),
        queue_url: None,
    })
}
