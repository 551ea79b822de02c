//! `serve`'s inbound route streams large posts to S3, against a real SQS/S3 server (rustack at
//! `AWS_ENDPOINT_URL`, default `http://127.0.0.1:4566`) over real loopback HTTP: a 30 MB post is
//! one pointer and one object holding its exact bytes; a client that disconnects, S3 down, SQS
//! down, a bad signature and a post over the limit leave no upload, no object and no message;
//! wrong basic auth uploads nothing. Every test makes its own queue and bucket and removes them.

mod common;
mod large_post;

use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use base64::Engine;
use common::Server;
use large_post::{large_post, LargePost};
use mailroom_envelope::{Decoded, ATTR_KIND, ATTR_VERSION, EXTENDED_PAYLOAD_SIZE_ATTRIBUTES};
use mailroom_router::config::BasicAuth;
use mailroom_router::{App, AwsSink, Config};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;

const INBOUND: &str = "/sendgrid/inbound";
const MIB: usize = 1024 * 1024;

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// One test's queue and bucket on the real server, and clients to look at them.
struct Aws {
    shared: aws_config::SdkConfig,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    queue_url: String,
    bucket: String,
}

impl Aws {
    async fn new() -> Self {
        let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned());
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".to_owned());
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .credentials_provider(Credentials::new(key, secret, None, None, "mailroom-tests"))
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&shared);
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("mailroom-serve-large"))
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
            .to_owned();
        let bucket = unique("mailroom-serve-large");
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create_bucket");
        Self {
            shared,
            sqs,
            s3,
            queue_url,
            bucket,
        }
    }

    fn config(&self) -> Config {
        Config {
            inbound_queue_url: Some(self.queue_url.clone()),
            large_body_bucket: Some(self.bucket.clone()),
            ..Config::default()
        }
    }

    fn app(&self, config: Config) -> App<AwsSink> {
        App::new(config, AwsSink::from_sdk_config(&self.shared))
    }

    /// Every message on the queue (bounded: a few empty long polls end it).
    async fn messages(&self) -> Vec<aws_sdk_sqs::types::Message> {
        let mut all = Vec::new();
        let mut empty_polls = 0;
        for _ in 0..20 {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .message_attribute_names("All")
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(60)
                .send()
                .await
                .expect("receive_message");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_polls += 1;
                if empty_polls == 2 {
                    break;
                }
            }
            all.extend(messages);
        }
        all
    }

    async fn uploads_in_progress(&self) -> usize {
        self.s3
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("list_multipart_uploads")
            .uploads()
            .len()
    }

    async fn object_keys(&self) -> Vec<String> {
        self.s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("list_objects_v2")
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }

    async fn object(&self, key: &str) -> Vec<u8> {
        self.s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .expect("get_object")
            .body
            .collect()
            .await
            .expect("object body")
            .to_vec()
    }

    /// Nothing queued, nothing stored, no upload left open.
    async fn assert_nothing_left(&self, what: &str) {
        assert_eq!(
            self.uploads_in_progress().await,
            0,
            "{what}: an upload is left"
        );
        assert_eq!(
            self.object_keys().await,
            Vec::<String>::new(),
            "{what}: an object is left"
        );
        assert!(
            self.messages().await.is_empty(),
            "{what}: something was queued"
        );
    }

    async fn remove(self) {
        let _ = self
            .sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await;
        for key in self.object_keys().await {
            let _ = self
                .s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
        }
        let _ = self.s3.delete_bucket().bucket(&self.bucket).send().await;
    }
}

fn attribute(message: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    let value = message.message_attributes.as_ref()?.get(name)?;
    value.string_value().map(str::to_owned)
}

fn content_type_header() -> (&'static str, String) {
    ("Content-Type", LargePost::content_type())
}

