//! Any SQS body through `mailroom_envelope::decode`; a successful router envelope must
//! re-encode and decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_envelope::{decode, encode, Decoded};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Decoded::Envelope(e)) = decode(text) {
        let again = decode(&encode(&e));
        if let Ok(Decoded::Envelope(back)) = again {
            assert_eq!(back.body, e.body);
            assert_eq!(back.kind, e.kind);
        } else {
            panic!("re-encoded envelope did not decode: {again:?}");
        }
    }
});
