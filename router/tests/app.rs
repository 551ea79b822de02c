//! The router core over API Gateway event fixtures (tests/data), with an in-memory sink:
//! status codes, where messages go, and that what is queued decodes to the exact request bytes.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use chrono::{TimeZone, Utc};
use common::signer::Signer256;
use common::{fixture, fixture_str, FakeSink};
use http::{Method, StatusCode};
use mailroom_envelope::{Decoded, Kind, Origin, ATTR_KIND, ATTR_VERSION};
use mailroom_router::{App, AttributeValue, CallbackRequest, Config};
use serde_json::value::RawValue;

const EVENTS_Q: &str = "http://queue.local/events";
const INBOUND_Q: &str = "http://queue.local/inbound";
const NOW: i64 = 1_773_568_800;

fn config() -> Config {
    Config {
        events_queue_url: Some(EVENTS_Q.to_owned()),
        inbound_queue_url: Some(INBOUND_Q.to_owned()),
        ..Config::default()
    }
}

fn app_with(config: Config, sink: FakeSink) -> (App<Arc<FakeSink>>, Arc<FakeSink>) {
    let sink = Arc::new(sink);
    let app = App::new(config, Arc::clone(&sink)).with_clock(Arc::new(|| {
        Utc.timestamp_opt(NOW, 0).single().expect("valid time")
    }));
    (app, sink)
}

async fn invoke(app: &App<Arc<FakeSink>>, fixture_name: &str) -> serde_json::Value {
    let raw = fixture_str(fixture_name);
    let event: Box<RawValue> = serde_json::from_str(&raw).expect("fixture is JSON");
    mailroom_router::lambda::handle_event(app, &event, "lambda-request-id")
        .await
        .expect("invocation succeeds")
}

fn decode_router(body: &str) -> mailroom_envelope::Envelope {
    match mailroom_envelope::decode(body).expect("queued body decodes") {
        Decoded::Envelope(envelope) => envelope,
        Decoded::Pointer(p) => panic!("unexpected pointer {p:?}"),
    }
}

fn assert_router_attributes(sent: &common::Sent, kind: &str) {
    assert_eq!(
        sent.attribute(ATTR_KIND),
        Some(&AttributeValue::String(kind.to_owned()))
    );
    assert_eq!(
        sent.attribute(ATTR_VERSION),
        Some(&AttributeValue::Number(
            mailroom_envelope::ENVELOPE_VERSION.to_string()
        ))
    );
}

#[tokio::test]
async fn v1_rest_json_events_are_queued_byte_exact() {
    let (app, sink) = app_with(config(), FakeSink::default());
    let response = invoke(&app, "v1-rest-events.json").await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert!(
        response.get("multiValueHeaders").is_some(),
        "v1 response shape"
    );
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, EVENTS_Q);
    assert_router_attributes(&sent[0], "events");
    let envelope = decode_router(&sent[0].body);
    assert_eq!(envelope.origin, Origin::Router { version: 1 });
    assert_eq!(envelope.kind, Kind::Events);
    assert_eq!(envelope.body, fixture("events-body.json"));
    assert_eq!(envelope.content_type.as_deref(), Some("application/json"));
    assert_eq!(envelope.header("user-agent"), Some("SendGrid Event API"));
    let source = envelope.source.expect("source");
    assert_eq!(source.path, "/sendgrid/events");
    assert_eq!(source.stage.as_deref(), Some("prod"));
    assert_eq!(source.request_id.as_deref(), Some("v1-request-id"));
    assert_eq!(
        envelope.received_at.map(|t| t.timestamp()),
        Some(NOW),
        "received_at is the app clock"
    );
}

#[tokio::test]
async fn v1_rest_base64_multipart_inbound_is_queued_byte_exact() {
    let (app, sink) = app_with(config(), FakeSink::default());
    let response = invoke(&app, "v1-rest-inbound-base64-multipart.json").await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, INBOUND_Q);
    assert_router_attributes(&sent[0], "inbound");
    let envelope = decode_router(&sent[0].body);
    assert_eq!(envelope.kind, Kind::Inbound);
    assert_eq!(envelope.body, fixture("inbound-body.multipart"));
    assert_eq!(
        envelope.content_type.as_deref(),
        Some("multipart/form-data; boundary=xYzZY")
    );
}

#[tokio::test]
async fn v2_http_api_json_events_are_queued_with_v2_response() {
    let (app, sink) = app_with(config(), FakeSink::default());
    let response = invoke(&app, "v2-http-events.json").await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert!(response.get("cookies").is_some(), "v2 response shape");
    let body: serde_json::Value =
        serde_json::from_str(response["body"].as_str().expect("body")).expect("JSON body");
    assert_eq!(body["status"], "queued");
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, EVENTS_Q);
    let envelope = decode_router(&sent[0].body);
    assert_eq!(envelope.body, fixture("events-body.json"));
    assert_eq!(
        envelope.source.and_then(|s| s.request_id).as_deref(),
        Some("v2-request-id")
    );
}

