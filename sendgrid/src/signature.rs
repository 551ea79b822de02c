//! Signed Event Webhook verification: ECDSA P-256 with SHA-256 over the bytes of the
//! `X-Twilio-Email-Event-Webhook-Timestamp` header value followed by the raw request body. The
//! signature is base64 DER; the public key (from the SendGrid console) is base64 DER
//! SubjectPublicKeyInfo. The signed bytes are the body exactly as received: re-serialising the
//! JSON (even only dropping SendGrid's CRLF between events) invalidates it.
//!
//! [`PublicKey`] parses the key once for callers that verify many requests (the router);
//! [`check_timestamp`] bounds replay of a captured request.

use base64::Engine;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use sha2::Digest;
use thiserror::Error;

/// Why a signed webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("public key is not base64 DER SubjectPublicKeyInfo for a P-256 key: {0}")]
    BadPublicKey(String),
    #[error("signature is not base64 DER ECDSA: {0}")]
    BadSignatureEncoding(String),
    #[error("signature does not match the timestamp and body")]
    Mismatch,
    #[error("timestamp is not a Unix time in seconds: {0:?}")]
    BadTimestamp(String),
    #[error(
        "timestamp {timestamp} is {skew_secs}s away from now, outside the {window_secs}s window"
    )]
    OutsideWindow {
        timestamp: i64,
        skew_secs: u64,
        window_secs: i64,
    },
}

/// A SendGrid Event Webhook verification key, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

fn b64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

impl PublicKey {
    /// Parses the base64 DER SubjectPublicKeyInfo shown in SendGrid's console.
    pub fn from_base64(public_key_b64: &str) -> Result<Self, SignatureError> {
        let der = b64(public_key_b64).map_err(|e| SignatureError::BadPublicKey(e.to_string()))?;
        let key = VerifyingKey::from_public_key_der(&der)
            .map_err(|e| SignatureError::BadPublicKey(e.to_string()))?;
        Ok(Self { key })
    }

    /// Checks `signature_b64` over `timestamp` followed by `body`.
    pub fn verify(
        &self,
        signature_b64: &str,
        timestamp: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let der =
            b64(signature_b64).map_err(|e| SignatureError::BadSignatureEncoding(e.to_string()))?;
        let signature = Signature::from_der(&der)
            .map_err(|e| SignatureError::BadSignatureEncoding(e.to_string()))?;
        let mut signed = Vec::with_capacity(timestamp.len() + body.len());
        signed.extend_from_slice(timestamp.as_bytes());
        signed.extend_from_slice(body);
        self.key
            .verify(&signed, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Checks `signature_b64` against the digest of the signed bytes, computed by a
    /// [`SignedDigest`] as they arrived: the same check as [`PublicKey::verify`] (ECDSA over
    /// SHA-256 of timestamp then body) for a body too large to hold in memory.
    pub fn verify_digest(
        &self,
        signature_b64: &str,
        digest: &SignedDigest,
    ) -> Result<(), SignatureError> {
        let der =
            b64(signature_b64).map_err(|e| SignatureError::BadSignatureEncoding(e.to_string()))?;
        let signature = Signature::from_der(&der)
            .map_err(|e| SignatureError::BadSignatureEncoding(e.to_string()))?;
        let prehash = digest.0.clone().finalize();
        self.key
            .verify_prehash(&prehash, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// The SHA-256 of a signed webhook's signed bytes (the timestamp header value, then the body),
/// fed chunk by chunk as the body streams in; checked with [`PublicKey::verify_digest`], with
/// as many keys as needed (a key rotation's current and previous one).
#[derive(Clone)]
pub struct SignedDigest(sha2::Sha256);

impl SignedDigest {
    /// Starts the digest with the timestamp header's value.
    pub fn new(timestamp: &str) -> Self {
        let mut hasher = sha2::Sha256::new();
        hasher.update(timestamp.as_bytes());
        Self(hasher)
    }

    /// Adds the next bytes of the body.
    pub fn update(&mut self, body_chunk: &[u8]) {
        self.0.update(body_chunk);
    }
}

impl std::fmt::Debug for SignedDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedDigest")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

/// One-shot verification: parses the key, then checks the signature.
pub fn verify_signature(
    public_key_b64: &str,
    signature_b64: &str,
    timestamp: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    PublicKey::from_base64(public_key_b64)?.verify(signature_b64, timestamp, body)
}

/// Refuses a timestamp header more than `window_secs` away from `now_unix` (either direction).
pub fn check_timestamp(
    timestamp: &str,
    now_unix: i64,
    window_secs: i64,
) -> Result<(), SignatureError> {
    let trimmed = timestamp.trim();
    let ts: i64 = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        trimmed.parse().ok()
    } else {
        None
    }
    .ok_or_else(|| SignatureError::BadTimestamp(timestamp.chars().take(40).collect()))?;
    let skew = ts.abs_diff(now_unix);
    if window_secs < 0 || skew > window_secs.unsigned_abs() {
        return Err(SignatureError::OutsideWindow {
            timestamp: ts,
            skew_secs: skew,
            window_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_window() {
        assert_eq!(check_timestamp("1000", 1000, 0), Ok(()));
        assert_eq!(check_timestamp("1000", 1300, 300), Ok(()));
        assert_eq!(check_timestamp("1300", 1000, 300), Ok(()));
        assert!(matches!(
            check_timestamp("1000", 1301, 300),
            Err(SignatureError::OutsideWindow { skew_secs: 301, .. })
        ));
        assert!(matches!(
            check_timestamp("-5", 0, 300),
            Err(SignatureError::BadTimestamp(_))
        ));
        assert!(matches!(
            check_timestamp("", 0, 300),
            Err(SignatureError::BadTimestamp(_))
        ));
        assert!(matches!(
            check_timestamp("99999999999999999999999", 0, 300),
            Err(SignatureError::BadTimestamp(_))
        ));
        assert!(check_timestamp("0", i64::MIN, i64::MAX).is_err());
    }

    /// A digest fed in chunks verifies exactly what the one-shot check verifies.
    #[test]
    fn a_streamed_digest_verifies_like_the_whole_body() {
        use p256::ecdsa::signature::Signer;
        let signing = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).expect("scalar");
        let key = PublicKey {
            key: *signing.verifying_key(),
        };
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let timestamp = "1700000000";
        let signed: Vec<u8> = [timestamp.as_bytes(), &body].concat();
        let signature: Signature = signing.sign(&signed);
        let signature_b64 =
            base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
        assert_eq!(key.verify(&signature_b64, timestamp, &body), Ok(()));

        let mut digest = SignedDigest::new(timestamp);
        for chunk in body.chunks(7_777) {
            digest.update(chunk);
        }
        assert_eq!(key.verify_digest(&signature_b64, &digest), Ok(()));

        let mut tampered = SignedDigest::new(timestamp);
        tampered.update(&body[1..]);
        assert_eq!(
            key.verify_digest(&signature_b64, &tampered),
            Err(SignatureError::Mismatch)
        );
        let mut other_time = SignedDigest::new("1700000001");
        other_time.update(&body);
        assert_eq!(
            key.verify_digest(&signature_b64, &other_time),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            key.verify_digest("%%%", &digest),
            Err(SignatureError::BadSignatureEncoding(_))
        ));
    }

    #[test]
    fn garbage_keys_and_signatures_are_errors() {
        assert!(matches!(
            PublicKey::from_base64("%%%"),
            Err(SignatureError::BadPublicKey(_))
        ));
        assert!(matches!(
            PublicKey::from_base64("AAAA"),
            Err(SignatureError::BadPublicKey(_))
        ));
    }
}
