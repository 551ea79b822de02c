//! The operator commands, run as the real binary against rustack and Postgres: `queues stats`
//! numbers match what was sent; `dlq peek` shows messages and leaves them; `dlq redrive` (copy
//! path: rustack has no StartMessageMoveTask, so `auto` must fall back) moves every message
//! exactly once with its attributes; `purge` refuses without --yes; `send` produces what the
//! engine decodes; `dead-letters replay` stores a dead letter after "the fix" and removes its
//! row, keeping (with the new reason) what still fails.
//!
//! Regressions from issue 12: `dlq peek` printed the raw SQS body (base64 inside, cut at 2,000
//! characters, epoch milliseconds) instead of the decoded callback; `queues stats` failed as a
//! whole when one queue did not resolve, always showed `n/a` for the oldest age, and dropped
//! the DLQ row of a queue without a redrive policy.

mod ops_support;

use std::collections::HashMap;

use aws_sdk_sqs::types::MessageAttributeValue;
use mailroom::handler::DeadLetter;
use mailroom_envelope::{decode, Decoded, Kind};
use ops_support::*;

async fn send_n(sqs: &aws_sdk_sqs::Client, url: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for i in 0..n {
        let body = events_message(&[format!("{prefix}-{i}")]);
        sqs.send_message()
            .queue_url(url)
            .message_body(&body)
            .message_attributes(
                "origin",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(format!("{prefix}-{i}"))
                    .build()
                    .expect("attribute"),
            )
            .send()
            .await
            .expect("send");
        bodies.push(body);
    }
    bodies
}

/// Receive everything (bounded), deleting it; returns (body, origin attribute).
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut empty = 0;
    while empty < 2 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            empty += 1;
        }
        for m in got {
            let origin = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get("origin"))
                .and_then(|v| v.string_value.clone());
            out.push((m.body.clone().unwrap_or_default(), origin));
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    out
}

