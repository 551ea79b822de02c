//! Who may post: SendGrid's signed-webhook scheme (Event Webhook, and Inbound Parse when a key
//! is configured) and HTTP basic auth for Inbound Parse.
//!
//! A request that fails here is answered 401/403 and never reaches SQS. SendGrid retries 4xx
//! too, but a forged or replayed post should not be queued for the worker to trust.

use base64::Engine;
use mailroom_sendgrid::{PublicKey, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use subtle::ConstantTimeEq;

use chrono::{DateTime, Utc};

use crate::config::BasicAuth;
use crate::request::CallbackRequest;
use crate::routes::PreviousKey;

/// How far in the future a signature timestamp may be (clock skew between SendGrid and us).
pub const MAX_FUTURE_SKEW_SECS: i64 = 60;

/// Why a request was refused; the `Display` is the reason in the 401/403 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("signature does not verify")]
    BadSignature,
    #[error("timestamp outside the accepted window (replay?)")]
    StaleTimestamp,
    #[error("basic auth credentials required")]
    BasicAuthRequired,
    #[error("basic auth credentials rejected")]
    BasicAuthRejected,
}

impl AuthError {
    /// 401 for basic auth (so the client knows to send credentials), 403 for the rest.
    pub fn status(&self) -> http::StatusCode {
        match self {
            AuthError::BasicAuthRequired | AuthError::BasicAuthRejected => {
                http::StatusCode::UNAUTHORIZED
            }
            _ => http::StatusCode::FORBIDDEN,
        }
    }
}

/// Checks SendGrid's signature headers over the exact body, then the timestamp's age
/// (`max_age_secs == 0` disables the age check).
pub fn check_signature(
    key: &PublicKey,
    request: &CallbackRequest,
    now_unix: i64,
    max_age_secs: u64,
) -> Result<(), AuthError> {
    let (signature, timestamp) = signature_headers(request)?;
    key.verify(signature, timestamp, &request.body)
        .map_err(|_| AuthError::BadSignature)?;
    check_signature_age(timestamp, now_unix, max_age_secs)
}

/// The signature and timestamp headers of a signed post.
pub fn signature_headers(request: &CallbackRequest) -> Result<(&str, &str), AuthError> {
    let signature = request
        .header(SIGNATURE_HEADER)
        .ok_or(AuthError::MissingHeader(SIGNATURE_HEADER))?;
    let timestamp = request
        .header(TIMESTAMP_HEADER)
        .ok_or(AuthError::MissingHeader(TIMESTAMP_HEADER))?;
    Ok((signature, timestamp))
}

/// The replay window on a signature's timestamp (`max_age_secs == 0` disables it): a streamed
/// post checks it from the headers, before its body is uploaded.
pub fn check_signature_age(
    timestamp: &str,
    now_unix: i64,
    max_age_secs: u64,
) -> Result<(), AuthError> {
    if max_age_secs > 0 {
        let window = i64::try_from(max_age_secs).unwrap_or(i64::MAX);
        mailroom_sendgrid::check_timestamp(timestamp, now_unix, window)
            .map_err(|_| AuthError::StaleTimestamp)?;
        // That window is symmetric; a timestamp from the future only needs to cover clock skew
        // between SendGrid and us, so it gets much less room than an old one.
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| AuthError::StaleTimestamp)?;
        if ts > now_unix.saturating_add(window.min(MAX_FUTURE_SKEW_SECS)) {
            return Err(AuthError::StaleTimestamp);
        }
    }
    Ok(())
}

/// Which key verified a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    Current,
    /// The route's previous key, within its overlap.
    Previous,
}

