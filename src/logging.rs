//! Logs through tracing-subscriber: human-readable on a terminal, JSON lines otherwise (under
//! journald or a log shipper), filtered RUST_LOG-style. WARN and ERROR events that pass the
//! filter are also kept in a small ring buffer for the status page (`telemetry::recent`). When
//! the standard `OTEL_*` variables configure an OTLP exporter, Mailroom's trace spans go to it
//! (`mailroom-otel`); the log filter does not apply to them, nor they to the logs.

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
    let logs = if json {
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed()
    } else {
        fmt.boxed()
    };
    let traces = mailroom_otel::layer("mailroom").unwrap_or_else(|e| {
        eprintln!("mailroom: warning: traces are off: {e}");
        None
    });
    // A second init (tests) is harmless: keep the first.
    let _ = tracing_subscriber::registry()
        .with(logs.and_then(RecentErrorsLayer).with_filter(filter))
        .with(traces)
        .try_init();
}
