//! `mailroom_postgres_errors_total{op}`: Postgres faults, counted at the seams the CLI wires
//! (the store module itself stays free of telemetry). `op="handler"`: the sendgrid handler's
//! transaction failed because the database is unavailable (counted by the handler, which knows
//! it was Postgres; a wrapper counting every transient outcome also counted other handlers'
//! faults);
//! `op="dead_letter"`: a dead letter could not be kept; `op="ready"`: the readiness probe's
//! `select 1` failed.

use std::sync::Arc;

use crate::handler::{BoxFuture, DeadLetter, DeadLetterSink, KeepError};

/// Count one Postgres fault at `op`. The `sendgrid` handler calls it when its transaction
/// failed because the database is unavailable; a custom handler may call it too.
pub fn count_postgres_error(op: &'static str) {
    metrics::counter!("mailroom_postgres_errors_total", "op" => op).increment(1);
}

/// Wraps the dead-letter sink, counting failures to keep.
pub struct CountingDeadLetters(pub Arc<dyn DeadLetterSink>);

impl DeadLetterSink for CountingDeadLetters {
    fn keep<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), KeepError>> {
        Box::pin(async move {
            let result = self.0.keep(letters).await;
            if result.is_err() {
                count_postgres_error("dead_letter");
            }
            result
        })
    }
}
