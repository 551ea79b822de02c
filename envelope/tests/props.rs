//! Whatever arrives on a queue, decoding returns a value or an error: it never panics.

use mailroom_envelope::{decode, encode, parse_java_map, Decoded, Envelope, Kind, Origin};
use proptest::prelude::*;

proptest! {
    #[test]
    fn decode_never_panics(s in ".{0,400}") {
        let _ = decode(&s);
    }

    #[test]
    fn decode_json_like_never_panics(s in r#"[\[\]{}",:0-9a-z\- ]{0,200}"#) {
        let _ = decode(&s);
        let _ = decode(&format!("{{\"mailroom\":1,{s}"));
        let _ = decode(&format!("{{\"body-raw\":{s}"));
        let _ = decode(&format!("[\"software.amazon.payloadoffloading.PayloadS3Pointer\",{s}"));
    }

    #[test]
    fn java_map_never_panics(s in ".{0,300}") {
        let _ = parse_java_map(&s);
        let _ = parse_java_map(&format!("{{{s}}}"));
    }

    #[test]
    fn round_trip_any_body(body in proptest::collection::vec(any::<u8>(), 0..512), v in "[ -~]{0,40}") {
        let e = Envelope {
            origin: Origin::Router { version: 1 },
            kind: Kind::Events,
            received_at: None,
            source: None,
            headers: vec![("x-h".into(), v.clone())],
            content_type: Some(v),
            body,
            queue_url: None,
        };
        prop_assert_eq!(decode(&encode(&e)), Ok(Decoded::Envelope(e)));
    }
}