#[tokio::test]
async fn v2_base64_json_under_binary_media_types_uses_stage_queue() {
    let (app, sink) = app_with(config(), FakeSink::default());
    let response = invoke(&app, "v2-http-events-base64.json").await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].queue_url, "http://queue.local/stage-events",
        "the eventsQueueUrl stage variable overrides the environment"
    );
    let envelope = decode_router(&sent[0].body);
    assert_eq!(envelope.body, fixture("events-body.json"));
    let source = envelope.source.expect("source");
    assert_eq!(source.path, "/live/sendgrid/events");
    assert_eq!(source.stage.as_deref(), Some("live"));
}

#[tokio::test]
async fn legacy_body_json_is_forwarded_as_is_to_the_events_queue() {
    let (app, sink) = app_with(config(), FakeSink::default());
    let response = invoke(&app, "legacy-body-json.json").await;
    assert_eq!(response["status"], "queued", "{response}");
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, EVENTS_Q, "not the event's own queue_url");
    assert_eq!(sent[0].body, fixture_str("legacy-body-json.json"));
    assert_eq!(
        sent[0].attribute(ATTR_KIND),
        Some(&AttributeValue::String("events".to_owned()))
    );
    let envelope = decode_router(&sent[0].body);
    assert_eq!(envelope.origin, Origin::SeedJson);
}

#[tokio::test]
async fn legacy_body_raw_is_forwarded_as_is_to_the_inbound_queue() {
    let (app, sink) = app_with(config(), FakeSink::default());
    invoke(&app, "legacy-body-raw.json").await;
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].queue_url, INBOUND_Q);
    assert_eq!(sent[0].body, fixture_str("legacy-body-raw.json"));
    let envelope = decode_router(&sent[0].body);
    assert_eq!(envelope.origin, Origin::SeedRaw);
    assert_eq!(envelope.body, fixture("inbound-body.multipart"));
}

#[tokio::test]
async fn legacy_event_queue_url_is_used_only_when_allowed() {
    let config = Config {
        allow_event_queue_url: true,
        ..config()
    };
    let (app, sink) = app_with(config, FakeSink::default());
    invoke(&app, "legacy-body-json.json").await;
    assert_eq!(
        sink.sent()[0].queue_url,
        "https://sqs.us-east-1.amazonaws.com/123456789012/old-events"
    );
}

#[tokio::test]
async fn legacy_failure_is_a_function_error_starting_with_the_status() {
    let (app, _sink) = app_with(config(), FakeSink::failing_sqs());
    let raw = fixture_str("legacy-body-json.json");
    let event: Box<RawValue> = serde_json::from_str(&raw).expect("JSON");
    let err = mailroom_router::lambda::handle_event(&app, &event, "id")
        .await
        .expect_err("SQS is down");
    assert!(err.to_string().starts_with("503: "), "{err}");
}

#[tokio::test]
async fn sqs_failure_is_503_over_lambda() {
    let (app, sink) = app_with(config(), FakeSink::failing_sqs());
    let response = invoke(&app, "v1-rest-events.json").await;
    assert_eq!(response["statusCode"], 503, "{response}");
    assert!(sink.sent().is_empty());
}

