//! Whatever bytes arrive, every decoder returns a value or an error: it never panics.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mailroom_sendgrid::{check_timestamp, parse_events, parse_inbound, verify_signature};
use proptest::prelude::*;

fn form(name: &str, value: &[u8]) -> Vec<u8> {
    let mut body =
        format!("--xYzZY\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").into_bytes();
    body.extend_from_slice(value);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

proptest! {
    #[test]
    fn events_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_events(&body);
    }

    #[test]
    fn events_json_like_never_panic(s in r#"[\[\]{}",:0-9a-z_.\- ]{0,300}"#) {
        let _ = parse_events(s.as_bytes());
        let _ = parse_events(format!("[{{\"event\":\"x\",{s}").as_bytes());
    }

    #[test]
    fn inbound_never_panics(ct in ".{0,60}", body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_inbound(&ct, &body);
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &body);
    }

    #[test]
    fn inbound_fields_never_panic(
        name in "(email|charsets|headers|text|attachment1|envelope|x)",
        value in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form(&name, &value));
    }

    #[test]
    fn mime_never_panics(s in "[A-Za-z:;=\\-\r\n \"/]{0,400}") {
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", s.as_bytes()));
        let mime = format!("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n{s}");
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", mime.as_bytes()));
    }

    #[test]
    fn signature_never_panics(
        key in ".{0,120}",
        sig in ".{0,120}",
        ts in ".{0,20}",
        key_bytes in proptest::collection::vec(any::<u8>(), 0..100),
        sig_bytes in proptest::collection::vec(any::<u8>(), 0..80),
        body in proptest::collection::vec(any::<u8>(), 0..100),
        now in any::<i64>(),
        window in any::<i64>(),
    ) {
        prop_assert!(verify_signature(&key, &sig, &ts, &body).is_err());
        let _ = verify_signature(&STANDARD.encode(&key_bytes), &STANDARD.encode(&sig_bytes), &ts, &body);
        let _ = check_timestamp(&ts, now, window);
    }
}