#[tokio::test]
async fn stats_peek_redrive_purge() {
    let sqs = sqs().await;
    let name = unique("admin");
    let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), 30, None).await;
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let url = create_queue(&sqs, &name, 30, Some(&dlq_arn)).await;
    let dir = temp_dir("ops-admin");
    let config = write_config(&dir, "postgres://unused/x", &[(&name, &url)], "");

    let sent_main = send_n(&sqs, &url, "main", 3).await;
    let sent_dlq = send_n(&sqs, &dlq_url, "dead", 4).await;

    // stats
    let (status, out, err) = mailroom(&config, &["queues", "stats", "--json"]);
    assert!(status.success(), "{out}{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let row = |role: &str| {
        rows.iter()
            .find(|r| r["role"] == role && r["queue"] == name.as_str())
            .unwrap_or_else(|| panic!("no {role} row in {out}"))
            .clone()
    };
    assert_eq!(row("queue")["visible"], 3);
    assert_eq!(row("dlq")["visible"], 4);
    assert_eq!(row("dlq")["name"], format!("{name}-dlq"));
    let (status, table, _) = mailroom(&config, &["queues", "stats"]);
    assert!(status.success() && table.contains("VISIBLE") && table.contains(&name));

    // peek: shows, leaves
    let (status, out, err) = mailroom(&config, &["queues", "dlq", "peek", &name, "--max", "10"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("4 message(s) shown"), "{out}");
    assert_eq!(out.matches("--- message ").count(), 4, "{out}");
    assert!(out.contains("kind events"), "{out}");
    assert_eq!(depth(&sqs, &dlq_url).await, (4, 0), "peek consumed nothing");

    // redrive: auto falls back to copying; each message moved once, attributes kept
    let (status, out, err) = mailroom(&config, &["queues", "dlq", "redrive", &name]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("moved 4 message(s)"), "{out}{err}");
    assert_eq!(depth(&sqs, &dlq_url).await, (0, 0), "DLQ emptied");
    let mut got = drain(&sqs, &url).await;
    got.sort();
    let mut want: Vec<(String, Option<String>)> = sent_main
        .iter()
        .enumerate()
        .map(|(i, b)| (b.clone(), Some(format!("main-{i}"))))
        .chain(
            sent_dlq
                .iter()
                .enumerate()
                .map(|(i, b)| (b.clone(), Some(format!("dead-{i}")))),
        )
        .collect();
    want.sort();
    assert_eq!(
        got, want,
        "every message exactly once, body and attributes kept"
    );

    // purge: refused without --yes (no terminal), done with it
    send_n(&sqs, &url, "purge", 2).await;
    let (status, _, err) = mailroom(&config, &["queues", "purge", &name]);
    assert!(!status.success(), "purge without --yes must refuse");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(depth(&sqs, &url).await.0, 2, "nothing purged");
    let (status, out, err) = mailroom(&config, &["queues", "purge", &name, "--yes"]);
    assert!(status.success(), "{out}{err}");
    eventually_async(10, "queue purged", || async {
        depth(&sqs, &url).await == (0, 0)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn send_puts_what_the_engine_decodes() {
    let sqs = sqs().await;
    let name = unique("send");
    let url = create_queue(&sqs, &name, 30, None).await;
    let dir = temp_dir("ops-send");
    let config = write_config(&dir, "postgres://unused/x", &[(&name, &url)], "");
    let file = dir.join("events.json");
    let body = events_body(&["send-1".into(), "send-2".into()]);
    std::fs::write(&file, &body).expect("write");
    let (status, out, err) = mailroom(
        &config,
        &[
            "send",
            &name,
            file.to_str().expect("path"),
            "--kind",
            "events",
        ],
    );
    assert!(status.success(), "{out}{err}");
    let got = drain(&sqs, &url).await;
    assert_eq!(got.len(), 1);
    let Decoded::Envelope(envelope) = decode(&got[0].0).expect("decodes") else {
        panic!("not an envelope");
    };
    assert_eq!(envelope.kind, Kind::Events);
    assert_eq!(envelope.body, body, "exact bytes");
    assert_eq!(envelope.content_type.as_deref(), Some("application/json"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn replay_stores_fixed_dead_letters_and_keeps_the_rest() {
    let sqs = sqs().await;
    let name = unique("replay");
    let url = create_queue(&sqs, &name, 30, None).await;
    let db = TestDb::create().await;
    let dir = temp_dir("ops-replay");
    let config = write_config(&dir, &db.url, &[(&name, &url)], "");
    migrate(&config);
    let ids = vec![format!("{name}-a"), format!("{name}-b")];
    let letter = |id: &str, body: String| DeadLetter {
        queue: name.clone(),
        message_id: id.into(),
        body,
        attributes: HashMap::new(),
        receive_count: 5,
        handler: Some("sendgrid".into()),
        reason: "gave up after 5 attempts: a bug, since fixed".into(),
    };
    let mut conn = db.connect().await;
    mailroom::store::keep_dead_letters(
        &mut conn,
        &[
            letter("m-good", events_message(&ids)),
            letter("m-bad", "still not an envelope".into()),
        ],
    )
    .await
    .expect("keep");

    let (status, out, err) = mailroom(&config, &["dead-letters", "list"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("2 dead letter(s) shown") && out.contains("a bug, since fixed"),
        "{out}"
    );

    let (status, out, err) = mailroom(&config, &["dead-letters", "replay", "--all", "--dry-run"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("would replay"), "{out}");
    assert_eq!(
        count(&db, "select count(*) from mailroom_dead_letters").await,
        2
    );
    assert_eq!(count(&db, "select count(*) from mailroom_events").await, 0);

    let (status, out, err) = mailroom(&config, &["dead-letters", "replay", "--all"]);
    assert_eq!(
        status.code(),
        Some(3),
        "a kept row makes the exit non-zero: {out}{err}"
    );
    assert!(out.contains("1 stored and removed, 1 kept"), "{out}");
    assert_eq!(count(&db, "select count(*) from mailroom_events").await, 2);
    let (left, reason): (String, String) =
        sqlx::query_as("select sqs_message_id, reason from mailroom_dead_letters")
            .fetch_one(&mut conn)
            .await
            .expect("one row left");
    assert_eq!(left, "m-bad");
    assert!(reason.starts_with("replay: envelope"), "{reason}");

    // --id on the kept row: still kept; nothing stored twice.
    let id: i64 = count(&db, "select id from mailroom_dead_letters").await;
    let (status, _, _) = mailroom(
        &config,
        &["dead-letters", "replay", "--id", &id.to_string()],
    );
    assert_eq!(status.code(), Some(3));
    assert_eq!(count(&db, "select count(*) from mailroom_events").await, 2);

    drop(conn);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An Event Webhook batch of `n` events, each with a long `response`, so the envelope is well
/// over 2,000 characters.
fn big_events_message(prefix: &str, n: usize) -> (String, Vec<u8>) {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "email": "ops@example.com",
                "timestamp": 1764190001,
                "event": "bounce",
                "sg_event_id": format!("{prefix}-{i}"),
                "reason": "550 5.1.1 mailbox unavailable ".repeat(4),
            })
        })
        .collect();
    let body = serde_json::to_vec(&events).expect("json");
    (envelope(Kind::Events, "application/json", &body), body)
}

fn inbound_fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/store/inbound_parsed.multipart"
    ))
    .expect("fixture")
}

/// Regression: peek printed the SQS body (envelope JSON, the payload base64 in `body_b64`, cut
/// at 2,000 characters) and the sent time as epoch milliseconds.
#[tokio::test]
async fn dlq_peek_shows_the_decoded_callback_not_the_raw_body() {
    let sqs = sqs().await;
    let name = unique("peek");
    let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), 30, None).await;
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let url = create_queue(&sqs, &name, 30, Some(&dlq_arn)).await;
    let dir = temp_dir("ops-peek");
    let config = write_config(&dir, "postgres://unused/x", &[(&name, &url)], "");

    let (events_sqs_body, _) = big_events_message(&name, 40);
    assert!(events_sqs_body.len() > 4000);
    let inbound = envelope(
        Kind::Inbound,
        "multipart/form-data; boundary=xYzZY",
        &inbound_fixture(),
    );
    let pointer = mailroom_envelope::S3Pointer {
        bucket: "mailroom-bodies".into(),
        key: format!("{name}/big.json"),
    }
    .to_message_body();
    let garbage = "not an envelope at all".to_string();
    let bodies = [events_sqs_body.clone(), inbound, pointer, garbage];
    send(&sqs, &dlq_url, &bodies).await;

    // The text view.
    let (status, out, err) = mailroom(&config, &["queues", "dlq", "peek", &name]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("4 message(s) shown, none consumed"), "{out}");
    assert_eq!(out.matches("--- message ").count(), 4, "{out}");
    assert!(
        !out.contains("body_b64"),
        "no raw envelope in the decoded view:\n{out}"
    );
    // Events: pretty-printed, counted, uncut.
    assert!(out.contains("kind events"), "{out}");
    assert!(out.contains("Event Webhook batch: 40 event(s)"), "{out}");
    assert!(
        out.contains(&format!("    \"sg_event_id\": \"{name}-39\"")),
        "pretty-printed, every event:\n{out}"
    );
    // Inbound: a summary of the form fields, values of subject/from/to decoded by charset.
    assert!(out.contains("kind inbound"), "{out}");
    assert!(
        out.contains("Inbound Parse form: 18 field(s), 2 file(s)"),
        "{out}"
    );
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} line in\n{out}"))
            .to_string()
    };
    assert!(line("subject ").ends_with("Café"), "{out}");
    assert!(line("from ").ends_with("René <rene@example.org>"), "{out}");
    assert!(line("to ").ends_with("inbox@parse.example.com"), "{out}");
    assert!(
        line("attachment2 ").contains("file \"pixel.png\" (image/png)"),
        "{out}"
    );
    assert!(line("text ").contains(" bytes"), "{out}");
    // The S3 pointer is named, not fetched; the undecodable body is shown with the reason.
    assert!(
        out.contains(&format!(
            "S3 pointer: bucket mailroom-bodies, key {name}/big.json"
        )),
        "{out}"
    );
    assert!(out.contains("does not decode"), "{out}");
    assert!(out.contains("not an envelope at all"), "{out}");
    // Times are RFC 3339 UTC; receive counts shown.
    let sent = line("sent ");
    let sent = sent.trim_start_matches("sent").trim();
    assert!(
        chrono::DateTime::parse_from_rfc3339(sent).is_ok() && sent.ends_with('Z'),
        "{sent}"
    );
    let received = line("received ");
    let stamp = received
        .trim_start_matches("received")
        .trim()
        .split(',')
        .next()
        .expect("stamp");
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{received}"
    );
    assert!(line("receive count ").ends_with(" 1"), "{out}");

    // --raw: the exact SQS body, uncut.
    let (status, out, err) = mailroom(&config, &["queues", "dlq", "peek", &name, "--raw"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.lines().any(|l| l == events_sqs_body),
        "--raw prints the exact body, all {} bytes",
        events_sqs_body.len()
    );

    // --json: one object per message, the decoded fields; the summary goes to stderr.
    let (status, out, err) = mailroom(&config, &["queues", "dlq", "peek", &name, "--json"]);
    assert!(status.success(), "{out}{err}");
    assert!(err.contains("4 message(s) shown"), "{err}");
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(objects.len(), 4, "{out}");
    let by = |decoded: &str, body: Option<&str>| {
        objects
            .iter()
            .find(|o| o["decoded"] == decoded && body.is_none_or(|b| o["body"] == b))
            .unwrap_or_else(|| panic!("no {decoded} {body:?} object in {out}"))
    };
    let events = by("envelope", Some("events"));
    assert_eq!(events["kind"], "events");
    assert_eq!(events["event_count"], 40);
    assert_eq!(events["events"][39]["sg_event_id"], format!("{name}-39"));
    assert_eq!(events["origin"], "router v1");
    assert_eq!(events["receive_count"], 3, "one receive per peek");
    assert!(
        chrono::DateTime::parse_from_rfc3339(events["sent_at"].as_str().expect("sent")).is_ok()
    );
    assert!(events.get("sqs_body").is_none(), "raw body only with --raw");
    let form = by("envelope", Some("form"));
    assert_eq!(form["file_count"], 2);
    let field = |n: &str| {
        form["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["name"] == n)
            .unwrap_or_else(|| panic!("no field {n}"))
            .clone()
    };
    assert_eq!(field("subject")["value"], "Café");
    assert_eq!(field("attachment1")["filename"], "blob.bin");
    assert!(field("attachment1")["bytes"].as_u64().expect("bytes") > 0);
    assert!(
        field("text").get("value").is_none(),
        "only subject/from/to values"
    );
    let pointer = by("s3_pointer", None);
    assert_eq!(pointer["bucket"], "mailroom-bodies");
    assert_eq!(pointer["key"], format!("{name}/big.json"));
    assert!(by("undecodable", None)["error"].is_string());
    let (status, out, _) = mailroom(
        &config,
        &["queues", "dlq", "peek", &name, "--json", "--raw"],
    );
    assert!(status.success());
    assert!(out.contains(&serde_json::to_string(&events_sqs_body).expect("json")));

    // Nothing consumed, nothing left hidden.
    eventually_async(5, "every peeked message visible again", || async {
        depth(&sqs, &dlq_url).await == (4, 0)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn json_rows(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Regression: one queue that did not resolve failed the whole command, showing nothing for the
/// queues that did; a queue without a redrive policy lost its DLQ row silently.
#[tokio::test]
async fn stats_shows_every_queue_when_one_does_not_resolve() {
    let sqs = sqs().await;
    let name = unique("stats");
    let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), 30, None).await;
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let url = create_queue(&sqs, &name, 30, Some(&dlq_arn)).await;
    let plain_name = format!("{name}-plain");
    let plain_url = create_queue(&sqs, &plain_name, 30, None).await;
    let missing = format!("{name}-missing");
    let missing_url = format!("{}/000000000000/{missing}", endpoint());
    let dir = temp_dir("ops-stats");
    let config = write_config(
        &dir,
        "postgres://unused/x",
        &[
            (&name, &url),
            (&missing, &missing_url),
            (&plain_name, &plain_url),
        ],
        "",
    );
    send_n(&sqs, &url, "main", 2).await;
    send_n(&sqs, &plain_url, "plain", 1).await;

    let (status, out, err) = mailroom(&config, &["queues", "stats", "--json"]);
    assert!(
        !status.success(),
        "an unreadable queue makes the exit non-zero"
    );
    assert!(err.contains("1 row(s) could not be read"), "{err}");
    let rows = json_rows(&out);
    let row = |queue: &str, role: &str| {
        rows.iter()
            .find(|r| r["queue"] == queue && r["role"] == role)
            .unwrap_or_else(|| panic!("no {queue} {role} row in {out}"))
            .clone()
    };
    assert_eq!(row(&name, "queue")["visible"], 2);
    assert_eq!(row(&name, "dlq")["status"], "ok");
    assert_eq!(row(&name, "dlq")["name"], format!("{name}-dlq"));
    assert_eq!(
        row(&plain_name, "queue")["visible"],
        1,
        "shown after the broken one"
    );
    assert_eq!(row(&plain_name, "dlq")["status"], "no_dlq");
    let broken = row(&missing, "queue");
    assert_eq!(broken["status"], "error");
    assert!(
        broken["error"]
            .as_str()
            .expect("error text")
            .contains("GetQueueAttributes"),
        "{broken}"
    );
    assert_eq!(rows.len(), 5, "{out}");

    let (status, table, err) = mailroom(&config, &["queues", "stats"]);
    assert!(!status.success(), "{table}{err}");
    let line = |queue: &str, role: &str| {
        table
            .lines()
            .find(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some(queue) && w.next() == Some(role)
            })
            .unwrap_or_else(|| panic!("no {queue} {role} line in\n{table}"))
            .to_string()
    };
    assert!(line(&missing, "queue").contains("ERROR: "), "{table}");
    assert!(line(&plain_name, "dlq").contains("no DLQ"), "{table}");
    assert!(
        line(&name, "dlq").contains(&format!("{name}-dlq")),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: OLDEST AGE was always `n/a`. Sampling it must hide nothing from the workers.
#[tokio::test]
async fn stats_computes_the_oldest_age_and_hides_nothing() {
    let sqs = sqs().await;
    let name = unique("age");
    let dlq_url = create_queue(&sqs, &format!("{name}-dlq"), 30, None).await;
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let url = create_queue(&sqs, &name, 30, Some(&dlq_arn)).await;
    let dir = temp_dir("ops-age");
    let config = write_config(&dir, "postgres://unused/x", &[(&name, &url)], "");
    send_n(&sqs, &dlq_url, "old", 3).await;
    send_n(&sqs, &url, "main", 2).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let (status, out, err) = mailroom(&config, &["queues", "stats", "--json"]);
    assert!(status.success(), "{out}{err}");
    let rows = json_rows(&out);
    let row = |role: &str| {
        rows.iter()
            .find(|r| r["role"] == role)
            .unwrap_or_else(|| panic!("no {role} row in {out}"))
            .clone()
    };
    let dlq = row("dlq");
    assert_eq!(dlq["oldest_age_from"], "sample", "{dlq}");
    let age = dlq["oldest_age_secs"].as_u64().expect("an age");
    assert!((2..120).contains(&age), "{dlq}");
    // The queue itself is not sampled unless asked (it would count as a receive there).
    let queue = row("queue");
    assert_eq!(queue["oldest_age_from"], "not_sampled", "{queue}");
    assert!(queue.get("oldest_age_secs").is_none(), "{queue}");

    // The sample hid nothing: a worker's receive gets every message at once.
    let got = sqs
        .receive_message()
        .queue_url(&dlq_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .visibility_timeout(0)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert!(!got.is_empty(), "sampled messages stay receivable");
    eventually_async(3, "DLQ fully visible", || async {
        depth(&sqs, &dlq_url).await == (3, 0)
    })
    .await;

    let (status, out, err) = mailroom(&config, &["queues", "stats", "--sample-queues"]);
    assert!(status.success(), "{out}{err}");
    let queue_line = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("queue"))
        .expect("queue line");
    let cell = queue_line.split_whitespace().last().expect("age cell");
    assert!(cell.ends_with('s') && cell != "n/a", "an age: {queue_line}");
    eventually_async(3, "queue fully visible", || async {
        depth(&sqs, &url).await == (2, 0)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: a dead letter could be fixed only by editing `mailroom_dead_letters.body` in SQL,
/// and replay overwrote `failed_at` while the tries count stayed 1. Now: export the payload,
/// fix the file, replay it with `--body`; the row's history (first failure, last failure,
/// attempts, who replayed, the original body) is kept.
#[tokio::test]
async fn export_fix_and_replay_a_dead_letter_keeping_its_history() {
    let sqs = sqs().await;
    let name = unique("fix-replay");
    let url = create_queue(&sqs, &name, 30, None).await;
    let db = TestDb::create().await;
    let dir = temp_dir("ops-fix-replay");
    let config = write_config(&dir, &db.url, &[(&name, &url)], "");
    migrate(&config);
    // An Event Webhook batch whose JSON is broken (a truncated post, say).
    let broken = mailroom_envelope::encode(&mailroom::admin::send::envelope(
        mailroom::admin::send::KindArg::Events,
        br#"[{"event":"delivered","sg_event_id":"fix-1","email":"a@example.com"},"#.to_vec(),
        None,
    ));
    let mut conn = db.connect().await;
    mailroom::store::keep_dead_letters(
        &mut conn,
        &[DeadLetter {
            queue: name.clone(),
            message_id: "m-broken".into(),
            body: broken,
            attributes: HashMap::new(),
            receive_count: 1,
            handler: Some("sendgrid".into()),
            reason: "event webhook body: events body is not JSON".into(),
        }],
    )
    .await
    .expect("keep");
    let id = count(&db, "select id from mailroom_dead_letters").await;
    let first_failed: String =
        sqlx::query_scalar("select first_failed_at::text from mailroom_dead_letters")
            .fetch_one(&mut conn)
            .await
            .unwrap();

    // A replay as it is fails again: one more attempt, the first failure kept.
    let (status, _, _) = mailroom(
        &config,
        &[
            "dead-letters",
            "replay",
            "--id",
            &id.to_string(),
            "--by",
            "ana",
        ],
    );
    assert_eq!(status.code(), Some(3));
    let (attempts, first, by): (i32, String, Option<String>) = sqlx::query_as(
        "select attempts, first_failed_at::text, replayed_by from mailroom_dead_letters",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (attempts, first.as_str(), by.as_deref()),
        (2, first_failed.as_str(), Some("ana"))
    );

    // Export the payload, fix it, replay from the file.
    let file = dir.join("payload.json");
    let (status, out, err) = mailroom(
        &config,
        &[
            "dead-letters",
            "export",
            "--id",
            &id.to_string(),
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{out}{err}");
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(
        exported.starts_with(r#"[{"event":"delivered""#),
        "the decoded payload: {exported}"
    );
    assert!(
        err.contains("replay --id"),
        "export says what to do next: {err}"
    );
    std::fs::write(&file, format!("{}]", exported.trim_end_matches(','))).unwrap();
    let (status, out, err) = mailroom(
        &config,
        &[
            "dead-letters",
            "replay",
            "--id",
            &id.to_string(),
            "--body",
            file.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("stored, row removed"), "{out}");
    assert_eq!(
        count(
            &db,
            "select count(*) from mailroom_events where sg_event_id = 'fix-1'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db, "select count(*) from mailroom_dead_letters").await,
        0
    );

    // Export of an id that does not exist: its own exit code.
    let (status, _, err) = mailroom(&config, &["dead-letters", "export", "--id", "999999"]);
    assert_eq!(status.code(), Some(4), "{err}");
    drop(conn);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: replaying an id that does not exist printed "no dead letters to replay" and
/// exited 0, so a typo looked like success to a script.
#[tokio::test]
async fn replay_of_a_missing_id_is_an_error_with_its_own_exit_code() {
    let sqs = sqs().await;
    let name = unique("replay-missing");
    let url = create_queue(&sqs, &name, 30, None).await;
    let db = TestDb::create().await;
    let dir = temp_dir("ops-replay-missing");
    let config = write_config(&dir, &db.url, &[(&name, &url)], "");
    migrate(&config);
    let (status, out, err) = mailroom(&config, &["dead-letters", "replay", "--id", "999999"]);
    assert_eq!(
        status.code(),
        Some(4),
        "a missing id has its own exit code: {out}{err}"
    );
    assert!(err.contains("no dead letter with id 999999"), "{err}");
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}
