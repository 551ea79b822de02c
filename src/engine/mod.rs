//! The engine: per queue, several long polls run concurrently with the handlers, each receiving
//! only as many messages as there are free permits (so nothing waits in memory while its
//! visibility timeout runs), as many polls as the receives show the queue needs (`adapt.rs`:
//! one on an idle queue, more while receives come back full with permits free); a batcher groups what was received into handler batches; the acker
//! turns outcomes into coalesced SQS calls; the heartbeat extends what runs long; and shutdown
//! drains, then releases what it will not finish.

mod adapt;
mod batcher;
mod budget;
mod heartbeat;
mod inflight;
mod limit;
mod process;
mod receive;
mod trace;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acker::{Acker, QueueRef};
use crate::config::{Config, QueueConfig};
use crate::handler::{DeadLetterSink, Handler, Registry};
use crate::s3::Bodies;
use crate::sqs;

pub use adapt::{LoopController, LoopState, ReceiveLoops, ReceiveSample};
use batcher::batcher;
use heartbeat::{heartbeat, report_in_flight};
pub use inflight::InFlight;
pub use limit::{ConcurrencyLimit, LimitController, LimitSample};
use receive::{receive_loop, ReceiveLoop};

/// A configured queue, resolved and ready.
pub struct QueueRuntime {
    pub config: QueueConfig,
    pub queue: QueueRef,
    pub handler: Arc<dyn Handler>,
    pub handler_name: Arc<str>,
    permits: Arc<Semaphore>,
    /// Acks of this queue handed to the acker and not yet confirmed by SQS, at most the
    /// queue's concurrency (`process.rs`, `Settle`): a message gives its handler permit back
    /// when its ack is queued, not when SQS confirmed it, and takes one of these instead.
    pub(crate) acks_pending: Arc<Semaphore>,
    /// The queue's concurrency (the size of `permits` and of `acks_pending`).
    pub(crate) concurrency: usize,
    /// Last receive returned messages (for strict priority).
    busy: AtomicBool,
    priority: i32,
    /// How many of its receive loops poll now (`adapt.rs`).
    loops: Arc<adapt::LoopState>,
}

/// What every task of the engine shares.
pub struct Shared {
    pub acker: Acker,
    pub inflight: InFlight,
    pub bodies: Bodies,
    pub dead_letters: Arc<dyn DeadLetterSink>,
    /// The process-wide in-flight limit (`limit.rs`): one permit per message, as many as the
    /// limit allows, within `[worker] min_concurrency..=total_concurrency`.
    limit: Arc<ConcurrencyLimit>,
    /// Bytes of offloaded bodies in flight (`[worker] max_body_bytes_in_flight`).
    pub budget: budget::Budget,
    /// Set when the drain starts: a transient failure then releases its message (visibility 0)
    /// for the next process instead of hiding it for the longest retry interval.
    pub stopping: AtomicBool,
}

/// After the drain's deadline, how long releasing and the last acks may take: whatever SQS
/// does, the process exits within `shutdown_timeout_secs` + this (keep systemd's
/// `TimeoutStopSec` above the sum).
pub const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// (`notify::watchdog`) pings only while the engine makes progress: a stuck engine gets restarted.
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
    /// Receive loops still waiting on a long poll when the shutdown timeout passed.
    pub open_receives: usize,
}