/// Checks the signature with the route's current key and, only if that one does not verify it,
/// with its previous key while the rotation's overlap lasts (`now` before `expires_at`). A
/// missing header or a stale timestamp is the same whichever key: not retried.
pub fn check_rotating_signature(
    current: &PublicKey,
    previous: Option<&PreviousKey>,
    request: &CallbackRequest,
    now: DateTime<Utc>,
    max_age_secs: u64,
) -> Result<KeyUsed, AuthError> {
    let now_unix = now.timestamp();
    match check_signature(current, request, now_unix, max_age_secs) {
        Ok(()) => Ok(KeyUsed::Current),
        Err(AuthError::BadSignature) => match previous {
            Some(previous) if now < previous.expires_at => {
                check_signature(&previous.key, request, now_unix, max_age_secs)?;
                Ok(KeyUsed::Previous)
            }
            _ => Err(AuthError::BadSignature),
        },
        Err(other) => Err(other),
    }
}

/// [`check_rotating_signature`] for a body that was streamed: the signature over `digest` (the
/// timestamp and body hashed as they arrived), with the current key, else the previous one
/// within its overlap. The headers and the timestamp's age were checked before the body
/// ([`signature_headers`], [`check_signature_age`]).
pub fn check_rotating_digest(
    current: &PublicKey,
    previous: Option<&PreviousKey>,
    signature: &str,
    digest: &mailroom_sendgrid::SignedDigest,
    now: DateTime<Utc>,
) -> Result<KeyUsed, AuthError> {
    if current.verify_digest(signature, digest).is_ok() {
        return Ok(KeyUsed::Current);
    }
    match previous {
        Some(previous) if now < previous.expires_at => previous
            .key
            .verify_digest(signature, digest)
            .map(|()| KeyUsed::Previous)
            .map_err(|_| AuthError::BadSignature),
        _ => Err(AuthError::BadSignature),
    }
}

/// Checks an `Authorization: Basic ...` header against the expected credentials, comparing in
/// constant time so the password can't be guessed byte by byte from response timings.
pub fn check_basic_auth(expected: &BasicAuth, request: &CallbackRequest) -> Result<(), AuthError> {
    let header = request
        .header("authorization")
        .ok_or(AuthError::BasicAuthRequired)?;
    let (scheme, encoded) = header
        .trim()
        .split_once(' ')
        .ok_or(AuthError::BasicAuthRejected)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::BasicAuthRequired);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthError::BasicAuthRejected)?;
    let (user, password) = match decoded.iter().position(|b| *b == b':') {
        Some(i) => (&decoded[..i], &decoded[i + 1..]),
        None => return Err(AuthError::BasicAuthRejected),
    };
    // Evaluate both comparisons before combining, so a wrong user costs the same as a wrong
    // password.
    let user_ok = user.ct_eq(expected.user.as_bytes());
    let password_ok = password.ct_eq(expected.password.as_bytes());
    if bool::from(user_ok & password_ok) {
        Ok(())
    } else {
        Err(AuthError::BasicAuthRejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn with_auth(value: &str) -> CallbackRequest {
        CallbackRequest::new(Method::POST, "/sendgrid/inbound", "")
            .with_header("Authorization", value)
    }

    fn basic(user: &str, password: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    #[test]
    fn basic_auth() {
        let expected = BasicAuth::parse("sendgrid:s3cr:et").expect("valid");
        assert_eq!(
            check_basic_auth(&expected, &with_auth(&basic("sendgrid", "s3cr:et"))),
            Ok(())
        );
        assert_eq!(
            check_basic_auth(&expected, &with_auth(&basic("sendgrid", "s3cr"))),
            Err(AuthError::BasicAuthRejected)
        );
        assert_eq!(
            check_basic_auth(&expected, &with_auth(&basic("other", "s3cr:et"))),
            Err(AuthError::BasicAuthRejected)
        );
        assert_eq!(
            check_basic_auth(&expected, &with_auth("Basic !!!")),
            Err(AuthError::BasicAuthRejected)
        );
        assert_eq!(
            check_basic_auth(&expected, &with_auth("Bearer abc")),
            Err(AuthError::BasicAuthRequired)
        );
        let none = CallbackRequest::new(Method::POST, "/sendgrid/inbound", "");
        assert_eq!(
            check_basic_auth(&expected, &none),
            Err(AuthError::BasicAuthRequired)
        );
    }
}
