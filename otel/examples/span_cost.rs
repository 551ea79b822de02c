//! What a Mailroom trace span costs, off and on:
//!
//! ```text
//! cargo run --release -p mailroom-otel --example span_cost
//! ```
//!
//! Off: the subscriber the worker installs without an exporter (logs at `info`), so a span at
//! TRACE under `mailroom_otel::TARGET` is a disabled callsite. On: the same with the OTLP layer
//! (pointed at a closed loopback port; export fails in the background, which the SDK drops).
//! Each case creates, enters and drops spans with the attributes a message span has.

use std::time::Instant;

use tracing_subscriber::prelude::*;

fn spans(n: u64) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let span = tracing::span!(target: mailroom_otel::TARGET, tracing::Level::TRACE, "mailroom.message",
            messaging.destination.name = "sendgrid-events", messaging.message.id = i,
            mailroom.outcome = tracing::field::Empty);
        let _entered = span.enter();
        std::hint::black_box(&span);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let on = std::env::args().nth(1).as_deref() == Some("on");
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new("info"));
    if on {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
        let traces = mailroom_otel::layer("span-cost").expect("layer");
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .init();
        let ns = spans(200_000);
        println!("on:  {ns:.0} ns per span (created, entered, exported in batches)");
        mailroom_otel::shutdown();
    } else {
        tracing_subscriber::registry().with(logs).init();
        let ns = spans(10_000_000);
        println!("off: {ns:.1} ns per span (a disabled callsite)");
        // The other case needs its own process (one global subscriber per process).
        let exe = std::env::current_exe().expect("exe");
        let status = std::process::Command::new(exe)
            .arg("on")
            .status()
            .expect("run on");
        assert!(status.success());
    }
}
