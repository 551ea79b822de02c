//! `mailroom_postgres_errors_total{op}`: Postgres faults, counted at the seams the CLI wires
//! (the store module itself stays free of telemetry). `op="handler"`: a handler answered
//! "transient" (the sendgrid handler does so only when the database is unavailable);
//! `op="dead_letter"`: a dead letter could not be kept; `op="ready"`: the readiness probe's
//! `select 1` failed.

use std::sync::Arc;

use crate::handler::{BoxFuture, DeadLetter, DeadLetterSink, Handler, Job, Outcome, Retry};

pub(crate) fn count(op: &'static str) {
    metrics::counter!("mailroom_postgres_errors_total", "op" => op).increment(1);
}

/// Wraps a handler, counting its transient outcomes (one per batch: one failed transaction).
pub struct CountingHandler(pub Arc<dyn Handler>);

impl Handler for CountingHandler {
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let outcomes = self.0.handle_batch(jobs).await;
            if outcomes.iter().any(|o| {
                matches!(
                    o,
                    Outcome::Retry(Retry {
                        transient: true,
                        ..
                    })
                )
            }) {
                count("handler");
            }
            outcomes
        })
    }
}

/// Wraps the dead-letter sink, counting failures to keep.
pub struct CountingDeadLetters(pub Arc<dyn DeadLetterSink>);

impl DeadLetterSink for CountingDeadLetters {
    fn keep<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let result = self.0.keep(letters).await;
            if result.is_err() {
                count("dead_letter");
            }
            result
        })
    }
}
