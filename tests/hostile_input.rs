//! Hostile input, sent as real SQS messages through the real worker: deeply nested JSON (in the
//! events body and in the envelope itself), a multipart post without its closing boundary, MIME
//! bombs (nesting depth, boundary floods, part floods, absurd declared sizes), invalid UTF-8,
//! bad base64, unknown charsets, and a body over the size limit offloaded to S3. Each message ends
//! in mailroom_dead_letters with a reason that says what was wrong, or, where the input is
//! recoverable (unknown or lying charsets), is stored; the worker keeps running, memory stays
//! bounded, and the queue drains.

mod fault_support;

use fault_support::*;
use mailroom_envelope::Kind;

const FORM: &str = "multipart/form-data; boundary=xYzZY";

fn form(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(
            format!("--xYzZY\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--xYzZY--\r\n");
    out
}

fn raw_form(mime: &[u8]) -> Vec<u8> {
    form(&[("email", mime), ("to", b"in@parse.example.org")])
}

/// A hostile message and what must become of it.
struct Case {
    name: &'static str,
    sqs_body: String,
    /// Some(substring of the dead-letter reason), or None when it must be stored.
    dead_reason: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let deep = 60_000;
    let nested = format!("{}{}", "[".repeat(deep), "]".repeat(deep));
    let mut bomb_depth = b"MIME-Version: 1.0\r\nSubject: deep\r\n".to_vec();
    for i in 0..40 {
        bomb_depth.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}x\"\r\n\r\n--b{i}x\r\n")
                .as_bytes(),
        );
    }
    bomb_depth.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhi\r\n");
    for i in (0..40).rev() {
        bomb_depth.extend_from_slice(format!("--b{i}x--\r\n").as_bytes());
    }
    let mut bomb_very_deep = b"MIME-Version: 1.0\r\n".to_vec();
    for i in 0..3_000 {
        bomb_very_deep.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    let mut bomb_lines =
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
    bomb_lines.extend_from_slice(&b"--x\r\n".repeat(5_000));
    let mut bomb_parts =
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
    for _ in 0..1500 {
        bomb_parts.extend_from_slice(b"--x\r\nContent-Type: application/octet-stream\r\n\r\nA\r\n");
    }
    bomb_parts.extend_from_slice(b"--x--\r\n");
    let huge_declared = b"MIME-Version: 1.0\r\nSubject: liar\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: application/octet-stream\r\nContent-Length: 99999999999999\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"big.bin\"; size=99999999999999\r\n\r\nQUJD\r\n--x--\r\n".to_vec();
    let no_closing = {
        let mut b = form(&[("from", b"a@example.com"), ("subject", b"cut off")]);
        b.truncate(b.len() - b"--xYzZY--\r\n".len());
        b.extend_from_slice(b"--xYzZY\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nand then the connection dropped");
        b
    };
    let events = |body: &[u8]| envelope(Kind::Events, "application/json", body);
    let inbound = |body: &[u8]| envelope(Kind::Inbound, FORM, body);
    vec![
        Case {
            name: "deeply nested JSON events body",
            sqs_body: events(nested.as_bytes()),
            dead_reason: Some("event webhook body: events body is not JSON"),
        },
        Case {
            name: "deeply nested JSON envelope",
            sqs_body: format!("{{\"mailroom\":1,\"kind\":\"events\",\"x\":{nested}}}"),
            dead_reason: Some("envelope"),
        },
        Case {
            name: "invalid UTF-8 in events body",
            sqs_body: events(
                b"[{\"event\":\"open\",\"email\":\"\xff\xfe\xc3\x28\",\"sg_event_id\":\"x\"}]",
            ),
            dead_reason: Some("events body is not JSON"),
        },
        Case {
            name: "events body that is not a batch",
            sqs_body: events(b"\"just a string\""),
            dead_reason: Some("must be a JSON array"),
        },
        Case {
            name: "envelope with bad base64",
            sqs_body:
                r#"{"mailroom":1,"kind":"events","headers":[],"body_b64":"!!!not base64!!!"}"#
                    .into(),
            dead_reason: Some("envelope"),
        },
        Case {
            name: "multipart without a closing boundary",
            sqs_body: inbound(&no_closing),
            dead_reason: Some("inbound parse: malformed multipart"),
        },
        Case {
            name: "MIME bomb: nested 40 deep",
            sqs_body: inbound(&raw_form(&bomb_depth)),
            dead_reason: Some("nested deeper than 32"),
        },
        Case {
            name: "MIME bomb: 3000 nested boundaries",
            sqs_body: inbound(&raw_form(&bomb_very_deep)),
            dead_reason: Some("inbound parse: "),
        },
        Case {
            name: "MIME bomb: 5000 boundary lines",
            sqs_body: inbound(&raw_form(&bomb_lines)),
            dead_reason: Some("boundary lines"),
        },
        Case {
            name: "MIME bomb: 1500 parts",
            sqs_body: inbound(&raw_form(&bomb_parts)),
            dead_reason: Some("more than 1000 parts"),
        },
        Case {
            name: "inbound post with no content type",
            sqs_body: mailroom_envelope::encode(&mailroom_envelope::Envelope {
                origin: mailroom_envelope::Origin::Router { version: 1 },
                kind: Kind::Inbound,
                received_at: None,
                source: None,
                headers: vec![],
                content_type: None,
                body: form(&[("subject", b"x")]).into(),
                queue_url: None,
            }),
            dead_reason: Some("no content-type"),
        },
        Case {
            name: "MIME part declaring an absurd size",
            sqs_body: inbound(&raw_form(&huge_declared)),
            dead_reason: None,
        },
        Case {
            name: "unknown charset",
            sqs_body: inbound(&form(&[
                ("from", b"a@example.com"),
                ("subject", b"Gr\xfc\xdfe"),
                ("text", b"caf\xe9 \xff\xfe"),
                (
                    "charsets",
                    br#"{"subject":"x-klingon-99","text":"no-such-charset"}"#,
                ),
            ])),
            dead_reason: None,
        },
        Case {
            name: "invalid UTF-8 under a UTF-8 charset",
            sqs_body: inbound(&form(&[
                ("from", b"b@example.com"),
                ("subject", b"\xc3\x28 broken"),
                ("text", b"\xed\xa0\x80 surrogate \x00 nul"),
                ("charsets", br#"{"subject":"UTF-8","text":"UTF-8"}"#),
            ])),
            dead_reason: None,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_with_a_reason_or_stored_and_the_worker_survives() {
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("hostile");
    let url = create_queue(&sqs, &queue, 10, None).await;
    let admin = admin_url();
    let db_name = unique("hostile");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("hostile");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.visibility_timeout_secs = 10;
    let config = cfg.write(&dir);

    let cases = cases();
    for c in &cases {
        assert!(c.sqs_body.len() < 256 * 1024, "{} fits in SQS", c.name);
    }
    let bodies: Vec<String> = cases.iter().map(|c| c.sqs_body.clone()).collect();
    // A good message after the hostile ones: the worker still does its job.
    let (good, good_events) = event_messages("after-hostile", 1, 3);
    send(&sqs, &url, &bodies).await;
    send(&sqs, &url, &good).await;
    let mut worker = Worker::start_numbered(&config, 0);

    let dead_expected = cases.iter().filter(|c| c.dead_reason.is_some()).count() as i64;
    let stored_expected = cases.iter().filter(|c| c.dead_reason.is_none()).count() as i64;
    wait_counts(
        &db,
        &format!("{dead_expected} dead letters, {stored_expected} inbound, {good_events} events"),
        60,
        &mut worker,
        |c| c.3 >= dead_expected && c.2 >= stored_expected && c.0 >= good_events as i64,
    )
    .await;
    wait_drained(&sqs, &url, 30).await;
    let rss_mib = worker.peak_rss_kib() / 1024;
    assert!(worker.alive());
    let letters = dead_letters(&db).await;
    let mut problems = Vec::new();
    for c in &cases {
        let found = letters.iter().find(|(_, body)| *body == c.sqs_body);
        match (c.dead_reason, found) {
            (Some(want), Some((reason, _))) if reason.contains(want) => {}
            (Some(want), Some((reason, _))) => problems.push(format!(
                "{}: reason {reason:?} does not say {want:?}",
                c.name
            )),
            (Some(_), None) => problems.push(format!("{}: not dead-lettered", c.name)),
            (None, Some((reason, _))) => problems.push(format!(
                "{}: dead-lettered ({reason}), should be stored",
                c.name
            )),
            (None, None) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(letters.len() as i64, dead_expected, "{letters:?}");
    assert!(
        rss_mib <= 100,
        "peak RSS stayed bounded through the hostile batch: {rss_mib} MiB"
    );
    assert!(worker.terminate(15), "clean exit after SIGTERM");
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}
