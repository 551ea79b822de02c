//! Every counter and gauge, registered at 0 at start for each configured queue and each label
//! value known up front.
//!
//! Why: Prometheus has no series until its first sample, so without this
//! `increase(mailroom_messages_dead_lettered_total[15m]) > 0` misses the first dead letter after
//! every restart (the series starts at 1, not 0), and dashboards show "no data" instead of 0.
//! Faults that never happened (ack failures, Postgres errors) must read 0, not be absent.

use crate::config::Config;

/// Outcome labels of `mailroom_messages_handled_total` (see `engine/process.rs`).
const OUTCOMES: [&str; 4] = ["done", "retry", "transient", "dead_letter"];
/// `op` labels of the SQS calls the engine, acker, probe and depth poller make.
const SQS_OPS: [&str; 4] = ["receive", "delete", "change_visibility", "attributes"];
const ACK_OPS: [&str; 2] = ["delete", "change_visibility"];
/// `op` labels of `mailroom_postgres_errors_total` (see `store_errors.rs`).
const POSTGRES_OPS: [&str; 4] = ["handler", "dead_letter", "ready", "forward"];

/// Register every series the worker can emit for `config`'s queues, at 0.
pub fn register_zeroes(config: &Config) {
    for op in POSTGRES_OPS {
        metrics::counter!("mailroom_postgres_errors_total", "op" => op).absolute(0);
    }
    for q in &config.queues {
        let queue = q.name.clone();
        let handler = q.handler.clone();
        metrics::counter!("mailroom_messages_received_total", "queue" => queue.clone()).absolute(0);
        metrics::counter!("mailroom_empty_receives_total", "queue" => queue.clone()).absolute(0);
        metrics::counter!("mailroom_messages_deleted_total", "queue" => queue.clone()).absolute(0);
        if handler == crate::handlers::SENDGRID_HANDLER {
            // Per-source counts (handlers/sendgrid/source_metrics.rs): the default route's at 0;
            // a named route's series appears with its first batch.
            for name in [
                "mailroom_sendgrid_events_total",
                "mailroom_sendgrid_inbound_emails_total",
            ] {
                metrics::counter!(name, "queue" => queue.clone(), "source" => "default")
                    .absolute(0);
            }
        }
        for outcome in OUTCOMES {
            metrics::counter!("mailroom_messages_handled_total", "queue" => queue.clone(),
                "handler" => handler.clone(), "outcome" => outcome)
            .absolute(0);
        }
        metrics::counter!("mailroom_messages_retried_total", "queue" => queue.clone(),
            "handler" => handler.clone())
        .absolute(0);
        metrics::counter!("mailroom_messages_dead_lettered_total", "queue" => queue.clone(),
            "handler" => handler.clone())
        .absolute(0);
        for op in SQS_OPS {
            metrics::counter!("mailroom_sqs_errors_total", "queue" => queue.clone(), "op" => op)
                .absolute(0);
        }
        for op in ACK_OPS {
            metrics::counter!("mailroom_ack_failures_total", "op" => op, "queue" => queue.clone())
                .absolute(0);
        }
        metrics::gauge!("mailroom_in_flight", "queue" => queue.clone()).set(0.0);
        metrics::gauge!("mailroom_receive_loops", "queue" => queue.clone()).set(0.0);
    }
    crate::forward::register_zeroes(&config.forwards);
}