#[tokio::test]
async fn a_30_mb_post_is_streamed_to_s3_and_queued_once_byte_exact() {
    let aws = Aws::new().await;
    let server = Server::start(aws.app(aws.config())).await;
    let post = large_post(30_000_000, 20_000_000, 1);
    let (name, value) = content_type_header();
    let (status, answer) = large_post::post(
        server.addr,
        INBOUND,
        &[(name, &value), ("X-Request-Id", "large-1")],
        &post.body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let messages = aws.messages().await;
    assert_eq!(messages.len(), 1, "exactly one message");
    let message = &messages[0];
    let pointer = match mailroom_envelope::decode(message.body().expect("body")).expect("decodes") {
        Decoded::Pointer(pointer) => pointer,
        Decoded::Envelope(_) => panic!("expected an S3 pointer"),
    };
    assert_eq!(pointer.bucket, aws.bucket);
    assert!(
        pointer.key.starts_with("mailroom/inbound/"),
        "same key layout as every offload: {}",
        pointer.key
    );
    assert_eq!(attribute(message, ATTR_KIND).as_deref(), Some("inbound"));
    assert_eq!(attribute(message, ATTR_VERSION).as_deref(), Some("1"));
    assert_eq!(aws.object_keys().await, vec![pointer.key.clone()]);
    assert_eq!(aws.uploads_in_progress().await, 0);

    let object = aws.object(&pointer.key).await;
    assert_eq!(
        attribute(message, EXTENDED_PAYLOAD_SIZE_ATTRIBUTES[0]),
        Some(object.len().to_string())
    );
    let text = String::from_utf8(object).expect("the envelope is JSON text");
    let envelope = match mailroom_envelope::decode(&text).expect("the worker's decoder reads it") {
        Decoded::Envelope(envelope) => envelope,
        Decoded::Pointer(_) => panic!("a pointer to a pointer"),
    };
    assert!(envelope.body == post.body, "the body is byte-identical");
    assert_eq!(envelope.kind, mailroom_envelope::Kind::Inbound);
    assert_eq!(
        envelope.content_type.as_deref(),
        Some(LargePost::content_type().as_str())
    );
    let source = envelope.source.expect("source");
    assert_eq!(source.path, INBOUND);
    assert_eq!(source.request_id.as_deref(), Some("large-1"));
    server.shutdown().await;
    aws.remove().await;
}

#[tokio::test]
async fn a_chunked_post_of_unknown_length_switches_to_streaming() {
    let aws = Aws::new().await;
    let server = Server::start(aws.app(aws.config())).await;
    let post = large_post(9 * MIB, 6 * MIB, 2);
    let (name, value) = content_type_header();
    let (status, answer) = large_post::post_chunked(
        server.addr,
        INBOUND,
        &[(name, &value)],
        &post.body,
        64 * 1024,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let messages = aws.messages().await;
    assert_eq!(messages.len(), 1);
    let keys = aws.object_keys().await;
    assert_eq!(keys.len(), 1);
    let text = String::from_utf8(aws.object(&keys[0]).await).expect("JSON");
    match mailroom_envelope::decode(&text).expect("decodes") {
        Decoded::Envelope(envelope) => assert!(envelope.body == post.body, "byte-identical"),
        Decoded::Pointer(_) => panic!("pointer"),
    }
    server.shutdown().await;
    aws.remove().await;
}

#[tokio::test]
async fn a_small_inbound_post_still_goes_on_the_queue_whole() {
    let aws = Aws::new().await;
    let server = Server::start(aws.app(aws.config())).await;
    // 160 KB of envelope: under the 256 KiB an SQS queue allows by default.
    let post = large_post(120_000, 60_000, 3);
    let (name, value) = content_type_header();
    let (status, answer) =
        large_post::post_chunked(server.addr, INBOUND, &[(name, &value)], &post.body, 10_000).await;
    assert_eq!(status, 200, "{answer}");
    let messages = aws.messages().await;
    assert_eq!(messages.len(), 1);
    match mailroom_envelope::decode(messages[0].body().expect("body")).expect("decodes") {
        Decoded::Envelope(envelope) => assert!(envelope.body == post.body),
        Decoded::Pointer(_) => panic!("a small post is not offloaded"),
    }
    assert!(aws.object_keys().await.is_empty());
    server.shutdown().await;
    aws.remove().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_no_upload_and_no_message() {
    let aws = Aws::new().await;
    let server = Server::start(aws.app(aws.config())).await;
    let post = large_post(20 * MIB, 15 * MIB, 4);
    let (name, value) = content_type_header();
    // 12 MiB of body is 16 MiB of envelope: two parts are uploaded before the client goes.
    let stream = large_post::start_post(
        server.addr,
        INBOUND,
        &[(name, &value)],
        &post.body,
        12 * MIB,
    )
    .await;
    let mut started = false;
    for _ in 0..100 {
        if aws.uploads_in_progress().await > 0 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started, "the upload began while the body was arriving");
    drop(stream);
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = aws.uploads_in_progress().await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left, 0,
        "the upload was aborted (ListMultipartUploads is empty)"
    );
    aws.assert_nothing_left("disconnect").await;
    server.shutdown().await;
    aws.remove().await;
}

#[tokio::test]
async fn s3_down_is_503_and_nothing_is_queued() {
    let aws = Aws::new().await;
    let config = Config {
        large_body_bucket: Some(unique("mailroom-no-such-bucket")),
        ..aws.config()
    };
    let server = Server::start(aws.app(config)).await;
    let post = large_post(10 * MIB, 5 * MIB, 5);
    let (name, value) = content_type_header();
    let (status, answer) =
        large_post::post(server.addr, INBOUND, &[(name, &value)], &post.body).await;
    assert_eq!(status, 503, "{answer}");
    aws.assert_nothing_left("S3 down").await;
    server.shutdown().await;
    aws.remove().await;
}

#[tokio::test]
async fn sqs_refusing_the_pointer_is_503_and_the_object_is_deleted() {
    let aws = Aws::new().await;
    let config = Config {
        inbound_queue_url: Some(format!("{}-gone", aws.queue_url)),
        ..aws.config()
    };
    let server = Server::start(aws.app(config)).await;
    let post = large_post(10 * MIB, 5 * MIB, 6);
    let (name, value) = content_type_header();
    let (status, answer) =
        large_post::post(server.addr, INBOUND, &[(name, &value)], &post.body).await;
    assert_eq!(status, 503, "{answer}");
    aws.assert_nothing_left("SQS down").await;
    server.shutdown().await;
    aws.remove().await;
}

/// The process-wide Prometheus recorder, installed once for this test binary.
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        mailroom_router::telemetry::install(&mailroom_router::Config::default())
            .expect("install the recorder")
    })
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_post_over_the_inbound_limit_is_507_counted_and_leaves_nothing() {
    let handle = metrics();
    let series = "mailroom_router_inbound_refused_total{reason=\"over_limit\"}";
    let before = counter(&handle.render(), series);
    let aws = Aws::new().await;
    let config = Config {
        max_inbound_bytes: 12 * MIB,
        ..aws.config()
    };
    let server = Server::start(aws.app(config)).await;
    let post = large_post(13 * MIB, 5 * MIB, 7);
    let (name, value) = content_type_header();
    // Declared too large: refused before anything is read.
    let (status, answer) =
        large_post::post(server.addr, INBOUND, &[(name, &value)], &post.body).await;
    assert_eq!(status, 507, "{answer}");
    // Chunked, of unknown length: refused once it passes the limit, its upload aborted.
    let (status, answer) = large_post::post_chunked(
        server.addr,
        INBOUND,
        &[(name, &value)],
        &post.body,
        256 * 1024,
    )
    .await;
    assert_eq!(status, 507, "{answer}");
    aws.assert_nothing_left("over the limit").await;
    let after = counter(&handle.render(), series);
    assert!(after >= before + 2, "counted: {before} -> {after}");
    assert!(
        handle
            .render()
            .contains("mailroom_router_requests_total{kind=\"inbound\",status=\"507\"}"),
        "the 507s are counted as answers"
    );
    server.shutdown().await;
    aws.remove().await;
}

