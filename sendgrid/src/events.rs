//! Event Webhook batches. SendGrid's payloads are loosely typed in practice (numbers sent as
//! strings and vice versa, seconds or milliseconds, 0/1 for booleans, a category that is a
//! string or a list), so each typed column is read leniently: a value of an unexpected type
//! leaves that column empty rather than failing the batch, and `raw` always keeps the whole
//! object. Only structural faults fail a batch, naming the element, because the caller
//! dead-letters the batch whole.

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::{Event, EventJson};

/// Why an Event Webhook body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventsError {
    #[error("events body is not JSON: {0}")]
    NotJson(String),
    #[error("events body must be a JSON array of event objects (or a single object), got {0}")]
    NotABatch(&'static str),
    #[error("event at index {index} is not a JSON object (got {got})")]
    NotAnObject { index: usize, got: &'static str },
    #[error("event at index {index} has no \"event\" field")]
    MissingEvent { index: usize },
    #[error("event at index {index}: \"event\" is not a string")]
    EventNotString { index: usize },
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses an Event Webhook body: a JSON array of event objects (a lone object is a batch of one).
///
/// Each element is read as borrowed JSON text first and parsed into a `Value` only while its
/// typed fields are taken out, so at most one element is ever held parsed; the event keeps its
/// text ([`EventJson`]).
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, EventsError> {
    let not_json = |e: serde_json::Error| EventsError::NotJson(e.to_string());
    // The first byte after JSON whitespace says what the body is, so it is parsed only once.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(not_json)?;
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| parse_one(index, item))
                .collect()
        }
        Some(b'{') => {
            let item: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
            Ok(vec![parse_one(0, item)?])
        }
        _ => {
            let value: Value = serde_json::from_slice(body).map_err(not_json)?;
            Err(EventsError::NotABatch(kind_of(&value)))
        }
    }
}

fn parse_one(index: usize, text: &RawValue) -> Result<Event, EventsError> {
    let json = text.get();
    let not_json =
        |e: serde_json::Error| EventsError::NotJson(format!("event at index {index}: {e}"));
    // A RawValue's text is validated JSON syntax, but a `\u` escape of a lone surrogate is no
    // text (serde_json will not decode it, nor Postgres's jsonb): refused for the whole object,
    // read or not, without decoding anything else.
    if let Some(at) = lone_surrogate(json) {
        return Err(EventsError::NotJson(format!(
            "event at index {index}: lone surrogate in a \\u escape at byte {at}"
        )));
    }
    // RawValue text has no surrounding whitespace, so the first byte says what it is.
    if !json.starts_with('{') {
        let item: Value = serde_json::from_str(json).map_err(not_json)?;
        return Err(EventsError::NotAnObject {
            index,
            got: kind_of(&item),
        });
    }
    let f: Fields<'_> = serde_json::from_str(json).map_err(not_json)?;
    let event = match f.event.and_then(plain_string) {
        Some(text) => text.to_owned(),
        None => match value(f.event) {
            None | Some(Value::Null) => return Err(EventsError::MissingEvent { index }),
            Some(Value::String(s)) => s,
            Some(_) => return Err(EventsError::EventNotString { index }),
        },
    };
    let sg_event_id = match text_value(f.sg_event_id) {
        Some(id) if !id.is_empty() => id,
        _ => synthetic_id(&serde_json::from_str(json).map_err(not_json)?),
    };
    let pool = value(f.pool);
    let pool = pool.as_ref().and_then(Value::as_object);
    let url_offset = value(f.url_offset);
    let url_offset = url_offset.as_ref().and_then(Value::as_object);
    Ok(Event {
        sg_event_id,
        event,
        email: text_value(f.email),
        occurred_at: value(f.timestamp).as_ref().and_then(timestamp),
        sg_message_id: text_value(f.sg_message_id),
        smtp_id: text_value(f.smtp_id),
        categories: categories(value(f.category).as_ref()),
        reason: text_value(f.reason),
        status: text_value(f.status),
        response: text_value(f.response),
        attempt: int(value(f.attempt).as_ref()).and_then(|n| i32::try_from(n).ok()),
        bounce_type: text_value(f.bounce_type),
        bounce_classification: text_value(f.bounce_classification),
        url: text_value(f.url),
        url_offset_index: url_offset
            .and_then(|o| int(o.get("index")))
            .and_then(|n| i32::try_from(n).ok()),
        useragent: text_value(f.useragent),
        ip: text_value(f.ip),
        tls: boolean(value(f.tls).as_ref()),
        sg_machine_open: boolean(value(f.sg_machine_open).as_ref()),
        asm_group_id: int(value(f.asm_group_id).as_ref()),
        marketing_campaign_id: int(value(f.marketing_campaign_id).as_ref()),
        marketing_campaign_name: text_value(f.marketing_campaign_name),
        pool_name: pool.and_then(|p| text_field(p, "name")),
        pool_id: pool.and_then(|p| int(p.get("id"))),
        raw: EventJson(text.to_owned()),
    })
}

