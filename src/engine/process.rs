//! One batch of received messages, start to finish: decode (fetching offloaded bodies), run the
//! handler, and turn each outcome into an ack: delete, a visibility change for the retry, or a
//! dead letter kept in the store and then deleted.

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use std::collections::VecDeque;

use mailroom_envelope::{decode, Decoded, Envelope};

use crate::config::{DeadLetterMode, MessageFormat};
use crate::handler::{DeadLetter, Job, Outcome, Retry};
use crate::s3::OpenError;
use crate::sqs::Received;

use tokio::sync::{oneshot, OwnedSemaphorePermit};

use crate::acker::AckResult;

use super::budget::Reserved;
use super::inflight::Token;
use super::trace;
use super::{QueueRuntime, Shared};
use tracing::Instrument;

/// A received message with its registry token.
pub struct Delivery {
    pub message: Received,
    pub token: Token,
    /// The message's trace span (`trace::message`): ends when the message is settled.
    pub span: tracing::Span,
}

enum Decision {
    Delete,
    Visibility(u32),
    DeadLetter(String),
}

pub async fn process_batch(queue: Arc<QueueRuntime>, shared: Arc<Shared>, batch: Vec<Delivery>) {
    let mut pending: VecDeque<Delivery> = batch.into();
    while !pending.is_empty() {
        process_round(&queue, &shared, &mut pending).await;
    }
}

/// One handler call (one transaction): open messages in order until the body budget says
/// stop (the rest stay pending for the next round), run the handler, settle the outcomes, and
/// return the budget.
async fn process_round(
    queue: &Arc<QueueRuntime>,
    shared: &Arc<Shared>,
    pending: &mut VecDeque<Delivery>,
) {
    let mut jobs = Vec::with_capacity(pending.len());
    let mut job_deliveries = Vec::with_capacity(pending.len());
    let mut early: Vec<(Delivery, Outcome)> = Vec::new();
    let mut reserved = Vec::new();
    let plain = queue.config.message_format == MessageFormat::Plain;
    while let Some(delivery) = pending.pop_front() {
        let opened = open_within_budget(shared, plain, &delivery.message, &mut reserved)
            .instrument(trace::decode(&delivery.span))
            .await;
        match opened {
            Opened::Ready(envelope) => {
                jobs.push(Job {
                    message_id: delivery.message.message_id.clone(),
                    queue: queue.queue.name.to_string(),
                    receive_count: delivery.message.receive_count,
                    sent_at: delivery.message.sent_at,
                    attributes: delivery.message.attributes.clone(),
                    envelope,
                });
                job_deliveries.push(delivery);
            }
            Opened::Failed(outcome) => early.push((delivery, outcome)),
            Opened::NoBudget => {
                pending.push_front(delivery);
                break;
            }
        }
    }

    let batch_span = trace::batch(
        &queue.queue.name,
        &queue.handler_name,
        job_deliveries.iter().map(|d: &Delivery| &d.span),
    );
    let outcomes = if jobs.is_empty() {
        Vec::new()
    } else {
        run_handler(queue, &jobs)
            .instrument(batch_span.clone())
            .await
    };
    drop(jobs);
    drop(reserved);

    let mut results = early;
    results.extend(job_deliveries.into_iter().zip(outcomes));

    let mut settle = Settle::reserve(queue, results.len()).await;
    let mut letters = Vec::new();
    let stopping = shared.stopping.load(std::sync::atomic::Ordering::Relaxed);
    let (mut done, mut retried, mut dead) = (0u32, 0u32, 0u32);
    for (delivery, outcome) in results {
        let label = outcome_label(&outcome);
        delivery.span.record("mailroom.outcome", label);
        match label {
            "done" => done += 1,
            "dead_letter" => dead += 1,
            _ => retried += 1,
        }
        metrics::counter!("mailroom_messages_handled_total", "queue" => queue.queue.name.to_string(), "handler" => queue.handler_name.to_string(), "outcome" => label).increment(1);
        match decide(queue, &delivery.message, outcome, stopping) {
            Decision::Delete => delete(queue, shared, &mut settle, delivery),
            Decision::Visibility(secs) => {
                metrics::counter!("mailroom_messages_retried_total", "queue" => queue.queue.name.to_string(), "handler" => queue.handler_name.to_string()).increment(1);
                // Out of the registry first: a heartbeat tick after the visibility change was
                // queued would otherwise extend the message and override the retry's delay.
                shared.inflight.remove(delivery.token);
                let receipt = delivery.message.receipt_handle.clone();
                let confirmed = shared.acker.change_visibility(&queue.queue, receipt, secs);
                settle.add(confirmed);
            }
            Decision::DeadLetter(reason) => letters.push((delivery, reason)),
        }
    }
    batch_span.record("mailroom.done", done);
    batch_span.record("mailroom.retried", retried);
    batch_span.record("mailroom.dead_lettered", dead);
    if !letters.is_empty() {
        keep_as_dead_letters(queue, shared, &mut settle, letters)
            .instrument(batch_span.clone())
            .await;
    }
    settle.spawn(&batch_span);
}

