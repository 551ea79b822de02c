//! Telemetry for running Mailroom in production: a Prometheus recorder for the `metrics` the
//! engine emits, a small HTTP listener (`/metrics`, `/health`, `/ready`, and the read-only
//! status page at `/`, `/status` and `/status.json`), the queue-depth poller and the Postgres
//! error counter. Logs are `crate::logging` (which feeds `recent`, the page's last errors).
//!
//! Why a separate module: the engine only emits metrics and calls `Controls` hooks; what is
//! exported, and how readiness is judged, is an operations concern that must not leak into
//! message handling.

mod depth;
mod health;
mod recent;
mod recorder;
mod server;
mod status;
mod status_html;
mod store_errors;
mod zeroes;

use std::net::SocketAddr;

pub use depth::{poll_queue_depths, DEPTH_INTERVAL};
pub use health::{Health, Phase, Probe, READY_CACHE};
pub use recent::{recent_errors, LogEntry, RecentErrorsLayer, RECENT_ERRORS};
pub use recorder::{install_recorder, RecorderError};
pub use server::{serve, ServerError};
pub use status::{
    parse_samples, Sample, Snapshot, StatusSource, DEAD_LETTERS_SHOWN, PG_CACHE, PG_TIMEOUT,
};
pub use status_html::{escape as escape_html, render as render_status_page};
pub use store_errors::{count_postgres_error, CountingDeadLetters};
pub use zeroes::register_zeroes;

/// Parse `[telemetry] listen`.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, ServerError> {
    listen.parse().map_err(|_| ServerError::Address {
        listen: listen.to_string(),
    })
}
