//! IO-free decoders for what SendGrid posts: Event Webhook batches, Inbound Parse
//! multipart/form-data (parsed and raw mode, raw MIME read as mail clients read it), and the signed Event
//! Webhook signature check. Pure functions over bytes, so they can be golden-file tested and
//! fuzzed, and used by both the router (signatures) and the worker (everything).
//!
//! CONTRACT (other crates are written against these names; keep them):
//! - [`Event`], `parse_events(&[u8]) -> Result<Vec<Event>, EventsError>`
//! - [`InboundEmail`], [`Attachment`], [`InboundMode`],
//!   `parse_inbound(content_type: &str, body: &[u8]) -> Result<InboundEmail, InboundError>`
//!   (and [`parse_inbound_shared`] over a shared body, whose slices the email keeps)
//! - `verify_signature(public_key_b64: &str, signature_b64: &str, timestamp: &str, body: &[u8])
//!    -> Result<(), SignatureError>`, header name constants [`SIGNATURE_HEADER`], [`TIMESTAMP_HEADER`]
//!
//! Added beside the contract: [`PublicKey`] (parse once, verify many), [`check_timestamp`]
//! (replay window), the typed errors [`EventsError`], [`InboundError`], [`SignatureError`], and
//! `Event::pool_name` / `Event::pool_id`.
//!
//! Modules, one job each: [`events`], [`inbound`] (with `multipart`, `mime`, `header`,
//! `transfer`, `charset`),
//! [`signature`]. Everything is re-exported here.

use bytes::Bytes;
use chrono::{DateTime, Utc};

pub mod events;
pub mod inbound;
pub mod signature;

pub use events::{parse_events, EventsError};
pub use inbound::{parse_inbound, parse_inbound_shared, InboundError};
pub use signature::{check_timestamp, verify_signature, PublicKey, SignatureError, SignedDigest};

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// One Event Webhook event: typed columns for what applications query, plus the whole object.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// SendGrid's unique event id; when absent, `"synthetic:"` + hex sha256 of the event's JSON
    /// text, so storing stays idempotent.
    pub sg_event_id: String,
    /// processed, dropped, delivered, deferred, bounce, open, click, spamreport, unsubscribe,
    /// group_unsubscribe, group_resubscribe, account_status_change, or any future type.
    pub event: String,
    pub email: Option<String>,
    /// `timestamp`, seconds or milliseconds since the epoch.
    pub occurred_at: Option<DateTime<Utc>>,
    pub sg_message_id: Option<String>,
    /// `smtp-id`
    pub smtp_id: Option<String>,
    /// `category`: a string or an array in the payload, always a list here.
    pub categories: Vec<String>,
    pub reason: Option<String>,
    pub status: Option<String>,
    pub response: Option<String>,
    /// `attempt`, a string in the payload.
    pub attempt: Option<i32>,
    /// `type` on bounce events: "bounce" or "blocked".
    pub bounce_type: Option<String>,
    pub bounce_classification: Option<String>,
    pub url: Option<String>,
    /// `url_offset.index`
    pub url_offset_index: Option<i32>,
    pub useragent: Option<String>,
    pub ip: Option<String>,
    /// `tls` (0/1 in the payload)
    pub tls: Option<bool>,
    pub sg_machine_open: Option<bool>,
    /// `asm_group_id`
    pub asm_group_id: Option<i64>,
    pub marketing_campaign_id: Option<i64>,
    pub marketing_campaign_name: Option<String>,
    /// `pool.name` (IP pool) on processed events.
    pub pool_name: Option<String>,
    /// `pool.id`, a number or a numeric string in the payload.
    pub pool_id: Option<i64>,
    /// The event object exactly as SendGrid sent it (custom args are flattened into it), kept
    /// as its JSON text.
    pub raw: EventJson,
}

/// An event object's JSON text, exactly as it was in the batch (validated, not re-serialized).
///
/// Kept as text rather than a `serde_json::Value` because a parsed value costs several times its
/// text in memory (a map node, a key `String` and a 32-byte `Value` per field), and the worker
/// holds every event of a batch until its transaction commits; the store hands this text to
/// Postgres as it is.
#[derive(Debug, Clone)]
pub struct EventJson(Box<serde_json::value::RawValue>);

impl EventJson {
    /// The JSON text of the event object.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The JSON text as a [`RawValue`](serde_json::value::RawValue), which serializes verbatim.
    pub fn as_raw(&self) -> &serde_json::value::RawValue {
        &self.0
    }

    /// The event object parsed (for callers that want to look inside it).
    pub fn to_value(&self) -> serde_json::Value {
        // The text was parsed once already, so this cannot fail; Null would only hide a bug.
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for EventJson {
    /// Same JSON value, whatever the spacing or key order.
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.to_value() == other.to_value()
    }
}

/// How Inbound Parse posted the email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundMode {
    /// Default: SendGrid parsed the email into fields and file parts.
    Parsed,
    /// "POST the raw, full MIME message": the `email` field.
    Raw,
}

/// An attachment or inline part, bytes exact.
///
/// Build one with `..Default::default()` for the fields you do not set, so a field added later
/// does not break the construction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attachment {
    pub filename: Option<String>,
    /// The MIME type, lower-case (`image/png`); in parsed mode the part's Content-Type as sent.
    pub content_type: Option<String>,
    /// The Content-ID without angle brackets, as `cid:` URLs name it.
    pub content_id: Option<String>,
    /// "attachment" or "inline"
    pub disposition: Option<String>,
    /// The decoded bytes (raw mode: after the transfer encoding). A slice of the post's body
    /// when it is stored there as sent (parsed-mode file parts, raw-mode parts without a
    /// transfer encoding), its own buffer when decoded.
    pub data: Bytes,
    /// Raw mode: what was wrong with the part's transfer encoding, when it was not clean
    /// (`base64: missing padding`, or `labelled base64 but is not base64 ...; kept as sent`, in
    /// which case `data` holds the part's bytes as sent). `None` when it decoded cleanly.
    pub decode_note: Option<String>,
}

/// One inbound email, decoded to UTF-8.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InboundEmail {
    pub mode: Option<InboundMode>,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The raw header block of the email.
    pub headers: Option<String>,
    pub dkim: Option<String>,
    pub spf: Option<String>,
    pub sender_ip: Option<String>,
    pub spam_score: Option<f64>,
    pub spam_report: Option<String>,
    /// `envelope` field (JSON: to, from).
    pub envelope: Option<serde_json::Value>,
    /// `charsets` field (JSON).
    pub charsets: Option<serde_json::Value>,
    /// `content-ids` field (JSON).
    pub content_ids: Option<serde_json::Value>,
    /// `attachment-info` field (JSON).
    pub attachment_info: Option<serde_json::Value>,
    pub attachments: Vec<Attachment>,
    /// Raw mode: the full MIME message, a slice of the post's body (not a copy).
    pub raw_mime: Option<Bytes>,
}
