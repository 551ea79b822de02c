//! The receive loops: each long-polls its queue for only as many messages as there are free
//! permits (queue and global), registers what it got in the in-flight registry, and hands it to
//! the queue's batcher. Under strict priority a loop yields to busier queues of higher priority.
//! Each receive's result and round trip go to the queue's loop controller (`adapt.rs`); loop `index` polls
//! only while the controller's target is above it, and otherwise waits parked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::Scheduling;
use crate::sqs;

use super::adapt::ReceiveSample;
use super::inflight::Permits;
use super::limit::ConcurrencyLimit;
use super::process::Delivery;
use super::trace;
use super::{QueueRuntime, Shared};
use tracing::Instrument;

pub(super) struct ReceiveLoop {
    /// This loop's place among the queue's loops: it polls while `index < target`.
    pub(super) index: u32,
    pub(super) turn: watch::Receiver<u32>,
    pub(super) queue: Arc<QueueRuntime>,
    pub(super) all: Vec<Arc<QueueRuntime>>,
    pub(super) scheduling: Scheduling,
    pub(super) shared: Arc<Shared>,
    pub(super) sqs: aws_sdk_sqs::Client,
    pub(super) out: mpsc::UnboundedSender<Vec<Delivery>>,
    pub(super) stop: CancellationToken,
    pub(super) quiet: watch::Receiver<bool>,
    pub(super) liveness: crate::notify::Liveness,
}

/// Receive only what can start now: wait for one permit, take up to a batch of free ones, then
/// long-poll for exactly that many.
pub(super) async fn receive_loop(mut this: ReceiveLoop) {
    let queue = &this.queue;
    let settings = &queue.config;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if this.stop.is_cancelled() {
            return;
        }
        // Quiet: hold here until resumed or stopped.
        while *this.quiet.borrow() {
            tokio::select! {
                _ = this.stop.cancelled() => return,
                changed = this.quiet.changed() => if changed.is_err() { break },
            }
        }
        // Parked while the controller wants fewer loops than this one's place.
        while *this.turn.borrow_and_update() <= this.index {
            tokio::select! {
                _ = this.stop.cancelled() => return,
                changed = this.turn.changed() => if changed.is_err() { return },
            }
        }
        if this.scheduling == Scheduling::StrictPriority && outranked(queue, &this.all) {
            tokio::select! {
                _ = this.stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
            }
        }
        let mut permits = tokio::select! {
            _ = this.stop.cancelled() => return,
            p = acquire(queue, &this.shared.limit, settings.batch_size as usize) => p,
        };
        // Waiting for permits can take a while, and a higher queue may have turned busy
        // meanwhile (it is the one freeing them): give them back rather than take its turn.
        if this.scheduling == Scheduling::StrictPriority && outranked(queue, &this.all) {
            drop(permits);
            continue;
        }
        // Not cancelled by shutdown: SQS may already have handed messages to this request, and
        // dropping it would hide them for a whole visibility timeout. It ends within
        // `wait_time_secs`; what it brings is registered, then released by the shutdown.
        let receive_span = trace::receive(&queue.queue.name, permits.len());
        let asked = permits.len() as u32;
        let open = queue.loops.poll_open();
        let sent = std::time::Instant::now();
        let result = sqs::receive(
            &this.sqs,
            &queue.queue.url,
            permits.len() as u32,
            settings.wait_time_secs,
            settings.visibility_timeout_secs,
        )
        .instrument(receive_span.clone())
        .await;
        let answered = std::time::Instant::now();
        drop(open);
        this.liveness.bump();
        match result {
            Ok(messages) => {
                let failures = backoff.succeed();
                if failures > 0 {
                    tracing::info!(queue = %queue.queue.name, failures, "receiving again after errors");
                }
                queue.busy.store(!messages.is_empty(), Ordering::Relaxed);
                permits.truncate(messages.len());
                queue.loops.observe(ReceiveSample {
                    asked,
                    got: messages.len() as u32,
                    batch_size: settings.batch_size,
                    free_permits: queue
                        .permits
                        .available_permits()
                        .min(this.shared.limit.permits().available_permits()),
                    took: answered - sent,
                    at: answered,
                });
                if messages.is_empty() {
                    metrics::counter!("mailroom_empty_receives_total", "queue" => queue.queue.name.to_string()).increment(1);
                    continue;
                }
                metrics::counter!("mailroom_messages_received_total", "queue" => queue.queue.name.to_string())
                    .increment(messages.len() as u64);
                receive_span.record("messaging.batch.message_count", messages.len());
                let deliveries = messages
                    .into_iter()
                    .zip(permits)
                    .map(|(message, permits)| {
                        let token = this.shared.inflight.insert(
                            queue.queue.clone(),
                            message.receipt_handle.clone(),
                            settings.visibility_timeout_secs,
                            settings.heartbeat_secs,
                            message.body.len(),
                            permits,
                        );
                        let span = trace::message(&queue.queue.name, &message, &receive_span);
                        Delivery {
                            message,
                            token,
                            span,
                        }
                    })
                    .collect();
                if this.out.send(deliveries).is_err() {
                    return;
                }
            }
            Err(error) => {
                drop(permits);
                metrics::counter!("mailroom_sqs_errors_total", "queue" => queue.queue.name.to_string(), "op" => "receive").increment(1);
                let delay = backoff.fail();
                if backoff.failures() == 1 {
                    tracing::error!(queue = %queue.queue.name, %error, "receive failed; backing off until SQS answers again");
                } else {
                    tracing::debug!(queue = %queue.queue.name, %error, failures = backoff.failures(), "receive failed again");
                }
                tokio::select! {
                    _ = this.stop.cancelled() => return,
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

/// Wait for one permit of each kind, then take up to `max` without waiting. Finding no
/// process-wide permit free is the in-flight limit's evidence that it holds the receives.
async fn acquire(queue: &QueueRuntime, limit: &ConcurrencyLimit, max: usize) -> Vec<Permits> {
    let global = limit.permits();
    let mut permits = Vec::with_capacity(max);
    let first_queue = queue
        .permits
        .clone()
        .acquire_owned()
        .await
        .expect("semaphores are never closed");
    let first_global = match global.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            limit.note_starved();
            global
                .clone()
                .acquire_owned()
                .await
                .expect("semaphores are never closed")
        }
    };
    permits.push(Permits {
        _queue: first_queue,
        _global: first_global,
    });
    while permits.len() < max {
        let Ok(queue_permit) = queue.permits.clone().try_acquire_owned() else {
            break;
        };
        let Ok(global_permit) = global.clone().try_acquire_owned() else {
            limit.note_starved();
            break;
        };
        permits.push(Permits {
            _queue: queue_permit,
            _global: global_permit,
        });
    }
    permits
}
