//! Logs through tracing-subscriber: human-readable on a terminal, JSON lines otherwise (under
//! journald or a log shipper), filtered RUST_LOG-style.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
