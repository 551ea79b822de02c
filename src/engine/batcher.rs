//! The batcher: groups one queue's deliveries into handler batches and starts a handler task
//! for each.
//!
//! A batch is what is waiting, plus what arrives within the batch window, up to the batch
//! limit. A full batch starts at once. A partial one (fewer than `max_batch_messages`) starts
//! when its window has passed and fewer than `max_partial_batches` partial batches run, or at
//! the latest `max_partial_wait_ms` after its window; until then it keeps gathering. This is
//! Nagle's algorithm for transactions: on an idle queue a batch starts as soon as its window
//! ends, and under load the next batch grows while the
//! previous one commits, so the store sees few, full transactions instead of many small ones
//! competing for its cores (one transaction of 100 messages costs Postgres far less than five
//! of 20: BENCHMARKS.md, "partial batches"). A handler that cannot keep up with one partial
//! batch at a time soon sees full batches, which run side by side, so the bound never caps
//! throughput; it only decides how batches are cut. The wait is bounded so that a handler
//! stuck on one batch (a lock, a slow call) delays the queue's next messages by
//! `max_partial_wait_ms` at most, not until a batch fills.
//!
//! Gathered messages hold their in-flight permits and registry entries while they wait, so
//! the heartbeat extends them and shutdown releases them like any other unfinished message.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::process::{process_batch, Delivery};
use super::{QueueRuntime, Shared};

/// Group deliveries into handler batches (see the module doc) and start each.
pub(super) async fn batcher(
    queue: Arc<QueueRuntime>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Vec<Delivery>>,
    stop: CancellationToken,
    abandon: CancellationToken,
    handlers: TaskTracker,
) {
    let max = (queue.config.max_batch_messages as usize).max(1);
    let window = Duration::from_millis(queue.config.batch_window_ms);
    let most_wait = Duration::from_millis(queue.config.max_partial_wait_ms);
    let partial_slots = match queue.config.max_partial_batches {
        0 => None,
        n => Some(Arc::new(Semaphore::new(n as usize))),
    };
    let start = |batch: Vec<Delivery>, slot: Option<OwnedSemaphorePermit>| {
        let (queue, shared, abandon) = (queue.clone(), shared.clone(), abandon.clone());
        handlers.spawn(async move {
            tokio::select! {
                _ = abandon.cancelled() => {}
                _ = process_batch(queue, shared, batch) => {}
            }
            // The slot is free once the batch is handled and its acks queued.
            drop(slot);
        });
    };
    let mut batch: Vec<Delivery> = Vec::new();
    let mut deadline = Instant::now();
    loop {
        if batch.is_empty() {
            batch = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                first = rx.recv() => match first { Some(b) => b, None => return },
            };
            deadline = Instant::now() + window;
        }
        // Take what is already waiting.
        let mut closed = false;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if batch.len() >= max {
            let rest = batch.split_off(max);
            start(std::mem::replace(&mut batch, rest), None);
            continue;
        }
        if closed {
            // The receive loops are gone (shutdown): start what was received.
            start(std::mem::take(&mut batch), None);
            continue;
        }
        let window_open = Instant::now() < deadline;
        let slot = async {
            match &partial_slots {
                // The semaphore is never closed.
                Some(slots) => slots.clone().acquire_owned().await.ok(),
                None => None,
            }
        };
        tokio::select! {
            biased;
            // Gathered but not started: left in the registry, released on shutdown.
            _ = stop.cancelled() => return,
            more = rx.recv() => match more {
                Some(more) => batch.extend(more),
                None => start(std::mem::take(&mut batch), None),
            },
            _ = tokio::time::sleep_until(deadline), if window_open => {}
            slot = slot, if !window_open => start(std::mem::take(&mut batch), slot),
            // A running partial batch took too long (a stuck handler): start without a slot.
            _ = tokio::time::sleep_until(deadline + most_wait), if !window_open => {
                start(std::mem::take(&mut batch), None)
            }
        }
    }
}
