//! SendGrid's official signed Event Webhook vectors, posted over HTTP to `serve`.
//!
//! The vectors live outside the repository (`../shared/conformance` from the repo root, or
//! `MAILROOM_CONFORMANCE_DIR`); CI runs this with `--ignored`. A missing folder is a failure,
//! never a silent pass.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::{FakeSink, Server};
use mailroom_router::{App, Config};

fn conformance_dir() -> PathBuf {
    std::env::var_os("MAILROOM_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
        })
}

struct Case {
    name: String,
    public_key: String,
    signature: String,
    timestamp: String,
    body: Vec<u8>,
    valid: bool,
}

fn str_field<'a>(value: &'a serde_json::Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name} missing"))
}

fn cases(dir: &std::path::Path) -> Vec<Case> {
    let vector: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("vector.json")).expect("vector.json"))
            .expect("vector.json is JSON");
    let body = std::fs::read(dir.join(str_field(&vector, "payload_file"))).expect("payload");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = Case {
        name: name.clone(),
        public_key: str_field(&vector, "public_key").to_owned(),
        signature: str_field(&vector, "signature").to_owned(),
        timestamp: str_field(&vector, "timestamp").to_owned(),
        body,
        valid: str_field(&vector, "expected") == "valid",
    };
    let mut out = Vec::new();
    for negative in vector["negatives"].as_array().into_iter().flatten() {
        let mut body = base.body.clone();
        if negative["strip_trailing_crlf"].as_bool() == Some(true) {
            assert!(body.ends_with(b"\r\n"), "{name}: payload ends in CRLF");
            body.truncate(body.len() - 2);
        }
        if let Some(replace) = negative["replace"].as_array() {
            let from = replace[0].as_str().expect("replace from");
            let to = replace[1].as_str().expect("replace to");
            let text = String::from_utf8(body).expect("UTF-8 payload");
            assert!(text.contains(from), "{name}: payload contains {from:?}");
            body = text.replace(from, to).into_bytes();
        }
        let pick =
            |field: &str, default: &str| negative[field].as_str().unwrap_or(default).to_owned();
        out.push(Case {
            name: format!("{name}: {}", str_field(negative, "why")),
            public_key: pick("public_key", &base.public_key),
            signature: pick("signature", &base.signature),
            timestamp: pick("timestamp", &base.timestamp),
            body,
            valid: str_field(negative, "expected") == "valid",
        });
    }
    out.insert(0, base);
    out
}

#[tokio::test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
async fn official_signed_event_vectors_through_serve() {
    let root = conformance_dir().join("signed-events");
    assert!(
        root.is_dir(),
        "conformance vectors not found at {} (set MAILROOM_CONFORMANCE_DIR)",
        root.display()
    );
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("read signed-events")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("vector.json").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no vectors under {}", root.display());

    let mut checked = 0;
    for dir in dirs {
        for case in cases(&dir) {
            let vars = [
                (
                    "MAILROOM_EVENTS_QUEUE_URL",
                    "http://queue.local/events".to_owned(),
                ),
                ("MAILROOM_EVENT_WEBHOOK_PUBLIC_KEY", case.public_key.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let config = Config::from_vars(vars).expect("vector key parses");
            // "Now" is the vector's own timestamp, so the default replay window applies.
            let now: i64 = case.timestamp.parse().expect("numeric timestamp");
            let sink = Arc::new(FakeSink::default());
            let app = App::new(config, Arc::clone(&sink)).with_clock(Arc::new(move || {
                Utc.timestamp_opt(now, 0).single().expect("time")
            }));
            let server = Server::start(app).await;
            let (status, body) = server
                .post(
                    "/sendgrid/events",
                    &[
                        ("content-type", "application/json"),
                        ("X-Twilio-Email-Event-Webhook-Signature", &case.signature),
                        ("X-Twilio-Email-Event-Webhook-Timestamp", &case.timestamp),
                    ],
                    case.body.clone(),
                )
                .await;
            server.shutdown().await;
            if case.valid {
                assert_eq!(status, 200, "{}: {body}", case.name);
                let sent = sink.sent();
                assert_eq!(sent.len(), 1, "{}", case.name);
                match mailroom_envelope::decode(&sent[0].body).expect("decodes") {
                    mailroom_envelope::Decoded::Envelope(e) => {
                        assert_eq!(e.body, case.body, "{}: exact bytes", case.name)
                    }
                    other => panic!("{}: {other:?}", case.name),
                }
            } else {
                assert_eq!(status, 403, "{}: {body}", case.name);
                assert!(sink.sent().is_empty(), "{}", case.name);
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 7,
        "expected every vector and negative, checked {checked}"
    );
}
