//! Conformance against real SendGrid payloads kept outside the repo at `../shared/conformance`
//! (see its README.md). Ignored in the normal suite; `.ci/run` runs them with `--ignored`.
//! The folder is found via `MAILROOM_CONFORMANCE_DIR`, else `<repo>/../shared/conformance`.
//! A missing folder FAILS these tests: they never pass without having checked anything.

use std::path::PathBuf;

use base64::Engine;
use mailroom_sendgrid::{
    parse_events, parse_inbound, verify_signature, InboundError, InboundMode, SignatureError,
};
use serde_json::Value;

const FORM: &str = "multipart/form-data; boundary=xYzZY";

fn dir() -> PathBuf {
    let dir = std::env::var_os("MAILROOM_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
        });
    assert!(
        dir.join("README.md").is_file(),
        "conformance data not found at {} (set MAILROOM_CONFORMANCE_DIR)",
        dir.display()
    );
    dir
}

fn read(rel: &str) -> Vec<u8> {
    let path = dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vector(name: &str) -> (Value, Vec<u8>) {
    let v: Value = serde_json::from_slice(&read(&format!("signed-events/{name}/vector.json")))
        .expect("vector.json is JSON");
    let payload_file = v["payload_file"].as_str().expect("payload_file");
    let body = read(&format!("signed-events/{name}/{payload_file}"));
    (v, body)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k} missing"))
}

fn check_vector(name: &str) -> usize {
    let (v, body) = vector(name);
    assert_eq!(s(&v, "expected"), "valid");
    assert_eq!(
        verify_signature(
            s(&v, "public_key"),
            s(&v, "signature"),
            s(&v, "timestamp"),
            &body
        ),
        Ok(()),
        "{name}: the official vector must verify"
    );
    let negatives = v["negatives"].as_array().expect("negatives");
    assert!(!negatives.is_empty());
    for neg in negatives {
        assert_eq!(s(neg, "expected"), "invalid");
        let key = neg["public_key"].as_str().unwrap_or(s(&v, "public_key"));
        let sig = neg["signature"].as_str().unwrap_or(s(&v, "signature"));
        let ts = neg["timestamp"].as_str().unwrap_or(s(&v, "timestamp"));
        let mut payload = body.clone();
        if neg["strip_trailing_crlf"].as_bool() == Some(true) {
            assert!(payload.ends_with(b"\r\n"));
            payload.truncate(payload.len() - 2);
        }
        if let Some(rep) = neg["replace"].as_array() {
            let (from, to) = (rep[0].as_str().unwrap(), rep[1].as_str().unwrap());
            let text = String::from_utf8(payload).unwrap();
            assert!(text.contains(from), "{name}: replace source not found");
            payload = text.replace(from, to).into_bytes();
        }
        let got = verify_signature(key, sig, ts, &payload);
        assert_eq!(
            got,
            Err(SignatureError::Mismatch),
            "{name}: {:?}",
            neg["why"]
        );
    }
    negatives.len()
}

#[test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
fn signed_events_v1_official() {
    assert_eq!(check_vector("v1-official"), 4);
    let (_, body) = vector("v1-official");
    assert_eq!(body.len(), 327);
    assert!(!parse_events(&body).unwrap().is_empty());
}

#[test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
fn signed_events_v2_multi() {
    assert_eq!(check_vector("v2-official-multi"), 1);
    let (_, body) = vector("v2-official-multi");
    assert_eq!(parse_events(&body).unwrap().len(), 2);
}

#[test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
fn documented_event_examples() {
    let events = parse_events(&read("events/documented-examples.json")).unwrap();
    assert_eq!(events.len(), 4);

    let p = &events[0];
    assert_eq!(p.event, "processed");
    assert_eq!(p.sg_event_id, "rbtnWrG1DVDGGGFHFyun0A==");
    assert_eq!(p.email.as_deref(), Some("example@test.com"));
    assert_eq!(p.occurred_at.map(|t| t.timestamp()), Some(1513299569));
    assert_eq!(p.pool_name.as_deref(), Some("new_MY_test"));
    assert_eq!(p.pool_id, Some(210));
    assert_eq!(p.categories, ["cat facts"]);
    assert_eq!(
        p.smtp_id.as_deref(),
        Some("<14c5d75ce93.dfd.64b469@ismtpd-555>")
    );

    let b = &events[1];
    assert_eq!(b.event, "bounce");
    assert_eq!(b.bounce_type.as_deref(), Some("blocked"));
    assert_eq!(b.status.as_deref(), Some("5.0.0"));
    assert_eq!(b.reason.as_deref(), Some("500 unknown recipient"));

    let c = &events[2];
    assert_eq!(c.event, "click");
    assert_eq!(c.categories, ["category1", "category2"]);
    assert_eq!(
        c.url.as_deref(),
        Some("http://yourdomain.com/blog/news.html")
    );
    assert_eq!(c.url_offset_index, Some(0));
    assert_eq!(c.asm_group_id, Some(1));
    assert_eq!(c.ip.as_deref(), Some("255.255.255.255"));
    assert!(c
        .useragent
        .as_deref()
        .unwrap()
        .starts_with("Mozilla/5.0 (iPhone"));
    assert_eq!(c.raw.to_value()["unique_arg_key"], "unique_arg_value");
    assert_eq!(c.raw.to_value()["newsletter"]["newsletter_id"], "1943530");

    let r = &events[3];
    assert_eq!(r.event, "bounce");
    assert_eq!(r.bounce_type.as_deref(), Some("blocked"));
    assert_eq!(r.bounce_classification.as_deref(), Some("Unclassified"));
    assert_eq!(r.status, None);
    assert_eq!(r.tls, Some(false));
    assert_eq!(r.occurred_at.map(|t| t.timestamp()), Some(1740300320));
}