/// Acks handed to the acker, each holding one of its queue's `acks_pending` permits until SQS
/// answered: one task per batch waits for the answers, then releases them.
///
/// A message's handler permits (queue and global) are returned as soon as its ack is queued,
/// not when SQS confirmed it: the receive loops can start the next messages during the delete's
/// round trip and the acker's flush interval (on AWS, 10-30 ms of every message's time). What
/// SQS counts in flight for a queue is therefore at most its concurrency (received, not yet
/// handled) plus its concurrency again (acks not yet confirmed): the second bound is the
/// `acks_pending` semaphore, and a batch whose acks would pass it waits, holding its handler
/// permits, until earlier acks are confirmed.
///
/// Offloaded S3 bodies are not deleted here, on purpose: SQS delivers at least once, and a
/// second copy of a message whose body was deleted would find its object gone and become a dead
/// letter although its data is stored. The bucket's lifecycle rule expires bodies after a time
/// longer than any redelivery (deploy/template.yaml: `LargeBodyRetentionDays`).
struct Settle {
    /// The batch's share of `acks_pending`, taken at once before any ack is queued (taken one
    /// by one, batches each holding some while waiting for more could wait on each other
    /// for ever).
    pending: Option<OwnedSemaphorePermit>,
    waiting: Vec<oneshot::Receiver<AckResult>>,
}

impl Settle {
    /// Wait until `acks` more acks of this queue may be pending (at most its concurrency).
    async fn reserve(queue: &QueueRuntime, acks: usize) -> Self {
        let acks = acks.min(queue.concurrency) as u32;
        // The semaphore is never closed; were it, the acks would simply not be bounded.
        let pending = queue
            .acks_pending
            .clone()
            .acquire_many_owned(acks)
            .await
            .ok();
        Self {
            pending,
            waiting: Vec::new(),
        }
    }

    /// An ack was queued (its message left the registry, and with it its handler permits).
    fn add(&mut self, confirmed: oneshot::Receiver<AckResult>) {
        self.waiting.push(confirmed);
    }

    fn spawn(self, batch: &tracing::Span) {
        if self.waiting.is_empty() {
            return;
        }
        let span = trace::ack(batch, self.waiting.len());
        tokio::spawn(
            async move {
                for confirmed in self.waiting {
                    let _ = confirmed.await;
                }
                drop(self.pending);
            }
            .instrument(span),
        );
    }
}

/// A message, opened as far as the body budget allows.
enum Opened {
    Ready(Envelope),
    /// Will not open: the outcome to apply instead.
    Failed(Outcome),
    /// Its offloaded body does not fit the budget now, and this round already holds some.
    NoBudget,
}

