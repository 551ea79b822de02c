//! Adaptive receive loops against a real SQS-compatible server (rustack): an idle queue costs
//! one long poll however many loops are allowed, a full queue grows its loops, and a queue
//! that went idle after a burst settles back to one (`src/engine/adapt.rs`). And the adaptive
//! in-flight limit (`src/engine/limit.rs`): messages that wait on something outside (as on
//! SQS latency) raise it to the ceiling and no further; messages that queue in the process
//! keep it near its floor. And both at a distant SQS (a delay proxy on loopback): the loops
//! grow past what a near server needs, since their round trip does not rise with them.

mod common;
#[path = "../bench/src/latency.rs"]
mod latency;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use common::*;
use mailroom::config::Config;
use mailroom::engine::{
    ConcurrencyLimit, Controls, Engine, EngineParts, ReceiveLoops, ShutdownReport,
};
use mailroom::handler::{BoxFuture, Handler, Job, Outcome, Registry};
use mailroom::s3::Bodies;

/// An in-process engine with its receive loops and in-flight limit visible.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<ShutdownReport>,
    loops: ReceiveLoops,
    limit: Arc<ConcurrencyLimit>,
}

async fn start(config: Config, handler: Arc<dyn Handler>) -> Running {
    start_at(&endpoint(), config, handler).await
}

/// The engine talking to SQS at `endpoint` (the shared server, or a delay proxy before it).
async fn start_at(endpoint: &str, config: Config, handler: Arc<dyn Handler>) -> Running {
    let aws = sdk_config(endpoint).await;
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
    let limit = engine.concurrency_limit();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(
        async {
            let _ = rx.await;
        },
        Controls::default(),
    ));
    Running {
        stop,
        task,
        loops,
        limit,
    }
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

/// The most in-flight limit (target) and the most handlers running, sampled every 20 ms until
/// `done` or `secs` pass.
async fn watch_limit(
    limit: &ConcurrencyLimit,
    secs: u64,
    mut done: impl FnMut() -> bool,
) -> (u32, u32) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    let (mut most_target, mut most_current) = (0, 0);
    while tokio::time::Instant::now() < until && !done() {
        most_target = most_target.max(limit.target());
        most_current = most_current.max(limit.current());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (most_target, most_current)
}

/// Each message waits 30 ms on something outside the process (a sleep, as a message waits on
/// SQS round trips), concurrently: more in flight is more rate, and nothing queues here. The
/// limit climbs from its floor (20) to the ceiling (200), never past it.
#[tokio::test]
async fn messages_that_wait_outside_raise_the_in_flight_limit_to_its_ceiling() {
    let sqs = sqs().await;
    let name = unique_dashed("limit-up");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 3000).await;
    let handler = Recording::new(Arc::new(|_| Outcome::Done), Duration::from_millis(30));
    let mut cfg = config(
        &name,
        &url,
        "receive_loops = 16\nconcurrency = 200\nbatch_window_ms = 0",
    );
    cfg.worker.total_concurrency = 200;
    // 20 at 30 ms each: ~60 messages per 100 ms tick, above the controller's least evidence
    // (20) even on a loaded machine.
    cfg.worker.min_concurrency = Some(20);
    let running = start(cfg, handler.clone()).await;
    let limit = running.limit.clone();
    assert_eq!(
        (limit.current(), limit.max()),
        (20, 200),
        "starts at the floor"
    );
    let (most_target, most_current) =
        watch_limit(&limit, 60, || handler.seen().len() >= 3000).await;
    eventually(60, "3000 handled", || handler.seen().len() >= 3000).await;
    running.shutdown().await;

    assert!(
        most_target >= 150,
        "waiting messages raised the limit only to {most_target} of 200"
    );
    assert!(most_target <= 200 && most_current <= 200);
    let running_at_once = handler
        .max_running
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        running_at_once <= 200,
        "{running_at_once} handled at once, over the ceiling of 200"
    );
    assert!(
        running_at_once > 30,
        "only {running_at_once} at once: the limit did not open up"
    );
    let counts = handler.counts_by_body();
    assert_eq!(counts.len(), 3000, "every message handled");
    assert!(counts.values().all(|&n| n == 1), "none handled twice");
    assert_eq!(depth(&sqs, &url).await, (0, 0));
}

