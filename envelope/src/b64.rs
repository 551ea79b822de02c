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

/// [`decode_strict`] of `buf[range]`, decoded into `buf` itself from its start; returns `buf`
/// cut to the decoded bytes. Decoded bytes take three quarters of their text, so writing from
/// the start never reaches text not yet read; each chunk is copied out before it is decoded.
/// Padding is accepted only in the last chunk, as the whole-string decode accepts it only at
/// the end.
pub(crate) fn decode_strict_in_place(
    mut buf: Vec<u8>,
    range: std::ops::Range<usize>,
) -> Option<Vec<u8>> {
    /// Text decoded per step: a multiple of 4, so every chunk but the last is whole quads.
    const CHUNK: usize = 48 * 1024;
    let text = buf.get(range.clone())?;
    if text.len() % 4 != 0 {
        return None;
    }
    let mut chunk = Vec::with_capacity(CHUNK.min(text.len()));
    let (mut read, mut written) = (range.start, 0);
    while read < range.end {
        let end = (read + CHUNK).min(range.end);
        chunk.clear();
        chunk.extend_from_slice(buf.get(read..end)?);
        if end < range.end && chunk.contains(&b'=') {
            return None;
        }
        // The decoder may use its whole output slice as scratch: give it only what was read.
        let out = buf.get_mut(written..end)?;
        written += base64::engine::general_purpose::STANDARD
            .decode_slice(&chunk, out)
            .ok()?;
        read = end;
    }
    buf.truncate(written);
    buf.shrink_to_fit();
    Some(buf)
}

pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
