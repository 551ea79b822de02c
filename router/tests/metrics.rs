//! The real `mailroom-router serve` binary with `MAILROOM_ROUTER_METRICS_LISTEN`: requests of
//! each kind and outcome, then its /metrics scraped. No AWS server is needed: SQS is an
//! unreachable loopback port, so the events post is the 503 of a failed send, and S3 too, so a
//! large inbound post is the 503 of a failed offload.
//!
//! Also: the callback port never serves /metrics, and without the variable nothing listens
//! for metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One HTTP/1.1 request with `Connection: close`; (status, body), `None` when nothing answers.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The value of the sample `name{labels}` (labels in any order) in a Prometheus text scrape.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let got: BTreeMap<&str, &str> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        (got == want).then(|| value.parse().ok()).flatten()
    })
}

struct Router {
    child: tokio::process::Child,
    listen: SocketAddr,
}

impl Router {
    async fn start(metrics: Option<SocketAddr>) -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailroom-router"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env_remove("MAILROOM_ROUTER_METRICS_LISTEN")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            // Nothing listens on port 1: every SendMessage fails at once.
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env(
                "MAILROOM_EVENTS_QUEUE_URL",
                "http://127.0.0.1:1/000000000000/mailroom-unreachable",
            )
            .env(
                "MAILROOM_INBOUND_QUEUE_URL",
                "http://127.0.0.1:1/000000000000/mailroom-unreachable-inbound",
            )
            // Envelopes over 4 KiB go to S3, which is just as unreachable.
            .env("MAILROOM_MAX_MESSAGE_BYTES", "4096")
            .env("MAILROOM_LARGE_BODY_BUCKET", "mailroom-unreachable")
            .env("MAILROOM_INBOUND_BASIC_AUTH", "user:secret")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(metrics) = metrics {
            cmd.env("MAILROOM_ROUTER_METRICS_LISTEN", metrics.to_string());
        }
        let child = cmd.spawn().expect("spawn mailroom-router serve");
        let router = Self { child, listen };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(listen, "GET", "/healthz", "", "").await.is_none() {
            assert!(
                Instant::now() < deadline,
                "mailroom-router serve did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        router
    }
}

#[tokio::test]
async fn serve_exports_requests_by_kind_and_status_on_its_own_listener() {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut router = Router::start(Some(metrics)).await;
    let listen = router.listen;
    // Router::start's readiness probe was one GET /healthz (other, 200).
    assert_eq!(
        http(listen, "GET", "/nowhere", "", "").await.map(|r| r.0),
        Some(404)
    );
    assert_eq!(
        http(listen, "GET", "/metrics", "", "").await.map(|r| r.0),
        Some(404),
        "the callback port does not serve metrics"
    );
    assert_eq!(
        http(
            listen,
            "POST",
            "/sendgrid/inbound",
            "content-type: text/plain\r\n",
            "hi"
        )
        .await
        .map(|r| r.0),
        Some(401)
    );
    // Basic auth `user:secret`, and a body too large for the 4 KiB message limit.
    let large = "x".repeat(8192);
    let (status, reply) = http(
        listen,
        "POST",
        "/sendgrid/inbound",
        "content-type: text/plain\r\nauthorization: Basic dXNlcjpzZWNyZXQ=\r\n",
        &large,
    )
    .await
    .expect("inbound answer");
    assert_eq!(status, 503, "{reply}");
    let body =
        r#"[{"email":"a@example.com","event":"delivered","sg_event_id":"m1","timestamp":1}]"#;
    let (status, reply) = http(
        listen,
        "POST",
        "/sendgrid/events",
        "content-type: application/json\r\n",
        body,
    )
    .await
    .expect("events answer");
    assert_eq!(status, 503, "{reply}");

    let (status, text) = http(metrics, "GET", "/metrics", "", "")
        .await
        .expect("metrics answer");
    assert_eq!(status, 200);
    let requests = |kind, status| {
        sample(
            &text,
            "mailroom_router_requests_total",
            &[("kind", kind), ("status", status)],
        )
    };
    assert_eq!(requests("other", "200"), Some(1.0), "{text}");
    assert_eq!(requests("other", "404"), Some(2.0), "{text}");
    assert_eq!(requests("inbound", "401"), Some(1.0), "{text}");
    assert_eq!(requests("events", "503"), Some(1.0), "{text}");
    // Registered at 0 before they happen.
    assert_eq!(requests("events", "500"), Some(0.0), "{text}");
    assert_eq!(requests("inbound", "503"), Some(1.0), "{text}");
    assert_eq!(requests("inbound", "500"), Some(0.0), "{text}");
    let by_kind = |name, kind| sample(&text, name, &[("kind", kind)]);
    assert_eq!(
        by_kind("mailroom_router_sqs_send_failures_total", "events"),
        Some(1.0)
    );
    assert_eq!(
        by_kind("mailroom_router_sqs_send_failures_total", "inbound"),
        Some(0.0)
    );
    assert_eq!(
        by_kind("mailroom_router_s3_offloads_total", "events"),
        Some(0.0)
    );
    assert_eq!(
        by_kind("mailroom_router_s3_offload_failures_total", "inbound"),
        Some(1.0)
    );
    assert_eq!(
        by_kind("mailroom_router_s3_offload_failures_total", "events"),
        Some(0.0)
    );
    assert_eq!(
        by_kind("mailroom_router_s3_offloads_total", "inbound"),
        Some(0.0)
    );
    assert_eq!(
        by_kind("mailroom_router_request_duration_seconds_count", "events"),
        Some(1.0)
    );
    assert_eq!(
        by_kind("mailroom_router_request_duration_seconds_count", "other"),
        Some(3.0)
    );
    assert_eq!(
        by_kind("mailroom_router_request_bytes_sum", "events"),
        Some(body.len() as f64)
    );
    assert!(
        text.contains("# TYPE mailroom_router_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(
            "mailroom_router_request_duration_seconds_bucket{kind=\"events\",le=\"0.001\"}"
        ),
        "fixed buckets: {text}"
    );
    assert_eq!(
        http(metrics, "GET", "/", "", "").await.map(|r| r.0),
        Some(404)
    );
    let _ = router.child.kill().await;
}

#[tokio::test]
async fn without_the_variable_nothing_serves_metrics() {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut router = Router::start(None).await;
    assert!(http(metrics, "GET", "/metrics", "", "").await.is_none());
    assert_eq!(
        http(router.listen, "GET", "/metrics", "", "")
            .await
            .map(|r| r.0),
        Some(404)
    );
    let _ = router.child.kill().await;
}
