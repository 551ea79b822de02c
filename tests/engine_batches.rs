//! How the batcher cuts batches, against a real SQS-compatible server (rustack): while a
//! partial batch runs, the next one keeps gathering (`max_partial_batches`,
//! `src/engine/batcher.rs`), so a busy queue gets full batches and few of them, and a lone
//! message on an idle queue still starts at the end of its window.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mailroom::handler::{BoxFuture, Handler, Job, Outcome};

const MAX_BATCH: usize = 50;

/// A handler that takes `per_batch` for every batch and records each batch's size and how many
/// partial batches (fewer than `MAX_BATCH`) ran at once.
struct Sizes {
    per_batch: Duration,
    sizes: Mutex<Vec<usize>>,
    handled_ids: Mutex<Vec<String>>,
    partial_running: AtomicUsize,
    most_partial_running: AtomicUsize,
}

impl Sizes {
    fn new(per_batch: Duration) -> Arc<Self> {
        Arc::new(Self {
            per_batch,
            sizes: Mutex::new(Vec::new()),
            handled_ids: Mutex::new(Vec::new()),
            partial_running: AtomicUsize::new(0),
            most_partial_running: AtomicUsize::new(0),
        })
    }

    fn handled(&self) -> usize {
        self.handled_ids.lock().unwrap().len()
    }
}

impl Handler for Sizes {
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let partial = jobs.len() < MAX_BATCH;
            if partial {
                let now = self.partial_running.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_partial_running.fetch_max(now, Ordering::SeqCst);
            }
            tokio::time::sleep(self.per_batch).await;
            if partial {
                self.partial_running.fetch_sub(1, Ordering::SeqCst);
            }
            self.sizes.lock().unwrap().push(jobs.len());
            self.handled_ids
                .lock()
                .unwrap()
                .extend(jobs.iter().map(|j| j.message_id.clone()));
            jobs.iter().map(|_| Outcome::Done).collect()
        })
    }
}

/// Handle `n` messages already waiting in a fresh queue with `max_partial_batches = partial`;
/// returns the handler (its batch sizes) once all are handled and deleted.
async fn run_backlog(n: usize, partial: u32, per_batch: Duration) -> Arc<Sizes> {
    let sqs = sqs().await;
    let name = unique_dashed(&format!("batches-{partial}"));
    let url = create_queue(&sqs, &name, 60, None).await;
    send_numbered(&sqs, &url, n).await;
    let handler = Sizes::new(per_batch);
    let mut cfg = config(
        &name,
        &url,
        &format!(
            "concurrency = 400\nreceive_loops = 1\nbatch_window_ms = 0\n\
             max_batch_messages = {MAX_BATCH}\nmax_partial_batches = {partial}"
        ),
    );
    cfg.worker.total_concurrency = 400;
    cfg.worker.adaptive_concurrency = false;
    let running = start(cfg, handler.clone(), Arc::new(MemoryDeadLetters::default())).await;
    let watched = handler.clone();
    eventually(60, "every message handled", || watched.handled() >= n).await;
    running.shutdown().await;
    assert_eq!(depth(&sqs, &url).await, (0, 0), "every message deleted");
    let mut ids = handler.handled_ids.lock().unwrap().clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each message handled once");
    handler
}

/// The messages arrive ten at a time, one receive after another, with no batch window: without
/// the bound each receive's messages start a batch of their own; with it, while one partial
/// batch runs the next keeps gathering, so the batches fill and there are several times fewer
/// of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_queue_gets_full_batches_while_one_partial_batch_runs() {
    let n = 600;
    let per_batch = Duration::from_millis(150);
    let gated = run_backlog(n, 1, per_batch).await;
    let ungated = run_backlog(n, 0, per_batch).await;

    let most = gated.most_partial_running.load(Ordering::SeqCst);
    assert!(
        most <= 1,
        "{most} partial batches ran at once with max_partial_batches = 1"
    );
    let gated_sizes = gated.sizes.lock().unwrap().clone();
    let ungated_sizes = ungated.sizes.lock().unwrap().clone();
    assert!(
        gated_sizes.iter().all(|&s| s <= MAX_BATCH),
        "a batch over max_batch_messages: {gated_sizes:?}"
    );
    let full: usize = gated_sizes.iter().filter(|&&s| s == MAX_BATCH).sum();
    assert!(
        full * 2 >= n,
        "only {full} of {n} messages came in full batches: {gated_sizes:?}"
    );
    assert!(
        gated_sizes.len() * 2 <= ungated_sizes.len(),
        "gated {} batches {gated_sizes:?}, ungated {} batches {ungated_sizes:?}",
        gated_sizes.len(),
        ungated_sizes.len()
    );
    let most_ungated = ungated.most_partial_running.load(Ordering::SeqCst);
    assert!(
        most_ungated > 1,
        "the control run never ran two partial batches at once: the test saw no load"
    );
}

