//! The engine: per queue, several long polls run concurrently with the handlers, each receiving
//! only as many messages as there are free permits (so nothing waits in memory while its
//! visibility timeout runs); a batcher groups what was received into handler batches; the acker
//! turns outcomes into coalesced SQS calls; the heartbeat extends what runs long; and shutdown
//! drains, then releases what it will not finish.

mod inflight;
mod process;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acker::{Acker, QueueRef};
use crate::backoff::Backoff;
use crate::config::{Config, QueueConfig, Scheduling};
use crate::handler::{DeadLetterSink, Handler, Registry};
use crate::s3::Bodies;
use crate::sqs;

pub use inflight::InFlight;
use inflight::Permits;
use process::{process_batch, Delivery};

/// A configured queue, resolved and ready.
pub struct QueueRuntime {
    pub config: QueueConfig,
    pub queue: QueueRef,
    pub handler: Arc<dyn Handler>,
    pub handler_name: Arc<str>,
    permits: Arc<Semaphore>,
    /// Last receive returned messages (for strict priority).
    busy: AtomicBool,
    priority: i32,
}

/// What every task of the engine shares.
pub struct Shared {
    pub acker: Acker,
    pub inflight: InFlight,
    pub bodies: Bodies,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    global: Arc<Semaphore>,
}

/// Inputs to build an engine.
pub struct EngineParts {
    pub config: Config,
    pub sqs: aws_sdk_sqs::Client,
    pub bodies: Bodies,
    pub registry: Registry,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// Every configured queue, resolved once ([`resolve_queues`]): the identities the receive
    /// loops and the acker use.
    pub queues: Vec<QueueRef>,
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("queue \"{queue}\": no handler named \"{handler}\" (registered: {known})")]
    UnknownHandler {
        queue: String,
        handler: String,
        known: String,
    },
    #[error("queue \"{0}\" was not resolved")]
    Unresolved(String),
}

/// A queue whose URL could not be found.
#[derive(Debug, thiserror::Error)]
#[error("queue \"{queue}\": cannot resolve its URL: {source}")]
pub struct ResolveError {
    pub queue: String,
    #[source]
    pub source: sqs::SqsError,
}

/// Resolve every configured queue to its URL, once, in config order.
pub async fn resolve_queues(
    sqs: &aws_sdk_sqs::Client,
    config: &Config,
) -> Result<Vec<QueueRef>, ResolveError> {
    let mut queues = Vec::with_capacity(config.queues.len());
    for q in &config.queues {
        queues.push(resolve_queue(sqs, q).await?);
    }
    Ok(queues)
}

/// Resolve one configured queue.
pub async fn resolve_queue(
    sqs: &aws_sdk_sqs::Client,
    q: &QueueConfig,
) -> Result<QueueRef, ResolveError> {
    let url = sqs::queue_url(sqs, &q.name, q.url.as_deref())
        .await
        .map_err(|source| ResolveError {
            queue: q.name.clone(),
            source,
        })?;
    Ok(QueueRef {
        name: q.name.as_str().into(),
        url: url.into(),
    })
}

/// Signals from outside while running.
pub struct Controls {
    /// true: stop receiving, keep running (SIGTSTP / SIGUSR1).
    pub quiet: watch::Receiver<bool>,
    /// Called once every receive loop runs.
    pub on_ready: Box<dyn FnOnce() + Send>,
    /// Called when the drain starts.
    pub on_stopping: Box<dyn FnOnce() + Send>,
    /// Bumped on every finished receive and every heartbeat tick, so the systemd watchdog
    /// (`notify::watchdog`) pings only while the engine makes progress (ops hook, issue 5).
    pub liveness: crate::notify::Liveness,
}

