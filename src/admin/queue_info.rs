//! Queue depth from GetQueueAttributes, the dead-letter queue named by a queue's RedrivePolicy,
//! and the age of the oldest visible message. Depth and DLQ are shared by `mailroom queues ...`
//! and the telemetry depth poller; the age is `queues stats`' alone.
//!
//! SQS has no queue attribute for the age of the oldest message (that is CloudWatch's
//! ApproximateAgeOfOldestMessage, which needs CloudWatch access and lags by minutes). Some
//! SQS-compatible servers do return it as an attribute, and then it is used. Otherwise the age is
//! sampled: one ReceiveMessage with `VisibilityTimeout=0` (so the messages it sees stay visible:
//! nothing is hidden from the workers, not even for a second) and `WaitTimeSeconds=0`, asking
//! for SentTimestamp; the age is that of the oldest of the (up to 10) messages returned. SQS
//! returns a sample, not necessarily the oldest message, so the age is a lower bound. The price
//! is that each message seen gets one more receive in its ApproximateReceiveCount, which the
//! worker's retry schedule and a maxReceiveCount count: so the caller decides which queues to
//! sample (`queues stats` samples DLQs by default, queues only when asked).

use std::collections::HashMap;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::{DateTime, Utc};

use crate::sqs::SqsError;

/// Approximate message counts of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl Depth {
    pub fn from_attrs(attrs: &HashMap<String, String>) -> Self {
        let get = |k: &str| {
            attrs
                .get(k)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Self {
            visible: get("ApproximateNumberOfMessages"),
            in_flight: get("ApproximateNumberOfMessagesNotVisible"),
            delayed: get("ApproximateNumberOfMessagesDelayed"),
        }
    }
}

/// What a queue's RedrivePolicy says about its DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqTarget {
    /// No RedrivePolicy: the queue has no DLQ.
    None,
    /// The DLQ's queue name (the last part of `deadLetterTargetArn`).
    Named(String),
    /// A RedrivePolicy that names no DLQ this code can read (shown as is).
    Unreadable(String),
}

/// The DLQ of a queue from its attributes, telling "no policy" from "a policy we cannot read".
pub fn dlq_target(attrs: &HashMap<String, String>) -> DlqTarget {
    match attrs.get("RedrivePolicy") {
        None => DlqTarget::None,
        Some(policy) if policy.trim().is_empty() => DlqTarget::None,
        Some(policy) => match dead_letter_target(attrs) {
            Some(name) => DlqTarget::Named(name),
            None => DlqTarget::Unreadable(policy.clone()),
        },
    }
}

/// The DLQ's name from a RedrivePolicy (`{"deadLetterTargetArn":"arn:...:name",...}`).
pub fn dead_letter_target(attrs: &HashMap<String, String>) -> Option<String> {
    let policy: serde_json::Value = serde_json::from_str(attrs.get("RedrivePolicy")?).ok()?;
    let arn = policy.get("deadLetterTargetArn")?.as_str()?;
    let name = arn.rsplit(':').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The DLQ of a queue as (name, url), when it has a redrive policy.
pub async fn dead_letter_queue(
    client: &aws_sdk_sqs::Client,
    attrs: &HashMap<String, String>,
) -> Result<Option<(String, String)>, crate::sqs::SqsError> {
    let Some(name) = dead_letter_target(attrs) else {
        return Ok(None);
    };
    let url = crate::sqs::queue_url(client, &name, None).await?;
    Ok(Some((name, url)))
}

/// The age of the oldest visible message of a queue, and how it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldestAge {
    /// The server returned ApproximateAgeOfOldestMessage (seconds).
    Attribute(u64),
    /// The oldest SentTimestamp among the messages one non-hiding receive returned (seconds; a
    /// lower bound).
    Sampled(u64),
    /// ApproximateNumberOfMessages is 0, or the sampling receive returned nothing.
    NoVisibleMessages,
    /// Not sampled (the caller chose not to, see the module docs).
    NotSampled,
}

impl OldestAge {
    pub fn secs(self) -> Option<u64> {
        match self {
            OldestAge::Attribute(s) | OldestAge::Sampled(s) => Some(s),
            OldestAge::NoVisibleMessages | OldestAge::NotSampled => None,
        }
    }

