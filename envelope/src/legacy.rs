//! The two shapes the legacy API Gateway mapping templates wrote straight to SQS, still found in
//! queues and in deployments not yet moved to the router:
//!
//! - `{"queue_url": "...", "body-json": <the JSON body, inlined>}` for Event Webhook posts. The
//!   body is the exact text of the inlined value (kept via `RawValue`, never re-serialised). It
//!   is not byte-identical to what SendGrid sent (API Gateway re-rendered it), so signatures
//!   cannot be checked on it.
//! - `{"queue_url": "...", "body-raw": b64(body), "http-headers": b64(Java map)}` for Inbound
//!   Parse posts. Stages configured with binary media types base64 the body a second time; we
//!   undo that only when the result is plainly multipart (starts with `--` or
//!   contains `--boundary` from the Content-Type).

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use crate::{b64, java_map, DecodeError, Envelope, Kind, Origin};

fn queue_url(fields: &BTreeMap<String, &RawValue>) -> Result<Option<String>, DecodeError> {
    match fields.get("queue_url") {
        None => Ok(None),
        Some(raw) => match serde_json::from_str::<Option<String>>(raw.get()) {
            Ok(v) => Ok(v),
            Err(_) => Err(DecodeError::BadLegacy("queue_url is not a string".into())),
        },
    }
}

fn string_field(
    fields: &BTreeMap<String, &RawValue>,
    name: &'static str,
) -> Result<Option<String>, DecodeError> {
    match fields.get(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<String>>(raw.get())
            .map_err(|_| DecodeError::BadLegacy(format!("{name} is not a string"))),
    }
}

pub(crate) fn decode_json(
    fields: &BTreeMap<String, &RawValue>,
    body: &RawValue,
) -> Result<Envelope, DecodeError> {
    Ok(Envelope {
        origin: Origin::SeedJson,
        kind: Kind::Events,
        received_at: None,
        source: None,
        headers: Vec::new(),
        content_type: Some("application/json".into()),
        body: body.get().as_bytes().to_vec().into(),
        queue_url: queue_url(fields)?,
    })
}

pub(crate) fn decode_raw(fields: &BTreeMap<String, &RawValue>) -> Result<Envelope, DecodeError> {
    let body_b64 = string_field(fields, "body-raw")?
        .ok_or_else(|| DecodeError::BadLegacy("body-raw is null".into()))?;
    let once = b64::decode_lenient(body_b64.as_bytes())
        .ok_or(DecodeError::BadBase64 { field: "body-raw" })?;
    let headers = match string_field(fields, "http-headers")? {
        None => Vec::new(),
        Some(h) => {
            let text = b64::decode_lenient(h.as_bytes()).ok_or(DecodeError::BadBase64 {
                field: "http-headers",
            })?;
            java_map::parse_java_map(&String::from_utf8_lossy(&text)).map_err(|e| match e {
                DecodeError::JavaMap(why) => DecodeError::JavaMap(format!("http-headers: {why}")),
                other => other,
            })?
        }
    };
    let content_type = headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.clone());
    let boundary = content_type.as_deref().and_then(boundary_of);
    let body = undo_double_base64(once, boundary.as_deref());
    Ok(Envelope {
        origin: Origin::SeedRaw,
        kind: Kind::Inbound,
        received_at: None,
        source: None,
        headers,
        content_type,
        body: body.into(),
        queue_url: queue_url(fields)?,
    })
}

/// If `once` is itself base64 of a multipart body, that body; otherwise `once` unchanged.
fn undo_double_base64(once: Vec<u8>, boundary: Option<&str>) -> Vec<u8> {
    if looks_multipart(&once, boundary) {
        return once;
    }
    match b64::decode_lenient(&once) {
        Some(twice) if looks_multipart(&twice, boundary) => twice,
        _ => once,
    }
}

/// A multipart body starts with `--` (after optional blank lines) or contains `--boundary`.
fn looks_multipart(body: &[u8], boundary: Option<&str>) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    if body[start..].starts_with(b"--") {
        return true;
    }
    match boundary {
        Some(b) if !b.is_empty() => {
            let needle = format!("--{b}");
            body.windows(needle.len()).any(|w| w == needle.as_bytes())
        }
        _ => false,
    }
}

/// The `boundary` parameter of a Content-Type value, unquoted.
pub(crate) fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_parsing() {
        assert_eq!(
            boundary_of("multipart/form-data; boundary=xYzZY").as_deref(),
            Some("xYzZY")
        );
        assert_eq!(
            boundary_of("multipart/form-data; BOUNDARY=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary_of("multipart/form-data"), None);
        assert_eq!(boundary_of("multipart/form-data; boundary="), None);
    }

    #[test]
    fn double_base64_only_when_multipart() {
        let body =
            b"--xYzZY\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--xYzZY--\r\n";
        let once = b64::encode(body).into_bytes();
        assert_eq!(
            undo_double_base64(once.clone(), Some("xYzZY")),
            body.to_vec()
        );
        // Base64-looking text that is not multipart stays as it was.
        assert_eq!(
            undo_double_base64(b"aGVsbG8=".to_vec(), Some("xYzZY")),
            b"aGVsbG8=".to_vec()
        );
        assert_eq!(
            undo_double_base64(body.to_vec(), Some("xYzZY")),
            body.to_vec()
        );
    }
}
