//! Shared set-up for the integration tests: a real SQS-compatible server (rustack, started by
//! scripts/test.sh; its URL in AWS_ENDPOINT_URL) and, where needed, the real Postgres.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use chrono::Utc;
use mailroom::config::Config;
use mailroom::engine::{Controls, Engine, EngineParts, ShutdownReport};
use mailroom::handler::{BoxFuture, DeadLetter, DeadLetterSink, Handler, Job, Outcome, Registry};
use mailroom::s3::Bodies;
use mailroom_envelope::{Envelope, Kind, Origin, Source};

pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

pub fn set_aws_env() {
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        if std::env::var(k).is_err() {
            // Tests set the same values; racing writes are identical.
            unsafe_free_set_var(k, v);
        }
    }
}

fn unsafe_free_set_var(k: &str, v: &str) {
    // std::env::set_var is safe on edition 2021.
    std::env::set_var(k, v);
}

pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    set_aws_env();
    let sqs = mailroom::config::SqsConfig {
        endpoint_url: Some(endpoint.to_string()),
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    mailroom::sqs::aws_config(&sqs).await
}

pub async fn sqs() -> Client {
    Client::new(&sdk_config(&endpoint()).await)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        Utc::now().timestamp_micros() % 1_000_000
    )
}

pub async fn create_queue(client: &Client, name: &str) -> String {
    client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

pub fn envelope(kind: Kind, body: &[u8]) -> Envelope {
    Envelope {
        origin: Origin::Router {
            version: mailroom_envelope::ENVELOPE_VERSION,
        },
        kind,
        received_at: Some(Utc::now()),
        source: Some(Source {
            path: "/sendgrid/events".into(),
            stage: None,
            request_id: Some("test".into()),
        }),
        headers: vec![("content-type".into(), "application/json".into())],
        content_type: Some("application/json".into()),
        body: body.to_vec(),
        queue_url: None,
    }
}

/// Send `n` router envelopes whose bodies are `{"n": i}`; returns the bodies' indices.
pub async fn send_numbered(client: &Client, url: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                let body = mailroom_envelope::encode(&envelope(
                    Kind::Events,
                    format!("{{\"n\":{i}}}").as_bytes(),
                ));
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(body)
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        let out = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        assert!(out.failed.is_empty(), "send failed: {:?}", out.failed);
    }
}

/// Messages visible + in flight + delayed.
pub async fn depth(client: &Client, url: &str) -> (u64, u64) {
    let attrs = mailroom::sqs::attributes(client, url).await.unwrap();
    let get = |k: &str| attrs.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    (
        get("ApproximateNumberOfMessages"),
        get("ApproximateNumberOfMessagesNotVisible"),
    )
}

/// What a test handler does with each job.
pub type Behaviour = Arc<dyn Fn(&Job) -> Outcome + Send + Sync>;

/// A handler that records every job it sees and answers by `behaviour`, after `delay`.
pub struct Recording {
    pub seen: Mutex<Vec<(String, u32, Vec<u8>)>>,
    pub behaviour: Behaviour,
    pub delay: Duration,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
}

impl Recording {
    pub fn new(behaviour: Behaviour, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            behaviour,
            delay,
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        })
    }

    pub fn done() -> Arc<Self> {
        Self::new(Arc::new(|_| Outcome::Done), Duration::ZERO)
    }

    pub fn seen(&self) -> Vec<(String, u32, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }

    /// How many times each body was handled.
    pub fn counts_by_body(&self) -> HashMap<Vec<u8>, usize> {
        let mut counts = HashMap::new();
        for (_, _, body) in self.seen() {
            *counts.entry(body).or_insert(0) += 1;
        }
        counts
    }
}

impl Handler for Recording {
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let now = self.running.fetch_add(jobs.len(), Ordering::SeqCst) + jobs.len();
            self.max_running.fetch_max(now, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let outcomes = jobs
                .iter()
                .map(|job| {
                    self.seen.lock().unwrap().push((
                        job.message_id.clone(),
                        job.receive_count,
                        job.envelope.body.clone(),
                    ));
                    (self.behaviour)(job)
                })
                .collect();
            self.running.fetch_sub(jobs.len(), Ordering::SeqCst);
            outcomes
        })
    }
}

/// Dead letters kept in memory.
#[derive(Default)]
pub struct MemoryDeadLetters {
    pub kept: Mutex<Vec<DeadLetter>>,
}

impl DeadLetterSink for MemoryDeadLetters {
    fn keep<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.kept.lock().unwrap().extend_from_slice(letters);
            Ok(())
        })
    }
}

/// A config for one queue handled by "test", with `extra` TOML lines in its [[queue]] table.
pub fn config(queue_name: &str, url: &str, extra: &str) -> Config {
    let text = format!(
        r#"
        [worker]
        total_concurrency = 16
        shutdown_timeout_secs = 5
        [store]
        database_url = "postgres://unused"
        [sqs]
        endpoint_url = "{}"
        region = "us-east-1"
        [[queue]]
        name = "{queue_name}"
        url = "{url}"
        handler = "test"
        wait_time_secs = 1
        {extra}
        "#,
        endpoint()
    );
    Config::parse(&text, "test").expect("test config")
}

/// A running in-process engine.
pub struct Running {
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<ShutdownReport>,
    pub inflight: mailroom::engine::InFlight,
}

impl Running {
    /// Ask the engine to stop now, without waiting; `shutdown` then waits for the drain.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn shutdown(mut self) -> ShutdownReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("engine task")
    }
}

pub async fn start(
    config: Config,
    handler: Arc<dyn Handler>,
    dead: Arc<dyn DeadLetterSink>,
) -> Running {
    let aws = sdk_config(&endpoint()).await;
    let mut registry = Registry::new();
    registry.register("test", handler);
    let engine = Engine::new(EngineParts {
        config,
        sqs: Client::new(&aws),
        bodies: Bodies::new(&aws, true),
        registry,
        dead_letters: dead,
    })
    .await
    .expect("engine");
    let inflight = engine.inflight();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(
        async {
            let _ = rx.await;
        },
        Controls::default(),
    ));
    Running {
        stop: Some(tx),
        task,
        inflight,
    }
}

/// Poll `cond` every 100 ms for at most `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
