//! End to end against a real SQS/S3-compatible server (rustack in development and CI):
//! POST to `serve`, then read what landed on the queue and in the bucket.
//!
//! Needs the server at `AWS_ENDPOINT_URL` (default `http://127.0.0.1:4566`), e.g.
//! `GATEWAY_LISTEN=127.0.0.1:4566 rustack &`. Region us-east-1; credentials from
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `test`/`test` when unset. Every test makes its
//! own uniquely named queue/bucket and removes it.

mod common;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use common::{fixture, Server};
use mailroom_envelope::{Decoded, ATTR_KIND, ATTR_VERSION};
use mailroom_router::{App, AwsSink, Config};

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".to_owned());
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(key, secret, None, None, "mailroom-tests"))
        .load()
        .await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

struct Aws {
    shared: aws_config::SdkConfig,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
}

impl Aws {
    async fn new() -> Self {
        let shared = sdk_config(&endpoint()).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .build(),
        );
        Self {
            sqs: aws_sdk_sqs::Client::new(&shared),
            s3,
            shared,
        }
    }

    async fn queue(&self) -> String {
        self.sqs
            .create_queue()
            .queue_name(unique("mailroom-router-test"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "create_queue at {} failed (is rustack running?): {}",
                    endpoint(),
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                )
            })
            .queue_url()
            .expect("queue url")
            .to_owned()
    }

    async fn receive_one(&self, queue_url: &str) -> aws_sdk_sqs::types::Message {
        for _ in 0..5 {
            let output = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .message_attribute_names("All")
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive_message");
            let messages = output.messages.unwrap_or_default();
            if let Some(message) = messages.into_iter().next() {
                return message;
            }
        }
        panic!("no message arrived on {queue_url}");
    }

    async fn delete_queue(&self, queue_url: &str) {
        let _ = self.sqs.delete_queue().queue_url(queue_url).send().await;
    }
}

fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<(String, String)> {
    let value = message.message_attributes.as_ref()?.get(name)?;
    Some((
        value.data_type().to_owned(),
        value.string_value().unwrap_or_default().to_owned(),
    ))
}

fn router_envelope(body: &str) -> mailroom_envelope::Envelope {
    match mailroom_envelope::decode(body).expect("decodes") {
        Decoded::Envelope(envelope) => envelope,
        Decoded::Pointer(p) => panic!("unexpected pointer {p:?}"),
    }
}

#[tokio::test]
async fn post_to_serve_lands_on_sqs_byte_exact() {
    let aws = Aws::new().await;
    let events_q = aws.queue().await;
    let inbound_q = aws.queue().await;
    let config = Config {
        events_queue_url: Some(events_q.clone()),
        inbound_queue_url: Some(inbound_q.clone()),
        ..Config::default()
    };
    let server = Server::start(App::new(config, AwsSink::from_sdk_config(&aws.shared))).await;

    let events = fixture("events-body.json");
    let (status, body) = server
        .post(
            "/sendgrid/events",
            &[
                ("Content-Type", "application/json"),
                ("X-Request-Id", "e2e-1"),
            ],
            events.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let inbound = fixture("inbound-body.multipart");
    let (status, body) = server
        .post(
            "/sendgrid/inbound",
            &[("content-type", "multipart/form-data; boundary=xYzZY")],
            inbound.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;

    let message = aws.receive_one(&events_q).await;
    assert_eq!(
        attribute(&message, ATTR_KIND),
        Some(("String".to_owned(), "events".to_owned()))
    );
    assert_eq!(
        attribute(&message, ATTR_VERSION),
        Some(("Number".to_owned(), "1".to_owned()))
    );
    let envelope = router_envelope(message.body().expect("body"));
    assert_eq!(envelope.body, events);
    assert_eq!(
        envelope.source.and_then(|s| s.request_id).as_deref(),
        Some("e2e-1")
    );

    let message = aws.receive_one(&inbound_q).await;
    let envelope = router_envelope(message.body().expect("body"));
    assert_eq!(envelope.kind, mailroom_envelope::Kind::Inbound);
    assert_eq!(envelope.body, inbound);

    aws.delete_queue(&events_q).await;
    aws.delete_queue(&inbound_q).await;
}

#[tokio::test]
async fn large_body_goes_to_s3_behind_an_extended_client_pointer() {
    let aws = Aws::new().await;
    let queue = aws.queue().await;
    let bucket = unique("mailroom-router-test");
    aws.s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create_bucket: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
    let config = Config {
        inbound_queue_url: Some(queue.clone()),
        max_message_bytes: 4096,
        large_body_bucket: Some(bucket.clone()),
        ..Config::default()
    };
    let server = Server::start(App::new(config, AwsSink::from_sdk_config(&aws.shared))).await;

    // 64 KiB of every byte value: not UTF-8, so base64 in the envelope, and well over 4 KiB.
    let body: Vec<u8> = (0..65_536u32).map(|i| (i % 256) as u8).collect();
    let (status, reply) = server
        .post(
            "/sendgrid/inbound",
            &[("content-type", "application/octet-stream")],
            body.clone(),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    server.shutdown().await;

    let message = aws.receive_one(&queue).await;
    let pointer = match mailroom_envelope::decode(message.body().expect("body")).expect("decodes") {
        Decoded::Pointer(pointer) => pointer,
        Decoded::Envelope(_) => panic!("expected a pointer"),
    };
    assert_eq!(pointer.bucket, bucket);
    assert!(
        pointer.key.starts_with("mailroom/inbound/"),
        "{}",
        pointer.key
    );
    let object = aws
        .s3
        .get_object()
        .bucket(&pointer.bucket)
        .key(&pointer.key)
        .send()
        .await
        .expect("get_object")
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes();
    assert_eq!(
        attribute(&message, "ExtendedPayloadSize"),
        Some(("Number".to_owned(), object.len().to_string()))
    );
    let envelope = router_envelope(std::str::from_utf8(&object).expect("UTF-8 envelope"));
    assert_eq!(envelope.body, body);
    assert_eq!(
        attribute(&message, ATTR_KIND),
        Some(("String".to_owned(), "inbound".to_owned()))
    );

    let _ = aws
        .s3
        .delete_object()
        .bucket(&bucket)
        .key(&pointer.key)
        .send()
        .await;
    let _ = aws.s3.delete_bucket().bucket(&bucket).send().await;
    aws.delete_queue(&queue).await;
}

#[tokio::test]
async fn sqs_down_is_503() {
    // A loopback port nobody listens on.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let shared = sdk_config(&format!("http://{unused}")).await;
    let config = Config {
        events_queue_url: Some(format!("http://{unused}/000000000000/nowhere")),
        ..Config::default()
    };
    let server = Server::start(App::new(config, AwsSink::from_sdk_config(&shared))).await;
    let (status, body) = server
        .post(
            "/sendgrid/events",
            &[("content-type", "application/json")],
            fixture("events-body.json"),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("retry"), "{body}");
    server.shutdown().await;
}
