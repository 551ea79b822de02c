//! Content-Transfer-Encodings, decoded as leniently as mail clients decode them: one bad part
//! must not lose the email. Base64 ignores whitespace and stray characters, accepts missing
//! padding and data after padding, and drops a dangling final character; quoted-printable keeps
//! a malformed `=` escape as it is. Whatever was repaired is said in a note (stored with the
//! attachment), and a body that is not base64 at all (prose labelled base64) is kept as sent,
//! with a note, rather than turned into noise.

/// A decoded body and, when it was not cleanly encoded, what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub data: Vec<u8>,
    pub note: Option<String>,
}

/// Why a base64 text cannot be decoded at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotBase64 {
    pub invalid: usize,
    pub data: usize,
}

fn sextet(b: u8) -> Option<u32> {
    Some(u32::from(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// What the lenient base64 decoder saw besides clean data.
#[derive(Debug, Default)]
struct B64Report {
    /// Characters that are neither base64, padding nor line breaks (spaces between words count).
    invalid: usize,
    data: usize,
    /// Lines with data, and those of them with a space between data characters.
    data_lines: usize,
    gap_lines: usize,
    missing_padding: bool,
    dangling: bool,
    after_padding: bool,
}

fn base64_report(text: &[u8]) -> (Vec<u8>, B64Report) {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let mut r = B64Report::default();
    let (mut acc, mut n) = (0u32, 0u8);
    let mut padded = false;
    // A space or tab after data on the same line: counted as invalid when data follows it
    // (base64 lines have no inner spaces; prose does).
    let (mut line_has_data, mut gap, mut line_gapped) = (false, false, false);
    for &b in text {
        if let Some(v) = sextet(b) {
            if padded {
                r.after_padding = true;
                padded = false;
            }
            if gap {
                r.invalid += 1;
                gap = false;
                if !line_gapped {
                    line_gapped = true;
                    r.gap_lines += 1;
                }
            }
            if !line_has_data {
                line_has_data = true;
                r.data_lines += 1;
            }
            r.data += 1;
            acc = (acc << 6) | v;
            n += 1;
            if n == 4 {
                out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                (acc, n) = (0, 0);
            }
            continue;
        }
        match b {
            b'\r' | b'\n' => (line_has_data, gap, line_gapped) = (false, false, false),
            b' ' | b'\t' => gap = line_has_data,
            b'=' => {
                match n {
                    2 => out.push((acc >> 4) as u8),
                    3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
                    1 => r.invalid += 1,
                    _ => {}
                }
                if n > 0 {
                    padded = true;
                }
                (acc, n) = (0, 0);
            }
            _ => r.invalid += 1,
        }
    }
    match n {
        1 => r.dangling = true,
        2 => {
            out.push((acc >> 4) as u8);
            r.missing_padding = true;
        }
        3 => {
            out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]);
            r.missing_padding = true;
        }
        _ => {}
    }
    (out, r)
}

/// Is this not base64 at all? More than one character in four is not base64, or most lines
/// have spaces between words (base64 lines never do; prose does).
fn not_base64(r: &B64Report) -> bool {
    r.invalid > 0
        && (r.invalid.saturating_mul(4) > r.data
            || (r.gap_lines > 0 && r.gap_lines.saturating_mul(2) >= r.data_lines))
}

/// Lenient base64, for RFC 2047 `B` words.
pub(crate) fn base64_lenient(text: &[u8]) -> Result<Vec<u8>, NotBase64> {
    let (out, r) = base64_report(text);
    if not_base64(&r) {
        return Err(NotBase64 {
            invalid: r.invalid,
            data: r.data,
        });
    }
    Ok(out)
}

/// A base64 body, with a note of whatever was repaired; kept as sent when it is not base64.
pub(crate) fn base64_body(text: &[u8]) -> Decoded {
    let (data, r) = base64_report(text);
    if not_base64(&r) {
        return Decoded {
            data: text.to_vec(),
            note: Some(format!(
                "labelled base64 but is not base64 ({} of {} characters are not base64); kept as sent",
                r.invalid,
                r.invalid + r.data
            )),
        };
    }
    let mut notes = Vec::new();
    if r.invalid > 0 {
        notes.push(format!("{} invalid characters ignored", r.invalid));
    }
    if r.missing_padding {
        notes.push("missing padding".to_string());
    }
    if r.dangling {
        notes.push("truncated: a final character that makes no byte was dropped".to_string());
    }
    if r.after_padding {
        notes.push("data after padding decoded".to_string());
    }
    Decoded {
        data,
        note: (!notes.is_empty()).then(|| format!("base64: {}", notes.join("; "))),
    }
}

/// Two hex digits (either case) as a byte.
pub(crate) fn hex_pair(two: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    match two {
        [h, l] => Some((digit(*h)? * 16 + digit(*l)?) as u8),
        _ => None,
    }
}

/// Lenient quoted-printable: `=XX` in either case, soft line breaks (also with trailing
/// whitespace after the `=`); a malformed `=` is kept as it is.
pub(crate) fn quoted_printable(text: &[u8]) -> Decoded {
    let mut out = Vec::with_capacity(text.len());
    let mut bad = 0usize;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        if let Some(byte) = text.get(i + 1..i + 3).and_then(hex_pair) {
            out.push(byte);
            i += 3;
            continue;
        }
        // Soft line break: '=' then optional spaces, then CRLF, LF or the end.
        let mut j = i + 1;
        while j < text.len() && (text[j] == b' ' || text[j] == b'\t') {
            j += 1;
        }
        match text.get(j..) {
            Some([]) | None => {
                i = text.len();
                continue;
            }
            Some([b'\n', ..]) => {
                i = j + 1;
                continue;
            }
            Some([b'\r', b'\n', ..]) => {
                i = j + 2;
                continue;
            }
            _ => {}
        }
        bad += 1;
        out.push(b'=');
        i += 1;
    }
    Decoded {
        data: out,
        note: (bad > 0)
            .then(|| format!("quoted-printable: {bad} malformed escapes kept as they are")),
    }
}

