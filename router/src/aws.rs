//! The real [`Sink`]: aws-sdk-sqs and aws-sdk-s3 over one shared aws-config.
//!
//! Endpoint overrides come from aws-config itself (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_S3`), so local SQS/S3 emulators need no router
//! code. S3 emulators generally don't do virtual-hosted buckets, hence path-style addressing
//! whenever an endpoint is overridden.

use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use bytes::Bytes;

use crate::sink::{Attribute, AttributeValue, Sink, SinkError};

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
    ) -> Result<String, SinkError> {
        let fail = |reason: String| SinkError::Sqs {
            queue_url: queue_url.to_owned(),
            reason,
        };
        let mut request = self
            .sqs
            .send_message()
            .queue_url(queue_url)
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
}