/// Decode the message; for an S3 pointer, reserve its size in the body budget (waiting only
/// when this round holds none), then fetch and decode it. The same calls as `Bodies::open`,
/// with the budget in between.
async fn open_within_budget(
    shared: &Shared,
    plain: bool,
    message: &Received,
    reserved: &mut Vec<Reserved>,
) -> Opened {
    if plain {
        return Opened::Ready(Envelope::plain(
            message.body.clone().into_bytes(),
            message.sent_at,
        ));
    }
    let pointer = match decode(&message.body) {
        Err(e) => return Opened::Failed(outcome_of(&OpenError::Envelope(e))),
        Ok(Decoded::Envelope(envelope)) => return Opened::Ready(envelope),
        Ok(Decoded::Pointer(pointer)) => pointer,
    };
    if let Err(e) = shared.bodies.check_bucket(&pointer) {
        return Opened::Failed(outcome_of(&e));
    }
    let size = match shared.bodies.size(&pointer).await {
        Ok(size) => size,
        Err(e) => return Opened::Failed(outcome_of(&OpenError::Fetch(e))),
    };
    let reservation = if reserved.is_empty() {
        shared.budget.reserve(size).await
    } else {
        match shared.budget.try_reserve(size) {
            Some(reservation) => reservation,
            None => return Opened::NoBudget,
        }
    };
    reserved.push(reservation);
    // Read no more than HEAD said (an object that grew since is refused, not read whole).
    let limit = if size == 0 {
        mailroom_envelope::MAX_MESSAGE_BYTES
    } else {
        size as usize
    };
    match shared.bodies.open_pointer(&pointer, limit).await {
        Ok(envelope) => Opened::Ready(envelope),
        Err(e) => Opened::Failed(outcome_of(&e)),
    }
}

/// S3 unreachable is transient; anything else about a message that will not open is its fault.
fn outcome_of(e: &OpenError) -> Outcome {
    if e.is_transient() {
        Outcome::transient(e.to_string())
    } else {
        Outcome::dead_letter(e.to_string())
    }
}

/// Run the handler, turning a panic or a wrong number of outcomes into retries.
async fn run_handler(queue: &QueueRuntime, jobs: &[Job]) -> Vec<Outcome> {
    let started = Instant::now();
    let result = std::panic::AssertUnwindSafe(queue.handler.handle_batch(jobs))
        .catch_unwind()
        .await;
    metrics::histogram!("mailroom_handler_duration_seconds", "queue" => queue.queue.name.to_string(), "handler" => queue.handler_name.to_string())
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("mailroom_handler_batch_messages", "queue" => queue.queue.name.to_string(), "handler" => queue.handler_name.to_string())
        .record(jobs.len() as f64);
    match result {
        Ok(outcomes) if outcomes.len() == jobs.len() => outcomes,
        Ok(outcomes) => {
            let reason = format!(
                "handler {} returned {} outcomes for {} messages",
                queue.handler_name,
                outcomes.len(),
                jobs.len()
            );
            tracing::error!(queue = %queue.queue.name, handler = %queue.handler_name, "{reason}");
            vec![Outcome::retry(reason); jobs.len()]
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let reason = format!("handler {} panicked: {what}", queue.handler_name);
            tracing::error!(queue = %queue.queue.name, handler = %queue.handler_name, messages = jobs.len(), "{reason}");
            vec![Outcome::retry(reason); jobs.len()]
        }
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::Retry(Retry {
            transient: true, ..
        }) => "transient",
        Outcome::Retry(_) => "retry",
        Outcome::DeadLetter { .. } => "dead_letter",
    }
}

