//! Golden files: every shape `decode` reads, and the malformed ones it must refuse clearly.

use chrono::{TimeZone, Utc};
use mailroom_envelope::{
    decode, encode, DecodeError, Decoded, Envelope, Kind, Origin, S3Pointer, Source,
};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn envelope(name: &str) -> Envelope {
    match decode(&fixture(name)) {
        Ok(Decoded::Envelope(e)) => e,
        other => panic!("{name}: expected an envelope, got {other:?}"),
    }
}

fn error(name: &str) -> DecodeError {
    match decode(&fixture(name)) {
        Err(e) => e,
        Ok(d) => panic!("{name}: expected an error, got {d:?}"),
    }
}

const INBOUND: &[u8] = b"--xYzZY\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nHello\r\n--xYzZY\r\nContent-Disposition: form-data; name=\"attachment1\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\xfe\r\n--xYzZY--\r\n";

#[test]
fn router_v1_events() {
    let e = envelope("router-v1-events.json");
    assert_eq!(e.origin, Origin::Router { version: 1 });
    assert_eq!(e.kind, Kind::Events);
    assert_eq!(
        e.received_at,
        Some(
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
                + chrono::Duration::milliseconds(678)
        )
    );
    assert_eq!(
        e.source,
        Some(Source {
            path: "/sendgrid/events".into(),
            stage: Some("prod".into()),
            request_id: Some("req-123".into()),
            webhook: None,
        })
    );
    assert_eq!(
        e.headers[0],
        ("content-type".into(), "application/json".into())
    );
    assert_eq!(e.header("X-Forwarded-For"), Some("1.2.3.4, 5.6.7.8"));
    assert_eq!(
        e.header("x-twilio-email-event-webhook-timestamp"),
        Some("1700000000")
    );
    assert_eq!(e.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        &e.body[..],
        b"[{\"email\":\"a@example.com\",\"event\":\"delivered\",\"timestamp\":1700000000,\"sg_event_id\":\"e1\"}]\r\n"
    );
    assert_eq!(e.queue_url, None);
}

#[test]
fn router_v1_inbound_minimal_with_unknown_field() {
    let e = envelope("router-v1-inbound-minimal.json");
    assert_eq!(e.kind, Kind::Inbound);
    assert_eq!(e.received_at, None);
    assert_eq!(
        e.source.as_ref().map(|s| s.path.as_str()),
        Some("/sendgrid/inbound")
    );
    assert_eq!(e.source.as_ref().and_then(|s| s.stage.clone()), None);
    assert!(e.headers.is_empty());
    assert_eq!(e.body, INBOUND);
}

#[test]
fn router_refusals() {
    assert_eq!(
        error("router-v2-future.json"),
        DecodeError::UnsupportedVersion(2)
    );
    assert_eq!(
        error("router-v2-future.json").to_string(),
        "unsupported envelope version 2"
    );
    assert!(matches!(
        error("router-bad-version.json"),
        DecodeError::BadVersion(_)
    ));
    assert_eq!(
        error("router-bad-base64.json").to_string(),
        "body_b64 is not valid base64"
    );
    let kind = error("router-bad-kind.json");
    assert!(matches!(kind, DecodeError::BadEnvelope(_)), "{kind}");
    assert!(kind.to_string().contains("sms"), "{kind}");
}

#[test]
fn seed_json_keeps_the_inlined_text() {
    let e = envelope("seed-json.json");
    assert_eq!(e.origin, Origin::SeedJson);
    assert_eq!(e.kind, Kind::Events);
    assert_eq!(e.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        e.queue_url.as_deref(),
        Some("https://sqs.eu-west-1.amazonaws.com/123456789012/sendgrid-events")
    );
    assert_eq!(
        std::str::from_utf8(&e.body).unwrap(),
        r#"[ {"email":"a@example.com", "event":"open", "timestamp":1700000000.5, "sg_machine_open":true} ]"#
    );
}

fn check_seed_raw(e: &Envelope) {
    assert_eq!(e.origin, Origin::SeedRaw);
    assert_eq!(e.kind, Kind::Inbound);
    assert_eq!(
        e.content_type.as_deref(),
        Some("multipart/form-data; boundary=xYzZY")
    );
    let names: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "content-type",
            "host",
            "user-agent",
            "x-forwarded-for",
            "x-amzn-trace-id"
        ]
    );
    assert_eq!(e.header("x-forwarded-for"), Some("1.2.3.4, 5.6.7.8"));
    assert_eq!(e.header("x-amzn-trace-id"), Some("Root=1-5f9b-abc"));
    assert_eq!(e.body, INBOUND);
    assert_eq!(
        e.queue_url.as_deref(),
        Some("https://sqs.eu-west-1.amazonaws.com/123456789012/sendgrid-inbound")
    );
}

