//! `mailroom queues dlq peek|redrive`: look at and move back the messages of a queue's DLQ.
//!
//! Peek holds what it reads while it reads (at most `PEEK_HOLD_SECS`, so each message is shown
//! once), then releases it at once (visibility 0) on every path, also when a receive failed
//! part way: messages are never consumed. It shows what an operator peeks for: not the SQS body
//! (an envelope with the callback as base64 inside) but the envelope decoded with
//! [`mailroom_envelope::decode`] (an S3 pointer is named, not fetched: a peek does no IO beyond
//! SQS) and the SendGrid callback inside it: an Event Webhook batch pretty-printed as sent with
//! its event count, an Inbound Parse post as a summary of its form fields (the email's text and
//! files are the store's business, not a terminal's). `--raw` prints the exact SQS body, uncut;
//! `--json` one object per message for scripts.
//!
//! Redrive prefers SQS's own StartMessageMoveTask; where the server lacks it, it copies:
//! receive, SendMessageBatch to the source (body and message attributes kept), and deletes from
//! the DLQ only the entries SQS accepted, so a message is never lost; it could only be doubled
//! if a delete fails after its copy was sent, which is reported (and harmless: every Mailroom
//! write is idempotent).

use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, SendMessageBatchRequestEntry,
};

use super::{Ctx, PeekArgs};
use crate::sqs::{self, describe};

/// How `redrive` moves messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// StartMessageMoveTask, else copy.
    Auto,
    /// StartMessageMoveTask only.
    MoveTask,
    /// Receive, send, delete.
    Copy,
}

/// How long peek holds what it read before releasing it (it releases as soon as it is done).
const PEEK_HOLD_SECS: i32 = 30;
const COPY_HOLD_SECS: i32 = 60;
/// Consecutive empty receives that mean "the DLQ is drained".
const EMPTY_RECEIVES_TO_STOP: u32 = 2;
const MOVE_TASK_WAIT: Duration = Duration::from_secs(600);

async fn receive(ctx: &Ctx, url: &str, max: usize, hold_secs: i32) -> Result<Vec<Message>> {
    let out = ctx
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, 10) as i32)
        .wait_time_seconds(1)
        .visibility_timeout(hold_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("ReceiveMessage on the DLQ")?;
    Ok(out.messages.unwrap_or_default())
}

pub async fn peek(ctx: &Ctx, args: &PeekArgs) -> Result<()> {
    let (dlq_name, dlq_url) = ctx.dlq_of(&args.queue).await?;
    let max = args.max;
    let mut seen = HashSet::new();
    let mut held: Vec<String> = Vec::new();
    let mut empty = 0;
    let mut shown = Vec::new();
    let mut receive_failed = None;
    while shown.len() < max && empty < EMPTY_RECEIVES_TO_STOP {
        let messages = match receive(ctx, &dlq_url, max - shown.len(), PEEK_HOLD_SECS).await {
            Ok(messages) => messages,
            Err(e) => {
                // Release what is held before reporting, and show what was read.
                receive_failed = Some(e);
                break;
            }
        };
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in messages {
            if let Some(r) = &m.receipt_handle {
                held.push(r.clone());
            }
            let id = m.message_id.clone().unwrap_or_default();
            if seen.insert(id) {
                shown.push(m);
            }
        }
    }
    let released = release(ctx, &dlq_url, &held).await;
    let summary = format!(
        "DLQ {dlq_name} of queue \"{}\": {} message(s) shown, none consumed",
        args.queue,
        shown.len()
    );
    let mut out = std::io::stdout().lock();
    if args.json {
        eprintln!("{summary}");
    } else {
        writeln!(out, "{summary}")?;
    }
    for m in &shown {
        let view = view::MessageView::of(m, args.raw);
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&view)?)?;
        } else {
            view.print(&mut out, args.raw)?;
        }
    }
    out.flush()?;
    drop(out);
    if let Err(e) = released {
        eprintln!(
            "mailroom: warning: {}; the messages reappear after {PEEK_HOLD_SECS} s",
            crate::error_text::error_text(&e)
        );
    }
    match receive_failed {
        Some(e) => Err(e.context(format!("peek stopped after {} message(s)", shown.len()))),
        None => Ok(()),
    }
}

