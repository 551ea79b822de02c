//! Shared set-up for the operations tests (`tests/ops_*.rs`): the real `mailroom` binary, a
//! fresh Postgres database per test (migrated with `mailroom migrate`), rustack queues, and a
//! tiny HTTP/1.0 client for the telemetry endpoints. Every wait is bounded.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const BIN: &str = env!("CARGO_BIN_EXE_mailroom");

pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros() % 1_000_000
    )
}

pub async fn sqs() -> aws_sdk_sqs::Client {
    sqs_at(&endpoint()).await
}

pub async fn sqs_at(endpoint: &str) -> aws_sdk_sqs::Client {
    let cfg = mailroom::config::SqsConfig {
        endpoint_url: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var(k).is_err() {
            std::env::set_var(k, v);
        }
    }
    aws_sdk_sqs::Client::new(&mailroom::sqs::aws_config(&cfg).await)
}

pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    dlq_arn: Option<&str>,
) -> String {
    let mut req = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "30");
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

pub async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    mailroom::sqs::attributes(client, url)
        .await
        .expect("attributes")
        .get("QueueArn")
        .cloned()
        .expect("QueueArn")
}

/// (visible, in flight)
pub async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let d = mailroom::admin::queue_info::Depth::from_attrs(
        &mailroom::sqs::attributes(client, url)
            .await
            .expect("attributes"),
    );
    (d.visible, d.in_flight)
}

/// A database of its own, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = unique("mailroom_ops").to_lowercase();
        let mut conn = PgConnection::connect(&admin_url()).await.expect("postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin_url();
        let root = base.rsplit_once('/').map(|(r, _)| r).unwrap_or(&base);
        Self {
            url: format!("{root}/{name}"),
            name,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("test database")
    }

    pub async fn drop_db(&self) {
        if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
            let _ = sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn)
            .await;
        }
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

pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Run the binary to completion; returns (status, stdout, stderr).
pub fn mailroom(config: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("MAILROOM_LOG_FORMAT", "json")
        .env_remove("DATABASE_URL")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run mailroom");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn migrate(config: &Path) {
    let (status, out, err) = mailroom(config, &["migrate"]);
    assert!(status.success(), "migrate failed: {out}\n{err}");
}

/// A `mailroom run` process.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(config: &Path, log: PathBuf, env: &[(&str, &str)]) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .env("MAILROOM_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("DATABASE_URL")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("MAILROOM_TELEMETRY_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file.try_clone().expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn mailroom run");
        Self { child, log }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the log to contain `needle`, at most `secs`.
    pub async fn wait_log(&mut self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "worker exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the worker log after {secs}s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub async fn stop(mut self, secs: u64) -> ExitStatus {
        self.signal("TERM");
        self.wait(secs).await
    }

    pub async fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("worker did not exit within {secs}s:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
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

/// Poll `f` every 200 ms until it returns true, at most `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out after {secs}s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