#[test]
fn seed_raw_with_java_map_headers() {
    check_seed_raw(&envelope("seed-raw.json"));
}

#[test]
fn seed_raw_double_base64() {
    check_seed_raw(&envelope("seed-raw-double-base64.json"));
}

#[test]
fn seed_raw_refusals() {
    assert_eq!(
        error("seed-raw-bad-base64.json").to_string(),
        "body-raw is not valid base64"
    );
    let e = error("seed-raw-bad-headers.json");
    assert!(matches!(e, DecodeError::JavaMap(_)), "{e}");
    assert!(e.to_string().contains("http-headers"), "{e}");
}

#[test]
fn pointers() {
    let want = S3Pointer {
        bucket: "mailroom-large".into(),
        key: "2026/01/02/abc-123".into(),
    };
    assert_eq!(
        decode(&fixture("pointer.json")),
        Ok(Decoded::Pointer(want.clone()))
    );
    assert_eq!(want.to_message_body(), fixture("pointer.json").trim_end());
    assert_eq!(
        decode(&fixture("pointer-legacy-class.json")),
        Ok(Decoded::Pointer(S3Pointer {
            bucket: "b".into(),
            key: "k".into()
        }))
    );
    assert!(matches!(
        error("pointer-missing-key.json"),
        DecodeError::BadPointer(_)
    ));
}

#[test]
fn malformed() {
    assert!(error("malformed-not-json.json")
        .to_string()
        .starts_with("not JSON: "));
    assert!(matches!(
        error("malformed-truncated.json"),
        DecodeError::NotJson(_)
    ));
    let unknown = error("malformed-unknown-object.json");
    assert_eq!(unknown, DecodeError::Unrecognised);
    assert_eq!(
        unknown.to_string(),
        "unrecognised message shape: expected a mailroom envelope, a legacy body-json/body-raw object, or an S3 pointer"
    );
    assert_eq!(
        error("malformed-bare-array.json"),
        DecodeError::Unrecognised
    );
    assert!(matches!(decode(""), Err(DecodeError::NotJson(_))));
    assert_eq!(decode("42"), Err(DecodeError::Unrecognised));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    // Valid but absurdly deep: kept as opaque text (serde_json skips it without recursing);
    // the events parser refuses it later with serde_json's recursion limit.
    let deep = format!(
        "{{\"body-json\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(decode(&deep), Ok(Decoded::Envelope(e)) if e.body.len() == 200_000));
    let unclosed = format!("{{\"mailroom\":1,\"x\":{}", "{\"a\":".repeat(100_000));
    assert!(decode(&unclosed).is_err());
    let deep_ptr = "[".repeat(100_000);
    assert!(decode(&deep_ptr).is_err());
}

#[test]
fn round_trip() {
    let original = Envelope {
        origin: Origin::Router { version: 1 },
        kind: Kind::Inbound,
        received_at: Some(
            Utc.with_ymd_and_hms(2026, 11, 26, 22, 30, 8).unwrap()
                + chrono::Duration::microseconds(123_456),
        ),
        source: Some(Source {
            path: "/sendgrid/inbound".into(),
            stage: None,
            request_id: Some("r-1".into()),
            webhook: None,
        }),
        headers: vec![
            (
                "content-type".into(),
                "multipart/form-data; boundary=xYzZY".into(),
            ),
            ("x-forwarded-for".into(), "1.2.3.4, 5.6.7.8".into()),
            ("x-forwarded-for".into(), "9.9.9.9".into()),
        ],
        content_type: Some("multipart/form-data; boundary=xYzZY".into()),
        body: INBOUND.to_vec().into(),
        queue_url: None,
    };
    let text = encode(&original);
    assert!(text.starts_with("{\"mailroom\":1,"), "{text}");
    assert_eq!(decode(&text), Ok(Decoded::Envelope(original.clone())));

    let bare = Envelope {
        received_at: None,
        source: None,
        headers: vec![],
        content_type: None,
        body: Default::default(),
        kind: Kind::Events,
        ..original
    };
    assert_eq!(decode(&encode(&bare)), Ok(Decoded::Envelope(bare)));
}
