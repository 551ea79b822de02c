//! Shared set-up for the operations tests (`tests/ops_*.rs`): the real `mailroom` binary, a
//! fresh Postgres database per test (migrated with `mailroom migrate`), rustack queues, and a
//! tiny HTTP/1.0 client for the telemetry endpoints. Every wait is bounded.
//!
//! The helpers every kind of test shares (names, clients, queues, databases, the worker process)
//! come from `tests/support`, re-exported here.
#![allow(dead_code)]

#[path = "../support/mod.rs"]
mod support;

#[allow(unused_imports)] // each test crate uses a different part
pub use support::*;

mod http;
#[allow(unused_imports)] // the tests that play an application or a collector
pub use http::serve_http;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A database of its own, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = unique("mailroom_ops").to_lowercase();
        let url = create_db(&admin_url(), &name).await;
        Self { name, url }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("test database")
    }

    pub async fn drop_db(&self) {
        drop_db(&admin_url(), &self.name).await;
    }
}

/// Write a config for `queues` (label, url) into `dir`; `extra` goes at the top level after
/// [worker] settings (e.g. a [telemetry] table).
pub fn write_config(dir: &Path, db_url: &str, queues: &[(&str, &str)], extra: &str) -> PathBuf {
    write_config_at(&endpoint(), dir, db_url, queues, extra)
}

/// [`write_config`] for an SQS server other than rustack (LocalStack).
pub fn write_config_at(
    endpoint: &str,
    dir: &Path,
    db_url: &str,
    queues: &[(&str, &str)],
    extra: &str,
) -> PathBuf {
    let mut text = format!(
        r#"
[worker]
total_concurrency = 20
shutdown_timeout_secs = 10
[store]
database_url = "{db_url}"
max_connections = 4
[sqs]
endpoint_url = "{endpoint}"
region = "us-east-1"
{extra}
"#
    );
    for (name, url) in queues {
        text.push_str(&format!(
            r#"
[[queue]]
name = "{name}"
url = "{url}"
handler = "sendgrid"
wait_time_secs = 1
visibility_timeout_secs = 30
heartbeat_secs = 10
retry_intervals_secs = [1, 1]
"#
        ));
    }
    let path = dir.join("mailroom.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// GET over HTTP/1.0; returns (status, body). Bounded by 5 s.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// An Event Webhook batch body whose events carry these sg_event_ids.
pub fn events_body(ids: &[String]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "email": "ops@example.com",
                "timestamp": 1764190001,
                "event": "delivered",
                "sg_event_id": id,
                "sg_message_id": format!("msg-{id}"),
                "response": "250 OK"
            })
        })
        .collect();
    serde_json::to_vec(&events).expect("json")
}

/// The router envelope of an events batch, as the SQS body.
pub fn events_message(ids: &[String]) -> String {
    let envelope = mailroom::admin::send::envelope(
        mailroom::admin::send::KindArg::Events,
        events_body(ids),
        None,
    );
    mailroom_envelope::encode(&envelope)
}

pub async fn count(db: &TestDb, sql: &str) -> i64 {
    let mut conn = db.connect().await;
    sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect("count")
}