impl Default for Controls {
    fn default() -> Self {
        let (_tx, quiet) = watch::channel(false);
        Self {
            quiet,
            on_ready: Box::new(|| {}),
            on_stopping: Box::new(|| {}),
            liveness: Default::default(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Messages made visible again because they were not finished.
    pub released: usize,
    /// Handler tasks still running when the shutdown timeout passed.
    pub abandoned: usize,
}

pub struct Engine {
    config: Config,
    sqs: aws_sdk_sqs::Client,
    queues: Vec<Arc<QueueRuntime>>,
    shared: Arc<Shared>,
    acker_task: tokio::task::JoinHandle<()>,
}

impl Engine {
    /// Match each queue with its handler. Fails with a clear message for an unknown handler.
    /// Must be called on a tokio runtime (it starts the acker).
    pub fn new(parts: EngineParts) -> Result<Engine, EngineError> {
        let EngineParts {
            config,
            sqs,
            bodies,
            registry,
            dead_letters,
            queues: resolved,
        } = parts;
        let mut queues = Vec::new();
        for q in &config.queues {
            let Some(handler) = registry.get(&q.handler) else {
                let mut known: Vec<&str> = registry.names().collect();
                known.sort_unstable();
                return Err(EngineError::UnknownHandler {
                    queue: q.name.clone(),
                    handler: q.handler.clone(),
                    known: known.join(", "),
                });
            };
            let queue = resolved
                .iter()
                .find(|r| *r.name == *q.name)
                .cloned()
                .ok_or_else(|| EngineError::Unresolved(q.name.clone()))?;
            let concurrency = config.queue_concurrency(q);
            queues.push(Arc::new(QueueRuntime {
                config: q.clone(),
                queue,
                handler,
                handler_name: q.handler.as_str().into(),
                permits: Arc::new(Semaphore::new(concurrency as usize)),
                busy: AtomicBool::new(false),
                priority: q.priority,
            }));
        }
        let (acker, acker_task) = Acker::spawn(sqs.clone(), config.sqs.ack_flush_interval());
        let shared = Arc::new(Shared {
            acker,
            inflight: InFlight::default(),
            bodies,
            dead_letters,
            global: Arc::new(Semaphore::new(config.worker.total_concurrency as usize)),
        });
        Ok(Engine {
            config,
            sqs,
            queues,
            shared,
            acker_task,
        })
    }

    /// The registry of received, unfinished messages (for tests and telemetry).
    pub fn inflight(&self) -> InFlight {
        self.shared.inflight.clone()
    }

    /// Run until `shutdown` resolves, then drain and release. Returns once every ack is sent.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        controls: Controls,
    ) -> ShutdownReport {
        let Engine {
            config,
            sqs,
            queues,
            shared,
            acker_task,
        } = self;
        let stop_receiving = CancellationToken::new();
        let abandon = CancellationToken::new();
        let handlers = TaskTracker::new();
        let mut loops = JoinSet::new();
        let scheduling = config.worker.scheduling;

        for queue in &queues {
            let (tx, rx) = mpsc::unbounded_channel();
            let concurrency = config.queue_concurrency(&queue.config);
            for _ in 0..queue.config.receive_loops(concurrency) {
                loops.spawn(receive_loop(ReceiveLoop {
                    queue: queue.clone(),
                    all: queues.clone(),
                    scheduling,
                    shared: shared.clone(),
                    sqs: sqs.clone(),
                    out: tx.clone(),
                    stop: stop_receiving.clone(),
                    quiet: controls.quiet.clone(),
                    liveness: controls.liveness.clone(),
                }));
            }
            loops.spawn(batcher(
                queue.clone(),
                shared.clone(),
                rx,
                stop_receiving.clone(),
                abandon.clone(),
                handlers.clone(),
            ));
        }
        let heartbeat = tokio::spawn(heartbeat(
            shared.clone(),
            stop_receiving.clone(),
            controls.liveness.clone(),
        ));
        let gauges = tokio::spawn(report_in_flight(
            queues.clone(),
            shared.clone(),
            stop_receiving.clone(),
        ));
        tracing::info!(
            queues = queues.len(),
            total_concurrency = config.worker.total_concurrency,
            "receiving"
        );
        (controls.on_ready)();

        shutdown.await;
        (controls.on_stopping)();
        tracing::info!(
            in_flight = shared.inflight.len(),
            "stopping: no more receives; draining running handlers"
        );
        stop_receiving.cancel();
        handlers.close();
        // Receives in flight finish (at most one long poll) while running handlers drain, both
        // within the shutdown timeout.
        let deadline = config.shutdown_timeout();
        let mut report = ShutdownReport::default();
        let drained = tokio::time::timeout(deadline, async {
            while loops.join_next().await.is_some() {}
            handlers.wait().await;
        })
        .await;
        if drained.is_err() {
            loops.abort_all();
            while loops.join_next().await.is_some() {}
            report.abandoned = handlers.len();
            tracing::warn!(
                abandoned = report.abandoned,
                timeout_secs = deadline.as_secs(),
                "handlers still running at the shutdown timeout; releasing their messages"
            );
            abandon.cancel();
            handlers.wait().await;
        }
        heartbeat.abort();
        let _ = heartbeat.await;
        let _ = gauges.await;
        report.released = shared.inflight.release_all(&shared.acker);
        shared.acker.flush().await;
        drop(queues);
        drop(shared);
        let _ = acker_task.await;
        tracing::info!(
            released = report.released,
            abandoned = report.abandoned,
            "stopped"
        );
        report
    }
}

struct ReceiveLoop {
    queue: Arc<QueueRuntime>,
    all: Vec<Arc<QueueRuntime>>,
    scheduling: Scheduling,
    shared: Arc<Shared>,
    sqs: aws_sdk_sqs::Client,
    out: mpsc::UnboundedSender<Vec<Delivery>>,
    stop: CancellationToken,
    quiet: watch::Receiver<bool>,
    liveness: crate::notify::Liveness,
}

/// Receive only what can start now: wait for one permit, take up to a batch of free ones, then
/// long-poll for exactly that many.
async fn receive_loop(mut l: ReceiveLoop) {
    let q = &l.queue;
    let cfg = &q.config;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if l.stop.is_cancelled() {
            return;
        }
        // Quiet: hold here until resumed or stopped.
        while *l.quiet.borrow() {
            tokio::select! {
                _ = l.stop.cancelled() => return,
                changed = l.quiet.changed() => if changed.is_err() { break },
            }
        }
        if l.scheduling == Scheduling::StrictPriority && outranked(q, &l.all) {
            tokio::select! {
                _ = l.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            }
        }
        let mut permits = tokio::select! {
            _ = l.stop.cancelled() => return,
            p = acquire(q, &l.shared.global, cfg.batch_size as usize) => p,
        };
        // Waiting for permits can take a while, and a higher queue may have turned busy
        // meanwhile (it is the one freeing them): give them back rather than take its turn.
        if l.scheduling == Scheduling::StrictPriority && outranked(q, &l.all) {
            drop(permits);
            continue;
        }
        // Not cancelled by shutdown: SQS may already have handed messages to this request, and
        // dropping it would hide them for a whole visibility timeout. It ends within
        // `wait_time_secs`; what it brings is registered, then released by the shutdown.
        let result = sqs::receive(
            &l.sqs,
            &q.queue.url,
            permits.len() as u32,
            cfg.wait_time_secs,
            cfg.visibility_timeout_secs,
        )
        .await;
        l.liveness.bump();
        match result {
            Ok(messages) => {
                let failures = backoff.succeed();
                if failures > 0 {
                    tracing::info!(queue = %q.queue.name, failures, "receiving again after errors");
                }
                q.busy.store(!messages.is_empty(), Ordering::Relaxed);
                if messages.is_empty() {
                    metrics::counter!("mailroom_empty_receives_total", "queue" => q.queue.name.to_string()).increment(1);
                    continue;
                }
                metrics::counter!("mailroom_messages_received_total", "queue" => q.queue.name.to_string())
                    .increment(messages.len() as u64);
                permits.truncate(messages.len());
                let deliveries = messages
                    .into_iter()
                    .zip(permits)
                    .map(|(message, permits)| {
                        let token = l.shared.inflight.insert(
                            q.queue.clone(),
                            message.receipt_handle.clone(),
                            cfg.visibility_timeout_secs,
                            cfg.heartbeat_secs,
                            permits,
                        );
                        Delivery { message, token }
                    })
                    .collect();
                if l.out.send(deliveries).is_err() {
                    return;
                }
            }
            Err(error) => {
                drop(permits);
                metrics::counter!("mailroom_sqs_errors_total", "queue" => q.queue.name.to_string(), "op" => "receive").increment(1);
                let delay = backoff.fail();
                if backoff.failures() == 1 {
                    tracing::error!(queue = %q.queue.name, %error, "receive failed; backing off until SQS answers again");
                } else {
                    tracing::debug!(queue = %q.queue.name, %error, failures = backoff.failures(), "receive failed again");
                }
                tokio::select! {
                    _ = l.stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Under strict priority, a queue waits while a queue of higher priority is busy.
fn outranked(queue: &QueueRuntime, all: &[Arc<QueueRuntime>]) -> bool {
    all.iter()
        .any(|other| other.priority > queue.priority && other.busy.load(Ordering::Relaxed))
}

/// Wait for one permit of each kind, then take up to `max` without waiting.
async fn acquire(queue: &QueueRuntime, global: &Arc<Semaphore>, max: usize) -> Vec<Permits> {
    let mut permits = Vec::with_capacity(max);
    let first_queue = queue
        .permits
        .clone()
        .acquire_owned()
        .await
        .expect("semaphores are never closed");
    let first_global = global
        .clone()
        .acquire_owned()
        .await
        .expect("semaphores are never closed");
    permits.push(Permits {
        _queue: first_queue,
        _global: first_global,
    });
    while permits.len() < max {
        let Ok(q) = queue.permits.clone().try_acquire_owned() else {
            break;
        };
        let Ok(g) = global.clone().try_acquire_owned() else {
            break;
        };
        permits.push(Permits {
            _queue: q,
            _global: g,
        });
    }
    permits
}

/// Group deliveries into handler batches: what is already waiting, plus what arrives within the
/// queue's batch window, up to its batch limit.
async fn batcher(
    queue: Arc<QueueRuntime>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Vec<Delivery>>,
    stop: CancellationToken,
    abandon: CancellationToken,
    handlers: TaskTracker,
) {
    let max = queue.config.max_batch_messages as usize;
    let window = Duration::from_millis(queue.config.batch_window_ms);
    loop {
        let mut batch = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            first = rx.recv() => match first { Some(b) => b, None => return },
        };
        let deadline = Instant::now() + window;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) if window.is_zero() => break,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    more = rx.recv() => match more { Some(more) => batch.extend(more), None => break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    // Gathered but not started: left in the registry, released on shutdown.
                    _ = stop.cancelled() => return,
                },
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(max));
            let (queue, shared, abandon) = (queue.clone(), shared.clone(), abandon.clone());
            handlers.spawn(async move {
                tokio::select! {
                    _ = abandon.cancelled() => {}
                    _ = process_batch(queue, shared, batch) => {}
                }
            });
            batch = rest;
        }
    }
}

/// Extend the visibility of long-running messages, batched through the acker.
const HEARTBEAT_TICK: Duration = Duration::from_millis(250);

async fn heartbeat(
    shared: Arc<Shared>,
    stop: CancellationToken,
    liveness: crate::notify::Liveness,
) {
    // A message is extended at the first tick after its heartbeat period has passed, so a tick
    // well under the shortest period (1 s) keeps that lateness small next to the visibility
    // timeout left. Each tick only walks the in-flight registry.
    let mut tick = tokio::time::interval(HEARTBEAT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Keep beating through the drain: handlers still run then.
            _ = tick.tick() => {}
            // Aborted by `run` once the drain is over.
            _ = stop.cancelled() => tokio::time::sleep(Duration::from_millis(500)).await,
        }
        liveness.bump();
        let extended = shared.inflight.beat(&shared.acker);
        if extended > 0 {
            tracing::debug!(extended, "heartbeat extended visibility");
        }
    }
}

async fn report_in_flight(
    queues: Vec<Arc<QueueRuntime>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for q in &queues {
            counts.insert(&q.queue.name, shared.inflight.count_for(&q.queue.name));
        }
        for (name, count) in counts {
            metrics::gauge!("mailroom_in_flight", "queue" => name.to_string()).set(count as f64);
        }
    }
}
