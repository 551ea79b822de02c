//! The "sendgrid" handler on Inbound Parse jobs, against a real Postgres: parsed and raw mode
//! land with decoded bodies and byte-exact attachments, redelivery adds nothing, and malformed
//! posts are dead-lettered with a clear reason (and kept whole by the dead-letter sink).

#[path = "data/store/support.rs"]
mod support;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mailroom::handler::{DeadLetter, DeadLetterSink, Outcome};
use mailroom::store::Store;
use mailroom_envelope::Kind;
use sqlx::PgPool;
use support::*;

#[derive(Debug, sqlx::FromRow)]
struct EmailRow {
    id: i64,
    dedup_key: String,
    sqs_message_id: String,
    queue: String,
    mode: String,
    message_id: Option<String>,
    from_addr: Option<String>,
    to_addrs: Option<String>,
    cc_addrs: Option<String>,
    subject: Option<String>,
    text_body: Option<String>,
    html_body: Option<String>,
    headers: Option<String>,
    envelope: Option<serde_json::Value>,
    charsets: Option<serde_json::Value>,
    content_ids: Option<serde_json::Value>,
    attachment_info: Option<serde_json::Value>,
    spam_score: Option<f64>,
    spam_report: Option<String>,
    spf: Option<String>,
    dkim: Option<String>,
    sender_ip: Option<String>,
    raw_mime: Option<Vec<u8>>,
    received_at: Option<DateTime<Utc>>,
}

#[derive(Debug, sqlx::FromRow)]
struct AttachmentRow {
    position: i32,
    filename: Option<String>,
    content_type: Option<String>,
    content_id: Option<String>,
    disposition: Option<String>,
    size_bytes: i64,
    sha256: String,
    content: Vec<u8>,
}

