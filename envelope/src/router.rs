//! The router envelope, version 1: what `mailroom-router` writes for every callback.
//!
//! ```json
//! {"mailroom":1,"kind":"events","received_at":"2026-01-02T03:04:05.678Z",
//!  "source":{"path":"/sendgrid/events","stage":"prod","request_id":"abc"},
//!  "headers":[["content-type","application/json"],["x-twilio-email-event-webhook-signature","..."]],
//!  "content_type":"application/json","body_b64":"W3siZXZlbnQiOi..."}
//! ```
//!
//! Why this shape: the body travels as base64 of the exact bytes received, because the signed
//! Event Webhook signature covers those bytes and Inbound Parse bodies may hold binary
//! attachments; headers are a JSON list of pairs (not a map) so order and repeats survive. The
//! `mailroom` key both marks the shape and versions it: a reader meets a newer number with
//! [`DecodeError::UnsupportedVersion`] rather than guessing. Unknown extra keys in a v1 envelope
//! are ignored, so v1 may grow optional fields without a version bump.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{b64, DecodeError, Envelope, Kind, Origin, Source, ENVELOPE_VERSION};

#[derive(Serialize)]
struct WireOut<'a> {
    mailroom: u32,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    received_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a Source>,
    headers: Vec<(String, &'a str)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    body_b64: String,
}

#[derive(Deserialize)]
struct WireV1<'a> {
    kind: Kind,
    #[serde(default)]
    received_at: Option<DateTime<Utc>>,
    #[serde(default)]
    source: Option<Source>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    content_type: Option<String>,
    /// Borrowed from the message text (base64 has no JSON escapes): no copy before decoding.
    #[serde(borrow)]
    body_b64: std::borrow::Cow<'a, str>,
}

/// Writes `envelope` as a router envelope v1 (its `origin` and `queue_url` are not written: the
/// result always reads back as [`Origin::Router`]). Header names are written lower-cased.
pub fn encode(envelope: &Envelope) -> String {
    let wire = WireOut {
        mailroom: ENVELOPE_VERSION,
        kind: envelope.kind,
        received_at: envelope
            .received_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        source: envelope.source.as_ref(),
        headers: envelope
            .headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
            .collect(),
        content_type: envelope.content_type.as_deref(),
        body_b64: b64::encode(&envelope.body),
    };
    // Serializing plain strings, numbers and lists cannot fail.
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Decodes a body already known to carry the `mailroom` key (`version`: that value's JSON).
pub(crate) fn decode(version: &str, text: &str) -> Result<Envelope, DecodeError> {
    check_version(version)?;
    let wire = parse(text)?;
    let body =
        b64::decode_strict(&wire.body_b64).ok_or(DecodeError::BadBase64 { field: "body_b64" })?;
    Ok(wire.into_envelope(body.into()))
}

/// [`decode`] over an owned text: when `body_b64` is a plain slice of the text (no JSON
/// escapes, as [`encode`] writes it), it is decoded in place in the text's buffer, which becomes
/// the body; otherwise as [`decode`] does. The JSON starts at `json_at` of `text`.
pub(crate) fn decode_owned(
    version: &str,
    text: String,
    json_at: usize,
) -> Result<Envelope, DecodeError> {
    check_version(version)?;
    let (range, wire) = {
        let mut wire = parse(text.get(json_at..).unwrap_or_default())?;
        let range = match &wire.body_b64 {
            std::borrow::Cow::Borrowed(b64) => {
                // Where the borrowed field lies in the text (addresses compared, nothing read).
                let start = b64.as_ptr() as usize - text.as_ptr() as usize;
                Some(start..start + b64.len())
            }
            std::borrow::Cow::Owned(_) => None,
        };
        let Some(range) = range else {
            let body = b64::decode_strict(&wire.body_b64)
                .ok_or(DecodeError::BadBase64 { field: "body_b64" })?;
            return Ok(wire.into_envelope(body.into()));
        };
        wire.body_b64 = std::borrow::Cow::Borrowed("");
        (range, wire.into_owned())
    };
    let body = b64::decode_strict_in_place(text.into_bytes(), range)
        .ok_or(DecodeError::BadBase64 { field: "body_b64" })?;
    Ok(wire.into_envelope(body.into()))
}

fn check_version(version: &str) -> Result<(), DecodeError> {
    let version: u64 = serde_json::from_str(version)
        .map_err(|_| DecodeError::BadVersion(truncate(version, 40)))?;
    match version {
        1 => Ok(()),
        0 => Err(DecodeError::BadVersion("0".into())),
        other => Err(DecodeError::UnsupportedVersion(other)),
    }
}

fn parse(text: &str) -> Result<WireV1<'_>, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError::BadEnvelope(e.to_string()))
}

impl WireV1<'_> {
    /// The same fields, no longer borrowing the text (`body_b64` must be borrowed or empty).
    fn into_owned(self) -> WireV1<'static> {
        WireV1 {
            kind: self.kind,
            received_at: self.received_at,
            source: self.source,
            headers: self.headers,
            content_type: self.content_type,
            body_b64: std::borrow::Cow::Owned(self.body_b64.into_owned()),
        }
    }

    fn into_envelope(self, body: bytes::Bytes) -> Envelope {
        Envelope {
            origin: Origin::Router { version: 1 },
            kind: self.kind,
            received_at: self.received_at,
            source: self.source,
            headers: self
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            content_type: self.content_type,
            body,
            queue_url: None,
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