/// What `peek` shows of one message: the SQS facts, then the decoded envelope and callback.
/// Built once, printed as text or serialized as one JSON object.
mod view {
    use std::collections::BTreeMap;
    use std::io::{self, Write};

    use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
    use chrono::{DateTime, SecondsFormat, Utc};
    use mailroom_envelope::{Decoded, Envelope, Kind, Origin, Source};
    use serde::Serialize;
    use serde_json::value::RawValue;

    use super::form;

    /// Characters of an unreadable body shown in the text view (`--raw` shows all of it).
    const PREVIEW_CHARS: usize = 2000;
    /// Form fields whose values the summary shows (the rest: name and size only).
    const SHOWN_FIELDS: [&str; 3] = ["from", "to", "subject"];
    /// Characters of a shown field value.
    const VALUE_CHARS: usize = 300;

    #[derive(Debug, Serialize)]
    pub struct MessageView {
        message_id: String,
        receive_count: Option<u64>,
        /// SentTimestamp as RFC 3339 (UTC).
        sent_at: Option<String>,
        /// Message attributes: string values, binary ones as `(binary, N bytes)`.
        attributes: BTreeMap<String, String>,
        sqs_body_bytes: usize,
        #[serde(flatten)]
        decoded: DecodedView,
        /// The exact SQS body (`--raw`).
        #[serde(skip_serializing_if = "Option::is_none")]
        sqs_body: Option<String>,
        #[serde(skip)]
        body: String,
    }

    #[derive(Debug, Serialize)]
    #[serde(tag = "decoded", rename_all = "snake_case")]
    enum DecodedView {
        Envelope(EnvelopeView),
        S3Pointer { bucket: String, key: String },
        Undecodable { error: String },
    }

    #[derive(Debug, Serialize)]
    struct EnvelopeView {
        origin: String,
        kind: Kind,
        content_type: Option<String>,
        /// When the edge received it (RFC 3339, UTC); absent in the legacy shapes.
        received_at: Option<String>,
        source: Option<Source>,
        body_bytes: usize,
        #[serde(flatten)]
        callback: CallbackView,
    }

    #[derive(Debug, Serialize)]
    #[serde(tag = "body", rename_all = "snake_case")]
    enum CallbackView {
        /// An Event Webhook batch (a JSON array, counted; anything else JSON is shown as is).
        Events {
            event_count: Option<usize>,
            /// The batch as sent (keys in their order, numbers exact).
            events: Box<RawValue>,
        },
        /// An Inbound Parse post.
        Form {
            field_count: usize,
            file_count: usize,
            fields: Vec<FieldView>,
        },
        /// An application's own message that is JSON.
        Json { value: Box<RawValue> },
        /// An application's own message that is not JSON.
        Text { text: String },
        /// A body that does not read as its kind says.
        Unreadable {
            body_error: String,
            body_preview: String,
        },
    }

    #[derive(Debug, Serialize)]
    struct FieldView {
        name: String,
        bytes: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        /// The value, for the subject, from and to fields.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    }

    fn rfc3339(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn cut(text: &str, chars: usize) -> String {
        let mut out: String = text.chars().take(chars).collect();
        if out.len() < text.len() {
            out.push_str("...");
        }
        out
    }

    fn origin(o: Origin) -> String {
        match o {
            Origin::Router { version } => format!("router v{version}"),
            Origin::SeedJson => "legacy mapping template (body-json)".into(),
            Origin::SeedRaw => "legacy mapping template (body-raw)".into(),
            Origin::Plain => "plain".into(),
        }
    }

    fn kind_name(k: Kind) -> &'static str {
        match k {
            Kind::Events => "events",
            Kind::Inbound => "inbound",
            Kind::Message => "message",
        }
    }

    impl MessageView {
        pub fn of(m: &Message, raw: bool) -> Self {
            let system = m.attributes.clone().unwrap_or_default();
            let get = |k: MessageSystemAttributeName| system.get(&k).cloned();
            let sent_at = get(MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis)
                .map(rfc3339);
            let attributes = m
                .message_attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let value = match (v.string_value, v.binary_value) {
                        (Some(s), _) => s,
                        (None, Some(b)) => format!("(binary, {} bytes)", b.as_ref().len()),
                        (None, None) => String::new(),
                    };
                    (k, value)
                })
                .collect();
            let body = m.body.clone().unwrap_or_default();
            let decoded = match mailroom_envelope::decode(&body) {
                Ok(Decoded::Envelope(e)) => DecodedView::Envelope(EnvelopeView::of(e)),
                Ok(Decoded::Pointer(p)) => DecodedView::S3Pointer {
                    bucket: p.bucket,
                    key: p.key,
                },
                Err(e) => DecodedView::Undecodable {
                    error: e.to_string(),
                },
            };
            MessageView {
                message_id: m.message_id.clone().unwrap_or_default(),
                receive_count: get(MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c| c.parse().ok()),
                sent_at,
                attributes,
                sqs_body_bytes: body.len(),
                decoded,
                sqs_body: raw.then(|| body.clone()),
                body,
            }
        }