/// Nothing else waits: a lone message starts when its window ends, not when some batch fills.
#[tokio::test]
async fn a_lone_message_on_an_idle_queue_starts_at_the_end_of_its_window() {
    let sqs = sqs().await;
    let name = unique_dashed("batches-lone");
    let url = create_queue(&sqs, &name, 60, None).await;
    let handler = Sizes::new(Duration::ZERO);
    let cfg = config(
        &name,
        &url,
        &format!("batch_window_ms = 20\nmax_batch_messages = {MAX_BATCH}"),
    );
    let running = start(cfg, handler.clone(), Arc::new(MemoryDeadLetters::default())).await;
    // Let the receive loop reach its long poll first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    send_numbered(&sqs, &url, 1).await;
    let watched = handler.clone();
    eventually(10, "the lone message handled", || watched.handled() == 1).await;
    let took = sent.elapsed();
    running.shutdown().await;
    assert_eq!(*handler.sizes.lock().unwrap(), vec![1]);
    assert!(
        took < Duration::from_secs(3),
        "a lone message took {took:?} to be handled"
    );
}

/// A handler that blocks its first batch until released and handles the rest at once.
struct StuckFirst {
    release: tokio::sync::Notify,
    calls: AtomicUsize,
    handled_after_first: AtomicUsize,
}

impl Handler for StuckFirst {
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                self.release.notified().await;
            } else {
                self.handled_after_first
                    .fetch_add(jobs.len(), Ordering::SeqCst);
            }
            jobs.iter().map(|_| Outcome::Done).collect()
        })
    }
}

/// What broke: with a partial batch stuck in its handler (in CI, on a Postgres lock), every
/// later partial batch waited for it, so a redelivered message never reached the handler. The
/// wait is bounded by `max_partial_wait_ms`: the later messages are handled while the first
/// batch is still stuck.
#[tokio::test]
async fn a_stuck_partial_batch_holds_later_messages_back_only_for_max_partial_wait() {
    let sqs = sqs().await;
    let name = unique_dashed("batches-stuck");
    let url = create_queue(&sqs, &name, 60, None).await;
    let handler = Arc::new(StuckFirst {
        release: tokio::sync::Notify::new(),
        calls: AtomicUsize::new(0),
        handled_after_first: AtomicUsize::new(0),
    });
    let cfg = config(
        &name,
        &url,
        &format!(
            "batch_window_ms = 20\nmax_batch_messages = {MAX_BATCH}\n\
             max_partial_batches = 1\nmax_partial_wait_ms = 250"
        ),
    );
    let running = start(cfg, handler.clone(), Arc::new(MemoryDeadLetters::default())).await;
    send_numbered(&sqs, &url, 1).await;
    let watched = handler.clone();
    eventually(10, "the first batch in its handler", || {
        watched.calls.load(Ordering::SeqCst) == 1
    })
    .await;
    send_numbered(&sqs, &url, 3).await;
    let watched = handler.clone();
    eventually(
        10,
        "the later messages handled while the first is stuck",
        || watched.handled_after_first.load(Ordering::SeqCst) == 3,
    )
    .await;
    handler.release.notify_one();
    running.shutdown().await;
    assert_eq!(depth(&sqs, &url).await, (0, 0), "every message deleted");
}
