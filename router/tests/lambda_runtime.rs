//! The real `mailroom-router` binary as a Lambda: a fake Lambda Runtime API on loopback hands it
//! invocations, and the real SQS-compatible server (rustack, at `AWS_ENDPOINT_URL`, default
//! `http://127.0.0.1:4566`) receives the messages. Proves the entry point, not just the library.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use common::fixture_str;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

type Invocations = Arc<Mutex<VecDeque<(String, String)>>>;

async fn fake_runtime_api(
    invocations: Invocations,
    results: mpsc::UnboundedSender<(String, String)>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let invocations = Arc::clone(&invocations);
            let results = results.clone();
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let invocations = Arc::clone(&invocations);
                    let results = results.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if path.ends_with("/invocation/next") {
                            let next = invocations.lock().expect("lock").pop_front();
                            let Some((id, event)) = next else {
                                // No more work: hold the poll open, as the real API does.
                                std::future::pending::<()>().await;
                                unreachable!()
                            };
                            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
                            let response = http::Response::builder()
                            .header("lambda-runtime-aws-request-id", id)
                            .header("lambda-runtime-deadline-ms", deadline.to_string())
                            .header(
                                "lambda-runtime-invoked-function-arn",
                                "arn:aws:lambda:us-east-1:000000000000:function:mailroom-router",
                            )
                            .header("lambda-runtime-trace-id", "Root=1-0-0")
                            .body(Full::new(Bytes::from(event)))
                            .expect("response");
                            return Ok::<_, Infallible>(response);
                        }
                        let _ = results.send((path, String::from_utf8_lossy(&body).into_owned()));
                        Ok(http::Response::builder()
                            .status(202)
                            .body(Full::new(Bytes::from_static(b"{}")))
                            .expect("response"))
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn binary_runs_as_a_lambda_function() {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned());
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".to_owned());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".to_owned());
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(Credentials::new(&key, &secret, None, None, "tests"))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&shared);
    let queue = sqs
        .create_queue()
        .queue_name(format!(
            "mailroom-lambda-test-{}",
            uuid::Uuid::new_v4().simple()
        ))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "create_queue at {endpoint} (is rustack running?): {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            )
        })
        .queue_url()
        .expect("url")
        .to_owned();

    let invocations: Invocations = Arc::new(Mutex::new(VecDeque::from([
        ("inv-1".to_owned(), fixture_str("v2-http-events.json")),
        // No inbound queue is configured: a legacy body-raw event must be a function error.
        ("inv-2".to_owned(), fixture_str("legacy-body-raw.json")),
    ])));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let api = fake_runtime_api(invocations, tx).await;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailroom-router"))
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "mailroom-router")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/mailroom-router")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", &key)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("MAILROOM_EVENTS_QUEUE_URL", &queue)
        .env_remove("MAILROOM_INBOUND_QUEUE_URL")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mailroom-router");

    let mut got = Vec::new();
    for _ in 0..2 {
        let result = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the function answered in time")
            .expect("result");
        got.push(result);
    }
    let _ = child.kill().await;

    let (path, body) = &got[0];
    assert_eq!(path, "/2018-06-01/runtime/invocation/inv-1/response");
    let response: serde_json::Value = serde_json::from_str(body).expect("JSON response");
    assert_eq!(response["statusCode"], 200, "{response}");

    let (path, body) = &got[1];
    assert_eq!(path, "/2018-06-01/runtime/invocation/inv-2/error");
    let error: serde_json::Value = serde_json::from_str(body).expect("JSON error");
    let message = error["errorMessage"].as_str().expect("errorMessage");
    assert!(message.starts_with("500: "), "{message}");

    let messages = sqs
        .receive_message()
        .queue_url(&queue)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert_eq!(messages.len(), 1);
    match mailroom_envelope::decode(messages[0].body().expect("body")).expect("decodes") {
        mailroom_envelope::Decoded::Envelope(e) => {
            assert_eq!(e.body, common::fixture("events-body.json"))
        }
        other => panic!("{other:?}"),
    }
    let _ = sqs.delete_queue().queue_url(&queue).send().await;
}