        /// The text view: facts first, then the envelope, then the callback (or, with `raw`,
        /// the exact SQS body instead).
        pub fn print(&self, out: &mut impl Write, raw: bool) -> io::Result<()> {
            let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
            writeln!(out, "--- message {}", self.message_id)?;
            writeln!(
                out,
                "receive count  {}",
                self.receive_count
                    .map_or_else(|| "?".to_string(), |c| c.to_string())
            )?;
            writeln!(out, "sent           {}", or_unknown(&self.sent_at))?;
            for (k, v) in &self.attributes {
                writeln!(out, "attribute      {k} = {v}")?;
            }
            if raw {
                writeln!(out, "sqs body       {} bytes, exact:", self.sqs_body_bytes)?;
                return writeln!(out, "{}", self.body);
            }
            match &self.decoded {
                DecodedView::S3Pointer { bucket, key } => writeln!(
                    out,
                    "envelope       S3 pointer: bucket {bucket}, key {key} (the body is in S3; \
                     not fetched)"
                ),
                DecodedView::Undecodable { error } => {
                    writeln!(out, "envelope       does not decode: {error}")?;
                    writeln!(
                        out,
                        "sqs body       {} bytes{}:",
                        self.sqs_body_bytes,
                        if self.body.chars().count() > PREVIEW_CHARS {
                            format!(", first {PREVIEW_CHARS} characters (--raw for all)")
                        } else {
                            String::new()
                        }
                    )?;
                    writeln!(out, "{}", cut(&self.body, PREVIEW_CHARS))
                }
                DecodedView::Envelope(e) => e.print(out),
            }
        }
    }

    impl EnvelopeView {
        fn of(e: Envelope) -> Self {
            let content_type = e
                .content_type
                .clone()
                .or_else(|| e.header("content-type").map(str::to_string));
            let callback = CallbackView::of(e.kind, content_type.as_deref(), &e.body);
            EnvelopeView {
                origin: origin(e.origin),
                kind: e.kind,
                content_type,
                received_at: e.received_at.map(rfc3339),
                source: e.source,
                body_bytes: e.body.len(),
                callback,
            }
        }

        fn print(&self, out: &mut impl Write) -> io::Result<()> {
            writeln!(
                out,
                "envelope       {}, kind {}, content type {}",
                self.origin,
                kind_name(self.kind),
                self.content_type.as_deref().unwrap_or("-")
            )?;
            let mut received = self.received_at.clone().unwrap_or_else(|| "-".into());
            if let Some(s) = &self.source {
                received.push_str(&format!(", at {}", s.path));
                if let Some(stage) = &s.stage {
                    received.push_str(&format!(" (stage {stage})"));
                }
                if let Some(id) = &s.request_id {
                    received.push_str(&format!(", request id {id}"));
                }
            }
            writeln!(out, "received       {received}")?;
            let bytes = self.body_bytes;
            match &self.callback {
                CallbackView::Events {
                    event_count,
                    events,
                } => {
                    let count = event_count
                        .map_or_else(|| "not an array".into(), |n| format!("{n} event(s)"));
                    writeln!(
                        out,
                        "body           {bytes} bytes, Event Webhook batch: {count}"
                    )?;
                    writeln!(out, "{}", pretty(events.get()))
                }
                CallbackView::Form {
                    field_count,
                    file_count,
                    fields,
                } => {
                    writeln!(
                        out,
                        "body           {bytes} bytes, Inbound Parse form: {field_count} \
                         field(s), {file_count} file(s)"
                    )?;
                    let width = fields.iter().map(|f| f.name.len()).max().unwrap_or(0);
                    for f in fields {
                        let mut line = format!("  {:<width$}  {:>9} bytes", f.name, f.bytes);
                        if f.filename.is_some() || f.content_type.is_some() {
                            line.push_str(&format!(
                                "  file {:?} ({})",
                                f.filename.as_deref().unwrap_or(""),
                                f.content_type.as_deref().unwrap_or("no content type")
                            ));
                        }
                        if let Some(v) = &f.value {
                            line.push_str(&format!("  {v}"));
                        }
                        writeln!(out, "{line}")?;
                    }
                    Ok(())
                }
                CallbackView::Json { value } => {
                    writeln!(out, "body           {bytes} bytes, JSON:")?;
                    writeln!(out, "{}", pretty(value.get()))
                }
                CallbackView::Text { text } => {
                    writeln!(out, "body           {bytes} bytes, text:")?;
                    writeln!(out, "{text}")
                }
                CallbackView::Unreadable {
                    body_error,
                    body_preview,
                } => {
                    writeln!(
                        out,
                        "body           {bytes} bytes, unreadable: {body_error}"
                    )?;
                    writeln!(out, "{body_preview}")
                }
            }
        }
    }

    /// Valid JSON text indented by two spaces per level, everything else kept as sent: keys in
    /// their order and numbers exact (a `serde_json::Value` would sort the keys and round
    /// integers beyond 64 bits).
    pub(super) fn pretty(json: &str) -> String {
        let mut out = String::with_capacity(json.len() * 2);
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut chars = json.chars().peekable();
        let newline = |out: &mut String, depth: usize| {
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
        };
        while let Some(c) = chars.next() {
            if in_string {
                out.push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                '{' | '[' => {
                    out.push(c);
                    while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                        chars.next();
                    }
                    if matches!(chars.peek(), Some('}' | ']')) {
                        out.extend(chars.next()); // empty: {} or []
                    } else {
                        depth += 1;
                        newline(&mut out, depth);
                    }
                }
                '}' | ']' => {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                    out.push(c);
                }
                ',' => {
                    out.push(c);
                    newline(&mut out, depth);
                }
                ':' => out.push_str(": "),
                c if c.is_ascii_whitespace() => {}
                c => out.push(c),
            }
        }
        out
    }

    impl CallbackView {
        fn of(kind: Kind, content_type: Option<&str>, body: &[u8]) -> Self {
            let unreadable = |body_error: String| CallbackView::Unreadable {
                body_error,
                body_preview: cut(&String::from_utf8_lossy(body), PREVIEW_CHARS),
            };
            match kind {
                Kind::Events => match serde_json::from_slice::<Box<RawValue>>(body) {
                    Ok(events) => CallbackView::Events {
                        event_count: serde_json::from_str::<Vec<&RawValue>>(events.get())
                            .ok()
                            .map(|batch| batch.len()),
                        events,
                    },
                    Err(e) => unreadable(format!("not JSON: {e}")),
                },
                Kind::Inbound => match form::parse(content_type, body) {
                    Ok(parts) => {
                        // The shown values decoded as the worker decodes them (by the charsets
                        // field), when the post parses; else the bytes as UTF-8.
                        let email = content_type.and_then(|ct| {
                            mailroom_sendgrid::inbound::parse_inbound(ct, body).ok()
                        });
                        let decoded = |name: &str| {
                            let email = email.as_ref()?;
                            match name {
                                "from" => email.from.clone(),
                                "to" => email.to.clone(),
                                "subject" => email.subject.clone(),
                                _ => None,
                            }
                        };
                        let fields: Vec<FieldView> = parts
                            .into_iter()
                            .map(|p| {
                                let file = p.filename.is_some() || p.content_type.is_some();
                                let shown = !file && SHOWN_FIELDS.contains(&p.name.as_str());
                                FieldView {
                                    value: shown.then(|| {
                                        let value = decoded(&p.name).unwrap_or_else(|| {
                                            String::from_utf8_lossy(p.data).into_owned()
                                        });
                                        cut(value.trim(), VALUE_CHARS)
                                    }),
                                    bytes: p.data.len(),
                                    name: p.name,
                                    filename: p.filename,
                                    content_type: p.content_type,
                                }
                            })
                            .collect();
                        CallbackView::Form {
                            field_count: fields.len(),
                            file_count: fields
                                .iter()
                                .filter(|f| f.filename.is_some() || f.content_type.is_some())
                                .count(),
                            fields,
                        }
                    }
                    Err(e) => unreadable(format!("not multipart/form-data: {e}")),
                },
                Kind::Message => match serde_json::from_slice::<Box<RawValue>>(body) {
                    Ok(value) => CallbackView::Json { value },
                    Err(_) => CallbackView::Text {
                        text: String::from_utf8_lossy(body).into_owned(),
                    },
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pretty_keeps_order_and_numbers() {
        let text = r#"[{"z":1,"a":[],"n":123456789012345678901234567890,"s":"a,b:{\"}"},{}]"#;
        assert_eq!(
            super::view::pretty(text),
            "[\n  {\n    \"z\": 1,\n    \"a\": [],\n    \"n\": 123456789012345678901234567890,\n    \
             \"s\": \"a,b:{\\\"}\"\n  },\n  {}\n]"
        );
    }
}

/// A lenient multipart/form-data splitter, for showing an Inbound Parse post's fields. Display
/// only: the worker decodes posts with `mailroom-sendgrid`, whose parser is not public; this one
/// reads names, sizes, filenames and content types and nothing more.
mod form {
    /// Most parts listed (SendGrid's own posts have a few dozen).
    const MAX_PARTS: usize = 1000;

    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum FormError {
        #[error("no boundary in the content type, nor a boundary line at the start of the body")]
        NoBoundary,
        #[error("the body has no --{0} line")]
        NoDelimiter(String),
        #[error("more than {MAX_PARTS} parts")]
        TooManyParts,
    }

    #[derive(Debug, PartialEq, Eq)]
    pub struct Part<'a> {
        pub name: String,
        pub filename: Option<String>,
        pub content_type: Option<String>,
        pub data: &'a [u8],
    }

    /// A parameter of a header value (`name="x"; filename=y`), quotes removed.
    fn param(value: &str, key: &str) -> Option<String> {
        let mut rest = value;
        while let Some(semi) = rest.find(';') {
            rest = rest[semi + 1..].trim_start();
            let Some((k, v)) = rest.split_once('=') else {
                continue;
            };
            let v = v.trim_start();
            let (found, after) = if let Some(q) = v.strip_prefix('"') {
                let end = q.find('"').unwrap_or(q.len());
                (q[..end].to_string(), &q[end..])
            } else {
                let end = v.find(';').unwrap_or(v.len());
                (v[..end].trim().to_string(), &v[end..])
            };
            if k.trim().eq_ignore_ascii_case(key) {
                return Some(found);
            }
            rest = after;
        }
        None
    }

    /// The boundary: from the content type, else the body's first line (`--boundary`).
    fn boundary(content_type: Option<&str>, body: &[u8]) -> Option<String> {
        if let Some(b) = content_type.and_then(|ct| param(ct, "boundary")) {
            if !b.is_empty() {
                return Some(b);
            }
        }
        let first = body.split(|&c| c == b'\n').next()?;
        let line = std::str::from_utf8(first).ok()?.trim_end();
        let b = line.strip_prefix("--")?;
        (!b.is_empty()).then(|| b.to_string())
    }

    fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
        haystack
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    }

    pub fn parse<'a>(
        content_type: Option<&str>,
        body: &'a [u8],
    ) -> Result<Vec<Part<'a>>, FormError> {
        let boundary = boundary(content_type, body).ok_or(FormError::NoBoundary)?;
        let delimiter = format!("--{boundary}").into_bytes();
        let mut pos = if body.starts_with(&delimiter) {
            0
        } else {
            let mut line_delimiter = b"\n".to_vec();
            line_delimiter.extend_from_slice(&delimiter);
            find(body, &line_delimiter, 0).ok_or(FormError::NoDelimiter(boundary.clone()))? + 1
        };
        let mut next_delimiter = b"\n".to_vec();
        next_delimiter.extend_from_slice(&delimiter);
        let mut parts = Vec::new();
        loop {
            let after = pos + delimiter.len();
            if body[after..].starts_with(b"--") {
                break; // the closing delimiter
            }
            // The rest of the delimiter line.
            let Some(start) = find(body, b"\n", after).map(|p| p + 1) else {
                break;
            };
            let end = find(body, &next_delimiter, start);
            let mut chunk = &body[start..end.unwrap_or(body.len())];
            if let Some(c) = chunk.strip_suffix(b"\r") {
                chunk = c;
            }
            if parts.len() == MAX_PARTS {
                return Err(FormError::TooManyParts);
            }
            parts.push(part(chunk));
            match end {
                Some(e) => pos = e + 1,
                None => break, // no closing delimiter: the rest was the last part
            }
        }
        Ok(parts)
    }

    fn part(chunk: &[u8]) -> Part<'_> {
        let (head, data) = match (find(chunk, b"\r\n\r\n", 0), find(chunk, b"\n\n", 0)) {
            (Some(a), Some(b)) if b < a => (&chunk[..b], &chunk[b + 2..]),
            (Some(a), _) => (&chunk[..a], &chunk[a + 4..]),
            (None, Some(b)) => (&chunk[..b], &chunk[b + 2..]),
            (None, None) => (chunk, &chunk[chunk.len()..]),
        };
        let head = String::from_utf8_lossy(head);
        let mut p = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data,
        };
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                p.name = param(v, "name").unwrap_or_default();
                p.filename = param(v, "filename");
            } else if k.trim().eq_ignore_ascii_case("content-type") {
                p.content_type = Some(v.trim().to_string());
            }
        }
        p
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fields_and_files() {
            let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nHi; there\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"attachment1\"; filename=\"a;b.pdf\"\r\n\
                Content-Type: application/pdf\r\n\r\n%PDF-1\r\n--XyZ--\r\n";
            let parts = parse(Some("multipart/form-data; boundary=XyZ"), body).expect("parses");
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0].name, "subject");
            assert_eq!(parts[0].data, b"Hi; there");
            assert_eq!(parts[1].filename.as_deref(), Some("a;b.pdf"));
            assert_eq!(parts[1].content_type.as_deref(), Some("application/pdf"));
            assert_eq!(parts[1].data, b"%PDF-1");
            // The boundary sniffed from the first line when the content type lacks it.
            assert_eq!(
                parse(Some("multipart/form-data"), body)
                    .expect("sniffed")
                    .len(),
                2
            );
            assert_eq!(parse(None, b"hello"), Err(FormError::NoBoundary));
            assert_eq!(
                parse(Some("multipart/form-data; boundary=\"q\""), b"nothing here"),
                Err(FormError::NoDelimiter("q".into()))
            );
        }
    }
}