/// Turn an outcome into what happens to the SQS message.
fn decide(queue: &QueueRuntime, message: &Received, outcome: Outcome, stopping: bool) -> Decision {
    let cfg = &queue.config;
    match outcome {
        Outcome::Done => Decision::Delete,
        Outcome::DeadLetter { reason } => Decision::DeadLetter(reason),
        Outcome::Retry(retry) => {
            let log_retry = |secs: u32| {
                tracing::warn!(
                    queue = %queue.queue.name,
                    message_id = %message.message_id,
                    receive_count = message.receive_count,
                    handler = %queue.handler_name,
                    transient = retry.transient,
                    retry_in_secs = secs,
                    reason = %retry.reason,
                    "message will be retried"
                );
            };
            let after = retry.after.map(|d| {
                d.as_secs()
                    .min(u64::from(crate::config::MAX_VISIBILITY_TIMEOUT_SECS))
                    as u32
            });
            if retry.transient {
                // Shutting down: the fault may be this process's (its connections); release
                // the message to the next process rather than hiding it for the longest interval.
                if stopping {
                    log_retry(0);
                    return Decision::Visibility(0);
                }
                let secs = after.unwrap_or_else(|| cfg.longest_retry_secs());
                log_retry(secs);
                return Decision::Visibility(secs);
            }
            match cfg.retry_delay(message.receive_count) {
                Some(delay) => {
                    let secs = after.unwrap_or(delay);
                    log_retry(secs);
                    Decision::Visibility(secs)
                }
                None if cfg.dead_letter == DeadLetterMode::Table => Decision::DeadLetter(format!(
                    "gave up after {} attempts: {}",
                    message.receive_count, retry.reason
                )),
                None => {
                    // Left to the queue's redrive policy (maxReceiveCount moves it to the DLQ).
                    let secs = cfg.longest_retry_secs();
                    log_retry(secs);
                    Decision::Visibility(secs)
                }
            }
        }
    }
}

fn delete(queue: &QueueRuntime, shared: &Shared, settle: &mut Settle, delivery: Delivery) {
    // Out of the registry before the delete is queued, so no heartbeat extends it meanwhile.
    shared.inflight.remove(delivery.token);
    let receipt = delivery.message.receipt_handle.clone();
    let confirmed = shared.acker.delete(&queue.queue, receipt);
    settle.add(confirmed);
}

async fn keep_as_dead_letters(
    queue: &QueueRuntime,
    shared: &Shared,
    settle: &mut Settle,
    letters: Vec<(Delivery, String)>,
) {
    let records: Vec<DeadLetter> = letters
        .iter()
        .map(|(d, reason)| DeadLetter {
            queue: queue.queue.name.to_string(),
            message_id: d.message.message_id.clone(),
            body: d.message.body.clone(),
            attributes: d.message.attributes.clone(),
            receive_count: d.message.receive_count,
            handler: Some(queue.handler_name.to_string()),
            reason: reason.clone(),
        })
        .collect();
    match shared.dead_letters.keep(&records).await {
        Ok(()) => {
            for (delivery, reason) in letters {
                metrics::counter!("mailroom_messages_dead_lettered_total", "queue" => queue.queue.name.to_string(), "handler" => queue.handler_name.to_string()).increment(1);
                tracing::warn!(
                    queue = %queue.queue.name,
                    message_id = %delivery.message.message_id,
                    receive_count = delivery.message.receive_count,
                    handler = %queue.handler_name,
                    %reason,
                    "message kept in the dead-letter table"
                );
                // An S3 object stays (the worker never deletes bodies): the dead letter's
                // body is the pointer to it.
                delete(queue, shared, settle, delivery);
            }
        }
        Err(error) => {
            let secs = queue.config.longest_retry_secs();
            let message_ids: Vec<&str> = letters
                .iter()
                .map(|(d, _)| d.message.message_id.as_str())
                .collect();
            tracing::error!(queue = %queue.queue.name, handler = %queue.handler_name, messages = letters.len(), ?message_ids, %error, retry_in_secs = secs, "could not keep dead letters; the messages stay in SQS");
            for (delivery, _) in letters {
                shared.inflight.remove(delivery.token);
                let receipt = delivery.message.receipt_handle.clone();
                let confirmed = shared.acker.change_visibility(&queue.queue, receipt, secs);
                settle.add(confirmed);
            }
        }
    }
}
