//! The raw-mode oracle corpus (`sendgrid/tests/data/inbound/corpus/`, written and read by
//! Python's `email` package) end to end through the worker's side: each message as a raw-mode
//! Inbound Parse post, handled by the real `sendgrid` handler into a real Postgres. What is
//! stored must be what Python read: subject, text and html bodies, and every attachment's
//! filename, content type, size and sha256. A message the decoder refuses on purpose (nesting
//! past 32 levels) must be a dead letter, not a crash and not a row. The decoder-level
//! comparison, with the From/To normalisation and the documented differences, is
//! `sendgrid/tests/inbound_corpus.rs`; this test proves the store keeps what was decoded.

#[path = "data/store/support.rs"]
mod support;

use std::path::PathBuf;

use mailroom::handler::Outcome;
use serde_json::Value;
use sqlx::PgPool;
use support::*;

fn corpus() -> Vec<(String, Vec<u8>, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sendgrid/tests/data/inbound/corpus");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "eml") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let eml = std::fs::read(&path).expect("eml");
            let expected: Value = serde_json::from_slice(
                &std::fs::read(path.with_extension("json")).expect("expected json"),
            )
            .expect("json parses");
            cases.push((name, eml, expected));
        }
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

fn raw_post(mime: &[u8]) -> Vec<u8> {
    let mut body = b"--xYzZY\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n".to_vec();
    body.extend_from_slice(mime);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

#[sqlx::test(migrations = "./migrations")]
async fn every_corpus_message_is_stored_as_python_reads_it(pool: PgPool) {
    let cases = corpus();
    assert!(
        cases.len() >= 30,
        "the corpus is there: {} cases",
        cases.len()
    );
    let handler = handler(&pool);
    let mut problems = Vec::new();
    for (i, (name, eml, expected)) in cases.iter().enumerate() {
        let job = inbound_job(&format!("corpus-{i}"), raw_post(eml));
        let outcome = handler.handle(std::slice::from_ref(&job)).await;
        if expected.get("error").is_some() {
            if !matches!(outcome.as_slice(), [Outcome::DeadLetter { .. }]) {
                problems.push(format!("{name}: expected a dead letter, got {outcome:?}"));
            }
            continue;
        }
        if outcome != [Outcome::Done] {
            problems.push(format!("{name}: not stored: {outcome:?}"));
            continue;
        }
        let (id, subject, text, html): (i64, Option<String>, Option<String>, Option<String>) =
            sqlx::query_as(
                "SELECT id, subject, text_body, html_body FROM mailroom_inbound_emails \
                 WHERE sqs_message_id = $1",
            )
            .bind(&job.message_id)
            .fetch_one(&pool)
            .await
            .expect("the email row");
        for (field, ours) in [("subject", &subject), ("text", &text), ("html", &html)] {
            let want = expected.get(field).and_then(Value::as_str);
            if ours.as_deref() != want {
                problems.push(format!(
                    "{name}: {field}: stored {ours:?}, Python read {want:?}"
                ));
            }
        }
        let stored: Vec<(Option<String>, Option<String>, i64, String)> = sqlx::query_as(
            "SELECT filename, content_type, size_bytes::int8, sha256 \
             FROM mailroom_inbound_attachments WHERE email_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&pool)
        .await
        .expect("attachments");
        let want: Vec<(Option<String>, Option<String>, i64, String)> = expected
            .get("attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a.get("filename")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    a.get("content_type")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    a.get("size").and_then(Value::as_i64).unwrap_or(-1),
                    a.get("sha256")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        // An attached message (message/rfc822) has no bytes in Python's reading, only its own
        // subject and text (compared by the decoder test): here its type and name must match.
        let comparable =
            |rows: &[(Option<String>, Option<String>, i64, String)],
             want: &[(Option<String>, Option<String>, i64, String)]| {
                rows.len() == want.len()
                    && rows.iter().zip(want).all(|(ours, theirs)| {
                        if theirs.3.is_empty() {
                            (&ours.0, &ours.1) == (&theirs.0, &theirs.1)
                        } else {
                            ours == theirs
                        }
                    })
            };
        if !comparable(&stored, &want) {
            problems.push(format!(
                "{name}: attachments stored {stored:?}, Python read {want:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
