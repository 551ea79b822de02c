//! Inbound Parse posts: multipart/form-data in parsed mode (SendGrid split the email into
//! fields and file parts) or raw mode (the whole MIME message in the `email` field).
//!
//! - [`multipart`] splits the form (in memory, lenient about part headers).
//! - `charset` decodes parsed-mode text fields by the `charsets` field.
//! - [`mime`] reads raw-mode MIME as mail clients do, bounded against MIME bombs.
//! - `header` (fields, RFC 2047 words, RFC 2231 parameters) and `transfer` (lenient base64 and
//!   quoted-printable) are shared by both.
//!
//! In raw mode SendGrid still sends its own `to`, `from`, `subject`, ... fields; those win, and
//! the MIME headers fill whatever they leave out.

mod charset;
mod header;
pub mod mime;
pub mod multipart;
mod transfer;

use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

use crate::{Attachment, InboundEmail, InboundMode};
use multipart::FormPart;

/// Largest Inbound Parse body accepted (SendGrid caps an email at 30 MB).
pub const MAX_INBOUND_BYTES: usize = 64 * 1024 * 1024;

/// Why an Inbound Parse post could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InboundError {
    #[error("content type is not multipart/form-data (got {0:?})")]
    NotMultipart(String),
    #[error("no boundary in content type")]
    NoBoundary,
    #[error("body too large: {len} bytes (limit {max})")]
    TooLarge { len: usize, max: usize },
    #[error("malformed multipart: {0}")]
    Malformed(String),
    #[error("MIME message: {0}")]
    Mime(String),
}

/// Parses an Inbound Parse POST body given its Content-Type header value. The email holds a
/// copy of the body (see [`parse_inbound_shared`] to share one instead).
pub fn parse_inbound(content_type: &str, body: &[u8]) -> Result<InboundEmail, InboundError> {
    if body.len() > MAX_INBOUND_BYTES {
        return Err(InboundError::TooLarge {
            len: body.len(),
            max: MAX_INBOUND_BYTES,
        });
    }
    parse_inbound_shared(content_type, &Bytes::copy_from_slice(body))
}

/// [`parse_inbound`] over a shared body: the email's `raw_mime` and every attachment stored as
/// sent are slices of `body`, not copies. Why: a 30 MB raw-mode post was held four times while
/// it was decoded (the body, the form's copy of it, `raw_mime`'s copy of the `email` field, and
/// the decoded attachments); now the body and the decoded attachments only.
pub fn parse_inbound_shared(
    content_type: &str,
    body: &Bytes,
) -> Result<InboundEmail, InboundError> {
    if body.len() > MAX_INBOUND_BYTES {
        return Err(InboundError::TooLarge {
            len: body.len(),
            max: MAX_INBOUND_BYTES,
        });
    }
    let parts = multipart::parse_form(content_type, body)?;
    let form = Form { parts: &parts };
    let charsets = form.json("charsets");
    let text_field = |name: &str| {
        form.bytes(name)
            .map(|b| charset::decode(b, charset::label_for(charsets.as_ref(), name)))
    };
    let utf8_field = |name: &str| {
        form.bytes(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };

    let mut email = InboundEmail {
        mode: Some(InboundMode::Parsed),
        from: text_field("from"),
        to: text_field("to"),
        cc: text_field("cc"),
        subject: text_field("subject"),
        text: text_field("text"),
        html: text_field("html"),
        headers: utf8_field("headers"),
        dkim: utf8_field("dkim"),
        spf: utf8_field("spf"),
        sender_ip: utf8_field("sender_ip").map(|s| s.trim().to_string()),
        spam_score: utf8_field("spam_score").and_then(|s| s.trim().parse().ok()),
        spam_report: utf8_field("spam_report"),
        envelope: form.json("envelope"),
        content_ids: form.json("content-ids"),
        attachment_info: form.json("attachment-info"),
        charsets,
        ..InboundEmail::default()
    };
    email.message_id = email.headers.as_deref().and_then(message_id_of);
    email.attachments = form_attachments(&parts, &email);

    if let Some(raw) = form.shared("email") {
        let mime = mime::parse_mime(raw)?;
        email.mode = Some(InboundMode::Raw);
        email.raw_mime = Some(raw.clone());
        email.headers = Some(mime.headers);
        email.message_id = mime.message_id.or(email.message_id);
        email.from = email.from.or(mime.from);
        email.to = email.to.or(mime.to);
        email.cc = email.cc.or(mime.cc);
        email.subject = email.subject.or(mime.subject);
        email.text = email.text.or(mime.text);
        email.html = email.html.or(mime.html);
        email.attachments.extend(mime.attachments);
    }
    Ok(email)
}

/// Looks fields up by name, case-insensitively (SendGrid sends `SPF` upper-case).
struct Form<'a> {
    parts: &'a [FormPart],
}

impl Form<'_> {
    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.shared(name).map(|b| b.as_ref())
    }

    /// A field's bytes as a slice of the body.
    fn shared(&self, name: &str) -> Option<&Bytes> {
        self.parts
            .iter()
            .find(|p| p.filename.is_none() && p.name.eq_ignore_ascii_case(name))
            .map(|p| &p.data)
    }

    /// A JSON field; text that is not JSON is kept as a JSON string rather than lost.
    fn json(&self, name: &str) -> Option<Value> {
        let bytes = self.bytes(name)?;
        Some(
            serde_json::from_slice(bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
        )
    }
}

/// `attachmentN` file parts (and any other file part), ordered by N.
fn form_attachments(parts: &[FormPart], email: &InboundEmail) -> Vec<Attachment> {
    let mut files: Vec<(u64, &FormPart)> = parts
        .iter()
        .filter_map(|p| {
            let n = p
                .name
                .strip_prefix("attachment")
                .and_then(|d| d.parse::<u64>().ok());
            match (n, &p.filename) {
                (Some(n), _) => Some((n, p)),
                (None, Some(_)) => Some((u64::MAX, p)),
                (None, None) => None,
            }
        })
        .collect();
    files.sort_by_key(|(n, _)| *n);
    files
        .into_iter()
        .map(|(_, p)| {
            let info = email
                .attachment_info
                .as_ref()
                .and_then(|i| i.get(&p.name))
                .and_then(Value::as_object);
            let info_str = |k: &str| {
                info.and_then(|i| i.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let content_id = info_str("content-id")
                .or_else(|| {
                    email
                        .content_ids
                        .as_ref()?
                        .as_object()?
                        .iter()
                        .find_map(|(cid, v)| {
                            (v.as_str() == Some(p.name.as_str())).then(|| cid.clone())
                        })
                })
                .map(|cid| {
                    let cid = cid.trim();
                    let cid = cid.strip_prefix('<').unwrap_or(cid);
                    cid.strip_suffix('>').unwrap_or(cid).to_string()
                });
            Attachment {
                filename: p.filename.clone().or_else(|| info_str("filename")),
                content_type: p.content_type.clone().or_else(|| info_str("type")),
                disposition: Some(
                    if content_id.is_some() {
                        "inline"
                    } else {
                        "attachment"
                    }
                    .into(),
                ),
                content_id,
                data: p.data.clone(),
                decode_note: None,
            }
        })
        .collect()
}

/// The Message-ID from a header block (read as raw mode reads headers: odd lines skipped).
fn message_id_of(headers: &str) -> Option<String> {
    header::split_header_block(headers.as_bytes(), header::BlockEnd::Whole)
        .text("Message-ID")
        .filter(|v| !v.is_empty())
}
