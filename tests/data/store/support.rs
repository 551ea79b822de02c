//! Shared helpers for the store_* and handler_* integration tests: fixtures, router-shape
//! envelopes and jobs, a handler over the test pool, and small queries.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use mailroom::handler::Job;
use mailroom::handlers::{SendgridHandler, SendgridHandlerConfig};
use mailroom::store::Store;
use mailroom_envelope::{Envelope, Kind, Origin, Source};
use sqlx::PgPool;

pub const QUEUE: &str = "sendgrid-events";
pub const FORM_CONTENT_TYPE: &str = "multipart/form-data; boundary=xYzZY";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/store")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name))
        .expect("utf-8 fixture")
        .trim()
        .to_string()
}

/// When the (pretend) edge received every request.
pub fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// A router-shape envelope, as mailroom-router writes it.
pub fn envelope(
    kind: Kind,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Envelope {
    let path = match kind {
        Kind::Events => "/sendgrid/events",
        Kind::Inbound => "/sendgrid/inbound",
        Kind::Message => "/",
    };
    let mut all = vec![("content-type".to_string(), content_type.to_string())];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    Envelope {
        origin: Origin::Router { version: 1 },
        kind,
        received_at: Some(received_at()),
        source: Some(Source {
            path: path.into(),
            stage: Some("prod".into()),
            request_id: Some("req-1".into()),
            webhook: None,
        }),
        headers: all,
        content_type: Some(content_type.to_string()),
        body: body.into(),
        queue_url: None,
    }
}

pub fn job(message_id: &str, envelope: Envelope) -> Job {
    Job {
        message_id: message_id.to_string(),
        queue: QUEUE.to_string(),
        receive_count: 1,
        sent_at: Some(received_at()),
        attributes: HashMap::from([("mailroom.kind".to_string(), "events".to_string())]),
        envelope,
    }
}

pub fn events_job(message_id: &str, body: Vec<u8>) -> Job {
    job(
        message_id,
        envelope(Kind::Events, "application/json", body, &[]),
    )
}

pub fn inbound_job(message_id: &str, body: Vec<u8>) -> Job {
    job(
        message_id,
        envelope(Kind::Inbound, FORM_CONTENT_TYPE, body, &[]),
    )
}

pub fn handler(pool: &PgPool) -> SendgridHandler {
    SendgridHandler::new(
        Store::from_pool(pool.clone()),
        SendgridHandlerConfig::default(),
    )
    .expect("default config is valid")
}

pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