#[test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
fn inbound_parsed_mode() {
    let e = parse_inbound(FORM, &read("inbound-parse/parsed-mode.multipart")).unwrap();
    assert_eq!(e.mode, Some(InboundMode::Parsed));
    assert_eq!(e.subject.as_deref(), Some("Testing non-raw"));
    assert_eq!(e.from.as_deref(), Some("Example User <test@example.com>"));
    assert_eq!(e.to.as_deref(), Some("inbound@inbound.example.com"));
    assert_eq!(
        e.text.as_deref().map(str::trim),
        Some("Hello Twilio SendGrid!")
    );
    assert_eq!(
        e.html.as_deref().map(str::trim),
        Some("<html><body><strong>Hello Twilio SendGrid!</body></html>")
    );
    assert_eq!(e.envelope.as_ref().unwrap()["from"], "test@example.com");
    assert_eq!(e.charsets.as_ref().unwrap()["text"], "UTF-8");
    assert_eq!(e.spf.as_deref(), Some("pass"));
    assert_eq!(e.dkim.as_deref(), Some("{@sendgrid.com : pass}"));
    assert_eq!(e.sender_ip.as_deref(), Some("0.0.0.0"));
    assert!(e
        .headers
        .as_deref()
        .unwrap()
        .contains("Subject: Inbound Parse Test Data"));
    assert!(e.attachments.is_empty());
    assert_eq!(e.raw_mime, None);
}

#[test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
fn inbound_raw_mode() {
    let e = parse_inbound(FORM, &read("inbound-parse/raw-mode.multipart")).unwrap();
    assert_eq!(e.mode, Some(InboundMode::Raw));
    assert_eq!(e.subject.as_deref(), Some("Testing with Request.bin"));
    assert_eq!(e.from.as_deref(), Some("Example User <test@example.com>"));
    assert_eq!(
        e.text.as_deref().map(str::trim),
        Some("Hello Twilio SendGrid!")
    );
    assert_eq!(
        e.html.as_deref().map(str::trim),
        Some("<html><body><strong>Hello Twilio SendGrid!</body></html>")
    );
    assert!(e
        .headers
        .as_deref()
        .unwrap()
        .starts_with("MIME-Version: 1.0"));
    assert!(e
        .raw_mime
        .as_ref()
        .unwrap()
        .starts_with(b"MIME-Version: 1.0"));
    assert_eq!(e.spf.as_deref(), Some("pass"));
    assert!(e.attachments.is_empty());
}

#[test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
fn inbound_raw_mode_with_attachment() {
    let body = read("inbound-parse/raw-mode-with-attachments.multipart");
    let e = parse_inbound(FORM, &body).unwrap();
    assert_eq!(e.mode, Some(InboundMode::Raw));
    assert_eq!(e.subject.as_deref(), Some("Raw Payload"));
    assert_eq!(
        e.text.as_deref().map(str::trim),
        Some("Hello Twilio SendGrid!")
    );
    assert!(e.html.is_some());
    assert_eq!(e.attachments.len(), 1);
    let a = &e.attachments[0];
    assert_eq!(a.filename.as_deref(), Some("SendGrid.jpg"));
    assert_eq!(a.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(a.disposition.as_deref(), Some("attachment"));
    assert_eq!(&a.data[..2], [0xFF, 0xD8], "JPEG SOI marker");
    assert_eq!(&a.data[a.data.len() - 2..], [0xFF, 0xD9], "JPEG EOI marker");

    // Byte-exact: the attachment is the strict base64 decoding of the part's body lines.
    let text = String::from_utf8(body).unwrap();
    let marker = "X-Attachment-Id: f_irwihell0\r\n\r\n";
    let start = text.find(marker).unwrap() + marker.len();
    let end = start + text[start..].find("\r\n\r\n--").unwrap();
    let b64: String = text[start..end].split("\r\n").collect();
    let expected = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("clean base64");
    assert_eq!(a.data, expected);
}

#[test]
#[ignore = "reads ../shared/conformance; run by .ci/run with --ignored"]
fn inbound_bad_data() {
    let body = read("inbound-parse/bad-data.txt");
    let err = parse_inbound(FORM, &body).unwrap_err();
    assert!(matches!(err, InboundError::Malformed(_)), "{err}");
    assert!(
        err.to_string().starts_with("malformed multipart: "),
        "{err}"
    );
    let err = parse_inbound("text/plain", &body).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("content type is not multipart/form-data"),
        "{err}"
    );
}