#[tokio::test]
async fn unknown_event_is_an_invocation_error() {
    let (app, _sink) = app_with(config(), FakeSink::default());
    let event: Box<RawValue> = serde_json::from_str(r#"{"hello":"world"}"#).expect("JSON");
    let result = mailroom_router::lambda::handle_event(&app, &event, "id").await;
    assert!(result.is_err() || result.as_ref().is_ok_and(|r| r["statusCode"] != 200));
}

fn events_request(body: &[u8]) -> CallbackRequest {
    CallbackRequest::new(Method::POST, "/sendgrid/events", body.to_vec())
        .with_header("Content-Type", "application/json")
}

#[tokio::test]
async fn status_codes() {
    let (app, sink) = app_with(config(), FakeSink::default());
    let body = fixture("events-body.json");

    let reply = app
        .handle(CallbackRequest::new(Method::POST, "/nope", body.clone()))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let reply = app
        .handle(CallbackRequest::new(
            Method::GET,
            "/sendgrid/events",
            Vec::new(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(reply.headers.contains(&("allow", "POST".to_owned())));

    let reply = app
        .handle(CallbackRequest::new(Method::GET, "/healthz", Vec::new()))
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let reply = app.handle(events_request(&body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(sink.sent().len(), 1, "only the good request was queued");
}

#[tokio::test]
async fn missing_queue_is_500_not_200() {
    let (app, _sink) = app_with(Config::default(), FakeSink::default());
    let reply = app.handle(events_request(b"[]")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn request_over_the_request_limit_is_413() {
    let config = Config {
        max_request_bytes: 100,
        ..config()
    };
    let (app, sink) = app_with(config, FakeSink::default());
    let reply = app.handle(events_request(&[b' '; 101])).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(sink.sent().is_empty());
}

#[tokio::test]
async fn oversized_envelope_without_bucket_is_413() {
    let config = Config {
        max_message_bytes: 1024,
        ..config()
    };
    let (app, sink) = app_with(config, FakeSink::default());
    let body = format!("[{}]", "1,".repeat(1000) + "1");
    let reply = app.handle(events_request(body.as_bytes())).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        reply.body.contains("MAILROOM_LARGE_BODY_BUCKET"),
        "{}",
        reply.body
    );
    assert!(sink.sent().is_empty());
}

/// SendGrid drops an Inbound Parse post for good on any 4xx; the Lambda path answered 413 to an
/// authentic email over the request limit or too large for SQS without a bucket.
#[tokio::test]
async fn oversized_inbound_mail_was_answered_413_and_dropped_by_sendgrid() {
    let inbound = |len: usize| {
        CallbackRequest::new(Method::POST, "/sendgrid/inbound", vec![b'x'; len])
            .with_header("content-type", "multipart/form-data; boundary=x")
    };
    let over_request = Config {
        max_request_bytes: 100,
        ..config()
    };
    let (app, sink) = app_with(over_request, FakeSink::default());
    let reply = app.handle(inbound(101)).await;
    assert_eq!(
        reply.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        reply.body
    );
    assert!(reply.body.contains("retry later"), "{}", reply.body);
    let no_bucket = Config {
        max_message_bytes: 1024,
        ..config()
    };
    let (app, _) = app_with(no_bucket, FakeSink::default());
    let reply = app.handle(inbound(2000)).await;
    assert_eq!(
        reply.status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("MAILROOM_LARGE_BODY_BUCKET"),
        "{}",
        reply.body
    );
    assert!(sink.sent().is_empty());

    // Authentication still comes first: a stranger's oversized post is a 401, not an alarm.
    let guarded = Config {
        max_request_bytes: 100,
        inbound_basic_auth: mailroom_router::config::BasicAuth::parse("sendgrid:hunter2"),
        ..config()
    };
    let (app, _) = app_with(guarded, FakeSink::default());
    assert_eq!(
        app.handle(inbound(101)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn oversized_envelope_goes_to_s3_behind_a_pointer() {
    let config = Config {
        max_message_bytes: 1024,
        large_body_bucket: Some("bodies".to_owned()),
        ..config()
    };
    let (app, sink) = app_with(config, FakeSink::default());
    let body = format!("[{}]", "1,".repeat(1000) + "1");
    let reply = app.handle(events_request(body.as_bytes())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let objects = sink.objects();
    assert_eq!(objects.len(), 1);
    let (bucket, key, stored) = &objects[0];
    assert_eq!(bucket, "bodies");
    assert!(key.starts_with("mailroom/events/2026-03-15/"), "key {key}");
    let sent = sink.sent();
    assert_eq!(sent.len(), 1);
    assert_router_attributes(&sent[0], "events");
    assert_eq!(
        sent[0].attribute("ExtendedPayloadSize"),
        Some(&AttributeValue::Number(stored.len().to_string()))
    );
    match mailroom_envelope::decode(&sent[0].body).expect("pointer decodes") {
        Decoded::Pointer(pointer) => {
            assert_eq!(&pointer.bucket, bucket);
            assert_eq!(&pointer.key, key);
        }
        Decoded::Envelope(_) => panic!("expected a pointer"),
    }
    let stored = std::str::from_utf8(stored).expect("UTF-8 envelope");
    assert_eq!(decode_router(stored).body, body.as_bytes());
}

#[tokio::test]
async fn s3_failure_is_503_and_nothing_is_queued() {
    let config = Config {
        max_message_bytes: 1024,
        large_body_bucket: Some("bodies".to_owned()),
        ..config()
    };
    let sink = FakeSink::default();
    sink.fail_s3
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (app, sink) = app_with(config, sink);
    let body = format!("[{}]", "1,".repeat(1000) + "1");
    let reply = app.handle(events_request(body.as_bytes())).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(sink.sent().is_empty());
}

#[tokio::test]
async fn inbound_basic_auth() {
    let config = Config {
        inbound_basic_auth: mailroom_router::config::BasicAuth::parse("sendgrid:hunter2"),
        ..config()
    };
    let (app, sink) = app_with(config, FakeSink::default());
    let body = fixture("inbound-body.multipart");
    let request = |auth: Option<&str>| {
        let r = CallbackRequest::new(Method::POST, "/sendgrid/inbound", body.clone())
            .with_header("content-type", "multipart/form-data; boundary=xYzZY");
        match auth {
            Some(a) => r.with_header("Authorization", a),
            None => r,
        }
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    let reply = app.handle(request(None)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply
        .headers
        .iter()
        .any(|(n, v)| *n == "www-authenticate" && v.starts_with("Basic")));

    let wrong = format!("Basic {}", b64("sendgrid:hunter3"));
    let reply = app.handle(request(Some(&wrong))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(sink.sent().is_empty());

    let right = format!("Basic {}", b64("sendgrid:hunter2"));
    let reply = app.handle(request(Some(&right))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let envelope = decode_router(&sink.sent()[0].body);
    assert_eq!(envelope.body, body);
    assert_eq!(
        envelope.header("authorization"),
        None,
        "credentials are not copied into the queue"
    );
}

fn signed_config(signer: &Signer256) -> Config {
    let vars: HashMap<String, String> = [
        ("MAILROOM_EVENTS_QUEUE_URL", EVENTS_Q.to_owned()),
        ("MAILROOM_INBOUND_QUEUE_URL", INBOUND_Q.to_owned()),
        ("MAILROOM_EVENT_WEBHOOK_PUBLIC_KEY", signer.public_key_b64()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Config::from_vars(vars).expect("valid config")
}

fn signed_request(body: &[u8], signature: &str, timestamp: &str) -> CallbackRequest {
    events_request(body)
        .with_header(mailroom_sendgrid::SIGNATURE_HEADER, signature)
        .with_header("X-Twilio-Email-Event-Webhook-Timestamp", timestamp)
}

#[tokio::test]
async fn signed_events_accept_and_reject() {
    let signer = Signer256::new();
    let (app, sink) = app_with(signed_config(&signer), FakeSink::default());
    let body = fixture("events-body.json");
    let now = NOW.to_string();

    let good = signer.sign(&now, &body);
    let reply = app.handle(signed_request(&body, &good, &now)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(decode_router(&sink.sent()[0].body).body, body);

    // Same signature over a body re-serialized without the CRLF: refused.
    let tampered: Vec<u8> = String::from_utf8(body.clone())
        .expect("UTF-8")
        .replace("},\r\n{", "},{")
        .into_bytes();
    let reply = app.handle(signed_request(&tampered, &good, &now)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Signed by another key.
    let other = Signer256::new().sign(&now, &body);
    let reply = app.handle(signed_request(&body, &other, &now)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // Garbage and missing signatures.
    let reply = app.handle(signed_request(&body, "not base64!", &now)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = app.handle(events_request(&body)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    assert_eq!(sink.sent().len(), 1, "only the valid request was queued");
}

#[tokio::test]
async fn signed_events_outside_the_window_are_replays() {
    let signer = Signer256::new();
    let (app, sink) = app_with(signed_config(&signer), FakeSink::default());
    let body = fixture("events-body.json");

    for (offset, expected) in [
        (-600, StatusCode::OK),
        (-601, StatusCode::FORBIDDEN),
        (30, StatusCode::OK),
        (61, StatusCode::FORBIDDEN),
    ] {
        let ts = (NOW + offset).to_string();
        let reply = app
            .handle(signed_request(&body, &signer.sign(&ts, &body), &ts))
            .await;
        assert_eq!(reply.status, expected, "offset {offset}: {}", reply.body);
        if expected == StatusCode::FORBIDDEN {
            assert!(reply.body.contains("replay"), "{}", reply.body);
        }
    }
    assert_eq!(sink.sent().len(), 2);
}

#[tokio::test]
async fn signature_is_not_required_on_inbound_unless_configured() {
    let signer = Signer256::new();
    let (app, _sink) = app_with(signed_config(&signer), FakeSink::default());
    let reply = app
        .handle(
            CallbackRequest::new(Method::POST, "/sendgrid/inbound", b"x".to_vec())
                .with_header("content-type", "text/plain"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let mut config = signed_config(&signer);
    config.inbound_public_key = config.events_public_key.clone();
    let (app, _sink) = app_with(config, FakeSink::default());
    let reply = app
        .handle(CallbackRequest::new(
            Method::POST,
            "/sendgrid/inbound",
            b"x".to_vec(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}