fn held_the_exit(handlers: usize, receives: usize) -> &'static str {
    match (handlers > 0, receives > 0) {
        (true, true) => "handlers still running and long polls still open at the shutdown timeout; releasing their messages",
        (true, false) => "handlers still running at the shutdown timeout; releasing their messages",
        (false, true) => "long polls still open at the shutdown timeout (SQS slow or unreachable); stopping them",
        (false, false) => "the shutdown timeout passed",
    }
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
            let max_loops = q.receive_loops(concurrency);
            queues.push(Arc::new(QueueRuntime {
                loops: Arc::new(adapt::LoopState::new(queue.name.clone(), max_loops)),
                config: q.clone(),
                queue,
                handler,
                handler_name: q.handler.as_str().into(),
                permits: Arc::new(Semaphore::new(concurrency as usize)),
                acks_pending: Arc::new(Semaphore::new(concurrency as usize)),
                concurrency: concurrency as usize,
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
            limit: {
                let (min, max) = config.concurrency_bounds();
                Arc::new(ConcurrencyLimit::new(
                    min,
                    max,
                    config.worker.max_body_bytes_in_flight,
                ))
            },
            stopping: AtomicBool::new(false),
            budget: budget::Budget::new(config.worker.max_body_bytes_in_flight),
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

    /// The process-wide in-flight limit: where it is now and what bounds it (for tests and
    /// operators).
    pub fn concurrency_limit(&self) -> Arc<ConcurrencyLimit> {
        self.shared.limit.clone()
    }

    /// Each queue's receive loops: how many poll now, at most, and at peak (for tests and
    /// telemetry).
    pub fn receive_loops(&self) -> ReceiveLoops {
        ReceiveLoops {
            queues: self.queues.iter().map(|q| q.loops.clone()).collect(),
        }
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
            mut acker_task,
        } = self;
        let stop_receiving = CancellationToken::new();
        let abandon = CancellationToken::new();
        let handlers = TaskTracker::new();
        let mut loops = JoinSet::new();
        let scheduling = config.worker.scheduling;

        for queue in &queues {
            let (tx, rx) = mpsc::unbounded_channel();
            // The most loops the queue may use; `adapt.rs` decides how many poll, the rest
            // wait parked (no permits, no request).
            for index in 0..queue.loops.max() {
                loops.spawn(receive_loop(ReceiveLoop {
                    index,
                    turn: queue.loops.watch(),
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
        let adjust = tokio::spawn(limit::adjust(shared.clone(), stop_receiving.clone()));
        let gauges = tokio::spawn(report_in_flight(
            queues.clone(),
            shared.clone(),
            stop_receiving.clone(),
        ));
        tracing::info!(
            queues = queues.len(),
            total_concurrency = config.worker.total_concurrency,
            in_flight_limit = shared.limit.current(),
            "receiving"
        );
        (controls.on_ready)();

        shutdown.await;
        (controls.on_stopping)();
        tracing::info!(
            in_flight = shared.inflight.len(),
            "stopping: no more receives; draining running handlers"
        );
        shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
            // What held the exit: receive loops still in a long poll (SQS slow or unreachable),
            // handlers still running, or both. Said as it is, not always "handlers".
            report.open_receives = loops.len();
            report.abandoned = handlers.len();
            loops.abort_all();
            while loops.join_next().await.is_some() {}
            tracing::warn!(
                abandoned = report.abandoned,
                open_receives = report.open_receives,
                timeout_secs = deadline.as_secs(),
                "{}",
                held_the_exit(report.abandoned, report.open_receives)
            );
            abandon.cancel();
            handlers.wait().await;
        }
        heartbeat.abort();
        let _ = heartbeat.await;
        let _ = gauges.await;
        let _ = adjust.await;
        report.released = shared.inflight.release_all(&shared.acker);
        // Bounded whatever SQS does: a release that cannot be sent leaves the message to its
        // visibility timeout, which is what an unreachable SQS would do anyway.
        let released = tokio::time::timeout(RELEASE_GRACE, async {
            shared.acker.flush().await;
            drop(queues);
            drop(shared);
            let _ = (&mut acker_task).await;
        })
        .await;
        if released.is_err() {
            acker_task.abort();
            tracing::warn!(
                grace_secs = RELEASE_GRACE.as_secs(),
                "SQS did not confirm the last releases and deletes in time; those messages \
                 reappear after their visibility timeout"
            );
        }
        tracing::info!(
            released = report.released,
            abandoned = report.abandoned,
            "stopped"
        );
        report
    }
}
