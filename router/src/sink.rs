//! The narrow seam between the router and AWS: one SQS send and one S3 put.
//!
//! Everything the router decides (routing, auth, size limits, envelope encoding, status codes) is
//! tested through this trait with an in-memory fake; only [`crate::aws::AwsSink`] talks to the
//! network. Keeping the seam this small is what lets the same core run in Lambda, in `serve`, in
//! the criterion bench and in the tests.

use std::future::Future;

use bytes::Bytes;

/// An SQS message attribute value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// DataType `String`.
    String(String),
    /// DataType `Number` (the decimal text).
    Number(String),
}

/// One SQS message attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: AttributeValue,
}

impl Attribute {
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: AttributeValue::String(value.into()),
        }
    }

    pub fn number(name: impl Into<String>, value: impl ToString) -> Self {
        Self {
            name: name.into(),
            value: AttributeValue::Number(value.to_string()),
        }
    }
}

/// Why the sink could not take a message; the `Display` is logged, never shown to callers.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("SQS SendMessage to {queue_url} failed: {reason}")]
    Sqs { queue_url: String, reason: String },
    #[error("S3 PutObject to s3://{bucket}/{key} failed: {reason}")]
    S3 {
        bucket: String,
        key: String,
        reason: String,
    },
}

/// Where accepted callbacks go.
pub trait Sink: Send + Sync {
    /// Sends one message; resolves to the SQS message id once SQS has accepted it.
    fn send_message(
        &self,
        queue_url: &str,
        body: String,
        attributes: Vec<Attribute>,
    ) -> impl Future<Output = Result<String, SinkError>> + Send;

    /// Stores one object; resolves once S3 has accepted it.
    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl<S: Sink> Sink for std::sync::Arc<S> {
    fn send_message(
        &self,
        queue_url: &str,
        body: String,
        attributes: Vec<Attribute>,
    ) -> impl Future<Output = Result<String, SinkError>> + Send {
        (**self).send_message(queue_url, body, attributes)
    }

    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).put_object(bucket, key, bytes)
    }
}