/// An event object's known top-level fields as their JSON text (the last occurrence of a key
/// wins, as in a parsed object). Everything else (custom arguments, fields SendGrid adds later)
/// is skipped without being built: parsing each event into a whole `Value` (a map node, a key
/// `String` and a `Value` per field) was most of the worker's allocations per event.
#[derive(Default)]
struct Fields<'a> {
    event: Option<&'a RawValue>,
    sg_event_id: Option<&'a RawValue>,
    email: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    sg_message_id: Option<&'a RawValue>,
    smtp_id: Option<&'a RawValue>,
    category: Option<&'a RawValue>,
    reason: Option<&'a RawValue>,
    status: Option<&'a RawValue>,
    response: Option<&'a RawValue>,
    attempt: Option<&'a RawValue>,
    bounce_type: Option<&'a RawValue>,
    bounce_classification: Option<&'a RawValue>,
    url: Option<&'a RawValue>,
    url_offset: Option<&'a RawValue>,
    useragent: Option<&'a RawValue>,
    ip: Option<&'a RawValue>,
    tls: Option<&'a RawValue>,
    sg_machine_open: Option<&'a RawValue>,
    asm_group_id: Option<&'a RawValue>,
    marketing_campaign_id: Option<&'a RawValue>,
    marketing_campaign_name: Option<&'a RawValue>,
    pool: Option<&'a RawValue>,
}

impl<'a> Fields<'a> {
    /// Where the value of the top-level key `key` goes; `None` for a key Mailroom does not read.
    fn slot(&mut self, key: &str) -> Option<&mut Option<&'a RawValue>> {
        Some(match key {
            "event" => &mut self.event,
            "sg_event_id" => &mut self.sg_event_id,
            "email" => &mut self.email,
            "timestamp" => &mut self.timestamp,
            "sg_message_id" => &mut self.sg_message_id,
            "smtp-id" => &mut self.smtp_id,
            "category" => &mut self.category,
            "reason" => &mut self.reason,
            "status" => &mut self.status,
            "response" => &mut self.response,
            "attempt" => &mut self.attempt,
            "type" => &mut self.bounce_type,
            "bounce_classification" => &mut self.bounce_classification,
            "url" => &mut self.url,
            "url_offset" => &mut self.url_offset,
            "useragent" => &mut self.useragent,
            "ip" => &mut self.ip,
            "tls" => &mut self.tls,
            "sg_machine_open" => &mut self.sg_machine_open,
            "asm_group_id" => &mut self.asm_group_id,
            "marketing_campaign_id" => &mut self.marketing_campaign_id,
            "marketing_campaign_name" => &mut self.marketing_campaign_name,
            "pool" => &mut self.pool,
            _ => return None,
        })
    }
}

/// A known field parsed, `None` when absent. A value serde_json cannot build (a number beyond
/// f64) reads as absent, as any value of an unexpected type does: the payload keeps it as sent.
fn value(raw: Option<&RawValue>) -> Option<Value> {
    serde_json::from_str(raw?.get()).ok()
}