#[tokio::test]
async fn wrong_basic_auth_is_401_and_nothing_is_uploaded() {
    let aws = Aws::new().await;
    let config = Config {
        inbound_basic_auth: BasicAuth::parse("sendgrid:hunter2"),
        ..aws.config()
    };
    let server = Server::start(aws.app(config)).await;
    let post = large_post(10 * MIB, 5 * MIB, 8);
    let (name, value) = content_type_header();
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("sendgrid:wrong")
    );
    let (status, answer) = large_post::post(
        server.addr,
        INBOUND,
        &[(name, &value), ("Authorization", &wrong)],
        &post.body,
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) =
        large_post::post(server.addr, INBOUND, &[(name, &value)], &post.body).await;
    assert_eq!(status, 401, "no credentials: {answer}");
    aws.assert_nothing_left("wrong basic auth").await;

    let right = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("sendgrid:hunter2")
    );
    let (status, answer) = large_post::post(
        server.addr,
        INBOUND,
        &[(name, &value), ("Authorization", &right)],
        &post.body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(aws.messages().await.len(), 1);
    server.shutdown().await;
    aws.remove().await;
}

#[tokio::test]
async fn a_signed_streamed_post_is_verified_over_the_streamed_bytes() {
    let aws = Aws::new().await;
    let signing = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let public = signing
        .verifying_key()
        .to_public_key_der()
        .expect("SPKI DER");
    let config = Config {
        inbound_public_key: Some(
            mailroom_sendgrid::PublicKey::from_base64(
                &base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
            )
            .expect("key"),
        ),
        ..aws.config()
    };
    let server = Server::start(aws.app(config)).await;
    let post = large_post(10 * MIB, 5 * MIB, 9);
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let sign = |body: &[u8]| {
        let signed = [timestamp.as_bytes(), body].concat();
        let signature: p256::ecdsa::Signature = signing.sign(&signed);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    };
    let (name, value) = content_type_header();
    let mut tampered = post.body.clone();
    let last = tampered.len() - 100;
    tampered[last] ^= 1;
    let good = sign(&post.body);
    let headers = [
        (name, value.as_str()),
        (mailroom_sendgrid::SIGNATURE_HEADER, good.as_str()),
        (mailroom_sendgrid::TIMESTAMP_HEADER, timestamp.as_str()),
    ];
    let (status, answer) = large_post::post(server.addr, INBOUND, &headers, &tampered).await;
    assert_eq!(status, 403, "one flipped bit: {answer}");
    aws.assert_nothing_left("bad signature").await;

    let (status, answer) = large_post::post(server.addr, INBOUND, &headers[..1], &post.body).await;
    assert_eq!(status, 403, "unsigned: {answer}");
    aws.assert_nothing_left("unsigned").await;

    let (status, answer) = large_post::post(server.addr, INBOUND, &headers, &post.body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(aws.messages().await.len(), 1);
    assert_eq!(aws.object_keys().await.len(), 1);
    server.shutdown().await;
    aws.remove().await;
}
