//! Bodies offloaded to S3 (SQS Extended Client pointers): fetched before the handler runs, only
//! from the configured large-body buckets, and never deleted by the worker (a redelivered
//! pointer must still find its object; the bucket's lifecycle rule expires bodies).

use aws_sdk_s3::Client;
use mailroom_envelope::{decode, decode_owned, DecodeError, Decoded, Envelope, S3Pointer};

use crate::sqs::describe;

/// Why a body could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The object or its bucket is gone (or never existed): retrying will not help.
    #[error("S3 object s3://{bucket}/{key} does not exist (no such key or bucket)")]
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

impl FetchError {
    /// An SDK error of a call on `bucket`/`key`: the object's absence (the message's fault) or
    /// S3 being unavailable (transient).
    fn from_sdk<E: std::error::Error + 'static>(
        bucket: String,
        key: String,
        missing: bool,
        err: &E,
    ) -> Self {
        if missing {
            FetchError::Missing { bucket, key }
        } else {
            FetchError::Unavailable {
                bucket,
                key,
                reason: describe(err),
            }
        }
    }
}

/// Why a message could not be opened into an envelope.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("envelope: {0}")]
    Envelope(#[source] DecodeError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(
        "S3 pointer to s3://{bucket}/{key}: not a configured large-body bucket (allowed: {allowed})"
    )]
    ForeignBucket {
        bucket: String,
        key: String,
        allowed: String,
    },
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
    /// Buckets pointers may name; empty: any (`[s3] buckets` unset).
    buckets: std::sync::Arc<[String]>,
}

impl Bodies {
    pub fn new(config: &aws_config::SdkConfig, endpoint_overridden: bool) -> Self {
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            // S3-compatible servers on loopback have no virtual-host DNS.
            .force_path_style(endpoint_overridden)
            .build();
        Self {
            client: Client::from_conf(s3_config),
            buckets: std::sync::Arc::from(Vec::new()),
        }
    }

    /// Follow pointers into these buckets only (`[s3] buckets`); a pointer elsewhere is a dead
    /// letter. Empty keeps "any bucket".
    pub fn restricted_to(mut self, buckets: &[String]) -> Self {
        self.buckets = std::sync::Arc::from(buckets.to_vec());
        self
    }

    /// An SQS message body as the envelope it carries: decoded, with an offloaded body fetched
    /// and decoded in turn. `dead-letters replay` opens a message this way; the engine makes the
    /// same calls ([`Bodies::check_bucket`], [`Bodies::open_pointer`]) with its body budget in
    /// between, so the two cannot disagree about what is a dead letter.
    pub async fn open(&self, body: &str) -> Result<Envelope, OpenError> {
        match decode(body).map_err(OpenError::Envelope)? {
            Decoded::Envelope(envelope) => Ok(envelope),
            Decoded::Pointer(pointer) => {
                self.check_bucket(&pointer)?;
                Ok(self
                    .open_pointer(&pointer, mailroom_envelope::MAX_MESSAGE_BYTES)
                    .await?)
            }
        }
    }

    /// A pointer into a bucket other than the configured ones is refused.
    pub fn check_bucket(&self, pointer: &S3Pointer) -> Result<(), OpenError> {
        if !self.buckets.is_empty() && !self.buckets.contains(&pointer.bucket) {
            return Err(OpenError::ForeignBucket {
                bucket: pointer.bucket.clone(),
                key: pointer.key.clone(),
                allowed: self.buckets.join(", "),
            });
        }
        Ok(())
    }

    /// The object's size (HEAD), so the engine can reserve memory for it before reading it. An
    /// object over the envelope limit is refused here, before anything is reserved or read.
    pub async fn size(&self, pointer: &S3Pointer) -> Result<u64, FetchError> {
        let (bucket, key) = (pointer.bucket.clone(), pointer.key.clone());
        let max = mailroom_envelope::MAX_MESSAGE_BYTES;
        match self
            .client
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => match out.content_length().unwrap_or(0).max(0) as u64 {
                size if size > max as u64 => Err(FetchError::TooLarge {
                    bucket,
                    key,
                    size,
                    max,
                }),
                size => Ok(size),
            },
            Err(err) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                // HEAD has no body, so a missing bucket reads as NotFound (404) like a key.
                let missing = err.as_service_error().is_some_and(|e| {
                    e.is_not_found() || matches!(e.code(), Some("NoSuchBucket" | "NoSuchKey"))
                }) || err
                    .raw_response()
                    .is_some_and(|r| r.status().as_u16() == 404);
                Err(FetchError::from_sdk(bucket, key, missing, &err))
            }
        }
    }

    /// Fetch the object a pointer names, reading at most `limit` bytes, and decode the envelope
    /// it holds. The text is handed to [`decode_owned`], so the body is decoded inside the
    /// fetched buffer: one object-sized buffer at a time, not the text and the body at once.
    pub async fn open_pointer(
        &self,
        pointer: &S3Pointer,
        limit: usize,
    ) -> Result<Envelope, OpenError> {
        let text = self.fetch_at_most(pointer, limit).await?;
        match decode_owned(text) {
            Ok(Decoded::Envelope(envelope)) => Ok(envelope),
            Ok(Decoded::Pointer(_)) => Err(OpenError::PointerToPointer {
                bucket: pointer.bucket.clone(),
                key: pointer.key.clone(),
            }),
            Err(source) => Err(OpenError::EnvelopeInS3 {
                bucket: pointer.bucket.clone(),
                key: pointer.key.clone(),
                source,
            }),
        }
    }

    pub async fn fetch(&self, pointer: &S3Pointer) -> Result<String, FetchError> {
        self.fetch_at_most(pointer, mailroom_envelope::MAX_MESSAGE_BYTES)
            .await
    }

    /// [`Bodies::fetch`], refusing past `limit` bytes (at most the envelope limit).
    pub async fn fetch_at_most(
        &self,
        pointer: &S3Pointer,
        limit: usize,
    ) -> Result<String, FetchError> {
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
                // A key or a bucket that does not exist is the message's fault: a dead letter,
                // not a retry forever.
                let missing = err.as_service_error().is_some_and(|e| {
                    use aws_sdk_s3::error::ProvideErrorMetadata;
                    e.is_no_such_key() || e.code() == Some("NoSuchBucket")
                });
                return Err(FetchError::from_sdk(bucket, key, missing, &err));
            }
        };
        let max = limit.min(mailroom_envelope::MAX_MESSAGE_BYTES);
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
}
