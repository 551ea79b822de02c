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