/// Handles one job at a time, 1 ms each, behind one lock: however many are in flight, 1000
/// messages a second get through, and more in flight only wait longer for the lock.
struct Serialized {
    lock: tokio::sync::Mutex<()>,
    handled: std::sync::atomic::AtomicUsize,
}

impl Handler for Serialized {
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let _one_at_a_time = self.lock.lock().await;
            tokio::time::sleep(Duration::from_millis(jobs.len() as u64)).await;
            self.handled
                .fetch_add(jobs.len(), std::sync::atomic::Ordering::SeqCst);
            jobs.iter().map(|_| Outcome::Done).collect()
        })
    }
}

/// Messages queue inside the process (a handler that takes one at a time): the receive loops
/// still wait for permits, but a larger limit would only lengthen the queue, so the limit stays
/// near its floor, far under the ceiling.
#[tokio::test]
async fn messages_that_queue_in_the_process_keep_the_in_flight_limit_near_its_floor() {
    let sqs = sqs().await;
    let name = unique_dashed("limit-hold");
    let url = create_queue(&sqs, &name, 30, None).await;
    send_numbered(&sqs, &url, 4000).await;
    let handler = Arc::new(Serialized {
        lock: tokio::sync::Mutex::new(()),
        handled: Default::default(),
    });
    let mut cfg = config(
        &name,
        &url,
        "receive_loops = 16\nconcurrency = 400\nbatch_window_ms = 0",
    );
    cfg.worker.total_concurrency = 400;
    cfg.worker.min_concurrency = Some(10);
    let running = start(cfg, handler.clone()).await;
    let limit = running.limit.clone();
    // About 3 s of the 4 s of work: 30 ticks of evidence.
    let (most_target, _) = watch_limit(&limit, 3, || false).await;
    running.shutdown().await;

    let handled = handler.handled.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        handled >= 500,
        "only {handled} handled: the test saw no load"
    );
    assert!(
        most_target <= 80,
        "queueing in the process raised the limit to {most_target} of 400"
    );
}

/// At 20 ms each way every receive takes ~40 ms however many loops poll, so a loop brings at
/// most ~250 messages a second: the 16 loops "auto" used to stop at held one queue to ~3,500
/// msgs/s. The round trip does not rise as loops are added (nothing queues at the server), so
/// they keep growing while receives come back full with permits free.
#[tokio::test]
async fn receive_loops_at_a_distant_sqs_grow_past_sixteen() {
    let sqs = sqs().await;
    let name = unique_dashed("adapt-distant");
    let url = create_queue(&sqs, &name, 60, None).await;
    send_numbered(&sqs, &url, 4000).await;
    let proxy = latency::start(&endpoint(), Duration::from_millis(20))
        .await
        .expect("delay proxy");
    let handler = Recording::done();
    let mut cfg = config(&name, &url, "batch_window_ms = 0");
    cfg.worker.total_concurrency = 1000;
    cfg.worker.min_concurrency = Some(1000);
    let running = start_at(&proxy.url, cfg, handler.clone()).await;
    let state = running.loops.queue(&name).expect("queue known");
    assert_eq!(state.max(), 64, "auto allows 64 loops for 1000 in flight");
    eventually(90, "4000 handled", || handler.seen().len() >= 4000).await;
    let peak = state.peak();
    running.shutdown().await;

    assert!(
        peak > 16,
        "at 20 ms each way the receive loops grew only to {peak}"
    );
    let counts = handler.counts_by_body();
    assert_eq!(counts.len(), 4000, "every message handled");
    assert!(counts.values().all(|&n| n == 1), "none handled twice");
    assert_eq!(depth(&sqs, &url).await, (0, 0));
}