/// Make held messages visible again at once.
async fn release(ctx: &Ctx, url: &str, receipts: &[String]) -> Result<()> {
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("r{i}"))
                    .receipt_handle(r)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        let out = ctx
            .sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))
            .context("releasing peeked messages")?;
        if !out.failed.is_empty() {
            bail!(
                "{} peeked message(s) could not be released",
                out.failed.len()
            );
        }
    }
    Ok(())
}

pub async fn redrive(ctx: &Ctx, queue: &str, method: Method, max: Option<usize>) -> Result<()> {
    let (dlq_name, dlq_url) = ctx.dlq_of(queue).await?;
    let url = ctx.queue_url(queue).await?;
    if method != Method::Copy {
        match move_task(ctx, &dlq_url, &url).await {
            Ok(moved) => {
                println!("moved {moved} message(s) from {dlq_name} back to \"{queue}\" (StartMessageMoveTask)");
                return Ok(());
            }
            Err(e) if method == Method::Auto => {
                eprintln!(
                    "mailroom: StartMessageMoveTask not available ({}); copying instead",
                    crate::error_text::error_text(&e)
                );
            }
            Err(e) => return Err(e),
        }
    }
    let report = copy(ctx, &dlq_url, &url, max).await?;
    println!(
        "moved {} message(s) from {dlq_name} back to \"{queue}\" (receive, send, delete); {} could not be sent and stay in the DLQ; {} were sent but could not be deleted from the DLQ",
        report.moved, report.send_failed, report.delete_failed
    );
    if report.send_failed > 0 || report.delete_failed > 0 {
        bail!("redrive incomplete");
    }
    Ok(())
}

