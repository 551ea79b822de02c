//! The narrow seam between the router and AWS: one SQS send and one S3 put, and for `serve`'s
//! streamed inbound posts an S3 multipart upload (create, parts, complete or abort) and the
//! delete of an object whose pointer SQS refused.
//!
//! Everything the router decides (routing, auth, size limits, envelope encoding, status codes) is
//! tested through this trait with an in-memory fake; only [`crate::aws::AwsSink`] talks to the
//! network. Keeping the seam this small is what lets the same core run in Lambda, in `serve`, in
//! the criterion bench and in the tests. The multipart operations have defaults that fail
//! ([`SinkError::Unsupported`]): a sink that cannot stream (the bench's, a test's) answers a
//! streamed post 503, as an S3 outage would, and needs no code for it.

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

/// A message's SQS grouping, when its route sets one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grouping<'a> {
    /// `MessageGroupId`: fair queues on standard queues, ordering groups on FIFO queues.
    pub group_id: Option<&'a str>,
    /// `MessageDeduplicationId` for FIFO queues: the SHA-256 of the request body, so SendGrid's
    /// retry of the same post within SQS's 5-minute window is one message. The envelope itself
    /// differs per request (receive time, request id), so it cannot serve.
    pub dedup_id: Option<&'a str>,
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
    /// One step of a multipart upload (or the delete of its object) failed.
    #[error("S3 {operation} for s3://{bucket}/{key} failed: {reason}")]
    S3Multipart {
        operation: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("this sink cannot do S3 {operation}")]
    Unsupported { operation: &'static str },
}

/// One stored part of a multipart upload, as CompleteMultipartUpload wants it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    /// 1-based, in order.
    pub number: i32,
    pub etag: String,
    /// The part's CRC32 when S3 computed one (the SDK sends it by default); Complete must
    /// repeat it then.
    pub checksum_crc32: Option<String>,
}

fn unsupported<T>(operation: &'static str) -> impl Future<Output = Result<T, SinkError>> + Send
where
    T: Send,
{
    std::future::ready(Err(SinkError::Unsupported { operation }))
}

/// Where accepted callbacks go.
pub trait Sink: Send + Sync {
    /// Sends one message; resolves to the SQS message id once SQS has accepted it.
    fn send_message(
        &self,
        queue_url: &str,
        body: String,
        attributes: Vec<Attribute>,
        grouping: Grouping<'_>,
    ) -> impl Future<Output = Result<String, SinkError>> + Send;

    /// Stores one object; resolves once S3 has accepted it.
    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Starts a multipart upload; resolves to its upload id.
    fn create_multipart_upload(
        &self,
        _bucket: &str,
        _key: &str,
    ) -> impl Future<Output = Result<String, SinkError>> + Send {
        unsupported("CreateMultipartUpload")
    }

    /// Stores part `number` (1-based; every part but the last at least 5 MiB).
    fn upload_part(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
        _number: i32,
        _bytes: Bytes,
    ) -> impl Future<Output = Result<UploadedPart, SinkError>> + Send {
        unsupported("UploadPart")
    }

    /// Joins the parts into the object; resolves once the object exists.
    fn complete_multipart_upload(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
        _parts: Vec<UploadedPart>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        unsupported("CompleteMultipartUpload")
    }

    /// Drops an unfinished upload and the parts stored so far.
    fn abort_multipart_upload(
        &self,
        _bucket: &str,
        _key: &str,
        _upload_id: &str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        unsupported("AbortMultipartUpload")
    }

    /// Deletes an object (a completed upload whose pointer SQS did not take).
    fn delete_object(
        &self,
        _bucket: &str,
        _key: &str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        unsupported("DeleteObject")
    }
}

impl<S: Sink> Sink for std::sync::Arc<S> {
    fn send_message(
        &self,
        queue_url: &str,
        body: String,
        attributes: Vec<Attribute>,
        grouping: Grouping<'_>,
    ) -> impl Future<Output = Result<String, SinkError>> + Send {
        (**self).send_message(queue_url, body, attributes, grouping)
    }

    fn put_object(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).put_object(bucket, key, bytes)
    }

    fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<String, SinkError>> + Send {
        (**self).create_multipart_upload(bucket, key)
    }

    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        bytes: Bytes,
    ) -> impl Future<Output = Result<UploadedPart, SinkError>> + Send {
        (**self).upload_part(bucket, key, upload_id, number, bytes)
    }

    fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).complete_multipart_upload(bucket, key, upload_id, parts)
    }

    fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).abort_multipart_upload(bucket, key, upload_id)
    }

    fn delete_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).delete_object(bucket, key)
    }
}
