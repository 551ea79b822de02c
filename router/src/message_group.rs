//! The SQS `MessageGroupId` of a callback, from its route's [`MessageGroup`] setting.
//!
//! SQS fair queues (standard queues given a `MessageGroupId`) keep one tenant's burst from
//! delaying the others: a 10x marketing send of one webhook does not starve another's
//! transactional events. One post is one message, and the signature covers the exact body, so a
//! batch is never split: a batch whose events carry different values of the field takes its
//! first event's value (SendGrid batches by time, not by tenant; a mixed batch is still
//! delivered whole, only scheduled with the first event's group).

use std::fmt;

use mailroom_envelope::Kind;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::routes::MessageGroup;
use crate::routing::Target;

/// SQS's limit on a `MessageGroupId`.
pub const MAX_GROUP_ID_LEN: usize = 128;

/// The group for a callback on `target`, or `None` when the route sets none.
pub fn message_group_id(target: &Target<'_>, body: &[u8]) -> Option<String> {
    let group = target.message_group?;
    let by_field = match (group, target.kind) {
        (MessageGroup::Field(field), Kind::Events) => first_event_field(body, field),
        _ => None,
    };
    Some(by_field.unwrap_or_else(|| sanitize(target.label())))
}

/// The value of `field` in the first event of a JSON array of events, as text, made fit for a
/// `MessageGroupId` (SQS allows 1 to 128 of a-z, A-Z, 0-9 and punctuation). `None` when the
/// body is not such an array, the field is missing, or its value is not a string or number.
pub fn first_event_field(body: &[u8], field: &str) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = FirstEvent { field }.deserialize(&mut deserializer).ok()??;
    let value = sanitize(&value);
    (!value.is_empty()).then_some(value)
}

/// Keeps the characters SQS allows in a group id (printable ASCII), the first 128 of them.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(MAX_GROUP_ID_LEN)
        .collect()
}

/// Reads `[ {..., field: value, ...}, ... ]`, keeping only the first event's `field`; the rest
/// of the array is skipped without building values.
struct FirstEvent<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for FirstEvent<'_> {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FirstEvent<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let value = seq
            .next_element_seed(EventField { field: self.field })?
            .flatten();
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(value)
    }
}

struct EventField<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for EventField<'_> {
    type Value = Option<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventField<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if found.is_none() && key == self.field {
                found = match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_first_events_field() {
        let body = br#"[{"event":"open","tenant":"acme"},{"event":"open","tenant":"other"}]"#;
        assert_eq!(first_event_field(body, "tenant").as_deref(), Some("acme"));
        let numeric = br#"[{"marketing_campaign_id": 12345, "x": [1, {"y": 2}]}]"#;
        assert_eq!(
            first_event_field(numeric, "marketing_campaign_id").as_deref(),
            Some("12345")
        );
    }

    #[test]
    fn anything_else_falls_back() {
        for body in [
            &br#"[]"#[..],
            br#"[{"event":"open"}]"#,
            br#"[{"tenant":{"nested":1}}]"#,
            br#"[{"tenant":"   "}]"#,
            br#"{"tenant":"acme"}"#,
            br#"[{"tenant":"acme""#,
            b"not json",
        ] {
            assert_eq!(
                first_event_field(body, "tenant"),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn group_ids_are_printable_ascii_of_at_most_128() {
        let long = format!(r#"[{{"tenant":"a b\u00e9{}"}}]"#, "x".repeat(300));
        let id = first_event_field(long.as_bytes(), "tenant").unwrap();
        assert!(id.starts_with("abx"));
        assert_eq!(id.len(), MAX_GROUP_ID_LEN);
    }
}
