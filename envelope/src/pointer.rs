//! SQS Extended Client pointers. A producer using the Amazon SQS Extended Client libraries (or
//! the router, for bodies over the SQS size limit) stores the payload in S3 and sends
//! `["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"k"}]`.
//! We read and write exactly that, so either side may be an official client. The Java v1 class
//! name `com.amazon.sqs.javamessaging.MessageS3Pointer` is accepted on read.

use serde::{Deserialize, Serialize};

use crate::{DecodeError, S3Pointer};

/// The class name the current Extended Client libraries write.
pub const POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";
/// The class name the original Java Extended Client (v1) wrote.
pub const LEGACY_POINTER_CLASS: &str = "com.amazon.sqs.javamessaging.MessageS3Pointer";

#[derive(Serialize, Deserialize)]
struct Location {
    #[serde(rename = "s3BucketName")]
    bucket: String,
    #[serde(rename = "s3Key")]
    key: String,
}

impl S3Pointer {
    /// The SQS message body for this pointer, in the Extended Client format.
    pub fn to_message_body(&self) -> String {
        let loc = Location {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        };
        serde_json::to_string(&(POINTER_CLASS, loc)).unwrap_or_default()
    }
}

/// Decodes a body that is a JSON array; `Ok(None)` when it is not a pointer at all.
pub(crate) fn decode(text: &str) -> Result<Option<S3Pointer>, DecodeError> {
    let Ok((class, rest)) = serde_json::from_str::<(String, serde_json::Value)>(text) else {
        return Ok(None);
    };
    if class != POINTER_CLASS && class != LEGACY_POINTER_CLASS {
        return Ok(None);
    }
    let loc: Location =
        serde_json::from_value(rest).map_err(|e| DecodeError::BadPointer(e.to_string()))?;
    if loc.bucket.is_empty() || loc.key.is_empty() {
        return Err(DecodeError::BadPointer(
            "empty s3BucketName or s3Key".into(),
        ));
    }
    Ok(Some(S3Pointer {
        bucket: loc.bucket,
        key: loc.key,
    }))
}
