//! Cost of the router core per request, AWS excluded: routing, auth-free checks, envelope
//! encoding, for a JSON Event Webhook batch and a multipart Inbound Parse post, with a sink that
//! accepts everything immediately.
//!
//! `cargo bench -p mailroom-router --bench app`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::Method;
use mailroom_router::{App, Attribute, CallbackRequest, Config, Sink, SinkError};

struct NoopSink;

impl Sink for NoopSink {
    async fn send_message(
        &self,
        _queue_url: &str,
        body: String,
        _attributes: Vec<Attribute>,
        _grouping: mailroom_router::sink::Grouping<'_>,
    ) -> Result<String, SinkError> {
        black_box(body);
        Ok("noop".to_owned())
    }

    async fn put_object(&self, _bucket: &str, _key: &str, bytes: Bytes) -> Result<(), SinkError> {
        black_box(bytes);
        Ok(())
    }
}

fn data(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let config = Config {
        events_queue_url: Some("http://queue.local/events".to_owned()),
        inbound_queue_url: Some("http://queue.local/inbound".to_owned()),
        ..Config::default()
    };
    let app = App::new(config, NoopSink);

    let events = CallbackRequest::new(Method::POST, "/sendgrid/events", data("events-body.json"))
        .with_header("content-type", "application/json")
        .with_header("user-agent", "SendGrid Event API");
    let inbound = CallbackRequest::new(
        Method::POST,
        "/sendgrid/inbound",
        data("inbound-body.multipart"),
    )
    .with_header("content-type", "multipart/form-data; boundary=xYzZY")
    .with_header("user-agent", "Sendlib/1.0");

    let mut group = c.benchmark_group("handle");
    for (name, request) in [("events_json", events), ("inbound_multipart", inbound)] {
        group.throughput(Throughput::Bytes(request.body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let reply = runtime.block_on(app.handle(request.clone()));
                assert!(reply.status.is_success());
                black_box(reply)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
