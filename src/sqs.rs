//! The SQS client, built the way it would be for AWS (standard credential and region chain,
//! optional endpoint override), and the receive call. Deleting and changing visibility live in
//! `acker` alone.

mod receive_json;

pub use receive_json::{answers_read_here, successful_answers_read_by_the_sdk};

use std::collections::HashMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use chrono::{DateTime, TimeZone, Utc};

use crate::config::{SqsConfig, MAX_WAIT_TIME_SECS};

/// An SQS call that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqsError {
    /// The call failed; `detail` is the SDK error with its causes on one line (the SDK's own
    /// Display is only "service error" or "dispatch failure").
    #[error("{op}: {detail}")]
    Call { op: &'static str, detail: String },
    #[error("GetQueueUrl returned no URL for queue {0}")]
    NoUrl(String),
}

impl SqsError {
    pub(crate) fn call<E: std::error::Error + 'static>(op: &'static str) -> impl FnOnce(E) -> Self {
        move |e| SqsError::Call {
            op,
            detail: describe(&e),
        }
    }
}

/// A message as received, before decoding. Engine-internal: handlers never see it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: Option<DateTime<Utc>>,
    pub attributes: HashMap<String, String>,
    /// The X-Ray trace header SQS keeps for a message sent with one (Lambda sets it): the
    /// message's trace when it carries no `traceparent` attribute.
    pub aws_trace_header: Option<String>,
}

/// Shared AWS SDK config for SQS and S3.
pub async fn aws_config(sqs: &SqsConfig) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            // Above the longest long poll, so a receive is never cut short by the SDK.
            .operation_attempt_timeout(Duration::from_secs(u64::from(MAX_WAIT_TIME_SECS) + 10))
            .build(),
    );
    if let Some(region) = &sqs.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &sqs.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

pub fn client(config: &aws_config::SdkConfig) -> Client {
    Client::new(config)
}

/// Resolve a configured queue to its URL.
pub async fn queue_url(client: &Client, name: &str, url: Option<&str>) -> Result<String, SqsError> {
    if let Some(url) = url {
        return Ok(url.to_string());
    }
    client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(SqsError::call("GetQueueUrl"))?
        .queue_url
        .ok_or_else(|| SqsError::NoUrl(name.to_string()))
}

/// One long poll.
pub async fn receive(
    client: &Client,
    queue_url: &str,
    max: u32,
    wait_time_secs: u32,
    visibility_timeout_secs: u32,
) -> Result<Vec<Received>, SqsError> {
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(max as i32)
        .wait_time_seconds(wait_time_secs as i32)
        .visibility_timeout(visibility_timeout_secs as i32)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_system_attribute_names(MessageSystemAttributeName::AwsTraceHeader)
        .message_attribute_names("All")
        .customize()
        .interceptor(receive_json::UseJsonReceive)
        .send()
        .await
        .map_err(SqsError::call("ReceiveMessage"))?;
    Ok(out
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let system = m.attributes.unwrap_or_default();
            let receive_count = system
                .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let sent_at = system
                .get(&MessageSystemAttributeName::SentTimestamp)
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
            let aws_trace_header = system
                .get(&MessageSystemAttributeName::AwsTraceHeader)
                .cloned();
            let attributes = m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
                .collect();
            Some(Received {
                message_id: m.message_id?,
                receipt_handle: m.receipt_handle?,
                body: m.body.unwrap_or_default(),
                receive_count,
                sent_at,
                attributes,
                aws_trace_header,
            })
        })
        .collect())
}

/// Queue attributes by name, for `check` and the admin commands.
pub async fn attributes(
    client: &Client,
    queue_url: &str,
) -> Result<HashMap<String, String>, SqsError> {
    let out = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(SqsError::call("GetQueueAttributes"))?;
    Ok(out
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect())
}

/// A one-line description of an SDK error with its cause chain (the SDK's own Display is just
/// "service error" or "dispatch failure").
pub fn describe<E: std::error::Error + 'static>(err: &E) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