/// An RFC 2047 `Q` word: quoted-printable with `_` for space; raw 8-bit bytes stay bytes.
pub(crate) fn q_word(text: &[u8]) -> Vec<u8> {
    let spaced: Vec<u8> = text
        .iter()
        .map(|&b| if b == b'_' { b' ' } else { b })
        .collect();
    quoted_printable(&spaced).data
}

/// A body decoded by its Content-Transfer-Encoding (`None`: 7bit). Unknown encodings are kept
/// as sent, with a note.
/// Is this transfer encoding none at all (the bytes are the content)?
pub(crate) fn is_identity(encoding: Option<&str>) -> bool {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
    matches!(
        enc.as_deref(),
        None | Some("" | "7bit" | "8bit" | "binary" | "7-bit" | "8-bit")
    )
}

pub(crate) fn decode_body(encoding: Option<&str>, body: &[u8]) -> Decoded {
    if is_identity(encoding) {
        return Decoded {
            data: body.to_vec(),
            note: None,
        };
    }
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
    match enc.as_deref() {
        Some("base64") => base64_body(body),
        Some("quoted-printable") => quoted_printable(body),
        other => Decoded {
            data: body.to_vec(),
            note: Some(format!(
                "unknown transfer encoding {:?}; kept as sent",
                other
                    .unwrap_or_default()
                    .chars()
                    .take(40)
                    .collect::<String>()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_repairs() {
        assert_eq!(
            base64_body(b"aGVsbG8"),
            Decoded {
                data: b"hello".to_vec(),
                note: Some("base64: missing padding".into())
            }
        );
        assert_eq!(base64_body(b"aGVs\r\nbG8=\r\n").data, b"hello");
        assert_eq!(base64_body(b"aGVs\r\nbG8=\r\n").note, None);
        let d = base64_body(b"aGV*sbG8gd29y!bGQ=");
        assert_eq!(d.data, b"hello world");
        assert_eq!(
            d.note.as_deref(),
            Some("base64: 2 invalid characters ignored")
        );
        let d = base64_body(b"aGVsbG8gd29ybGQh\r\naGVsbG8gd29ybGQhI");
        assert_eq!(d.data, b"hello world!hello world!");
        assert!(d.note.unwrap().contains("truncated"));
        assert_eq!(base64_body(b"aGk=aGk=").data, b"hihi");
    }

    #[test]
    fn prose_is_not_base64() {
        let d = base64_body(b"See the file.\r\nIt is attached, with love.\r\n");
        assert_eq!(d.data, b"See the file.\r\nIt is attached, with love.\r\n");
        assert!(d
            .note
            .unwrap()
            .starts_with("labelled base64 but is not base64"));
    }

    #[test]
    fn quoted_printable_lenient() {
        let d = quoted_printable(b"caf=E9 cr=c3=a8me=\r\n soft= \nx =ZZ 100%=");
        assert_eq!(d.data, b"caf\xe9 cr\xc3\xa8me softx =ZZ 100%");
        assert_eq!(
            d.note.as_deref(),
            Some("quoted-printable: 1 malformed escapes kept as they are")
        );
        assert_eq!(q_word(b"Fr\xf6sche_=41"), b"Fr\xf6sche A");
    }
}
