//! Named routes, one per SendGrid webhook: each with its own key (and a previous one during a
//! rotation), basic auth, queue and message group, the name carried in the envelope; unknown
//! names are 404. Through the router core with an in-memory sink.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::signer::Signer256;
use common::FakeSink;
use http::{Method, StatusCode};
use mailroom_envelope::Decoded;
use mailroom_router::{App, CallbackRequest, Config};

const EVENTS_Q: &str = "http://queue.local/events";
const INBOUND_Q: &str = "http://queue.local/inbound";
const MARKETING_Q: &str = "http://queue.local/marketing";
const NOW: i64 = 1_773_568_800;

fn app_at(vars: &[(&str, String)], now: i64) -> (App<Arc<FakeSink>>, Arc<FakeSink>) {
    let mut all: HashMap<String, String> = HashMap::from([
        ("MAILROOM_EVENTS_QUEUE_URL".to_owned(), EVENTS_Q.to_owned()),
        (
            "MAILROOM_INBOUND_QUEUE_URL".to_owned(),
            INBOUND_Q.to_owned(),
        ),
    ]);
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let config = Config::from_vars(all).expect("valid config");
    let sink = Arc::new(FakeSink::default());
    let app = App::new(config, Arc::clone(&sink)).with_clock(Arc::new(move || {
        Utc.timestamp_opt(now, 0).single().unwrap()
    }));
    (app, sink)
}

fn events(path: &str, body: &[u8]) -> CallbackRequest {
    CallbackRequest::new(Method::POST, path, body.to_vec())
        .with_header("content-type", "application/json")
}

fn signed(path: &str, body: &[u8], signer: &Signer256, ts: i64) -> CallbackRequest {
    let ts = ts.to_string();
    events(path, body)
        .with_header(mailroom_sendgrid::SIGNATURE_HEADER, signer.sign(&ts, body))
        .with_header(mailroom_sendgrid::TIMESTAMP_HEADER, ts)
}

fn webhook_of(body: &str) -> Option<String> {
    match mailroom_envelope::decode(body).expect("decodes") {
        Decoded::Envelope(e) => e.source.and_then(|s| s.webhook),
        Decoded::Pointer(p) => panic!("unexpected pointer {p:?}"),
    }
}

#[tokio::test]
async fn each_webhook_route_checks_its_own_key_and_names_itself_in_the_envelope() {
    let marketing = Signer256::new();
    let transactional = Signer256::new();
    let routes = format!(
        r#"{{"events": {{
            "marketing": {{"public_key": "{}", "queue_url": "{MARKETING_Q}"}},
            "transactional": {{"public_key": "{}"}},
            "unsigned": {{}}}}}}"#,
        marketing.public_key_b64(),
        transactional.public_key_b64()
    );
    let (app, sink) = app_at(&[("MAILROOM_ROUTES", routes)], NOW);
    let body = br#"[{"event":"open","sg_event_id":"a"}]"#;

    let ok = app
        .handle(signed("/sendgrid/events/marketing", body, &marketing, NOW))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let wrong_key = app
        .handle(signed(
            "/sendgrid/events/marketing",
            body,
            &transactional,
            NOW,
        ))
        .await;
    assert_eq!(
        wrong_key.status,
        StatusCode::FORBIDDEN,
        "{}",
        wrong_key.body
    );
    let ok = app
        .handle(signed(
            "/sendgrid/events/transactional",
            body,
            &transactional,
            NOW,
        ))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let unsigned = app.handle(events("/sendgrid/events/unsigned", body)).await;
    assert_eq!(unsigned.status, StatusCode::OK, "{}", unsigned.body);
    let default = app.handle(events("/sendgrid/events", body)).await;
    assert_eq!(default.status, StatusCode::OK, "{}", default.body);

    let sent = sink.sent();
    let seen: Vec<_> = sent
        .iter()
        .map(|s| (s.queue_url.as_str(), webhook_of(&s.body)))
        .collect();
    assert_eq!(
        seen,
        [
            (MARKETING_Q, Some("marketing".to_owned())),
            (EVENTS_Q, Some("transactional".to_owned())),
            (EVENTS_Q, Some("unsigned".to_owned())),
            (EVENTS_Q, None),
        ]
    );
}

