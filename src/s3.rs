//! Bodies offloaded to S3 (SQS Extended Client pointers): fetched before the handler runs, and
//! deleted only after the message that points at them was deleted from SQS.

use aws_sdk_s3::Client;
use mailroom_envelope::{decode, DecodeError, Decoded, Envelope, S3Pointer};

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
    /// Larger than any envelope can be: refused before it is read.
    #[error("S3 object s3://{bucket}/{key} is {size} bytes, over the {max}-byte envelope limit")]
    TooLarge {
        bucket: String,
        key: String,
        size: u64,
        max: usize,
    },
}

/// Why a message could not be opened into an envelope.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("envelope: {0}")]
    Envelope(#[source] DecodeError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("S3 object s3://{bucket}/{key} holds another S3 pointer")]
    PointerToPointer { bucket: String, key: String },
    #[error("envelope in s3://{bucket}/{key}: {source}")]
    EnvelopeInS3 {
        bucket: String,
        key: String,
        #[source]
        source: DecodeError,
    },
}

impl OpenError {
    /// S3 unreachable: not the message's fault, so never a dead letter.
    pub fn is_transient(&self) -> bool {
        matches!(self, OpenError::Fetch(FetchError::Unavailable { .. }))
    }
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

    /// An SQS message body as the envelope it carries: decoded, with an offloaded body fetched
    /// and decoded in turn. The one way both the engine and `dead-letters replay` open a
    /// message, so they cannot disagree about what is a dead letter. The pointer is returned
    /// with the envelope it led to.
    pub async fn open(&self, body: &str) -> Result<(Envelope, Option<S3Pointer>), OpenError> {
        match decode(body).map_err(OpenError::Envelope)? {
            Decoded::Envelope(envelope) => Ok((envelope, None)),
            Decoded::Pointer(pointer) => {
                let text = self.fetch(&pointer).await?;
                match decode(&text) {
                    Ok(Decoded::Envelope(envelope)) => Ok((envelope, Some(pointer))),
                    Ok(Decoded::Pointer(_)) => Err(OpenError::PointerToPointer {
                        bucket: pointer.bucket,
                        key: pointer.key,
                    }),
                    Err(source) => Err(OpenError::EnvelopeInS3 {
                        bucket: pointer.bucket,
                        key: pointer.key,
                        source,
                    }),
                }
            }
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
        let max = mailroom_envelope::MAX_MESSAGE_BYTES;
        let declared = out.content_length().unwrap_or(0).max(0) as u64;
        if declared > max as u64 {
            return Err(FetchError::TooLarge {
                bucket,
                key,
                size: declared,
                max,
            });
        }
        // Read chunk by chunk, never past the limit, whatever the declared length said.
        let mut body = out.body;
        let mut bytes = Vec::with_capacity(declared as usize);
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > max {
                        let size = (bytes.len() + chunk.len()) as u64;
                        return Err(FetchError::TooLarge {
                            bucket,
                            key,
                            size,
                            max,
                        });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(FetchError::Unavailable {
                        bucket,
                        key,
                        reason: e.to_string(),
                    })
                }
            }
        }
        String::from_utf8(bytes).map_err(|_| FetchError::NotText { bucket, key })
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
