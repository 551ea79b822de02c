//! Adaptive receive loops against a real SQS-compatible server (rustack): an idle queue costs
//! one long poll however many loops are allowed, a full queue grows its loops, and a queue
//! that went idle after a burst settles back to one (`src/engine/adapt.rs`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use common::*;
use mailroom::config::Config;
use mailroom::engine::{Controls, Engine, EngineParts, ReceiveLoops, ShutdownReport};
use mailroom::handler::Registry;
use mailroom::s3::Bodies;

/// An in-process engine with its receive loops visible.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<ShutdownReport>,
    loops: ReceiveLoops,
}

async fn start(config: Config, handler: Arc<Recording>) -> Running {
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
        dead_letters: Arc::new(MemoryDeadLetters::default()),
        queues,
    })
    .expect("engine");
    let loops = engine.receive_loops();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(
        async {
            let _ = rx.await;
        },
        Controls::default(),
    ));
    Running { stop, task, loops }
}

impl Running {
    async fn shutdown(self) -> ShutdownReport {
        let _ = self.stop.send(());
        self.task.await.expect("engine task")
    }
}

/// The most long polls open at once over `span`, sampled every 20 ms.
async fn most_polls_open(loops: &ReceiveLoops, queue: &str, span: Duration) -> usize {
    let state = loops.queue(queue).expect("queue known");
    let until = tokio::time::Instant::now() + span;
    let mut most = 0;
    while tokio::time::Instant::now() < until {
        most = most.max(state.polling());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    most
}

#[tokio::test]
async fn an_idle_queue_keeps_one_long_poll_however_many_loops_are_allowed() {
    let sqs = sqs().await;
    let name = unique_dashed("adapt-idle");
    let url = create_queue(&sqs, &name, 30, None).await;
    let handler = Recording::done();
    let running = start(
        config(&name, &url, "receive_loops = 8\nconcurrency = 16"),
        handler.clone(),
    )
    .await;
    let state = running.loops.queue(&name).expect("queue known");
    assert_eq!(state.max(), 8);
    // Several empty 1 s long polls.
    let most = most_polls_open(&running.loops, &name, Duration::from_secs(3)).await;
    let (target, peak) = (state.target(), state.peak());
    running.shutdown().await;
    assert_eq!(most, 1, "an idle queue held {most} long polls open at once");
    assert_eq!((target, peak), (1, 1), "target and peak on an idle queue");
    assert!(handler.seen().is_empty());
}

#[tokio::test]
async fn a_full_queue_grows_its_loops_then_settles_to_one_poll_when_drained() {
    let sqs = sqs().await;
    let name = unique_dashed("adapt-burst");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 600).await;
    // Handlers that take a while: receives are what the loops must keep up with, and permits
    // stay free while the queue is deep.
    let handler = Recording::new(
        Arc::new(|_| mailroom::handler::Outcome::Done),
        Duration::from_millis(30),
    );
    let mut cfg = config(
        &name,
        &url,
        "receive_loops = 8\nconcurrency = 200\nbatch_window_ms = 0",
    );
    cfg.worker.total_concurrency = 200;
    let running = start(cfg, handler.clone()).await;
    let state = running.loops.queue(&name).expect("queue known");
    eventually(60, "600 handled", || handler.seen().len() >= 600).await;
    let peak = state.peak();
    // Drained: each 1 s empty poll takes one loop away; 8 loops are gone within a few polls.
    let mut settled = false;
    for _ in 0..150 {
        if state.target() == 1 && state.polling() <= 1 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let most_after = most_polls_open(&running.loops, &name, Duration::from_millis(2500)).await;
    let target_after = state.target();
    running.shutdown().await;

    assert!(
        peak >= 3,
        "a full queue grew its receive loops only to {peak}"
    );
    assert!(peak <= 8, "the configured maximum bounds the loops: {peak}");
    assert!(settled, "the drained queue did not settle to one loop");
    assert_eq!(target_after, 1);
    assert_eq!(
        most_after, 1,
        "{most_after} long polls open on the drained queue"
    );
    let counts = handler.counts_by_body();
    assert_eq!(counts.len(), 600, "every message handled");
    assert_eq!(depth(&sqs, &url).await, (0, 0));
}