#[tokio::test]
async fn a_rotated_out_key_is_accepted_only_until_its_overlap_ends() {
    let old = Signer256::new();
    let new = Signer256::new();
    let expires = NOW + 3600;
    let routes = format!(
        r#"{{"events": {{"marketing": {{"public_key": "{}", "previous_public_key": "{}",
             "previous_key_expires_at": "{}"}}}}}}"#,
        new.public_key_b64(),
        old.public_key_b64(),
        Utc.timestamp_opt(expires, 0).unwrap().to_rfc3339()
    );
    let body = br#"[{"event":"delivered","sg_event_id":"b"}]"#;
    let path = "/sendgrid/events/marketing";

    let (during, sink) = app_at(&[("MAILROOM_ROUTES", routes.clone())], expires - 1);
    for signer in [&new, &old] {
        let reply = during.handle(signed(path, body, signer, expires - 1)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(sink.sent().len(), 2);

    let (after, sink) = app_at(&[("MAILROOM_ROUTES", routes)], expires);
    let reply = after.handle(signed(path, body, &old, expires)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    let reply = after.handle(signed(path, body, &new, expires)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(sink.sent().len(), 1);
}

#[tokio::test]
async fn the_default_routes_rotate_keys_through_the_environment_too() {
    let old = Signer256::new();
    let new = Signer256::new();
    let (app, sink) = app_at(
        &[
            ("MAILROOM_EVENT_WEBHOOK_PUBLIC_KEY", new.public_key_b64()),
            (
                "MAILROOM_EVENT_WEBHOOK_PREVIOUS_PUBLIC_KEY",
                old.public_key_b64(),
            ),
            (
                "MAILROOM_EVENT_WEBHOOK_PREVIOUS_KEY_EXPIRES_AT",
                "2099-01-01T00:00:00Z".to_owned(),
            ),
        ],
        NOW,
    );
    let body = br#"[{"event":"open","sg_event_id":"c"}]"#;
    let stranger = Signer256::new();
    let replies = [
        app.handle(signed("/sendgrid/events", body, &old, NOW))
            .await
            .status,
        app.handle(signed("/sendgrid/events", body, &new, NOW))
            .await
            .status,
        app.handle(signed("/sendgrid/events", body, &stranger, NOW))
            .await
            .status,
    ];
    assert_eq!(
        replies,
        [StatusCode::OK, StatusCode::OK, StatusCode::FORBIDDEN]
    );
    assert_eq!(sink.sent().len(), 2);
}

#[tokio::test]
async fn inbound_routes_have_their_own_basic_auth() {
    let routes = r#"{"inbound": {"support-example-com": {"basic_auth": "support:s3cret"},
                                 "sales-example-com": {"basic_auth": "sales:other"}}}"#;
    let (app, sink) = app_at(&[("MAILROOM_ROUTES", routes.to_owned())], NOW);
    let basic = |user_pass: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };
    let post = |path: &str, auth: &str| {
        CallbackRequest::new(Method::POST, path, b"--x--".to_vec())
            .with_header("content-type", "multipart/form-data; boundary=x")
            .with_header("authorization", auth)
    };
    let support = "/sendgrid/inbound/support-example-com";
    let sales = "/sendgrid/inbound/sales-example-com";
    assert_eq!(
        app.handle(post(support, &basic("support:s3cret")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.handle(post(sales, &basic("support:s3cret")))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.handle(post(sales, &basic("sales:other"))).await.status,
        StatusCode::OK
    );
    let sent = sink.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| s.queue_url == INBOUND_Q));
    assert_eq!(
        webhook_of(&sent[1].body).as_deref(),
        Some("sales-example-com")
    );
    let stored = mailroom_envelope::decode(&sent[0].body).unwrap();
    let Decoded::Envelope(envelope) = stored else {
        panic!("envelope")
    };
    assert!(
        envelope.header("authorization").is_none(),
        "credentials are not queued"
    );
}

