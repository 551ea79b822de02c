//! Queue depth as gauges, read with GetQueueAttributes every [`DEPTH_INTERVAL`] per queue (never
//! per message): `mailroom_queue_messages{queue, state="visible"|"in_flight"|"delayed"}` for each
//! configured queue, and `mailroom_dlq_messages{queue}` (visible messages in the queue's DLQ,
//! when it has a redrive policy). Every process of a fleet reports the same numbers: aggregate
//! them with `max`, not `sum`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::queue_info::{dead_letter_queue, Depth};

pub const DEPTH_INTERVAL: Duration = Duration::from_secs(30);

/// Poll until `stop`; the first poll is at once.
pub async fn poll_queue_depths(
    client: aws_sdk_sqs::Client,
    queues: Vec<(String, String)>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(DEPTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (name, url) in &queues {
            let attrs = match crate::sqs::attributes(&client, url).await {
                Ok(attrs) => attrs,
                Err(error) => {
                    metrics::counter!("mailroom_sqs_errors_total", "queue" => name.clone(), "op" => "attributes").increment(1);
                    tracing::debug!(queue = %name, %error, "queue depth: GetQueueAttributes failed");
                    continue;
                }
            };
            let depth = Depth::from_attrs(&attrs);
            for (state, value) in [
                ("visible", depth.visible),
                ("in_flight", depth.in_flight),
                ("delayed", depth.delayed),
            ] {
                metrics::gauge!("mailroom_queue_messages", "queue" => name.clone(), "state" => state)
                    .set(value as f64);
            }
            match dead_letter_queue(&client, &attrs).await {
                Ok(Some((_, dlq_url))) => {
                    if let Ok(dlq) = crate::sqs::attributes(&client, &dlq_url).await {
                        metrics::gauge!("mailroom_dlq_messages", "queue" => name.clone())
                            .set(Depth::from_attrs(&dlq).visible as f64);
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(queue = %name, %error, "queue depth: cannot resolve the DLQ")
                }
            }
        }
    }
}
