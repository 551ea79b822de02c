//! The operator commands, run as the real binary against rustack and Postgres: `queues stats`
//! numbers match what was sent; `dlq peek` shows messages and leaves them; `dlq redrive` (copy
//! path: rustack has no StartMessageMoveTask, so `auto` must fall back) moves every message
//! exactly once with its attributes; `purge` refuses without --yes; `send` produces what the
//! engine decodes; `dead-letters replay` stores a dead letter after "the fix" and removes its
//! row, keeping (with the new reason) what still fails.

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
    assert!(out.contains("envelope: kind Events"), "{out}");
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

    // Regression: replaying an id that does not exist printed "no dead letters to replay" and
    // exited 0, so a typo looked like success to a script.
    let (status, out, err) = mailroom(&config, &["dead-letters", "replay", "--id", "999999"]);
    assert_eq!(
        status.code(),
        Some(4),
        "a missing id has its own exit code: {out}{err}"
    );
    assert!(err.contains("no dead letter with id 999999"), "{err}");
    drop(conn);
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}