async fn arn(ctx: &Ctx, url: &str) -> Result<String> {
    sqs::attributes(&ctx.sqs, url)
        .await
        .map_err(anyhow::Error::msg)?
        .get("QueueArn")
        .cloned()
        .with_context(|| format!("{url} has no QueueArn attribute"))
}

async fn move_task(ctx: &Ctx, dlq_url: &str, url: &str) -> Result<i64> {
    let source = arn(ctx, dlq_url).await?;
    let destination = arn(ctx, url).await?;
    ctx.sqs
        .start_message_move_task()
        .source_arn(&source)
        .destination_arn(&destination)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))?;
    let deadline = tokio::time::Instant::now() + MOVE_TASK_WAIT;
    loop {
        let tasks = ctx
            .sqs
            .list_message_move_tasks()
            .source_arn(&source)
            .max_results(1)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        if let Some(task) = tasks.results.unwrap_or_default().into_iter().next() {
            let moved = task.approximate_number_of_messages_moved;
            match task.status.as_deref() {
                Some("COMPLETED") => return Ok(moved),
                Some("FAILED") | Some("CANCELLED") => bail!(
                    "move task {}: {} after {moved} message(s)",
                    task.status.unwrap_or_default(),
                    task.failure_reason.unwrap_or_default()
                ),
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("move task still running after {MOVE_TASK_WAIT:?}; see ListMessageMoveTasks");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Debug, Default)]
struct CopyReport {
    moved: usize,
    send_failed: usize,
    delete_failed: usize,
}

async fn copy(ctx: &Ctx, dlq_url: &str, url: &str, max: Option<usize>) -> Result<CopyReport> {
    let fifo = url.ends_with(".fifo");
    let mut report = CopyReport::default();
    let mut empty = 0;
    let mut seen = HashSet::new();
    let limit = max.unwrap_or(usize::MAX);
    while empty < EMPTY_RECEIVES_TO_STOP && report.moved + report.send_failed < limit {
        let want = (limit - report.moved - report.send_failed).min(10);
        let messages = receive(ctx, dlq_url, want, COPY_HOLD_SECS).await?;
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        let mut entries = Vec::new();
        let mut receipts = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let (Some(id), Some(receipt)) = (&m.message_id, &m.receipt_handle) else {
                continue;
            };
            if !seen.insert(id.clone()) {
                // Already copied this run but its delete was lost: release it, don't resend.
                receipts.push((format!("e{i}"), receipt.clone(), false));
                continue;
            }
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(format!("e{i}"))
                .message_body(m.body.clone().unwrap_or_default())
                .set_message_attributes(m.message_attributes.clone());
            if fifo {
                let group = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_else(|| "mailroom-redrive".into());
                entry = entry.message_group_id(group).message_deduplication_id(id);
            }
            entries.push(entry.build().context("building a SendMessageBatch entry")?);
            receipts.push((format!("e{i}"), receipt.clone(), true));
        }
        let sent: HashSet<String> = if entries.is_empty() {
            HashSet::new()
        } else {
            let out = ctx
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))
                .context("SendMessageBatch to the source queue")?;
            for failed in &out.failed {
                tracing::warn!(entry = %failed.id, code = %failed.code, "redrive: send failed");
            }
            out.successful.into_iter().map(|s| s.id).collect()
        };
        let mut deletes = Vec::new();
        let mut unsent = Vec::new();
        let mut copies = 0;
        for (id, receipt, fresh) in receipts {
            if fresh && sent.contains(&id) {
                deletes.push((id, receipt));
                copies += 1;
            } else if fresh {
                report.send_failed += 1;
                unsent.push(receipt);
            } else {
                // Copied earlier in this run; only its DLQ delete is still owed.
                deletes.push((id, receipt));
            }
        }
        let deleting = deletes.len();
        // Counted as moved: fresh copies whose delete went through (a late delete of an earlier
        // copy was already counted in delete_failed, and is not counted twice).
        let redeletes = deleting - copies;
        if !deletes.is_empty() {
            let entries = deletes
                .into_iter()
                .filter_map(|(id, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(r)
                        .build()
                        .ok()
                })
                .collect();
            match ctx
                .sqs
                .delete_message_batch()
                .queue_url(dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    report.delete_failed += out.failed.len();
                    report.moved += (deleting - out.failed.len()).saturating_sub(redeletes);
                }
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "redrive: DeleteMessageBatch failed");
                    report.delete_failed += deleting;
                }
            }
        }
        // Unsent messages stay in the DLQ: release them now rather than after the hold.
        let _ = release(ctx, dlq_url, &unsent).await;
        if !unsent.is_empty() {
            break;
        }
    }
    Ok(report)
}
