//! The batcher: groups one queue's deliveries into handler batches (what is waiting, plus what
//! arrives within the batch window, up to the batch limit) and starts a handler task for each.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::process::{process_batch, Delivery};
use super::{QueueRuntime, Shared};

/// Group deliveries into handler batches: what is already waiting, plus what arrives within the
/// queue's batch window, up to its batch limit.
pub(super) async fn batcher(
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