#[tokio::test]
async fn an_unknown_webhook_name_is_404_and_queues_nothing() {
    let routes = r#"{"events": {"marketing": {}}}"#;
    let (app, sink) = app_at(&[("MAILROOM_ROUTES", routes.to_owned())], NOW);
    for _ in 0..3 {
        let reply = app
            .handle(events("/sendgrid/events/marketting", b"[]"))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert!(reply.body.contains("marketting"), "{}", reply.body);
    }
    assert!(sink.sent().is_empty());
}

#[tokio::test]
async fn message_groups_follow_the_webhook_or_a_field_of_the_first_event() {
    let routes = r#"{"events": {
        "marketing": {"message_group": "webhook"},
        "tenants": {"message_group": {"field": "tenant"}},
        "plain": {}}}"#;
    let (app, sink) = app_at(
        &[
            ("MAILROOM_ROUTES", routes.to_owned()),
            ("MAILROOM_MESSAGE_GROUP", "webhook".to_owned()),
        ],
        NOW,
    );
    let acme = br#"[{"event":"open","tenant":"acme"},{"event":"open","tenant":"globex"}]"#;
    let none = br#"[{"event":"open"}]"#;
    for (path, body) in [
        ("/sendgrid/events/marketing", &acme[..]),
        ("/sendgrid/events/tenants", &acme[..]),
        ("/sendgrid/events/tenants", &none[..]),
        ("/sendgrid/events/plain", &acme[..]),
        ("/sendgrid/events", &acme[..]),
    ] {
        let reply = app.handle(events(path, body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
    }
    let groups: Vec<_> = sink.sent().into_iter().map(|s| s.group_id).collect();
    assert_eq!(
        groups,
        [
            Some("marketing".to_owned()),
            Some("acme".to_owned()),
            Some("tenants".to_owned()),
            None,
            Some("default".to_owned()),
        ]
    );
}

#[test]
fn a_bad_routes_document_fails_the_start_naming_the_route() {
    let vars = HashMap::from([(
        "MAILROOM_ROUTES".to_owned(),
        r#"{"events": {"marketing": {"public_key": "not-a-key"}}}"#.to_owned(),
    )]);
    let err = Config::from_vars(vars).expect_err("invalid").to_string();
    assert!(
        err.starts_with("MAILROOM_ROUTES: events.marketing.public_key"),
        "{err}"
    );
}

#[test]
fn routes_can_come_from_a_file() {
    let dir = std::env::temp_dir().join(format!("mailroom-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.json");
    std::fs::write(&file, r#"{"events": {"a": {}}, "inbound": {"b": {}}}"#).unwrap();
    let vars = HashMap::from([(
        "MAILROOM_ROUTES_FILE".to_owned(),
        file.display().to_string(),
    )]);
    let config = Config::from_vars(vars).expect("valid");
    assert_eq!(config.routes.len(), 2);
    let missing = HashMap::from([(
        "MAILROOM_ROUTES_FILE".to_owned(),
        dir.join("nope.json").display().to_string(),
    )]);
    let err = Config::from_vars(missing)
        .expect_err("missing file")
        .to_string();
    assert!(
        err.starts_with("MAILROOM_ROUTES_FILE: cannot read"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_fifo_retry_was_two_messages_when_the_dedup_id_hashed_the_envelope() {
    let routes = r#"{"events": {"ordered": {"queue_url": "http://queue.local/ordered.fifo",
                                           "message_group": "webhook"}}}"#;
    let (app, sink) = app_at(&[("MAILROOM_ROUTES", routes.to_owned())], NOW);
    let body = br#"[{"event":"open","sg_event_id":"f"}]"#;
    for _ in 0..2 {
        let reply = app.handle(events("/sendgrid/events/ordered", body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = app.handle(events("/sendgrid/events", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let sent = sink.sent();
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(body));
    assert_eq!(sent[0].dedup_id.as_deref(), Some(digest.as_str()));
    assert_eq!(
        sent[0].dedup_id, sent[1].dedup_id,
        "the retry has the same id"
    );
    assert_ne!(sent[0].body, sent[1].body, "though the envelopes differ");
    assert_eq!(sent[2].dedup_id, None, "a standard queue gets none");
}
