//! The router envelope written piece by piece, for a body that is never held whole.
//!
//! `serve` streams a large Inbound Parse post to S3 as it arrives; the object must still be
//! exactly the envelope [`mailroom_envelope::encode`] writes, because the worker decodes it with
//! that crate and must not change. So the frame is taken from the encoder itself: the envelope
//! of the same request with an empty body ends in `"body_b64":""}` (the body is its last
//! field), which splits it into a prefix (everything up to the opening quote of the body) and a
//! suffix (`"}`). Between them goes the base64 of the body, encoded chunk by chunk by
//! [`Base64Chunks`], which keeps the 0 to 2 bytes of a chunk that do not fill a 3-byte group
//! for the next one, so the concatenation equals the base64 of the whole body.

use base64::Engine;
use mailroom_envelope::Envelope;

/// What the encoder writes at the end of an envelope whose body is empty.
const EMPTY_BODY_TAIL: &str = "\"body_b64\":\"\"}";

/// Why an envelope could not be framed; a change in the envelope crate's field order would
/// show up here (and in this module's tests), never as a corrupt object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error(
        "the envelope encoder no longer ends with the body (expected a trailing {EMPTY_BODY_TAIL})"
    )]
    BodyNotLast,
    #[error("the envelope to frame has a body of {0} bytes; frames are cut from an empty one")]
    NotEmpty(usize),
}

/// The envelope's text before and after the base64 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeFrame {
    pub prefix: String,
    pub suffix: &'static str,
}

impl EnvelopeFrame {
    /// Cuts the frame from `envelope`, whose body must be empty (headers, kind and source are
    /// all known before the body arrives).
    pub fn of(envelope: &Envelope) -> Result<Self, FrameError> {
        if !envelope.body.is_empty() {
            return Err(FrameError::NotEmpty(envelope.body.len()));
        }
        let mut text = mailroom_envelope::encode(envelope);
        if !text.ends_with(EMPTY_BODY_TAIL) {
            return Err(FrameError::BodyNotLast);
        }
        // Keep `"body_b64":"`, drop the closing `"}`.
        text.truncate(text.len() - 2);
        Ok(Self {
            prefix: text,
            suffix: "\"}",
        })
    }

    /// The size of the whole envelope for a body of `body_len` bytes.
    pub fn envelope_len(&self, body_len: usize) -> usize {
        self.prefix.len() + base64_len(body_len) + self.suffix.len()
    }
}

/// Length of the padded standard base64 of `len` bytes.
pub fn base64_len(len: usize) -> usize {
    len.div_ceil(3).saturating_mul(4)
}

/// Standard padded base64 of a byte stream, written chunk by chunk.
#[derive(Debug, Default)]
pub struct Base64Chunks {
    /// The 0 to 2 bytes of the last chunk that did not fill a 3-byte group.
    pending: Vec<u8>,
}

impl Base64Chunks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the base64 of everything complete so far (in 3-byte groups) to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut chunk = chunk;
        if !self.pending.is_empty() {
            let take = (3 - self.pending.len()).min(chunk.len());
            self.pending.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.pending.len() < 3 {
                return;
            }
            encode_into(&self.pending, out);
            self.pending.clear();
        }
        let whole = chunk.len() - chunk.len() % 3;
        encode_into(&chunk[..whole], out);
        self.pending.extend_from_slice(&chunk[whole..]);
    }

    /// Appends the last group, padded, to `out`.
    pub fn finish(self, out: &mut Vec<u8>) {
        encode_into(&self.pending, out);
    }
}

fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let start = out.len();
    out.resize(start + base64_len(bytes.len()), 0);
    // The buffer was sized for exactly this encoding, so it cannot be too small.
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_envelope::{Decoded, Kind, Origin, Source, ENVELOPE_VERSION};

    fn envelope(body: Vec<u8>) -> Envelope {
        Envelope {
            origin: Origin::Router {
                version: ENVELOPE_VERSION,
            },
            kind: Kind::Inbound,
            received_at: Some(chrono::Utc::now()),
            source: Some(Source {
                path: "/sendgrid/inbound".into(),
                stage: None,
                request_id: Some("r-1".into()),
                webhook: Some("support".into()),
            }),
            headers: vec![
                (
                    "content-type".into(),
                    "multipart/form-data; boundary=\"x\"".into(),
                ),
                ("x-odd".into(), "quote \" and \\ and \u{e9}".into()),
            ],
            content_type: Some("multipart/form-data; boundary=\"x\"".into()),
            body: body.into(),
            queue_url: None,
        }
    }

    fn streamed(frame: &EnvelopeFrame, body: &[u8], chunk_sizes: &[usize]) -> String {
        let mut out = frame.prefix.clone().into_bytes();
        let mut encoder = Base64Chunks::new();
        let mut rest = body;
        let mut sizes = chunk_sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().expect("cycle")).min(rest.len());
            encoder.push(&rest[..n], &mut out);
            rest = &rest[n..];
        }
        encoder.finish(&mut out);
        out.extend_from_slice(frame.suffix.as_bytes());
        String::from_utf8(out).expect("ASCII base64 and UTF-8 JSON")
    }

    /// The streamed object is byte for byte what the encoder writes for the whole body, and the
    /// worker's decoder reads the body back, for every split of the chunks around 3-byte groups.
    #[test]
    fn streamed_envelope_equals_the_encoded_one_for_any_chunking() {
        let body: Vec<u8> = (0..10_007u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut empty = envelope(Vec::new());
        let frame = EnvelopeFrame::of(&empty).expect("frame");
        for sizes in [
            &[1][..],
            &[2],
            &[3],
            &[4, 1, 2],
            &[1000],
            &[10_007],
            &[5, 3, 1, 7],
        ] {
            for len in [0, 1, 2, 3, 4, 5, 6, 100, 10_007] {
                let text = streamed(&frame, &body[..len], sizes);
                empty.body = body[..len].to_vec().into();
                assert_eq!(text, mailroom_envelope::encode(&empty), "{sizes:?} {len}");
                assert_eq!(text.len(), frame.envelope_len(len));
                match mailroom_envelope::decode(&text).expect("decodes") {
                    Decoded::Envelope(e) => assert_eq!(e.body, &body[..len]),
                    other => panic!("{other:?}"),
                }
                empty.body.clear();
            }
        }
    }

    #[test]
    fn a_frame_is_cut_only_from_an_empty_body() {
        assert_eq!(
            EnvelopeFrame::of(&envelope(vec![1, 2])),
            Err(FrameError::NotEmpty(2))
        );
    }
}
