//! `serve`'s own HTTP handling, with an in-memory sink: body limit, methods, paths, basic auth
//! over a real connection, and that request bytes reach the envelope untouched.

mod common;

use std::sync::Arc;

use base64::Engine;
use common::{fixture, FakeSink, Server};
use http::Method;
use mailroom_router::config::BasicAuth;
use mailroom_router::{App, Config};

fn config() -> Config {
    Config {
        events_queue_url: Some("http://queue.local/events".to_owned()),
        inbound_queue_url: Some("http://queue.local/inbound".to_owned()),
        max_request_bytes: 64 * 1024,
        inbound_basic_auth: BasicAuth::parse("sendgrid:hunter2"),
        ..Config::default()
    }
}

#[tokio::test]
async fn serve_answers_like_the_lambda() {
    let sink = Arc::new(FakeSink::default());
    let server = Server::start(App::new(config(), Arc::clone(&sink))).await;

    let (status, _) = server
        .request(Method::GET, "/healthz", &[], Vec::new())
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.post("/elsewhere", &[], b"x".to_vec()).await;
    assert_eq!(status, 404);
    let (status, _) = server
        .request(Method::PUT, "/sendgrid/events", &[], b"x".to_vec())
        .await;
    assert_eq!(status, 405);
    let (status, body) = server
        .post("/sendgrid/events", &[], vec![b'x'; 64 * 1024 + 1])
        .await;
    assert_eq!(status, 413, "{body}");

    let multipart = fixture("inbound-body.multipart");
    let (status, _) = server
        .post("/sendgrid/inbound", &[], multipart.clone())
        .await;
    assert_eq!(status, 401);
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("sendgrid:hunter2")
    );
    let (status, body) = server
        .post(
            "/sendgrid/inbound",
            &[
                ("Authorization", &auth),
                ("Content-Type", "multipart/form-data; boundary=xYzZY"),
            ],
            multipart.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;

    let sent = sink.sent();
    assert_eq!(sent.len(), 1, "only the authorized post was queued");
    match mailroom_envelope::decode(&sent[0].body).expect("decodes") {
        mailroom_envelope::Decoded::Envelope(envelope) => {
            assert_eq!(envelope.body, multipart);
            assert_eq!(
                envelope.content_type.as_deref(),
                Some("multipart/form-data; boundary=xYzZY")
            );
            assert!(envelope.header("authorization").is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sink_failure_through_serve_is_503() {
    let sink = Arc::new(FakeSink::failing_sqs());
    let server = Server::start(App::new(config(), Arc::clone(&sink))).await;
    let (status, body) = server
        .post(
            "/sendgrid/events",
            &[("content-type", "application/json")],
            fixture("events-body.json"),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    server.shutdown().await;
}
