//! The real [`Sink`]: aws-sdk-sqs and aws-sdk-s3 over one shared aws-config (S3 multipart
//! uploads too, for `serve`'s streamed inbound posts).
//!
//! Endpoint overrides come from aws-config itself (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_S3`), so local SQS/S3 emulators need no router
//! code. S3 emulators generally don't do virtual-hosted buckets, hence path-style addressing
//! whenever an endpoint is overridden.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::sink::{Attribute, AttributeValue, Grouping, Sink, SinkError, UploadedPart};

/// SQS and S3 clients.
#[derive(Clone, Debug)]
pub struct AwsSink {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
}

impl AwsSink {
    /// Builds clients from the standard AWS environment (region, credentials, endpoints), with
    /// timeouts that leave room for a 503 inside API Gateway's 29-30 s integration timeout
    /// (a request that times out at the gateway is a 504 SendGrid retries too, but without
    /// our log line).
    pub async fn from_env() -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(8))
            .operation_timeout(Duration::from_secs(20))
            .build();
        let shared = aws_config::from_env().timeout_config(timeouts).load().await;
        Self::from_sdk_config(&shared)
    }

    /// Builds clients from a loaded aws-config.
    pub fn from_sdk_config(shared: &aws_config::SdkConfig) -> Self {
        let endpoint_overridden =
            shared.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3_config = aws_sdk_s3::config::Builder::from(shared)
            .force_path_style(endpoint_overridden)
            .build();
        Self {
            sqs: aws_sdk_sqs::Client::new(shared),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
        }
    }
}

/// A failed multipart step, with the SDK's whole error chain.
fn multipart_error<E: std::error::Error + 'static>(
    operation: &'static str,
    bucket: &str,
    key: &str,
    error: E,
) -> SinkError {
    SinkError::S3Multipart {
        operation,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason: aws_sdk_s3::error::DisplayErrorContext(&error).to_string(),
    }
}

fn to_sqs_attribute(attribute: &Attribute) -> Result<MessageAttributeValue, String> {
    let (data_type, value) = match &attribute.value {
        AttributeValue::String(v) => ("String", v),
        AttributeValue::Number(v) => ("Number", v),
    };
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .map_err(|e| e.to_string())
}

impl Sink for AwsSink {
    async fn send_message(
        &self,
        queue_url: &str,
        body: String,
        attributes: Vec<Attribute>,
        grouping: Grouping<'_>,
    ) -> Result<String, SinkError> {
        let fail = |reason: String| SinkError::Sqs {
            queue_url: queue_url.to_owned(),
            reason,
        };
        // A FIFO queue requires a group and a deduplication id (unless the queue has
        // content-based deduplication, which a caller cannot know). The caller's id is the
        // request body's digest; without one, the message body's digest at least satisfies
        // the queue.
        let fifo = queue_url.ends_with(".fifo");
        let group_id = grouping
            .group_id
            .or(fifo.then_some(crate::routing::DEFAULT_ROUTE_LABEL));
        let dedup_id = fifo.then(|| {
            grouping.dedup_id.map_or_else(
                || hex::encode(Sha256::digest(body.as_bytes())),
                str::to_owned,
            )
        });
        let mut request = self
            .sqs
            .send_message()
            .queue_url(queue_url)
            .set_message_group_id(group_id.map(str::to_owned))
            .set_message_deduplication_id(dedup_id)
            .message_body(body);
        for attribute in &attributes {
            request = request
                .message_attributes(&attribute.name, to_sqs_attribute(attribute).map_err(fail)?);
        }
        let output = request
            .send()
            .await
            .map_err(|e| fail(aws_sdk_sqs::error::DisplayErrorContext(&e).to_string()))?;
        Ok(output.message_id().unwrap_or_default().to_owned())
    }

    async fn put_object(&self, bucket: &str, key: &str, bytes: Bytes) -> Result<(), SinkError> {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| SinkError::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                reason: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }

    async fn create_multipart_upload(&self, bucket: &str, key: &str) -> Result<String, SinkError> {
        let output = self
            .s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .send()
            .await
            .map_err(|e| multipart_error("CreateMultipartUpload", bucket, key, e))?;
        output
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| SinkError::S3Multipart {
                operation: "CreateMultipartUpload",
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                reason: "the answer has no UploadId".to_owned(),
            })
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        bytes: Bytes,
    ) -> Result<UploadedPart, SinkError> {
        let output = self
            .s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| multipart_error("UploadPart", bucket, key, e))?;
        Ok(UploadedPart {
            number,
            etag: output.e_tag().unwrap_or_default().to_owned(),
            checksum_crc32: output.checksum_crc32().map(str::to_owned),
        })
    }

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
    ) -> Result<(), SinkError> {
        let parts = parts
            .into_iter()
            .map(|part| {
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(part.number)
                    .e_tag(part.etag)
                    .set_checksum_crc32(part.checksum_crc32)
                    .build()
            })
            .collect();
        self.s3
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| multipart_error("CompleteMultipartUpload", bucket, key, e))?;
        Ok(())
    }

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), SinkError> {
        self.s3
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| multipart_error("AbortMultipartUpload", bucket, key, e))?;
        Ok(())
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), SinkError> {
        self.s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| multipart_error("DeleteObject", bucket, key, e))?;
        Ok(())
    }
}
