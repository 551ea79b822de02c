//! Raw mode: the full MIME message, parsed with mailparse. We walk the MIME tree for the first
//! text/plain and text/html bodies that are not attachments (decoded by their charset and
//! transfer encoding) and keep every other leaf part as an [`Attachment`] with its exact decoded
//! bytes.
//!
//! MIME bombs: mailparse recurses once per nested multipart, and every nesting level needs a
//! `boundary` parameter, so before parsing we refuse messages naming `boundary` more than
//! [`MAX_BOUNDARIES`] times (which bounds mailparse's recursion) or with more than
//! [`MAX_BOUNDARY_LINES`] lines starting with `--` (which bounds its part count); after parsing we refuse trees
//! deeper than [`MAX_MIME_DEPTH`] or with more than [`MAX_MIME_PARTS`] parts.

use mailparse::{DispositionType, MailHeaderMap, ParsedMail};

use super::InboundError;
use crate::Attachment;

/// Deepest multipart nesting accepted.
pub const MAX_MIME_DEPTH: usize = 32;
/// Most MIME parts accepted in one message.
pub const MAX_MIME_PARTS: usize = 1000;
/// Most occurrences of the word `boundary` accepted before parsing.
pub const MAX_BOUNDARIES: usize = 1000;
/// Most lines starting with `--` accepted before parsing.
pub const MAX_BOUNDARY_LINES: usize = 4 * MAX_MIME_PARTS;

/// What the raw MIME message holds.
#[derive(Debug, Default)]
pub(crate) struct MimeContent {
    pub headers: String,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

fn mime_err(e: impl std::fmt::Display) -> InboundError {
    InboundError::Mime(e.to_string())
}

/// Lines starting with `--`: every MIME part needs one, so this bounds what mailparse allocates.
fn count_dash_lines(raw: &[u8]) -> usize {
    usize::from(raw.starts_with(b"--")) + raw.windows(3).filter(|w| w == b"\n--").count()
}

/// RFC 5322 field names: printable ASCII except `:`.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn count_boundary_words(raw: &[u8]) -> usize {
    const WORD: &[u8] = b"boundary";
    raw.windows(WORD.len())
        .filter(|w| w.eq_ignore_ascii_case(WORD))
        .count()
}

/// Parses a full MIME message.
pub(crate) fn parse_mime(raw: &[u8]) -> Result<MimeContent, InboundError> {
    if count_boundary_words(raw) > MAX_BOUNDARIES {
        return Err(mime_err(format!(
            "more than {MAX_BOUNDARIES} multipart boundaries"
        )));
    }
    if count_dash_lines(raw) > MAX_BOUNDARY_LINES {
        return Err(mime_err(format!(
            "more than {MAX_BOUNDARY_LINES} boundary lines"
        )));
    }
    let (headers, body_offset) = mailparse::parse_headers(raw).map_err(mime_err)?;
    if headers.is_empty() {
        return Err(mime_err("no header block"));
    }
    if let Some(bad) = headers
        .iter()
        .map(|h| h.get_key())
        .find(|k| !is_header_name(k))
    {
        return Err(mime_err(format!(
            "invalid header name {:?}",
            bad.chars().take(40).collect::<String>()
        )));
    }
    let mail = mailparse::parse_mail(raw).map_err(mime_err)?;
    let header_block = raw.get(..body_offset.min(raw.len())).unwrap_or_default();
    let header_text = String::from_utf8_lossy(header_block);
    let mut out = MimeContent {
        headers: header_text.trim_end_matches(['\r', '\n']).to_string(),
        message_id: mail
            .headers
            .get_first_value("Message-ID")
            .map(|v| v.trim().to_string()),
        from: mail.headers.get_first_value("From"),
        to: mail.headers.get_first_value("To"),
        cc: mail.headers.get_first_value("Cc"),
        subject: mail.headers.get_first_value("Subject"),
        ..MimeContent::default()
    };
    let mut seen = 0usize;
    walk(&mail, 0, &mut seen, &mut out)?;
    Ok(out)
}

fn walk(
    part: &ParsedMail<'_>,
    depth: usize,
    seen: &mut usize,
    out: &mut MimeContent,
) -> Result<(), InboundError> {
    *seen += 1;
    if *seen > MAX_MIME_PARTS {
        return Err(mime_err(format!("more than {MAX_MIME_PARTS} parts")));
    }
    if depth > MAX_MIME_DEPTH {
        return Err(mime_err(format!(
            "nested deeper than {MAX_MIME_DEPTH} levels"
        )));
    }
    let mimetype = part.ctype.mimetype.to_ascii_lowercase();
    if mimetype.starts_with("multipart/") {
        for sub in &part.subparts {
            walk(sub, depth + 1, seen, out)?;
        }
        return Ok(());
    }
    let disposition = part.get_content_disposition();
    let filename = disposition
        .params
        .get("filename")
        .or_else(|| part.ctype.params.get("name"))
        .cloned();
    let is_attachment = matches!(disposition.disposition, DispositionType::Attachment);
    if !is_attachment && filename.is_none() {
        let slot = match mimetype.as_str() {
            "text/plain" => Some(&mut out.text),
            "text/html" => Some(&mut out.html),
            _ => None,
        };
        if let Some(slot) = slot {
            if slot.is_none() {
                *slot = Some(body_text(part)?);
                return Ok(());
            }
        }
    }
    let content_id = part
        .headers
        .get_first_value("Content-ID")
        .map(|v| v.trim().to_string());
    let disposition = match disposition.disposition {
        DispositionType::Attachment => "attachment",
        DispositionType::Inline
            if part
                .headers
                .get_first_header("Content-Disposition")
                .is_some() =>
        {
            "inline"
        }
        _ if content_id.is_some() => "inline",
        _ => "attachment",
    };
    out.attachments.push(Attachment {
        filename,
        content_type: Some(mimetype),
        content_id,
        disposition: Some(disposition.to_string()),
        data: part.get_body_raw().map_err(mime_err)?,
    });
    Ok(())
}

/// A text body decoded by transfer encoding and charset; lossy UTF-8 if the charset is unknown.
fn body_text(part: &ParsedMail<'_>) -> Result<String, InboundError> {
    match part.get_body() {
        Ok(text) => Ok(text),
        Err(_) => Ok(String::from_utf8_lossy(&part.get_body_raw().map_err(mime_err)?).into_owned()),
    }
}
