//! End to end, as in production: an HTTP POST to the router (`serve`, in-process) -> SQS
//! (rustack, with its S3 for large bodies) -> the real `mailroom run` binary -> Postgres rows.
//! Also: SendGrid's retry of the same post adds no rows, a malformed post is dead-lettered, and
//! SIGTERM drains and exits 0.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mailroom_router::{App, AwsSink, Config as RouterConfig};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POST over a plain HTTP/1.1 connection; returns the status code.
async fn post(addr: std::net::SocketAddr, path: &str, content_type: &str, body: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to router");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn post_to_router_lands_in_postgres_once() {
    common::set_aws_env();
    let endpoint = common::endpoint();
    let aws = common::sdk_config(&endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let events_q = common::unique_dashed("e2e-events");
    let inbound_q = common::unique_dashed("e2e-inbound");
    let events_url = common::create_queue(&sqs, &events_q, 30, None).await;
    let inbound_url = common::create_queue(&sqs, &inbound_q, 30, None).await;
    let bucket = common::unique_dashed("e2e-bodies");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");

    // A fresh database, migrated by the binary.
    let db = common::unique("e2e");
    let admin_url = common::admin_url();
    let mut admin = PgConnection::connect(&admin_url).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let database_url = common::db_url(&admin_url, &db);
    let dir = std::env::temp_dir().join(&db);
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("mailroom.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
            [worker]
            shutdown_timeout_secs = 10
            [sqs]
            endpoint_url = "{endpoint}"
            region = "us-east-1"
            [[queue]]
            name = "{events_q}"
            url = "{events_url}"
            handler = "sendgrid"
            wait_time_secs = 1
            [[queue]]
            name = "{inbound_q}"
            url = "{inbound_url}"
            handler = "sendgrid"
            wait_time_secs = 1
            "#
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_mailroom");
    let migrated = Command::new(bin)
        .args(["--config", config_path.to_str().unwrap(), "migrate"])
        .env("DATABASE_URL", &database_url)
        .status()
        .unwrap();
    assert!(migrated.success());
    let mut worker = Worker(
        Command::new(bin)
            .args(["--config", config_path.to_str().unwrap(), "run"])
            .env("DATABASE_URL", &database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The router, in-process on port 0, with the real AWS sink.
    let vars: HashMap<String, String> = [
        ("MAILROOM_EVENTS_QUEUE_URL", events_url.as_str()),
        ("MAILROOM_INBOUND_QUEUE_URL", inbound_url.as_str()),
        ("MAILROOM_LARGE_BODY_BUCKET", bucket.as_str()),
        ("MAILROOM_MAX_MESSAGE_BYTES", "65536"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let app = Arc::new(App::new(
        RouterConfig::from_vars(vars).unwrap(),
        AwsSink::from_sdk_config(&aws),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_router, router_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tokio::spawn(mailroom_router::serve::serve(app, listener, async {
        let _ = router_stopped.await;
    }));

    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sendgrid");
    let events = std::fs::read(format!("{samples}/events.json")).unwrap();
    let parsed = std::fs::read(format!("{samples}/inbound-parsed.multipart")).unwrap();
    let raw = std::fs::read(format!("{samples}/inbound-raw.multipart")).unwrap();
    let large: Vec<serde_json::Value> = (0..600)
        .map(|i| {
            serde_json::json!({"email": format!("u{i}@example.com"), "timestamp": 1764190000 + i,
                "event": "delivered", "sg_event_id": format!("e2e-large-{i}"), "response": "250 OK ".repeat(20)})
        })
        .collect();
    let large = serde_json::to_vec(&large).unwrap();
    assert!(
        large.len() > 65536,
        "the large batch must exceed the message limit"
    );
    let multipart = "multipart/form-data; boundary=xYzZY";
    assert_eq!(
        post(addr, "/sendgrid/events", "application/json", &events).await,
        200
    );
    assert_eq!(
        post(addr, "/sendgrid/events", "application/json", &events).await,
        200,
        "SendGrid's retry"
    );
    assert_eq!(
        post(addr, "/sendgrid/inbound", multipart, &parsed).await,
        200
    );
    assert_eq!(
        post(addr, "/sendgrid/inbound", multipart, &parsed).await,
        200,
        "SendGrid's retry"
    );
    assert_eq!(post(addr, "/sendgrid/inbound", multipart, &raw).await, 200);
    assert_eq!(
        post(addr, "/sendgrid/events", "application/json", &large).await,
        200
    );
    assert_eq!(
        post(addr, "/sendgrid/events", "application/json", b"{not json").await,
        200
    );
    assert_eq!(post(addr, "/nowhere", "application/json", b"[]").await, 404);

    let mut conn = PgConnection::connect(&database_url).await.unwrap();
    let sample_events = serde_json::from_slice::<Vec<serde_json::Value>>(&events)
        .unwrap()
        .len() as i64;
    let want_events = sample_events + 600;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (events, emails, dead): (i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from mailroom_events), (select count(*) from mailroom_inbound_emails), (select count(*) from mailroom_dead_letters)",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if events >= want_events && emails >= 2 && dead >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: {events} events, {emails} emails, {dead} dead letters"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give any duplicate a moment to (wrongly) land, then count exactly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (events, distinct): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct sg_event_id) from mailroom_events")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (events, distinct),
        (want_events, want_events),
        "every event exactly once"
    );
    let emails: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "select e.mode, e.subject, (select count(*) from mailroom_inbound_attachments a where a.email_id = e.id) from mailroom_inbound_emails e order by e.mode",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        emails,
        vec![
            ("parsed".into(), Some("Order #1234".into()), 1),
            ("raw".into(), Some("Raw mode demo".into()), 1)
        ]
    );
    let (attachment,): (Vec<u8>,) = sqlx::query_as(
        "select a.content from mailroom_inbound_attachments a join mailroom_inbound_emails e on e.id = a.email_id where e.mode = 'raw'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        attachment,
        (0..=255u8).collect::<Vec<_>>(),
        "the raw-mode attachment is byte-exact"
    );
    let (reason,): (String,) = sqlx::query_as("select reason from mailroom_dead_letters")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(reason.contains("not JSON"), "{reason}");

    // Every message deleted; the offloaded body kept (a redelivered pointer must still find it;
    // the bucket's lifecycle rule expires it).
    assert_eq!(common::depth(&sqs, &events_url).await, (0, 0));
    assert_eq!(common::depth(&sqs, &inbound_url).await, (0, 0));
    let objects = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(
        objects.key_count.unwrap_or(0),
        1,
        "the S3 body stays for the lifecycle rule"
    );

    // SIGTERM drains and exits 0.
    let pid = worker.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let status = worker.0.wait();
        (worker, status)
    })
    .await
    .unwrap()
    .1
    .unwrap();
    assert!(
        status.success(),
        "worker exit status after SIGTERM: {status:?}"
    );

    let _ = stop_router.send(());
    router.await.unwrap().unwrap();
    drop(conn);
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
