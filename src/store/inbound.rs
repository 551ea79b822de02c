//! Inbound Parse emails and their attachments.
//!
//! Idempotency key: hex sha256 of the exact request body ([`dedup_key`]). It collapses an SQS
//! redelivery, a message duplicated under another SQS id, and SendGrid re-posting the same
//! email, all of which carry the same bytes. The email row is inserted with
//! `ON CONFLICT (dedup_key) DO NOTHING RETURNING id`; attachments are written only when that
//! returned a row, so a duplicate adds nothing at all. Attachments go in one UNNEST statement.
//!
//! Memory: sqlx encodes a statement's arguments into a buffer and then copies them into the
//! connection's write buffer, which the connection keeps at its largest size. After one 25 MB
//! raw email a pooled connection held 25 MB it no longer needed, and every connection that
//! ever stored a large email held its own, outside any body budget. A statement that bound
//! more than [`SHRINK_AFTER_BYTES`] gives the connection's buffers back once it ran.

use chrono::{DateTime, Utc};
use mailroom_sendgrid::{InboundEmail, InboundMode};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use super::{sanitize, sanitize_json, sanitize_opt, StoreError};

/// One inbound email to store, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct InboundRecord<'a> {
    pub email: &'a InboundEmail,
    /// [`dedup_key`] of the request body.
    pub dedup_key: &'a str,
    pub sqs_message_id: &'a str,
    pub queue: &'a str,
    /// When the edge received the request.
    pub received_at: Option<DateTime<Utc>>,
    /// The name of the webhook route that received it; `None` on the unnamed default routes.
    pub source: Option<&'a str>,
}

/// Bytes bound by one statement past which the connection's buffers are shrunk after it.
pub const SHRINK_AFTER_BYTES: usize = 1024 * 1024;

/// Give back the connection's buffers after a statement that bound `bound` bytes.
fn shrink_after(conn: &mut PgConnection, bound: usize) {
    if bound > SHRINK_AFTER_BYTES {
        conn.shrink_buffers();
    }
}

/// The inbound idempotency key: lower-case hex sha256 of the exact request body bytes.
pub fn dedup_key(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

const INSERT_EMAIL: &str = r#"
INSERT INTO mailroom_inbound_emails (
    dedup_key, sqs_message_id, queue, mode, message_id, from_addr, to_addrs, cc_addrs, subject,
    text_body, html_body, headers, envelope, charsets, content_ids, attachment_info, spam_score,
    spam_report, spf, dkim, sender_ip, raw_mime, received_at, source
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21, $22, $23, $24)
ON CONFLICT (dedup_key) DO NOTHING
RETURNING id
"#;

const INSERT_ATTACHMENTS: &str = r#"
INSERT INTO mailroom_inbound_attachments (
    email_id, position, filename, content_type, content_id, disposition, size_bytes, sha256,
    content, decode_note
)
SELECT $1, u.position, u.filename, u.content_type, u.content_id, u.disposition, u.size_bytes,
       u.sha256, u.content, u.decode_note
FROM UNNEST($2::int4[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
            $9::bytea[], $10::text[])
    AS u(position, filename, content_type, content_id, disposition, size_bytes, sha256, content,
         decode_note)
ON CONFLICT (email_id, position) DO NOTHING
"#;

/// Insert an inbound email and, when it is new, its attachments. Returns the new email's id, or
/// `None` when an email with the same dedup key is already stored. Run it inside the batch's
/// transaction so email and attachments commit together.
pub async fn insert_inbound(
    conn: &mut PgConnection,
    rec: &InboundRecord<'_>,
) -> Result<Option<i64>, StoreError> {
    let e = rec.email;
    let mode = match e.mode {
        Some(InboundMode::Raw) => "raw",
        Some(InboundMode::Parsed) => "parsed",
        None if e.raw_mime.is_some() => "raw",
        None => "parsed",
    };
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| sanitize_json(v).into_owned());
    let id: Option<i64> = sqlx::query_scalar(INSERT_EMAIL)
        .bind(sanitize(rec.dedup_key).into_owned())
        .bind(sanitize(rec.sqs_message_id).into_owned())
        .bind(sanitize(rec.queue).into_owned())
        .bind(mode)
        .bind(sanitize_opt(e.message_id.as_deref()))
        .bind(sanitize_opt(e.from.as_deref()))
        .bind(sanitize_opt(e.to.as_deref()))
        .bind(sanitize_opt(e.cc.as_deref()))
        .bind(sanitize_opt(e.subject.as_deref()))
        .bind(sanitize_opt(e.text.as_deref()))
        .bind(sanitize_opt(e.html.as_deref()))
        .bind(sanitize_opt(e.headers.as_deref()))
        .bind(json(&e.envelope))
        .bind(json(&e.charsets))
        .bind(json(&e.content_ids))
        .bind(json(&e.attachment_info))
        .bind(e.spam_score.filter(|s| s.is_finite()))
        .bind(sanitize_opt(e.spam_report.as_deref()))
        .bind(sanitize_opt(e.spf.as_deref()))
        .bind(sanitize_opt(e.dkim.as_deref()))
        .bind(sanitize_opt(e.sender_ip.as_deref()))
        .bind(e.raw_mime.as_deref())
        .bind(rec.received_at)
        .bind(sanitize_opt(rec.source))
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::query("inserting an inbound email"))?;
    shrink_after(conn, e.raw_mime.as_ref().map_or(0, |r| r.len()));

    let Some(id) = id else { return Ok(None) };
    if e.attachments.is_empty() {
        return Ok(Some(id));
    }

    let n = e.attachments.len();
    let mut position = Vec::with_capacity(n);
    let mut filename = Vec::with_capacity(n);
    let mut content_type = Vec::with_capacity(n);
    let mut content_id = Vec::with_capacity(n);
    let mut disposition = Vec::with_capacity(n);
    let mut size_bytes = Vec::with_capacity(n);
    let mut sha256 = Vec::with_capacity(n);
    let mut content: Vec<&[u8]> = Vec::with_capacity(n);
    let mut decode_note = Vec::with_capacity(n);
    let bound: usize = e.attachments.iter().map(|a| a.data.len()).sum();
    for (i, a) in e.attachments.iter().enumerate() {
        position.push(i32::try_from(i).unwrap_or(i32::MAX));
        filename.push(sanitize_opt(a.filename.as_deref()));
        content_type.push(sanitize_opt(a.content_type.as_deref()));
        content_id.push(sanitize_opt(a.content_id.as_deref()));
        disposition.push(sanitize_opt(a.disposition.as_deref()));
        size_bytes.push(i64::try_from(a.data.len()).unwrap_or(i64::MAX));
        sha256.push(hex::encode(Sha256::digest(&a.data)));
        content.push(&a.data);
        decode_note.push(sanitize_opt(a.decode_note.as_deref()));
    }
    sqlx::query(INSERT_ATTACHMENTS)
        .bind(id)
        .bind(position)
        .bind(filename)
        .bind(content_type)
        .bind(content_id)
        .bind(disposition)
        .bind(size_bytes)
        .bind(sha256)
        .bind(content)
        .bind(decode_note)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::query("inserting inbound attachments"))?;
    shrink_after(conn, bound);
    Ok(Some(id))
}
