//! Base64 as it arrives from API Gateway and friends: standard alphabet, padding optional, line
//! breaks tolerated. Kept in one place so every field is read the same way.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes standard base64, ignoring ASCII whitespace and accepting missing padding.
pub(crate) fn decode_lenient(text: &[u8]) -> Option<Vec<u8>> {
    if text.iter().any(u8::is_ascii_whitespace) {
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        LENIENT.decode(compact).ok()
    } else {
        LENIENT.decode(text).ok()
    }
}

/// Decodes strict standard base64 (what [`crate::encode`] writes).
pub(crate) fn decode_strict(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
