//! Signed-webhook verification with arbitrary key, signature, timestamp and body: the input is
//! split on the first three NUL bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == 0);
    let key = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let sig = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let ts = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let _ = mailroom_sendgrid::verify_signature(&key, &sig, &ts, body);
    let _ = mailroom_sendgrid::check_timestamp(&ts, 1_700_000_000, 300);
});
