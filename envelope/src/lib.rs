//! Mailroom's wire formats, with no IO: what goes into an SQS message body and how to read it back.
//!
//! Shared by `mailroom-router` (which encodes) and the `mailroom` worker (which decodes), so the two
//! can never disagree about the format. Everything here is a pure function over bytes and strings;
//! fetching an offloaded body from S3 is the caller's job (see [`S3Pointer`]).
//!
//! CONTRACT (other crates are written against these names; keep them):
//! - [`Envelope`], [`Kind`], [`Origin`], [`Source`]
//! - [`decode`] (any SQS body -> [`Decoded`]), [`decode_owned`] (the same, consuming the text so
//!   a large body is decoded in its buffer), [`encode`] (router envelope -> SQS body)
//! - [`S3Pointer`] with `to_message_body()`, [`EXTENDED_PAYLOAD_SIZE_ATTRIBUTES`]
//! - [`ATTR_KIND`], [`ATTR_VERSION`] (SQS message attribute names the router sets)
//! - [`DecodeError`] (typed, `Display` is the clear reason stored in dead letters)
//!
//! # Shapes [`decode`] reads
//!
//! 1. **Router envelope v1** (what [`encode`] writes; see the [`router`] module for the format
//!    and why): `{"mailroom":1,"kind":"events"|"inbound","received_at":RFC3339,
//!    "source":{"path","stage","request_id"},"headers":[[name,value],...],"content_type":..,
//!    "body_b64":"..."}`. The body is base64 of the exact bytes received. A `mailroom` value
//!    other than 1 is refused with `unsupported envelope version N`.
//! 2. **Legacy mapping templates** ([`legacy`]): `{"queue_url","body-json":<inlined JSON>}`
//!    (Event Webhook) and `{"queue_url","body-raw":b64,"http-headers":b64 Java map}` (Inbound
//!    Parse, possibly base64'd twice). Headers are parsed by [`parse_java_map`].
//! 3. **SQS Extended Client pointer** ([`mod@pointer`]): `["software.amazon.payloadoffloading.
//!    PayloadS3Pointer",{"s3BucketName":"b","s3Key":"k"}]`, returned as [`Decoded::Pointer`].
//!
//! Decoding never panics; inputs are bounded by [`MAX_MESSAGE_BYTES`] and serde_json's
//! recursion limit.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod b64;
mod error;
pub mod java_map;
pub mod legacy;
pub mod pointer;
pub mod router;

pub use error::DecodeError;
pub use java_map::parse_java_map;
pub use pointer::{LEGACY_POINTER_CLASS, POINTER_CLASS};
pub use router::encode;

/// Largest SQS body (or fetched S3 object) [`decode`] accepts: SendGrid caps an inbound email at
/// 30 MB, which is about 54 MB once base64'd twice by a legacy template.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Version of the router envelope this crate writes.
pub const ENVELOPE_VERSION: u32 = 1;
/// SQS message attribute (String) carrying the [`Kind`], so a consumer can route without parsing.
pub const ATTR_KIND: &str = "mailroom.kind";
/// SQS message attribute (Number) carrying the envelope version.
pub const ATTR_VERSION: &str = "mailroom.version";
/// Message attributes the SQS Extended Client libraries set on a message whose body is an
/// [`S3Pointer`] (Java v1 used `SQSLargePayloadSize`, later versions `ExtendedPayloadSize`).
pub const EXTENDED_PAYLOAD_SIZE_ATTRIBUTES: [&str; 2] =
    ["ExtendedPayloadSize", "SQSLargePayloadSize"];

/// Which SendGrid callback a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An Event Webhook batch: a JSON array of events.
    Events,
    /// An Inbound Parse post: multipart/form-data.
    Inbound,
    /// An application's own message, taken from the SQS body as its producer sent it (a queue
    /// with `message_format = "plain"`); never written by the router.
    Message,
}

/// Which shape the message was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Mailroom's router envelope, with its version.
    Router { version: u32 },
    /// Legacy mapping template: `{"queue_url": ..., "body-json": <inlined JSON>}`.
    SeedJson,
    /// Legacy mapping template: `{"queue_url": ..., "body-raw": b64, "http-headers": b64}`.
    SeedRaw,
    /// Not an envelope: the SQS body itself ([`Envelope::plain`]).
    Plain,
}

/// Where the router received the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Request path, e.g. `/sendgrid/events`.
    pub path: String,
    /// API Gateway stage, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// API Gateway / Lambda request id, for tracing a message back to the edge logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The configured name of the webhook (or inbound parse setting) whose route received the
    /// request (`/sendgrid/events/{name}`); absent on the unnamed default routes. SendGrid's
    /// payload does not say which of an account's webhooks sent it, so the URL does, and the
    /// worker stores this as each row's `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// The longest webhook route name.