/// The text of a JSON string written without escapes, which is its raw text between the quotes
/// (a RawValue is validated JSON with no surrounding whitespace, and a string token holds no
/// unescaped quote or control character), taken without running a decoder; `None` for anything
/// else, which then goes through serde_json.
fn plain_string(raw: &RawValue) -> Option<&str> {
    let inner = raw.get().strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// A known text field; numbers are accepted as their decimal text (as [`text_field`]).
fn text_value(raw: Option<&RawValue>) -> Option<String> {
    if let Some(text) = plain_string(raw?) {
        return Some(text.to_owned());
    }
    match value(raw)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    // Every value is taken as raw text, the skipped ones too: `IgnoredAny`
                    // would build numbers, and refuse one beyond f64 that the payload can keep.
                    let raw = map.next_value::<&RawValue>()?;
                    if let Some(slot) = fields.slot(key.as_str()) {
                        *slot = Some(raw);
                    }
                }
                Ok(fields)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An object key, borrowed from the text unless it holds an escape.
enum Key<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key::Owned(s.to_owned()))
            }
        }
        d.deserialize_str(Visit)
    }
}

/// The byte offset of the first `\u` escape in `json` that is a lone surrogate (a high one not
/// followed by a low one, or a low one alone), if any. `json` is valid JSON syntax, where a
/// backslash occurs only inside a string, as the start of an escape.
fn lone_surrogate(json: &str) -> Option<usize> {
    let bytes = json.as_bytes();
    let hex4 = |at: usize| -> Option<u32> {
        let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let mut from = 0;
    while let Some(offset) = json.get(from..).and_then(|rest| rest.find('\\')) {
        let at = from + offset;
        if bytes.get(at + 1) != Some(&b'u') {
            from = at + 2;
            continue;
        }
        let unit = hex4(at + 2)?;
        from = at + 6;
        if (0xDC00..0xE000).contains(&unit) {
            return Some(at);
        }
        if (0xD800..0xDC00).contains(&unit) {
            let low = (bytes.get(at + 6..at + 8) == Some(&b"\\u"[..]))
                .then(|| hex4(at + 8))
                .flatten();
            match low {
                Some(low) if (0xDC00..0xE000).contains(&low) => from = at + 12,
                _ => return Some(at),
            }
        }
    }
    None
}

/// A string field; numbers are accepted as their decimal text.
fn text_field(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer sent as a number (integral float too) or as a decimal string.
fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A flag sent as a boolean, 0/1, or their string forms.
fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" => Some(true),
            "0" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn categories(v: Option<&Value>) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Unix time in seconds, or milliseconds when at least 1e11 (year 5138 in seconds); a float or a
/// numeric string is accepted.
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    let secs_or_ms = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !secs_or_ms.is_finite() {
        return None;
    }
    let ms = if secs_or_ms.abs() >= 1e11 {
        secs_or_ms
    } else {
        secs_or_ms * 1000.0
    };
    let ms = ms.round();
    if ms.abs() > 9.0e15 {
        return None;
    }
    DateTime::from_timestamp_millis(ms as i64)
}

/// `"synthetic:"` + hex sha256 of the event's canonical JSON text (object keys sorted, no
/// whitespace), independent of serde_json's map-ordering feature.
fn synthetic_id(event: &Value) -> String {
    let mut text = String::new();
    canonical(event, &mut text);
    format!("synthetic:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(item) = map.get(k) {
                    canonical(item, out);
                }
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The parse this module had before [`Fields`]: the whole object into a `Value`, then the
    /// typed fields taken out of it. The fast path must give the same events.
    fn reference_parse_one(index: usize, text: &RawValue) -> Result<Event, EventsError> {
        // A RawValue's text is validated JSON syntax; parsing it into a Value also decodes every
        // string escape, which rejects a lone surrogate (Postgres would too).
        let item: Value = serde_json::from_str(text.get())
            .map_err(|e| EventsError::NotJson(format!("event at index {index}: {e}")))?;
        let Value::Object(obj) = &item else {
            return Err(EventsError::NotAnObject {
                index,
                got: kind_of(&item),
            });
        };
        let event = match obj.get("event") {
            None | Some(Value::Null) => return Err(EventsError::MissingEvent { index }),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(EventsError::EventNotString { index }),
        };
        let sg_event_id = match text_field(obj, "sg_event_id") {
            Some(id) if !id.is_empty() => id,
            _ => synthetic_id(&item),
        };
        let pool = obj.get("pool").and_then(Value::as_object);
        let url_offset = obj.get("url_offset").and_then(Value::as_object);
        Ok(Event {
            sg_event_id,
            event,
            email: text_field(obj, "email"),
            occurred_at: obj.get("timestamp").and_then(timestamp),
            sg_message_id: text_field(obj, "sg_message_id"),
            smtp_id: text_field(obj, "smtp-id"),
            categories: categories(obj.get("category")),
            reason: text_field(obj, "reason"),
            status: text_field(obj, "status"),
            response: text_field(obj, "response"),
            attempt: int(obj.get("attempt")).and_then(|n| i32::try_from(n).ok()),
            bounce_type: text_field(obj, "type"),
            bounce_classification: text_field(obj, "bounce_classification"),
            url: text_field(obj, "url"),
            url_offset_index: url_offset
                .and_then(|o| int(o.get("index")))
                .and_then(|n| i32::try_from(n).ok()),
            useragent: text_field(obj, "useragent"),
            ip: text_field(obj, "ip"),
            tls: boolean(obj.get("tls")),
            sg_machine_open: boolean(obj.get("sg_machine_open")),
            asm_group_id: int(obj.get("asm_group_id")),
            marketing_campaign_id: int(obj.get("marketing_campaign_id")),
            marketing_campaign_name: text_field(obj, "marketing_campaign_name"),
            pool_name: pool.and_then(|p| text_field(p, "name")),
            pool_id: pool.and_then(|p| int(p.get("id"))),
            raw: EventJson(text.to_owned()),
        })
    }

    /// A JSON value as text, with what the fast path treats specially: escapes (surrogate
    /// pairs, lone surrogates, escaped keys), numbers as strings, nesting, duplicate keys.
    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e20f64..1e20).prop_map(|f| serde_json::to_string(&f).unwrap()),
            Just("1e15".to_string()),
            Just("1700000000123".to_string()),
            Just("\"1700000000\"".to_string()),
            Just("\" 1 \"".to_string()),
            Just("\"true\"".to_string()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\ud83d\ude00 pair""#.to_string()),
            Just(r#""\ud800 lone high""#.to_string()),
            Just(r#""\udc00""#.to_string()),
            Just(r#""\ud800\u0041""#.to_string()),
            Just(r#""\\ud800 an escaped backslash""#.to_string()),
            Just(r#""tab\t\u00e9\"""#.to_string()),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                    let fields: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// The top-level keys `Fields::slot` takes, and two it must not.
    const READ_KEYS: [&str; 25] = [
        "event",
        "sg_event_id",
        "email",
        "timestamp",
        "sg_message_id",
        "smtp-id",
        "category",
        "reason",
        "status",
        "response",
        "attempt",
        "type",
        "bounce_classification",
        "url",
        "url_offset",
        "useragent",
        "ip",
        "tls",
        "sg_machine_open",
        "asm_group_id",
        "marketing_campaign_id",
        "marketing_campaign_name",
        "pool",
        "pool_id",
        "smtp_id",
    ];

    /// A key as JSON text: mostly ones the parser reads, some escaped, some custom.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(READ_KEYS.to_vec()).prop_map(|k| format!("\"{k}\"")),
            Just(r#""ev\u0065nt""#.to_string()),
            Just(r#""index""#.to_string()),
            Just(r#""id""#.to_string()),
            Just(r#""name""#.to_string()),
            "[a-z_]{1,8}".prop_map(|k| format!("\"{k}\"")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_fast_parse_reads_what_a_parsed_value_reads(
            fields in prop::collection::vec((key(), json_value()), 0..12),
            event in prop_oneof![Just(r#""open""#.to_string()), json_value()],
        ) {
            let mut entries: Vec<String> = vec![format!("\"event\":{event}")];
            entries.extend(fields.into_iter().map(|(k, v)| format!("{k} : {v}")));
            let body = format!("[{{{}}}]", entries.join(","));
            let fast = parse_events(body.as_bytes());
            let items: Vec<&RawValue> = serde_json::from_str(&body).unwrap();
            let reference = reference_parse_one(0, items[0]).map(|e| vec![e]);
            match (&fast, &reference) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", body),
                (Err(a), Err(b)) => prop_assert_eq!(
                    std::mem::discriminant(a), std::mem::discriminant(b), "{}: {:?} / {:?}", body, a, b
                ),
                _ => prop_assert!(false, "{}: fast {:?}, reference {:?}", body, fast, reference),
            }
        }
    }

    #[test]
    fn synthetic_id_ignores_key_order_and_spacing() {
        let a = parse_events(br#"[{"event":"open","email":"a@x","timestamp":1}]"#).unwrap();
        let b = parse_events(br#"{ "timestamp": 1, "email": "a@x", "event": "open" }"#).unwrap();
        assert_eq!(a[0].sg_event_id, b[0].sg_event_id);
        assert!(a[0].sg_event_id.starts_with("synthetic:"));
        assert_eq!(a[0].sg_event_id.len(), "synthetic:".len() + 64);
    }

    #[test]
    fn raw_keeps_each_event_text_exactly_whatever_the_spacing() {
        let body = b" \n[ {\"event\" : \"open\", \"n\": 1.50} ,\t{\"event\":\"click\"} ]\n";
        let events = parse_events(body).unwrap();
        assert_eq!(events[0].raw.as_str(), r#"{"event" : "open", "n": 1.50}"#);
        assert_eq!(events[1].raw.as_str(), r#"{"event":"click"}"#);
        let lone = parse_events(b" {\"event\":\"open\"} ").unwrap();
        assert_eq!(lone[0].raw.as_str(), r#"{"event":"open"}"#);
        assert_eq!(lone[0].raw.to_value()["event"], "open");
    }

    #[test]
    fn not_a_batch_names_what_it_got() {
        assert_eq!(
            parse_events(b" 42 ").unwrap_err(),
            EventsError::NotABatch("a number")
        );
        assert_eq!(
            parse_events(b"\"x\"").unwrap_err(),
            EventsError::NotABatch("a string")
        );
        assert!(matches!(
            parse_events(b"[{\"event\":\"open\"} trailing"),
            Err(EventsError::NotJson(_))
        ));
        // A lone surrogate is valid JSON syntax but no text; Postgres would reject it too.
        assert!(matches!(
            parse_events(br#"[{"event":"open","x":"\ud800"}]"#),
            Err(EventsError::NotJson(_))
        ));
    }

    #[test]
    fn a_number_beyond_f64_in_a_custom_field_dead_lettered_the_batch() {
        // Valid JSON that serde_json cannot build a Value of: the batch is stored, the payload
        // keeps the text (Postgres's json and numeric hold it), a typed column stays empty.
        let events = parse_events(
            br#"[{"event":"open","sg_event_id":"e1","custom":1e400,"asm_group_id":1e400}]"#,
        )
        .unwrap();
        assert_eq!(
            events[0].raw.as_str(),
            r#"{"event":"open","sg_event_id":"e1","custom":1e400,"asm_group_id":1e400}"#
        );
        assert_eq!(events[0].asm_group_id, None);
    }

    #[test]
    fn canonical_text_is_sorted_compact_json() {
        let v: Value = serde_json::from_str(r#"{"b":[1, {"d":"\"","c":null}],"a":true}"#).unwrap();
        let mut s = String::new();
        canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":true,"b":[1,{"c":null,"d":"\""}]}"#);
    }

    #[test]
    fn timestamps() {
        let t = |v: Value| timestamp(&v).map(|d| d.timestamp_millis());
        assert_eq!(t(serde_json::json!(1700000000)), Some(1_700_000_000_000));
        assert_eq!(t(serde_json::json!(1700000000.25)), Some(1_700_000_000_250));
        assert_eq!(
            t(serde_json::json!(1700000000123u64)),
            Some(1_700_000_000_123)
        );
        assert_eq!(t(serde_json::json!("1700000000")), Some(1_700_000_000_000));
        assert_eq!(t(serde_json::json!(1e300)), None);
        assert_eq!(t(serde_json::json!("soon")), None);
    }
}
