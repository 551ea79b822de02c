//! multipart/form-data, parsed by `multer` over one in-memory chunk (no IO: the future is driven
//! by `futures::executor::block_on` and never waits). SendGrid posts CRLF bodies, but bodies
//! that went through tools or test harnesses sometimes have bare LF line endings; those are
//! normalised to CRLF first, and only when the body holds no CRLF at all, so binary file parts
//! of a proper CRLF body are never touched.

use std::borrow::Cow;
use std::convert::Infallible;

use bytes::Bytes;

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

/// Splits a form-data body into its parts, in order.
pub(crate) fn parse_form(content_type: &str, body: &[u8]) -> Result<Vec<FormPart>, InboundError> {
    let boundary = boundary(content_type)?;
    let body = Bytes::from(normalise_line_endings(body).into_owned());
    let stream = futures::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    futures::executor::block_on(async {
        let mut parts = Vec::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| InboundError::Malformed(e.to_string()))?
        {
            if parts.len() >= MAX_FORM_PARTS {
                return Err(InboundError::Malformed(format!(
                    "more than {MAX_FORM_PARTS} parts"
                )));
            }
            let name = field.name().unwrap_or_default().to_string();
            let filename = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(|m| m.to_string());
            let data = field
                .bytes()
                .await
                .map_err(|e| InboundError::Malformed(e.to_string()))?;
            parts.push(FormPart {
                name,
                filename,
                content_type,
                data,
            });
        }
        if parts.is_empty() {
            return Err(InboundError::Malformed("no parts".into()));
        }
        Ok(parts)
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