async fn emails(pool: &PgPool) -> Vec<EmailRow> {
    sqlx::query_as("SELECT * FROM mailroom_inbound_emails ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("emails")
}

async fn attachments(pool: &PgPool, email_id: i64) -> Vec<AttachmentRow> {
    sqlx::query_as(
        "SELECT * FROM mailroom_inbound_attachments WHERE email_id = $1 ORDER BY position",
    )
    .bind(email_id)
    .fetch_all(pool)
    .await
    .expect("attachments")
}

fn assert_attachment(a: &AttachmentRow, expected: &[u8]) {
    assert_eq!(a.content, expected, "bytes exact");
    assert_eq!(a.sha256, sha256_hex(expected));
    assert_eq!(a.size_bytes, expected.len() as i64);
}

#[sqlx::test(migrations = "./migrations")]
async fn parsed_mode_lands_decoded_with_exact_attachments(pool: PgPool) {
    let body = fixture("inbound_parsed.multipart");
    let h = handler(&pool);
    assert_eq!(
        h.handle(&[inbound_job("m-parsed", body.clone())]).await,
        vec![Outcome::Done]
    );

    let rows = emails(&pool).await;
    assert_eq!(rows.len(), 1);
    let e = &rows[0];
    assert_eq!(e.dedup_key, sha256_hex(&body));
    assert_eq!(e.sqs_message_id, "m-parsed");
    assert_eq!(e.queue, QUEUE);
    assert_eq!(e.mode, "parsed");
    assert_eq!(e.message_id.as_deref(), Some("<parsed-1@mail.example.org>"));
    // iso-8859-1 fields decoded through `charsets`.
    assert_eq!(e.subject.as_deref(), Some("Café"));
    assert_eq!(e.from_addr.as_deref(), Some("René <rene@example.org>"));
    assert_eq!(e.text_body.as_deref(), Some("Café crème, déjà vu.\r\n"));
    assert_eq!(
        e.html_body.as_deref(),
        Some("<p>Café crème <img src=\"cid:pixel@example.org\"></p>")
    );
    assert_eq!(e.to_addrs.as_deref(), Some("inbox@parse.example.com"));
    assert_eq!(e.cc_addrs, None);
    assert!(e
        .headers
        .as_deref()
        .unwrap_or("")
        .contains("Received: by mx0001.sendgrid.net"));
    assert_eq!(
        e.charsets.as_ref().map(|c| c["subject"].clone()),
        Some("iso-8859-1".into())
    );
    assert_eq!(
        e.envelope,
        Some(serde_json::json!({"to": ["inbox@parse.example.com"], "from": "rene@example.org"}))
    );
    assert_eq!(
        e.content_ids,
        Some(serde_json::json!({"pixel@example.org": "attachment2"}))
    );
    assert!(e.attachment_info.is_some());
    assert_eq!(e.spam_score, Some(0.1));
    assert!(e
        .spam_report
        .as_deref()
        .unwrap_or("")
        .starts_with("Spam detection"));
    assert_eq!(e.spf.as_deref(), Some("pass"));
    assert_eq!(e.dkim.as_deref(), Some("{@example.org : pass}"));
    assert_eq!(e.sender_ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(e.raw_mime, None);
    assert_eq!(e.received_at, Some(received_at()));

    let atts = attachments(&pool, e.id).await;
    assert_eq!(atts.len(), 2);
    assert_eq!(atts[0].position, 0);
    assert_eq!(atts[0].filename.as_deref(), Some("blob.bin"));
    assert_eq!(
        atts[0].content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(atts[0].disposition.as_deref(), Some("attachment"));
    assert_eq!(atts[0].content_id, None);
    assert_attachment(&atts[0], &fixture("attachment_blob.bin"));
    assert_eq!(atts[1].position, 1);
    assert_eq!(atts[1].filename.as_deref(), Some("pixel.png"));
    assert_eq!(atts[1].content_type.as_deref(), Some("image/png"));
    assert_eq!(atts[1].disposition.as_deref(), Some("inline"));
    assert_eq!(atts[1].content_id.as_deref(), Some("pixel@example.org"));
    assert_attachment(&atts[1], &fixture("attachment_pixel.png"));
}

#[sqlx::test(migrations = "./migrations")]
async fn raw_mode_lands_with_mime_decoded_and_kept_exact(pool: PgPool) {
    let h = handler(&pool);
    assert_eq!(
        h.handle(&[inbound_job("m-raw", fixture("inbound_raw.multipart"))])
            .await,
        vec![Outcome::Done]
    );
    let rows = emails(&pool).await;
    assert_eq!(rows.len(), 1);
    let e = &rows[0];
    assert_eq!(e.mode, "raw");
    assert_eq!(
        e.raw_mime.as_deref(),
        Some(&fixture("inbound_raw.eml")[..]),
        "MIME kept exact"
    );
    assert_eq!(e.message_id.as_deref(), Some("<raw-1@mail.example.org>"));
    assert_eq!(e.subject.as_deref(), Some("Grüße"));
    assert_eq!(
        e.text_body.as_deref().map(str::trim_end),
        Some("Schöne Grüße aus München.")
    );
    assert_eq!(
        e.html_body.as_deref().map(str::trim_end),
        Some("<p>Schöne Grüße</p>")
    );
    assert!(e
        .cc_addrs
        .as_deref()
        .unwrap_or("")
        .contains("team@example.com"));
    assert_eq!(e.spf.as_deref(), Some("softfail"));
    assert_eq!(e.spam_score, Some(1.5));
    assert!(e
        .headers
        .as_deref()
        .unwrap_or("")
        .contains("Message-ID: <raw-1@mail.example.org>"));

    let atts = attachments(&pool, e.id).await;
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0].filename.as_deref(), Some("report.pdf"));
    assert_eq!(atts[0].content_type.as_deref(), Some("application/pdf"));
    assert_attachment(&atts[0], &fixture("attachment_report.pdf"));
}

#[sqlx::test(migrations = "./migrations")]
async fn redelivery_and_duplicates_add_no_email_or_attachment_rows(pool: PgPool) {
    let h = handler(&pool);
    let parsed = fixture("inbound_parsed.multipart");
    let raw = fixture("inbound_raw.multipart");
    let out = h
        .handle(&[
            inbound_job("m-1", parsed.clone()),
            inbound_job("m-2", raw.clone()),
        ])
        .await;
    assert_eq!(out, vec![Outcome::Done, Outcome::Done]);
    assert_eq!(count(&pool, "mailroom_inbound_emails").await, 2);
    assert_eq!(count(&pool, "mailroom_inbound_attachments").await, 3);

    // Redelivery of m-1, the raw body under a new message id, and both twice in one batch.
    let out = h
        .handle(&[
            inbound_job("m-1", parsed.clone()),
            inbound_job("m-3", raw.clone()),
            inbound_job("m-4", raw),
        ])
        .await;
    assert_eq!(out, vec![Outcome::Done, Outcome::Done, Outcome::Done]);
    assert_eq!(count(&pool, "mailroom_inbound_emails").await, 2);
    assert_eq!(count(&pool, "mailroom_inbound_attachments").await, 3);
}

#[sqlx::test(migrations = "./migrations")]
async fn events_and_inbound_in_one_batch_commit_together(pool: PgPool) {
    let h = handler(&pool);
    let out = h
        .handle(&[
            events_job("m-ev", fixture("events_duplicate_ids.json")),
            inbound_job("m-in", fixture("inbound_parsed.multipart")),
        ])
        .await;
    assert_eq!(out, vec![Outcome::Done, Outcome::Done]);
    assert_eq!(count(&pool, "mailroom_events").await, 2);
    assert_eq!(count(&pool, "mailroom_inbound_emails").await, 1);
}

fn dead_letter_reason(o: &Outcome) -> &str {
    match o {
        Outcome::DeadLetter { reason } => reason,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn malformed_posts_are_dead_lettered_and_kept_whole(pool: PgPool) {
    let h = handler(&pool);
    let mut no_content_type = inbound_job("m-nct", fixture("inbound_parsed.multipart"));
    no_content_type.envelope.content_type = None;
    no_content_type.envelope.headers.clear();
    let jobs = [
        inbound_job("m-trunc", fixture("inbound_truncated.multipart")),
        inbound_job("m-mime", fixture("inbound_garbage_mime.multipart")),
        job(
            "m-notform",
            envelope(Kind::Inbound, "text/plain", b"hello".to_vec(), &[]),
        ),
        no_content_type,
        inbound_job("m-ok", fixture("inbound_raw.multipart")),
    ];
    let out = h.handle(&jobs).await;
    for o in &out[..4] {
        let reason = dead_letter_reason(o);
        assert!(reason.starts_with("inbound parse: "), "{reason}");
    }
    assert!(
        dead_letter_reason(&out[1]).contains("MIME"),
        "{}",
        dead_letter_reason(&out[1])
    );
    assert!(dead_letter_reason(&out[3]).contains("content-type"));
    assert_eq!(out[4], Outcome::Done);
    assert_eq!(count(&pool, "mailroom_inbound_emails").await, 1);

    // The engine hands dead letters to the sink: kept whole, with the reason.
    let store = Store::from_pool(pool.clone());
    let letters: Vec<DeadLetter> = jobs[..4]
        .iter()
        .zip(&out)
        .map(|(j, o)| DeadLetter {
            queue: j.queue.clone(),
            message_id: j.message_id.clone(),
            body: format!("{{\"v\":1,\"body_len\":{}}}", j.envelope.body.len()),
            attributes: j.attributes.clone(),
            receive_count: j.receive_count,
            handler: Some("sendgrid".into()),
            reason: dead_letter_reason(o).to_string(),
        })
        .collect();
    DeadLetterSink::keep(&store, &letters).await.expect("keep");
    assert_eq!(count(&pool, "mailroom_dead_letters").await, 4);
    let (reason, attributes): (String, serde_json::Value) = sqlx::query_as(
        "SELECT reason, attributes FROM mailroom_dead_letters WHERE sqs_message_id = 'm-mime'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(reason, dead_letter_reason(&out[1]));
    let expected: HashMap<String, String> = jobs[1].attributes.clone();
    assert_eq!(attributes, serde_json::to_value(expected).expect("json"));
}
