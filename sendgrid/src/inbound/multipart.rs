//! multipart/form-data, split over the in-memory body (see `parse_form` for why not multer,
//! which still reads the boundary out of the content type). SendGrid posts CRLF bodies, but bodies
//! that went through tools or test harnesses sometimes have bare LF line endings; those are
//! normalised to CRLF first, and only when the body holds no CRLF at all, so binary file parts
//! of a proper CRLF body are never touched.

use std::borrow::Cow;

use bytes::Bytes;

use super::header::{self, BlockEnd, Quoting};
use super::InboundError;

/// Most parts we read from one post (SendGrid sends ~20 fields plus attachments).
pub const MAX_FORM_PARTS: usize = 1000;

/// One form-data part.
#[derive(Debug, Clone)]
pub(crate) struct FormPart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// The boundary of a multipart/form-data content type, or why there is none.
pub(crate) fn boundary(content_type: &str) -> Result<String, InboundError> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence != "multipart/form-data" {
        return Err(InboundError::NotMultipart(
            content_type.chars().take(80).collect(),
        ));
    }
    multer::parse_boundary(content_type).map_err(|_| InboundError::NoBoundary)
}

/// Bare-LF bodies become CRLF; anything containing a CRLF is returned untouched.
fn normalise_line_endings(body: &[u8]) -> Cow<'_, [u8]> {
    if body.windows(2).any(|w| w == b"\r\n") || !body.contains(&b'\n') {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 16);
    for &b in body {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    Cow::Owned(out)
}

/// Most bytes of one part's header block (browsers send a few hundred).
pub const MAX_PART_HEADER_BYTES: usize = 64 * 1024;

fn malformed(msg: impl Into<String>) -> InboundError {
    InboundError::Malformed(msg.into())
}

/// Where `needle` next occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while let Some(off) = hay.get(i..)?.iter().position(|&b| b == first) {
        let at = i + off;
        if hay.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// After `--boundary` at `at`: is it a delimiter line, and is it the closing one? Returns
/// (closing, where the next part starts).
fn delimiter_end(body: &[u8], at: usize) -> Option<(bool, usize)> {
    let mut i = at;
    let close = body.get(i..i + 2) == Some(b"--");
    if close {
        i += 2;
    }
    while matches!(body.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    match body.get(i..) {
        Some([b'\r', b'\n', ..]) => Some((close, i + 2)),
        Some([]) | None if close => Some((true, body.len())),
        // Anything after the closing delimiter is the epilogue.
        Some(_) if close => Some((true, body.len())),
        _ => None,
    }
}

/// Splits a form-data body into its parts, in order.
///
/// Our own splitter rather than multer's: the body is in memory already, and multer refuses a
/// whole post for one NUL or 0x01 byte in a part header (`failed to read headers`) and drops a
/// file name with Latin-1 bytes or an RFC 2231 `filename*=`. Part headers are read by
/// the `header` module: control bytes are tolerated, raw 8-bit bytes are UTF-8 when valid and
/// Latin-1 otherwise, `filename*=charset''percent-encoded` wins over `filename=`. Parts are
/// slices of `body` (no copies; of its CRLF copy when its line endings were bare LF), at most
/// [`MAX_FORM_PARTS`] of them.
pub(crate) fn parse_form(content_type: &str, body: &Bytes) -> Result<Vec<FormPart>, InboundError> {
    let boundary = boundary(content_type)?;
    let body = match normalise_line_endings(body) {
        Cow::Borrowed(_) => body.clone(),
        Cow::Owned(crlf) => Bytes::from(crlf),
    };
    let mut delim = b"\r\n--".to_vec();
    delim.extend_from_slice(boundary.as_bytes());
    // The first delimiter may open the body (no CRLF before it).
    let mut at = if body.starts_with(&delim[2..]) {
        Some(0)
    } else {
        find(&body, &delim, 0).map(|i| i + 2)
    };
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    loop {
        let Some(d) = at else {
            return Err(malformed(if start.is_some() || !parts.is_empty() {
                "incomplete multipart body: no closing boundary"
            } else {
                "no boundary line in the body"
            }));
        };
        let after = d + delim.len() - 2;
        let Some((close, next)) = delimiter_end(&body, after) else {
            // `--boundary` followed by something else: not a delimiter.
            at = find(&body, &delim, after).map(|i| i + 2);
            continue;
        };
        if let Some(s) = start {
            // The CRLF before the delimiter belongs to it.
            let end = d.saturating_sub(2).max(s);
            if parts.len() >= MAX_FORM_PARTS {
                return Err(malformed(format!("more than {MAX_FORM_PARTS} parts")));
            }
            parts.push(form_part(body.slice(s..end))?);
        }
        if close {
            break;
        }
        start = Some(next);
        at = find(&body, &delim, next.saturating_sub(2)).map(|i| i + 2);
    }
    if parts.is_empty() {
        return Err(malformed("no parts"));
    }
    Ok(parts)
}

/// One part: its header block (up to the blank line) and data.
fn form_part(part: Bytes) -> Result<FormPart, InboundError> {
    let (head_end, data_start) = if part.starts_with(b"\r\n") {
        (0, 2)
    } else {
        match find(&part, b"\r\n\r\n", 0) {
            Some(i) => (i, i + 4),
            None => return Err(malformed("part headers without the blank line after them")),
        }
    };
    if head_end > MAX_PART_HEADER_BYTES {
        return Err(malformed(format!(
            "part headers longer than {MAX_PART_HEADER_BYTES} bytes"
        )));
    }
    let head =
        header::split_header_block(part.get(..head_end).unwrap_or_default(), BlockEnd::Whole);
    let disposition = head
        .get("Content-Disposition")
        .map(|v| header::parse_params(v, Quoting::Form))
        .unwrap_or_default();
    let content_type = head.text("Content-Type").filter(|t| !t.is_empty());
    Ok(FormPart {
        name: disposition.get("name").unwrap_or_default().to_string(),
        filename: disposition.get("filename").map(str::to_string),
        content_type,
        data: part.slice(data_start.min(part.len())..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings() {
        assert_eq!(&*normalise_line_endings(b"a\nb\n"), b"a\r\nb\r\n");
        assert_eq!(&*normalise_line_endings(b"a\r\nb\n"), b"a\r\nb\n");
        assert_eq!(&*normalise_line_endings(b"a\rb"), b"a\rb");
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=xYzZY").unwrap(),
            "xYzZY"
        );
        assert_eq!(
            boundary("Multipart/Form-Data; boundary=\"a\"").unwrap(),
            "a"
        );
        assert_eq!(
            boundary("multipart/form-data"),
            Err(InboundError::NoBoundary)
        );
        assert!(matches!(
            boundary("application/json"),
            Err(InboundError::NotMultipart(_))
        ));
        assert!(matches!(
            boundary("multipart/mixed; boundary=x"),
            Err(InboundError::NotMultipart(_))
        ));
    }
}
