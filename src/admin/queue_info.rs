//! Queue depth from GetQueueAttributes, and the dead-letter queue named by a queue's
//! RedrivePolicy. Shared by `mailroom queues ...` and the telemetry depth poller.
//!
//! SQS has no attribute for the age of the oldest message (that is CloudWatch's
//! ApproximateAgeOfOldestMessage, which needs CloudWatch access and lags by minutes), so depth is
//! visible / in flight / delayed only.

use std::collections::HashMap;

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
    }
}
