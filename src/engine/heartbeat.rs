//! The heartbeat (one task extends every long-running message's visibility, batched through
//! the acker) and the in-flight gauge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{QueueRuntime, Shared};

/// Extend the visibility of long-running messages, batched through the acker.
const HEARTBEAT_TICK: Duration = Duration::from_millis(250);

pub(super) async fn heartbeat(
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

pub(super) async fn report_in_flight(
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
