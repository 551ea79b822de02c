//! Parsed-mode fields arrive as bytes in the email's own charset, named in the `charsets` field
//! (`{"to":"UTF-8","text":"iso-8859-1",...}`), not in the multipart part headers. We decode by
//! that label with encoding_rs (WHATWG labels, so `iso-8859-1` reads as windows-1252, as browsers
//! do); a missing or unknown label falls back to lossy UTF-8, so no field is ever refused.

use encoding_rs::Encoding;
use serde_json::Value;

/// The charset label `charsets` gives for `field`, if any.
pub(crate) fn label_for<'a>(charsets: Option<&'a Value>, field: &str) -> Option<&'a str> {
    charsets?.as_object()?.get(field)?.as_str()
}

/// Decodes `bytes` by the charset `label`, falling back to lossy UTF-8.
pub(crate) fn decode(bytes: &[u8], label: Option<&str>) -> String {
    match label.and_then(|l| Encoding::for_label(l.trim().as_bytes())) {
        Some(enc) => enc.decode_without_bom_handling(bytes).0.into_owned(),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_label() {
        assert_eq!(decode(b"caf\xe9", Some("iso-8859-1")), "café");
        assert_eq!(decode("café".as_bytes(), Some("UTF-8")), "café");
        assert_eq!(decode(b"caf\xe9", Some("x-no-such-charset")), "caf\u{fffd}");
        assert_eq!(decode(b"caf\xe9", None), "caf\u{fffd}");
    }
}
