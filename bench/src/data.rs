//! Realistic SendGrid traffic, deterministic per seed: Event Webhook batches of 1-50 events with
//! unique `sg_event_id`s and the fields SendGrid sends for each event type, plus a share of
//! Inbound Parse posts (parsed mode, multipart/form-data, with a small attachment), each wrapped
//! in a router envelope exactly as mailroom-router puts it on the queue.

use chrono::Utc;
use mailroom_envelope::{Envelope, Kind, Origin, Source};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// One SQS message of the prefill.
#[derive(Debug, Clone)]
pub struct Message {
    /// The SQS body (a router envelope).
    pub body: String,
    /// Events it carries (0 for an inbound email).
    pub events: usize,
    pub inbound: bool,
}

/// What a prefill holds, to know when everything is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages: usize,
    pub events: usize,
    pub inbound: usize,
    pub bytes: usize,
}

pub fn totals(messages: &[Message]) -> Totals {
    Totals {
        messages: messages.len(),
        events: messages.iter().map(|m| m.events).sum(),
        inbound: messages.iter().filter(|m| m.inbound).count(),
        bytes: messages.iter().map(|m| m.body.len()).sum(),
    }
}

const EVENT_TYPES: [&str; 8] = [
    "processed",
    "delivered",
    "open",
    "click",
    "bounce",
    "deferred",
    "dropped",
    "unsubscribe",
];

/// Event type weights roughly as seen in production: processed/delivered/open dominate.
const EVENT_WEIGHTS: [u32; 8] = [30, 30, 20, 8, 3, 5, 2, 2];

fn pick_event(rng: &mut StdRng) -> &'static str {
    let total: u32 = EVENT_WEIGHTS.iter().sum();
    let mut x = rng.random_range(0..total);
    for (t, w) in EVENT_TYPES.iter().zip(EVENT_WEIGHTS) {
        if x < w {
            return t;
        }
        x -= w;
    }
    "processed"
}

fn b64id(rng: &mut StdRng, len: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| A[rng.random_range(0..A.len())] as char)
        .collect()
}

