//! Telemetry for running Mailroom in production: a Prometheus recorder for the `metrics` the
//! engine emits, a small HTTP listener (`/metrics`, `/health`, `/ready`), the queue-depth poller
//! and the Postgres error counter. Logs are `crate::logging`.
//!
//! Why a separate module: the engine only emits metrics and calls `Controls` hooks; what is
//! exported, and how readiness is judged, is an operations concern that must not leak into
//! message handling.

mod depth;
mod health;
mod recorder;
mod server;
mod store_errors;
mod zeroes;

use std::net::SocketAddr;

pub use depth::{poll_queue_depths, DEPTH_INTERVAL};
pub use health::{Health, Phase, Probe, READY_CACHE};
pub use recorder::{install_recorder, RecorderError};
pub use server::{serve, ServerError};
pub use store_errors::{count_postgres_error, CountingDeadLetters};
pub use zeroes::register_zeroes;

/// Parse `[telemetry] listen`.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, ServerError> {
    listen.parse().map_err(|_| ServerError::Address {
        listen: listen.to_string(),
    })
}
