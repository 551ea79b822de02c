//! Logs through tracing-subscriber: human-readable on a terminal, JSON lines otherwise (under
//! journald or a log shipper), filtered RUST_LOG-style. WARN and ERROR events that pass the
//! filter are also kept in a small ring buffer for the status page (`telemetry::recent`).

use std::io::IsTerminal;

use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::telemetry::RecentErrorsLayer;

/// `format`: "auto" (default), "human" or "json"; env MAILROOM_LOG_FORMAT wins.
pub fn init(format: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let env_format = std::env::var("MAILROOM_LOG_FORMAT").ok();
    let format = env_format.as_deref().or(format).unwrap_or("auto");
    let json = match format {
        "json" => true,
        "human" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(RecentErrorsLayer);
    // A second init (tests) is harmless: keep the first.
    let _ = if json {
        registry
            .with(fmt.json().flatten_event(true).with_current_span(false))
            .try_init()
    } else {
        registry.with(fmt).try_init()
    };
}