/// One Event Webhook event as SendGrid sends it. `id` makes `sg_event_id` unique.
pub fn event(rng: &mut StdRng, run: &str, id: u64) -> serde_json::Value {
    let kind = pick_event(rng);
    let user = rng.random_range(0..100_000);
    let ts = 1_764_000_000 + rng.random_range(0..3_000_000i64);
    let msg = b64id(rng, 22);
    let mut e = json!({
        "email": format!("user{user}@example{}.com", user % 97),
        "timestamp": ts,
        "smtp-id": format!("<{msg}@ismtpd0001p1iad2.sendgrid.net>"),
        "event": kind,
        "category": ["newsletter", format!("cohort-{}", user % 12)],
        "sg_event_id": format!("{run}-{id:010}-{}", b64id(rng, 10)),
        "sg_message_id": format!("{msg}.filterdrecv-5645d9c87f-abcde-1-6543A2B1-1.0"),
        "marketing_campaign_id": 12345,
        "marketing_campaign_name": "November digest",
        "asm_group_id": 42,
        "tls": 1,
    });
    let obj = e.as_object_mut().expect("object");
    match kind {
        "delivered" => {
            obj.insert(
                "response".into(),
                json!("250 2.0.0 OK  1764000000 d2si1234567qkb.123 - gsmtp"),
            );
            obj.insert("ip".into(), json!("168.245.12.34"));
            obj.insert("pool".into(), json!({"name": "transactional", "id": 210}));
        }
        "open" => {
            obj.insert("useragent".into(), json!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"));
            obj.insert("ip".into(), json!(format!("203.0.113.{}", user % 250)));
            obj.insert("sg_machine_open".into(), json!(rng.random_bool(0.3)));
        }
        "click" => {
            obj.insert(
                "useragent".into(),
                json!(
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15"
                ),
            );
            obj.insert("ip".into(), json!(format!("198.51.100.{}", user % 250)));
            obj.insert(
                "url".into(),
                json!(format!(
                    "https://www.example.com/offers/{}?utm_source=newsletter",
                    user % 1000
                )),
            );
            obj.insert(
                "url_offset".into(),
                json!({"index": user % 7, "type": "html"}),
            );
        }
        "bounce" => {
            obj.insert(
                "reason".into(),
                json!("550 5.1.1 The email account that you tried to reach does not exist."),
            );
            obj.insert("status".into(), json!("5.1.1"));
            obj.insert("type".into(), json!("bounce"));
            obj.insert("bounce_classification".into(), json!("Invalid Address"));
        }
        "deferred" => {
            obj.insert(
                "response".into(),
                json!("400 4.2.2 Mailbox full, try again later"),
            );
            obj.insert(
                "attempt".into(),
                json!(format!("{}", rng.random_range(1..10))),
            );
        }
        "dropped" => {
            obj.insert("reason".into(), json!("Bounced Address"));
            obj.insert("status".into(), json!("5.0.0"));
        }
        _ => {}
    }
    e
}

/// A router envelope, as mailroom-router writes it.
pub fn envelope(
    kind: Kind,
    content_type: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> String {
    mailroom_envelope::encode(&Envelope {
        origin: Origin::Router {
            version: mailroom_envelope::ENVELOPE_VERSION,
        },
        kind,
        received_at: Some(Utc::now()),
        source: Some(Source {
            path: match kind {
                Kind::Events => "/sendgrid/events".into(),
                Kind::Inbound => "/sendgrid/inbound".into(),
                Kind::Message => "/".into(),
            },
            stage: Some("prod".into()),
            request_id: Some(format!("{:032x}", rand::random::<u128>())),
            webhook: None,
        }),
        headers,
        content_type: Some(content_type.into()),
        body: body.into(),
        queue_url: None,
    })
}

pub const BOUNDARY: &str = "xYzZY";

fn part(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
            .as_bytes(),
    );
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// An Inbound Parse post in parsed mode: headers, text and html bodies, one attachment of
/// `attachment_bytes` bytes. `id` makes the body (and so its dedup key) unique.
pub fn inbound_body(rng: &mut StdRng, run: &str, id: u64, attachment_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096 + attachment_bytes);
    let msgid = format!("<{run}-{id}@mail.example.com>");
    part(
        &mut out,
        "headers",
        format!(
            "Received: by mx0.sendgrid.net with SMTP id {}\r\nMessage-ID: {msgid}\r\nFrom: Alice Example <alice@example.com>\r\nTo: support@parse.example.org\r\nSubject: Order {id} question\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n",
            b64id(rng, 12)
        )
        .as_bytes(),
    );
    part(&mut out, "dkim", b"{@example.com : pass}");
    part(&mut out, "content-ids", b"{}");
    part(&mut out, "to", b"support@parse.example.org");
    part(&mut out, "from", b"Alice Example <alice@example.com>");
    part(
        &mut out,
        "subject",
        format!("Order {id} question").as_bytes(),
    );
    let text = "Hello,\r\nI have a question about my order. Could you check the delivery date?\r\nThanks, Alice\r\n".repeat(6);
    part(&mut out, "text", text.as_bytes());
    let html = format!(
        "<html><body><p>{}</p></body></html>",
        text.replace("\r\n", "<br>")
    );
    part(&mut out, "html", html.as_bytes());
    part(&mut out, "sender_ip", b"203.0.113.7");
    part(
        &mut out,
        "spam_report",
        b"Spam detection software, running on the system... score=0.1",
    );
    part(&mut out, "spam_score", b"0.1");
    part(
        &mut out,
        "envelope",
        br#"{"to":["support@parse.example.org"],"from":"alice@example.com"}"#,
    );
    part(
        &mut out,
        "charsets",
        br#"{"to":"UTF-8","html":"UTF-8","subject":"UTF-8","from":"UTF-8","text":"UTF-8"}"#,
    );
    part(&mut out, "SPF", b"pass");
    if attachment_bytes > 0 {
        part(&mut out, "attachments", b"1");
        part(
            &mut out,
            "attachment-info",
            format!(r#"{{"attachment1":{{"filename":"invoice-{id}.pdf","name":"invoice-{id}.pdf","type":"application/pdf"}}}}"#).as_bytes(),
        );
        out.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"attachment1\"; filename=\"invoice-{id}.pdf\"\r\nContent-Type: application/pdf\r\n\r\n").as_bytes(),
        );
        let mut blob = vec![0u8; attachment_bytes];
        rng.fill(&mut blob[..]);
        out.extend_from_slice(&blob);
        out.extend_from_slice(b"\r\n");
    } else {
        part(&mut out, "attachments", b"0");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// An Inbound Parse post in raw mode of about `post_bytes`: SendGrid's own fields and the whole
/// MIME message in the `email` field (a text body and one attachment of random bytes, base64 in
/// 76-character lines, as mail clients send it). Returns the post, the MIME text and the
/// attachment's bytes, so a run can check what was stored byte for byte.
pub fn raw_inbound_body(
    rng: &mut StdRng,
    run: &str,
    id: u64,
    post_bytes: usize,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use base64::Engine;
    // Base64 in CRLF-ended 76-character lines: 78 bytes of text per 57 bytes of data.
    let attachment_bytes = post_bytes.saturating_sub(4096) / 78 * 57;
    let mut blob = vec![0u8; attachment_bytes];
    rng.fill(&mut blob[..]);
    let msgid = format!("<{run}-raw-{id}@mail.example.com>");
    let mut mime = format!(
        "Received: by mx0.sendgrid.net with SMTP id {}\r\nMessage-ID: {msgid}\r\nFrom: Alice Example <alice@example.com>\r\nTo: support@parse.example.org\r\nSubject: Order {id} scans\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe scans of order {id} are attached.\r\n--outer\r\nContent-Type: application/pdf; name=\"scans-{id}.pdf\"\r\nContent-Disposition: attachment; filename=\"scans-{id}.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        b64id(rng, 12)
    )
    .into_bytes();
    mime.reserve(attachment_bytes / 57 * 78 + 100);
    for line in blob.chunks(57) {
        mime.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(line)
                .as_bytes(),
        );
        mime.extend_from_slice(b"\r\n");
    }
    mime.extend_from_slice(b"--outer--\r\n");
    let mut out = Vec::with_capacity(mime.len() + 2048);
    part(&mut out, "to", b"support@parse.example.org");
    part(&mut out, "from", b"Alice Example <alice@example.com>");
    part(&mut out, "subject", format!("Order {id} scans").as_bytes());
    part(&mut out, "dkim", b"{@example.com : pass}");
    part(&mut out, "SPF", b"pass");
    part(&mut out, "sender_ip", b"203.0.113.7");
    part(
        &mut out,
        "envelope",
        br#"{"to":["support@parse.example.org"],"from":"alice@example.com"}"#,
    );
    part(
        &mut out,
        "charsets",
        br#"{"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}"#,
    );
    part(&mut out, "email", &mime);
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (out, mime, blob)
}

pub fn inbound_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// `n` messages: 95% Event Webhook batches of 1-`max_events` events (50 by default: SendGrid
/// batches events, more of them per POST the busier the account), 5% inbound emails (2-16 KiB
/// attachments). Deterministic for a `(run, seed, max_events)`.
pub fn prefill(run: &str, n: usize, seed: u64, max_events: usize) -> Vec<Message> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_id = 0u64;
    (0..n)
        .map(|i| {
            if rng.random_range(0..100) < 5 {
                let size = rng.random_range(2048..16_384);
                let body = inbound_body(&mut rng, run, i as u64, size);
                Message {
                    body: envelope(
                        Kind::Inbound,
                        &inbound_content_type(),
                        vec![("content-type".into(), inbound_content_type())],
                        body,
                    ),
                    events: 0,
                    inbound: true,
                }
            } else {
                let count = rng.random_range(1..=max_events.max(1));
                let events: Vec<_> = (0..count)
                    .map(|_| {
                        next_id += 1;
                        event(&mut rng, run, next_id)
                    })
                    .collect();
                let body = serde_json::to_vec(&events).expect("json");
                Message {
                    body: envelope(
                        Kind::Events,
                        "application/json",
                        vec![
                            ("content-type".into(), "application/json".into()),
                            ("user-agent".into(), "SendGrid Event API".into()),
                        ],
                        body,
                    ),
                    events: count,
                    inbound: false,
                }
            }
        })
        .collect()
}
