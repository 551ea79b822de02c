//! Traces end to end: a collector stand-in (an OTLP/HTTP receiver written here, JSON protocol)
//! receives one connected trace for a callback posted to the router (in this process) with a
//! caller's `traceparent`, carried through SQS and stored by the worker (the real binary): the
//! router's span is a child of the caller's, each message's span a child of the router's, decode
//! under the message, and the batch span links to every message it stored, across traces.
//!
//! One test in this file: it sets the OTEL_* variables for the whole process.

#[path = "ops_support/mod.rs"]
mod ops_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use mailroom_router::{App, AwsSink, Config as RouterConfig};
use ops_support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Every span the collector received, flattened, with its service name.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    links: Vec<(String, String)>,
    attributes: HashMap<String, Value>,
}

async fn start_collector(received: Arc<Mutex<Vec<Value>>>) -> u16 {
    let addr = serve_http(move |req: hyper::Request<bytes::Bytes>| {
        let received = received.clone();
        async move {
            if req.uri().path() == "/v1/traces" {
                if let Ok(v) = serde_json::from_slice::<Value>(req.body()) {
                    received.lock().expect("lock").push(v);
                }
            }
            hyper::Response::new(Full::new(bytes::Bytes::from_static(b"{}")))
        }
    })
    .await;
    addr.port()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn spans(exports: &[Value]) -> Vec<Span> {
    let mut out = Vec::new();
    for export in exports {
        for rs in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .map(|a| text(&a["value"]["stringValue"]))
                .unwrap_or_default();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let attributes = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| (text(&a["key"]), a["value"].clone()))
                        .collect();
                    out.push(Span {
                        service: service.clone(),
                        name: text(&s["name"]),
                        trace: text(&s["traceId"]),
                        id: text(&s["spanId"]),
                        parent: text(&s["parentSpanId"]),
                        links: s["links"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|l| (text(&l["traceId"]), text(&l["spanId"])))
                            .collect(),
                        attributes,
                    });
                }
            }
        }
    }
    out
}

async fn post(addr: std::net::SocketAddr, body: &[u8], traceparent: Option<&str>) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to router");
    let extra = traceparent
        .map(|t| format!("traceparent: {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /sendgrid/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connected_trace_from_the_router_request_to_the_stored_batch() {
    let exports: Arc<Mutex<Vec<Value>>> = Arc::default();
    let port = start_collector(exports.clone()).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let otel_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    for (k, v) in otel_env {
        std::env::set_var(k, v);
    }
    // The router runs in this process: its spans go through this process's subscriber.
    {
        use tracing_subscriber::prelude::*;
        let layer = mailroom_otel::layer("mailroom-router").expect("otel layer");
        assert!(layer.is_some(), "the OTEL_* variables turn export on");
        tracing_subscriber::registry().with(layer).init();
    }

    let sqs = sqs().await;
    let queue = unique_dashed("traces");
    let url = create_queue(&sqs, &queue, 30, None).await;
    let db = TestDb::create().await;
    let dir = temp_dir("ops-traces");
    let config = dir.join("mailroom.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[worker]
total_concurrency = 20
shutdown_timeout_secs = 10
[store]
database_url = "{db}"
[sqs]
endpoint_url = "{endpoint}"
region = "us-east-1"
[[queue]]
name = "sendgrid-events"
url = "{url}"
handler = "sendgrid"
wait_time_secs = 1
# Both posts in one batch (one transaction), so its span links to two traces.
batch_window_ms = 1500
"#,
            db = db.url,
            endpoint = ops_support::endpoint(),
        ),
    )
    .expect("config");
    migrate(&config);

    let vars: HashMap<String, String> = [
        ("MAILROOM_EVENTS_QUEUE_URL", url.as_str()),
        ("MAILROOM_INBOUND_QUEUE_URL", url.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let app = Arc::new(App::new(
        RouterConfig::from_vars(vars).expect("router config"),
        AwsSink::from_sdk_config(&sdk_config(&ops_support::endpoint()).await),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_router, router_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tokio::spawn(mailroom_router::serve::serve(app, listener, async {
        let _ = router_stopped.await;
    }));

    let traced = events_body(&[format!("{queue}-traced")]);
    let untraced = events_body(&[format!("{queue}-new-trace")]);
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    assert_eq!(post(addr, &traced, Some(&caller)).await, 200);
    assert_eq!(post(addr, &untraced, None).await, 200);

    let worker = Worker::start(&config, dir.join("worker.log"), &otel_env);
    eventually_async(30, "both events stored", || async {
        count(&db, "select count(*) from mailroom_events").await == 2
    })
    .await;
    // SIGTERM: the worker drains and exports what it still buffers before it exits.
    let log = worker.log.clone();
    let status = worker.stop(20).await;
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let _ = stop_router.send(());
    router.await.expect("router task").expect("router");
    tokio::task::spawn_blocking(mailroom_otel::shutdown)
        .await
        .expect("flush");

    let all = {
        let exports = exports.clone();
        let mut all = Vec::new();
        for _ in 0..50 {
            all = spans(&exports.lock().expect("lock"));
            if all.iter().any(|s| s.name == "sqs.ack")
                && all.iter().any(|s| s.name == "router.request")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        all
    };
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|s| (s.service.as_str(), s.name.as_str()))
        .collect();
    let find = |name: &str, trace: &str| {
        all.iter()
            .find(|s| s.name == name && s.trace == trace)
            .unwrap_or_else(|| panic!("no {name} span in trace {trace}: {names:?}"))
            .clone()
    };

    // The caller's trace, continued by the router and then by the worker.
    let request = find("router.request", CALLER_TRACE);
    assert_eq!(request.service, "mailroom-router");
    assert_eq!(
        request.parent, CALLER_SPAN,
        "the router continues the caller's span"
    );
    let message = find("mailroom.message", CALLER_TRACE);
    assert_eq!(message.service, "mailroom");
    assert_eq!(
        message.parent, request.id,
        "the message's span is the request's child"
    );
    assert!(
        message.attributes.contains_key("messaging.message.id"),
        "{message:?}"
    );
    let decode = find("mailroom.decode", CALLER_TRACE);
    assert_eq!(decode.parent, message.id);

    // The other post started a trace of its own, carried the same way.
    let other_request = all
        .iter()
        .find(|s| s.name == "router.request" && s.trace != CALLER_TRACE)
        .expect("the untraced post's request span");
    let other_message = find("mailroom.message", &other_request.trace);
    assert_eq!(other_message.parent, other_request.id);

    // One batch (one transaction) linked to both messages, in their two traces.
    let batch = all
        .iter()
        .find(|s| s.name == "mailroom.batch" && s.links.len() == 2)
        .unwrap_or_else(|| panic!("a batch span linked to both messages: {names:?}"));
    let linked: Vec<&(String, String)> = batch.links.iter().collect();
    assert!(
        linked.contains(&&(message.trace.clone(), message.id.clone())),
        "{batch:?}"
    );
    assert!(
        linked.contains(&&(other_message.trace.clone(), other_message.id.clone())),
        "{batch:?}"
    );
    let ack = all
        .iter()
        .find(|s| s.name == "sqs.ack" && s.parent == batch.id)
        .unwrap_or_else(|| panic!("the batch's ack span: {names:?}"));
    assert_eq!(ack.trace, batch.trace);
    assert!(all.iter().any(|s| s.name == "sqs.receive"), "{names:?}");
    db.drop_db().await;
}