pub const MAX_WEBHOOK_NAME_LEN: usize = 64;

/// The one rule for webhook route names ([`Source::webhook`]), shared so the router (which
/// refuses others at start) and the worker (which labels metrics with them) cannot disagree:
/// 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit. They are URL path
/// segments, metric label values and column values, so they stay plain.
pub fn valid_webhook_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_WEBHOOK_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// One SendGrid callback as the worker sees it, whatever shape it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub origin: Origin,
    pub kind: Kind,
    /// When the edge received it (absent in the legacy shapes).
    pub received_at: Option<DateTime<Utc>>,
    pub source: Option<Source>,
    /// Request headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// The request body, exact bytes as received (signatures cover these bytes). Shared, not
    /// copied: a decoder may hand out slices of it (an inbound email's raw MIME, its parsed-mode
    /// attachments) that point into this one buffer.
    pub body: Bytes,
    /// `queue_url` of the legacy shapes, kept for diagnostics.
    pub queue_url: Option<String>,
}

impl Envelope {
    /// An application's own message: the SQS body as sent, nothing decoded.
    pub fn plain(body: impl Into<Bytes>, sent_at: Option<DateTime<Utc>>) -> Self {
        Envelope {
            origin: Origin::Plain,
            kind: Kind::Message,
            received_at: sent_at,
            source: None,
            headers: Vec::new(),
            content_type: None,
            body: body.into(),
            queue_url: None,
        }
    }

    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An SQS Extended Client pointer: the real body lives in S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Pointer {
    pub bucket: String,
    pub key: String,
}

/// What an SQS message body decodes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Envelope(Envelope),
    /// Fetch the object, then [`decode`] its contents (which must not be another pointer).
    Pointer(S3Pointer),
}

/// Decodes any SQS message body Mailroom may meet: a router envelope, a legacy mapping-template
/// object, or an Extended Client pointer (whose object the caller fetches and decodes in turn).
pub fn decode(sqs_body: &str) -> Result<Decoded, DecodeError> {
    if sqs_body.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            len: sqs_body.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let text = trim_start(sqs_body);
    match text.as_bytes().first() {
        Some(b'[') => {
            if let Some(p) = pointer::decode(text)? {
                return Ok(Decoded::Pointer(p));
            }
            check_json(text)?;
            Err(DecodeError::Unrecognised)
        }
        Some(b'{') => {
            let fields: BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
                Ok(f) => f,
                Err(e) => return Err(DecodeError::NotJson(e.to_string())),
            };
            if let Some(version) = fields.get("mailroom") {
                router::decode(version.get(), text).map(Decoded::Envelope)
            } else if let Some(body) = fields.get("body-json") {
                legacy::decode_json(&fields, body).map(Decoded::Envelope)
            } else if fields.contains_key("body-raw") {
                legacy::decode_raw(&fields).map(Decoded::Envelope)
            } else {
                Err(DecodeError::Unrecognised)
            }
        }
        _ => {
            check_json(text)?;
            Err(DecodeError::Unrecognised)
        }
    }
}

/// [`decode`], consuming the text: a router envelope's body is decoded from base64 inside the
/// text's own buffer, which then becomes [`Envelope::body`]. Why: an offloaded inbound email is
/// up to 40 MB of envelope text, and decoded into a fresh buffer the text and the body (three
/// quarters of its size) were held at once; here the peak is the text alone. The same result
/// as [`decode`] for every input (`tests/props.rs`).
pub fn decode_owned(sqs_body: String) -> Result<Decoded, DecodeError> {
    match router_version(&sqs_body) {
        Some((version, json_at)) => {
            router::decode_owned(&version, sqs_body, json_at).map(Decoded::Envelope)
        }
        None => decode(&sqs_body),
    }
}

/// The JSON text of the `mailroom` value when `sqs_body` is a router envelope (an object with
/// that key, within the size limit), and where the JSON starts (after a BOM or whitespace);
/// `None` for anything else, which [`decode`] reads.
fn router_version(sqs_body: &str) -> Option<(String, usize)> {
    if sqs_body.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let text = trim_start(sqs_body);
    if !text.starts_with('{') {
        return None;
    }
    let fields: BTreeMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let version = fields.get("mailroom")?.get().to_string();
    Some((version, sqs_body.len() - text.len()))
}

/// A BOM and whitespace before the JSON are not part of it.
fn trim_start(sqs_body: &str) -> &str {
    sqs_body.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n'])
}

/// `NotJson` with serde_json's reason when `text` is not JSON at all.
fn check_json(text: &str) -> Result<(), DecodeError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| DecodeError::NotJson(e.to_string()))
}
