//! The receive call reads real servers' answers with its own JSON reader
//! (`src/sqs/receive_json.rs`), and reads them exactly: bodies and message attributes come back
//! as sent, whatever they hold (quotes, backslashes, control characters SQS allows, non-ASCII,
//! characters beyond the BMP), and no successful answer has to go to the SDK's own reader (which
//! would be correct but slow, so a silent fall-back would hide a lost optimisation).
//!
//! Against rustack (`AWS_ENDPOINT_URL`, started by scripts/test.sh) and, ignored in a plain
//! `cargo test`, against LocalStack, whose server escapes every non-ASCII character as `\u`
//! (scripts/test.sh runs it with `--ignored`).

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;

mod common;

/// Bodies that need every kind of JSON escape, and none.
fn bodies() -> Vec<String> {
    vec![
        r#"{"mailroom":1,"kind":"events","body_b64":"W3siZW1haWwiOiJhQGV4YW1wbGUuY29tIn1d"}"#
            .into(),
        "back\\slash \\\" \\u0041 and / slash".into(),
        "tab\tnewline\ncarriage\r end".into(),
        "é ü ß 中文 𝄞 😀 \u{FFFD} \u{E000}".into(),
        "plain".into(),
        " ".into(),
        "x".repeat(200_000),
    ]
}

/// Message `i`'s "text" attribute: escapes and non-ASCII too.
fn text_of(i: usize) -> String {
    format!("\"{i}\" é 😀 \\ /")
}

fn text_attribute(data_type: &str, value: String) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .unwrap()
}

async fn read_back_exactly(client: &Client) {
    let url = common::create_queue(client, &common::unique_dashed("receive-json"), 30, None).await;
    let sent = bodies();
    let entries: Vec<_> = sent
        .iter()
        .enumerate()
        .map(|(i, body)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .message_attributes("index", text_attribute("Number", i.to_string()))
                .message_attributes("text", text_attribute("String", text_of(i)))
                .message_attributes(
                    "bytes",
                    MessageAttributeValue::builder()
                        .data_type("Binary")
                        .binary_value(Blob::new(vec![0u8, 1, 2, 255, i as u8]))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
        })
        .collect();
    // One message per call: the large body alone is near the batch limit.
    for entry in entries {
        let out = client
            .send_message_batch()
            .queue_url(&url)
            .entries(entry)
            .send()
            .await
            .expect("send");
        assert!(out.failed.is_empty(), "{:?}", out.failed);
    }

    let before = mailroom::sqs::successful_answers_read_by_the_sdk();
    let read_here = mailroom::sqs::answers_read_here();
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() == sent.len() {
            break;
        }
        got.extend(
            mailroom::sqs::receive(client, &url, 10, 1, 30)
                .await
                .expect("receive"),
        );
    }
    assert_eq!(got.len(), sent.len(), "every message received");
    for m in &got {
        let i: usize = m.attributes["index"].parse().expect("index attribute");
        assert_eq!(m.body, sent[i], "body {i} read back exactly");
        assert_eq!(m.attributes["text"], text_of(i));
        assert!(!m.message_id.is_empty() && !m.receipt_handle.is_empty());
        assert_eq!(m.receive_count, 1);
        assert!(m.sent_at.is_some(), "SentTimestamp read");
    }
    assert_eq!(
        mailroom::sqs::successful_answers_read_by_the_sdk(),
        before,
        "every answer read by the receive call's own reader"
    );
    assert!(
        mailroom::sqs::answers_read_here() > read_here,
        "the receive call's own reader is in use"
    );
}

#[tokio::test]
async fn receive_reads_rustacks_answers_exactly_with_its_own_reader() {
    read_back_exactly(&common::sqs().await).await;
}

#[tokio::test]
#[ignore = "needs LocalStack; run by scripts/test.sh with --ignored"]
async fn receive_reads_localstacks_ascii_escaped_answers_exactly_with_its_own_reader() {
    let endpoint = std::env::var("LOCALSTACK_ENDPOINT_URL")
        .expect("LOCALSTACK_ENDPOINT_URL is not set: run this through scripts/test.sh");
    read_back_exactly(&Client::new(&common::sdk_config(&endpoint).await)).await;
}
