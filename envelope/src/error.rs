//! Why an SQS body could not be decoded. The `Display` text is stored with the dead letter, so
//! every variant says plainly what was wrong and where.

use thiserror::Error;

/// A message body that is not one of the shapes [`crate::decode`] knows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("message too large: {len} bytes (limit {max})")]
    TooLarge { len: usize, max: usize },
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("unrecognised message shape: expected a mailroom envelope, a legacy body-json/body-raw object, or an S3 pointer")]
    Unrecognised,
    #[error("mailroom envelope version is not a positive integer: {0}")]
    BadVersion(String),
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u64),
    #[error("malformed mailroom envelope v1: {0}")]
    BadEnvelope(String),
    #[error("{field} is not valid base64")]
    BadBase64 { field: &'static str },
    #[error("malformed legacy message: {0}")]
    BadLegacy(String),
    #[error("not a Java map: {0}")]
    JavaMap(String),
    #[error("malformed S3 pointer: {0}")]
    BadPointer(String),
}