    /// The `oldest_age_from` value of `queues stats --json`.
    pub fn source(self) -> &'static str {
        match self {
            OldestAge::Attribute(_) => "attribute",
            OldestAge::Sampled(_) => "sample",
            OldestAge::NoVisibleMessages => "no_visible_messages",
            OldestAge::NotSampled => "not_sampled",
        }
    }
}

/// ApproximateAgeOfOldestMessage, when the server returns it as a queue attribute.
pub fn age_attribute(attrs: &HashMap<String, String>) -> Option<u64> {
    attrs
        .get("ApproximateAgeOfOldestMessage")
        .and_then(|v| v.trim().parse().ok())
}

/// The oldest age: the attribute if the server has it, else (when `sample` is true and the
/// queue has visible messages) one receive that hides nothing (see the module docs).
pub async fn oldest_age(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    attrs: &HashMap<String, String>,
    sample: bool,
    now: DateTime<Utc>,
) -> Result<OldestAge, SqsError> {
    if let Some(secs) = age_attribute(attrs) {
        return Ok(OldestAge::Attribute(secs));
    }
    if Depth::from_attrs(attrs).visible == 0 {
        return Ok(OldestAge::NoVisibleMessages);
    }
    if !sample {
        return Ok(OldestAge::NotSampled);
    }
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(0)
        // Zero: every message seen stays visible to the workers.
        .visibility_timeout(0)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .send()
        .await
        .map_err(SqsError::call("ReceiveMessage (oldest age sample)"))?;
    let oldest_sent_ms = out
        .messages
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            m.attributes
                .as_ref()?
                .get(&MessageSystemAttributeName::SentTimestamp)?
                .parse::<i64>()
                .ok()
        })
        .min();
    Ok(match oldest_sent_ms {
        Some(ms) => OldestAge::Sampled(age_secs(ms, now)),
        None => OldestAge::NoVisibleMessages,
    })
}

/// Whole seconds from `sent_ms` (epoch milliseconds) to `now`; 0 if the clocks disagree.
fn age_secs(sent_ms: i64, now: DateTime<Utc>) -> u64 {
    u64::try_from((now.timestamp_millis() - sent_ms) / 1000).unwrap_or(0)
}

/// An age for a table column: `42s`, `3m07s`, `5h02m`, `2d03h`.
pub fn format_age(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_and_dlq_from_attributes() {
        let attrs: HashMap<String, String> = [
            ("ApproximateNumberOfMessages", "5"),
            ("ApproximateNumberOfMessagesNotVisible", "2"),
            (
                "RedrivePolicy",
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:events-dlq","maxReceiveCount":"5"}"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            Depth::from_attrs(&attrs),
            Depth {
                visible: 5,
                in_flight: 2,
                delayed: 0
            }
        );
        assert_eq!(dead_letter_target(&attrs).as_deref(), Some("events-dlq"));
        assert_eq!(dead_letter_target(&HashMap::new()), None);
        assert_eq!(dlq_target(&attrs), DlqTarget::Named("events-dlq".into()));
        assert_eq!(dlq_target(&HashMap::new()), DlqTarget::None);
        let odd: HashMap<String, String> = [("RedrivePolicy".to_string(), "{}".to_string())].into();
        assert_eq!(dlq_target(&odd), DlqTarget::Unreadable("{}".into()));
    }

    #[test]
    fn ages() {
        let now = DateTime::from_timestamp_millis(1_000_000_000).expect("time");
        assert_eq!(age_secs(1_000_000_000 - 187_900, now), 187);
        assert_eq!(age_secs(1_000_000_000 + 5_000, now), 0, "clock skew is 0");
        assert_eq!(format_age(42), "42s");
        assert_eq!(format_age(187), "3m07s");
        assert_eq!(format_age(5 * 3600 + 120), "5h02m");
        assert_eq!(format_age(2 * 86_400 + 3 * 3600), "2d03h");
        let attrs: HashMap<String, String> = [(
            "ApproximateAgeOfOldestMessage".to_string(),
            "61".to_string(),
        )]
        .into();
        assert_eq!(age_attribute(&attrs), Some(61));
    }
}
