//! Set-up for the tests that run the engine in-process (`tests/engine.rs`, `tests/localstack.rs`)
//! and for `tests/cli_check.rs` and `tests/e2e.rs`: a real SQS-compatible server (rustack,
//! started by scripts/test.sh; its URL in AWS_ENDPOINT_URL) and, where needed, the real Postgres.
//! The helpers every kind of test shares come from `tests/support`, re-exported here.
#![allow(dead_code)]

#[path = "../support/mod.rs"]
mod support;

#[allow(unused_imports)] // each test crate uses a different part
pub use support::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use mailroom::config::Config;
use mailroom::engine::{Controls, Engine, EngineParts, ShutdownReport};
use mailroom::handler::{
    BoxFuture, DeadLetter, DeadLetterSink, Handler, Job, KeepError, Outcome, Registry,
};
use mailroom::s3::Bodies;
use mailroom_envelope::Kind;

/// Send `n` router envelopes whose bodies are `{"n": i}`.
pub async fn send_numbered(client: &Client, url: &str, n: usize) {
    let bodies: Vec<String> = (0..n)
        .map(|i| {
            envelope(
                Kind::Events,
                "application/json",
                format!("{{\"n\":{i}}}").as_bytes(),
            )
        })
        .collect();
    send(client, url, &bodies).await;
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
                        job.envelope.body.to_vec(),
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
    fn keep<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), KeepError>> {
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
    let sqs = Client::new(&aws);
    let queues = mailroom::engine::resolve_queues(&sqs, &config)
        .await
        .expect("queues resolve");
    let engine = Engine::new(EngineParts {
        config,
        sqs,
        bodies: Bodies::new(&aws, true),
        registry,
        dead_letters: dead,
        queues,
    })
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
