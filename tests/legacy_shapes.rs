//! Existing deployments switch to Mailroom without touching API Gateway: the two shapes of the
//! old mapping templates (`body-json`; `body-raw` + Java-map `http-headers`, base64'd once or
//! twice) and the router's envelope decode, through the real handler and store, to the same rows.

mod support;

use base64::Engine as _;
use chrono::Utc;
use mailroom::handler::{Job, Outcome};
use mailroom::handlers::{SendgridHandler, SendgridHandlerConfig};
use mailroom::store::Store;
use mailroom_envelope::{decode, encode, Decoded, Envelope, Kind, Origin, Source};
use support::{admin_url, create_db, drop_db, unique};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sendgrid");
const FORM: &str = "multipart/form-data; boundary=xYzZY";

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{SAMPLES}/{name}")).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn router_body(kind: Kind, content_type: &str, body: Vec<u8>) -> String {
    encode(&Envelope {
        origin: Origin::Router {
            version: mailroom_envelope::ENVELOPE_VERSION,
        },
        kind,
        received_at: Some(Utc::now()),
        source: Some(Source {
            path: "/sendgrid".into(),
            stage: Some("prod".into()),
            request_id: None,
            webhook: None,
        }),
        headers: vec![("content-type".into(), content_type.into())],
        content_type: Some(content_type.into()),
        body: body.into(),
        queue_url: None,
    })
}

fn seed_json(events: &[u8]) -> String {
    format!(
        "{{\"queue_url\": \"https://sqs.us-east-1.amazonaws.com/1/events\", \"body-json\": {}}}",
        String::from_utf8_lossy(events)
    )
}

fn seed_raw(body: &[u8], twice: bool) -> String {
    let headers = "{Accept=*/*, Content-Type=multipart/form-data; boundary=xYzZY, Host=example.execute-api.us-east-1.amazonaws.com, User-Agent=Sendlib/1.0, X-Forwarded-For=1.2.3.4, 5.6.7.8}";
    let once = b64(body);
    let body_raw = if twice { b64(once.as_bytes()) } else { once };
    serde_json::json!({
        "queue_url": "https://sqs.us-east-1.amazonaws.com/1/inbound",
        "body-raw": body_raw,
        "http-headers": b64(headers.as_bytes()),
    })
    .to_string()
}

fn job(id: &str, sqs_body: &str) -> Job {
    let envelope = match decode(sqs_body).unwrap_or_else(|e| panic!("{id} decodes: {e}")) {
        Decoded::Envelope(envelope) => envelope,
        Decoded::Pointer(_) => panic!("{id} is not a pointer"),
    };
    Job {
        message_id: id.into(),
        queue: "legacy".into(),
        receive_count: 1,
        sent_at: None,
        attributes: Default::default(),
        envelope,
    }
}

/// Everything an application reads, apart from ids, times and the SQS message id.
async fn stored(jobs: Vec<Job>) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let db = unique(&format!("legacy_{}", jobs[0].message_id.replace('-', "_")));
    let url = create_db(&admin_url(), &db).await;
    let store = Store::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let handler = SendgridHandler::new(store.clone(), SendgridHandlerConfig::default()).unwrap();
    let outcomes = handler.handle(&jobs).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Done), "{outcomes:?}");
    let events: Vec<(serde_json::Value,)> = sqlx::query_as(
        "select to_jsonb(e) - 'id' - 'sqs_message_id' - 'stored_at' - 'received_at' - 'queue' - 'feed_xid'
         from mailroom_events e order by sg_event_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let emails: Vec<(serde_json::Value,)> = sqlx::query_as(
        "select to_jsonb(m) - 'id' - 'sqs_message_id' - 'stored_at' - 'received_at' - 'queue' - 'feed_xid'
            || jsonb_build_object('attachments', (select jsonb_agg(a.sha256 order by a.position)
                                                  from mailroom_inbound_attachments a where a.email_id = m.id))
         from mailroom_inbound_emails m order by mode, dedup_key",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    store.pool().close().await;
    drop_db(&admin_url(), &db).await;
    (
        events.into_iter().map(|r| r.0).collect(),
        emails.into_iter().map(|r| r.0).collect(),
    )
}

#[tokio::test]
async fn legacy_mapping_template_shapes_store_the_same_rows_as_the_router_envelope() {
    let events = sample("events.json");
    let parsed = sample("inbound-parsed.multipart");
    let raw = sample("inbound-raw.multipart");

    let via_router = stored(vec![
        job(
            "router-events",
            &router_body(Kind::Events, "application/json", events.clone()),
        ),
        job(
            "router-parsed",
            &router_body(Kind::Inbound, FORM, parsed.clone()),
        ),
        job("router-raw", &router_body(Kind::Inbound, FORM, raw.clone())),
    ])
    .await;
    let via_seed = stored(vec![
        job("seed-events", &seed_json(&events)),
        job("seed-parsed", &seed_raw(&parsed, false)),
        job("seed-raw", &seed_raw(&raw, false)),
    ])
    .await;
    let via_double_base64 = stored(vec![
        job("twice-events", &seed_json(&events)),
        job("twice-parsed", &seed_raw(&parsed, true)),
        job("twice-raw", &seed_raw(&raw, true)),
    ])
    .await;

    assert_eq!(via_router.0.len(), 9, "all sample events stored");
    assert_eq!(via_router.1.len(), 2, "both inbound emails stored");
    assert_eq!(
        via_seed, via_router,
        "legacy shapes store exactly what the router envelope stores"
    );
    assert_eq!(
        via_double_base64, via_router,
        "a body base64'd twice is unwrapped"
    );
}
