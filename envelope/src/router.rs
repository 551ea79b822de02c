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
use serde_json::value::RawValue;

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

/// Decodes a body already known to carry the `mailroom` key.
pub(crate) fn decode(version: &RawValue, text: &str) -> Result<Envelope, DecodeError> {
    let version: u64 = serde_json::from_str(version.get())
        .map_err(|_| DecodeError::BadVersion(truncate(version.get(), 40)))?;
    if version != 1 {
        return Err(if version == 0 {
            DecodeError::BadVersion("0".into())
        } else {
            DecodeError::UnsupportedVersion(version)
        });
    }
    let wire: WireV1<'_> =
        serde_json::from_str(text).map_err(|e| DecodeError::BadEnvelope(e.to_string()))?;
    let body =
        b64::decode_strict(&wire.body_b64).ok_or(DecodeError::BadBase64 { field: "body_b64" })?;
    Ok(Envelope {
        origin: Origin::Router { version: 1 },
        kind: wire.kind,
        received_at: wire.received_at,
        source: wire.source,
        headers: wire
            .headers
            .into_iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v))
            .collect(),
        content_type: wire.content_type,
        body,
        queue_url: None,
    })
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}
