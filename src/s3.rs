//! Bodies offloaded to S3 (SQS Extended Client pointers): fetched before the handler runs, and
//! deleted only after the message that points at them was deleted from SQS.

use aws_sdk_s3::Client;
use mailroom_envelope::S3Pointer;

use crate::sqs::describe;

/// Why a body could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The object is gone (or never existed): retrying will not help.
    #[error("S3 object s3://{bucket}/{key} does not exist")]
    Missing { bucket: String, key: String },
    /// S3 unreachable, throttled, or denied: retry later.
    #[error("S3 object s3://{bucket}/{key} could not be fetched: {reason}")]
    Unavailable {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("S3 object s3://{bucket}/{key} is not UTF-8 text")]
    NotText { bucket: String, key: String },
}

#[derive(Clone)]
pub struct Bodies {
    client: Client,
}

impl Bodies {
    pub fn new(config: &aws_config::SdkConfig, endpoint_overridden: bool) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            // S3-compatible servers on loopback have no virtual-host DNS.
            .force_path_style(endpoint_overridden)
            .build();
        Self {
            client: Client::from_conf(s3_config),
        }
    }

    pub async fn fetch(&self, pointer: &S3Pointer) -> Result<String, FetchError> {
        let (bucket, key) = (pointer.bucket.clone(), pointer.key.clone());
        let out = match self
            .client
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) => {
                let missing = err.as_service_error().is_some_and(|e| e.is_no_such_key());
                return Err(if missing {
                    FetchError::Missing { bucket, key }
                } else {
                    FetchError::Unavailable {
                        bucket,
                        key,
                        reason: describe(&err),
                    }
                });
            }
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| FetchError::Unavailable {
                bucket: bucket.clone(),
                key: key.clone(),
                reason: e.to_string(),
            })?
            .into_bytes();
        String::from_utf8(bytes.to_vec()).map_err(|_| FetchError::NotText { bucket, key })
    }

    /// Remove an object whose message is deleted. A failure leaves an orphan object (the
    /// bucket's lifecycle rule expires it), never a lost message, so it is only logged.
    pub async fn remove(&self, pointer: &S3Pointer) {
        if let Err(err) = self
            .client
            .delete_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .send()
            .await
        {
            tracing::warn!(bucket = %pointer.bucket, key = %pointer.key, error = %describe(&err), "could not delete offloaded body");
        }
    }
}
