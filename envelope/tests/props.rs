//! Whatever arrives on a queue, decoding returns a value or an error: it never panics.

use mailroom_envelope::{
    decode, decode_owned, encode, parse_java_map, Decoded, Envelope, Kind, Origin,
};
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
            body: body.into(),
            queue_url: None,
        };
        prop_assert_eq!(decode_owned(encode(&e)), Ok(Decoded::Envelope(e.clone())));
        prop_assert_eq!(decode(&encode(&e)), Ok(Decoded::Envelope(e)));
    }

    /// The in-place decode of an owned text (what the worker does with an S3 body) reads every
    /// text exactly as `decode` does: bodies long enough to span several of its chunks, and
    /// base64 with padding or junk anywhere, escaped or not.
    #[test]
    fn decode_owned_reads_every_text_as_decode_does(
        body in proptest::collection::vec(any::<u8>(), 0..120_000),
        cut in any::<proptest::sample::Index>(),
        junk in "[=A-Za-z0-9+/ \\\\\"!]{0,4}",
        lead in "[ \n\u{feff}]{0,2}",
    ) {
        let e = Envelope {
            origin: Origin::Router { version: 1 },
            kind: Kind::Inbound,
            received_at: None,
            source: None,
            headers: Vec::new(),
            content_type: None,
            body: body.into(),
            queue_url: None,
        };
        let good = format!("{lead}{}", encode(&e));
        prop_assert_eq!(decode_owned(good.clone()), decode(&good));
        // The same text with junk spliced into the base64 at any point.
        let start = good.find("\"body_b64\":\"").unwrap() + 12;
        let end = good.len() - 2;
        let at = start + cut.index(end - start + 1);
        let bad = format!("{}{junk}{}", &good[..at], &good[at..]);
        prop_assert_eq!(decode_owned(bad.clone()), decode(&bad));
    }
}
