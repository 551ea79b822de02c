//! Cost of decoding Event Webhook batches: a batch of 2,400 events (SendGrid's documented
//! examples, `../shared/conformance/events/documented-examples.json` unless a path is given,
//! repeated with distinct ids), decoded ROUNDS times. Prints nanoseconds per event. For an exact,
//! repeatable count of instructions, run it under callgrind with 3 rounds and with 0 (which
//! builds the batch and decodes nothing), and divide the difference by 7,200 events:
//!
//!   cargo run --release -p mailroom-sendgrid --example parse_events_cost [PATH] [ROUNDS]
//!   valgrind --tool=callgrind target/release/examples/parse_events_cost PATH 3   # and 0

use std::time::Instant;

const EVENTS: usize = 2_400;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "../shared/conformance/events/documented-examples.json".into());
    let rounds: usize = args.next().map_or(200, |r| r.parse().expect("ROUNDS"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let examples: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON array");
    let batch: Vec<serde_json::Value> = (0..EVENTS)
        .map(|i| {
            let mut e = examples[i % examples.len()].clone();
            e["sg_event_id"] = format!("evt-{i:08}").into();
            e
        })
        .collect();
    let body = serde_json::to_vec(&batch).expect("serialize");

    let started = Instant::now();
    let mut decoded = 0;
    for _ in 0..rounds {
        decoded += mailroom_sendgrid::parse_events(&body)
            .expect("the batch decodes")
            .len();
    }
    let ns = started.elapsed().as_nanos() as f64 / decoded as f64;
    println!(
        "{decoded} events ({} bytes per batch of {EVENTS}): {ns:.0} ns per event",
        body.len()
    );
}
