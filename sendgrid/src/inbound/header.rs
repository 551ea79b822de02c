//! Header fields read the way mail clients and browsers read them, not the way the RFCs wish
//! senders wrote them. Shared by raw-mode MIME and the form-data part headers.
//!
//! - A header block is split into fields over bytes: any line ending (CRLF or bare LF),
//!   folded continuation lines, obsolete `Name : value` spacing. A line that is not a field
//!   (`Fro m: x`, `// Not an RFC-822 Document`, a stray continuation) is skipped when a field
//!   or the blank line follows it, and stays in the raw block; otherwise it is where the body
//!   starts (a missing blank line, as Python's `email` reads it).
//! - Values are decoded with RFC 2047 encoded words over the raw bytes, so a raw 8-bit byte
//!   inside a word (`=?iso-8859-1?Q?Fr\xf6sche?=`) is read in the word's charset; text outside
//!   words is UTF-8 when it is valid UTF-8 and Latin-1 otherwise.
//! - Parameters (`Content-Type`, `Content-Disposition`) take RFC 2231 / RFC 5987 extended and
//!   continued values (`filename*=UTF-8''%E2%82%AC.pdf`, `name*0*=...; name*1*=...`), which win
//!   over a plain value of the same name, and RFC 2047 words inside quoted values (what Outlook
//!   and Gmail send).

use std::borrow::Cow;

use encoding_rs::Encoding;

use super::transfer;

/// Most fields kept from one header block; further fields are still skipped over, so a block of
/// millions of tiny lines costs time, not memory.
pub const MAX_HEADER_FIELDS: usize = 10_000;
/// Most parameters read from one header value.
const MAX_PARAMS: usize = 100;
/// Highest RFC 2231 continuation index accepted (`name*99`).
const MAX_CONTINUATION: u32 = 99;

/// One header field: its name and its raw (still folded) value, both borrowed from the message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

/// A header block split from what follows it.
#[derive(Debug, Default)]
pub(crate) struct HeaderBlock<'a> {
    pub fields: Vec<Field<'a>>,
    /// The header block as sent, without the blank separator line.
    pub raw: &'a [u8],
    /// What follows the blank line (or the first line that starts the body).
    pub body: &'a [u8],
}

impl<'a> HeaderBlock<'a> {
    /// The raw value of the first field called `name` (case-insensitive), as a mail client
    /// reads a field that appears twice.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value)
    }

    /// The first field called `name`, unfolded and decoded.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).map(decode_value)
    }
}

/// How the end of a header block is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockEnd {
    /// Email: the blank line, or a non-field line followed by body text (a missing separator).
    Lenient,
    /// Form-data part headers: the block was already cut at the blank line, so every line that
    /// is not a field is skipped.
    Whole,
}

/// The line starting at `pos`: its content (without CR LF or LF) and where the next one starts.
pub(super) fn line_at(raw: &[u8], pos: usize) -> (&[u8], usize) {
    let rest = raw.get(pos..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = &rest[..i];
            (line.strip_suffix(b"\r").unwrap_or(line), pos + i + 1)
        }
        None => (rest, raw.len()),
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 5322 field names: printable ASCII except `:`.
fn is_field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

/// The field a line opens, if it is a field line: (name, offset of the value in the line).
fn field_line(line: &[u8]) -> Option<(&[u8], usize)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = trim_end(&line[..colon]);
    is_field_name(name).then_some((name, colon + 1))
}

/// After a line that is not a field: is the next line (past that line's own continuations) a
/// field or the blank line? Then the odd line is junk inside the header block.
fn junk_line(raw: &[u8], mut pos: usize) -> bool {
    loop {
        if pos >= raw.len() {
            return false;
        }
        let (line, next) = line_at(raw, pos);
        match line.first() {
            None => return true,
            Some(&b) if is_wsp(b) => pos = next,
            Some(_) => return field_line(line).is_some(),
        }
    }
}

/// Splits a message (or MIME part) into its header fields and body.
pub(crate) fn split_header_block(raw: &[u8], end: BlockEnd) -> HeaderBlock<'_> {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    // An mbox "From " line before the first field, as Python reads it.
    if end == BlockEnd::Lenient && raw.starts_with(b"From ") {
        pos = line_at(raw, 0).1;
    }
    // Whether the previous line belonged to the last field (so a continuation extends it).
    let mut in_field = false;
    let mut kept = 0usize;
    // Where the last field's value starts in `raw`.
    let mut value_start = 0usize;
    let (header_end, body_start) = loop {
        if pos >= raw.len() {
            break (raw.len(), raw.len());
        }
        let (line, next) = line_at(raw, pos);
        let content_end = pos + line.len();
        match line.first() {
            None => break (pos, next),
            Some(&b) if is_wsp(b) => {
                if in_field {
                    if let Some(last) = fields.last_mut() {
                        last.value = raw.get(value_start..content_end).unwrap_or_default();
                    }
                }
            }
            Some(_) => {
                if let Some((name, value_at)) = field_line(line) {
                    kept += 1;
                    in_field = kept <= MAX_HEADER_FIELDS;
                    if in_field {
                        value_start = pos + value_at;
                        fields.push(Field {
                            name,
                            value: line.get(value_at..).unwrap_or_default(),
                        });
                    }
                } else if end == BlockEnd::Whole || junk_line(raw, next) {
                    in_field = false;
                } else {
                    break (pos, pos);
                }
            }
        }
        pos = next;
    };
    let raw_block = raw.get(..header_end).unwrap_or_default();
    HeaderBlock {
        fields,
        raw: raw_block
            .strip_suffix(b"\n")
            .map(|r| r.strip_suffix(b"\r").unwrap_or(r))
            .unwrap_or(raw_block),
        body: raw.get(body_start..).unwrap_or_default(),
    }
}

fn trim_end(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|&c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..n]
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|&c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    trim_end(&b[s..])
}

/// Removes the line breaks of a folded value (RFC 5322 unfolding), keeping the whitespace.
fn unfold(raw: &[u8]) -> Cow<'_, [u8]> {
    if raw.iter().any(|&b| b == b'\r' || b == b'\n') {
        Cow::Owned(
            raw.iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    }
}

/// Bytes as UTF-8 when they are valid UTF-8, else as Latin-1 (what browsers and mail clients do
/// with raw 8-bit header bytes).
pub(crate) fn utf8_or_latin1(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Bytes in a named charset; an unknown charset gives lossy UTF-8 (as Python's `email` does).
pub(crate) fn decode_charset(bytes: &[u8], charset: &str) -> String {
    match Encoding::for_label(charset.trim().as_bytes()) {
        Some(enc) => enc.decode_without_bom_handling(bytes).0.into_owned(),
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// An unfolded, RFC 2047-decoded header value, trimmed.
pub(crate) fn decode_value(raw: &[u8]) -> String {
    decode_words(trim(&unfold(raw)))
}

/// One RFC 2047 encoded word at the start of `s`: (charset, decoded bytes, length consumed).
fn encoded_word(s: &[u8]) -> Option<(&[u8], Vec<u8>, usize)> {
    let rest = s.strip_prefix(b"=?")?;
    let q1 = rest.iter().position(|&b| b == b'?')?;
    let charset = &rest[..q1];
    if charset.is_empty() || charset.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let enc = *rest.get(q1 + 1)?;
    if rest.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let text_rest = rest.get(text_start..)?;
    let end = text_rest.windows(2).position(|w| w == b"?=")?;
    let text = &text_rest[..end];
    let data = match enc.to_ascii_lowercase() {
        b'q' => transfer::q_word(text),
        b'b' => transfer::base64_lenient(text).ok()?,
        _ => return None,
    };
    // RFC 2231 adds a language: charset*lang.
    let charset = charset.split(|&b| b == b'*').next().unwrap_or(charset);
    Some((charset, data, 2 + text_start + end + 2))
}

/// Decodes RFC 2047 words anywhere in a value; whitespace between two words is dropped and
/// adjacent words in the same charset are joined before decoding (so a character split across
/// two words survives).
pub(crate) fn decode_words(s: &[u8]) -> String {
    if !s.windows(2).any(|w| w == b"=?") {
        return utf8_or_latin1(s);
    }
    let mut out = String::new();
    let mut plain_start = 0;
    // Bytes of the words seen in a row, in one charset, not yet decoded.
    let mut pending: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'=' && s.get(i + 1) == Some(&b'?') {
            if let Some((charset, data, used)) = encoded_word(&s[i..]) {
                let between = &s[plain_start..i];
                let joins = pending.is_some() && between.iter().all(|&b| is_wsp(b));
                if !joins {
                    flush(&mut out, &mut pending);
                    out.push_str(&utf8_or_latin1(between));
                }
                match &mut pending {
                    Some((cs, bytes)) if cs.eq_ignore_ascii_case(charset) => {
                        bytes.extend_from_slice(&data)
                    }
                    _ => {
                        flush(&mut out, &mut pending);
                        pending = Some((charset.to_vec(), data));
                    }
                }
                i += used;
                plain_start = i;
                continue;
            }
        }
        i += 1;
    }
    flush(&mut out, &mut pending);
    out.push_str(&utf8_or_latin1(&s[plain_start..]));
    out
}

fn flush(out: &mut String, pending: &mut Option<(Vec<u8>, Vec<u8>)>) {
    if let Some((charset, bytes)) = pending.take() {
        out.push_str(&decode_charset(&bytes, &String::from_utf8_lossy(&charset)));
    }
}

/// A parameterised header value: `main; name=value; ...`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    /// The value before the first `;`, lower-cased and trimmed.
    pub main: String,
    /// Parameters in order, names lower-cased, values decoded; an extended (`*`) value has
    /// replaced the plain one of the same name.
    pub params: Vec<(String, String)>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How quoted strings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quoting {
    /// RFC 2045: a backslash escapes the next character.
    Mime,
    /// Browsers (HTML form-data): no escapes (a quote is sent as `%22`, and `C:\dir\f.txt`
    /// means what it says), except `\"`.
    Form,
}

/// One raw parameter as written: name (lower-case), value bytes.
fn raw_params(s: &[u8], quoting: Quoting) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let main_end = s.iter().position(|&b| b == b';').unwrap_or(s.len());
    let main = trim(&s[..main_end]).to_ascii_lowercase();
    let mut out = Vec::new();
    let mut i = main_end;
    while i < s.len() && out.len() < MAX_PARAMS {
        // Skip separators.
        while i < s.len() && (s[i] == b';' || s[i].is_ascii_whitespace()) {
            i += 1;
        }
        let name_start = i;
        while i < s.len() && s[i] != b'=' && s[i] != b';' {
            i += 1;
        }
        let name = trim(&s[name_start..i]).to_ascii_lowercase();
        if i >= s.len() || s[i] == b';' {
            continue; // a name without a value
        }
        i += 1; // '='
        while i < s.len() && is_wsp(s[i]) {
            i += 1;
        }
        let mut value = Vec::new();
        if s.get(i) == Some(&b'"') {
            i += 1;
            while i < s.len() && s[i] != b'"' {
                if s[i] == b'\\' && i + 1 < s.len() {
                    let next = s[i + 1];
                    if quoting == Quoting::Mime || next == b'"' {
                        value.push(next);
                        i += 2;
                        continue;
                    }
                }
                value.push(s[i]);
                i += 1;
            }
            i += 1; // closing quote (or past the end)
            while i < s.len() && s[i] != b';' {
                i += 1;
            }
        } else {
            let start = i;
            while i < s.len() && s[i] != b';' {
                i += 1;
            }
            value.extend_from_slice(trim(&s[start..i]));
        }
        if !name.is_empty() {
            out.push((String::from_utf8_lossy(&name).into_owned(), value));
        }
    }
    (main, out)
}

/// Percent-decoding (RFC 2231 / RFC 5987); a `%` not followed by two hex digits stays.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let Some(b) = s.get(i + 1..i + 3).and_then(transfer::hex_pair) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// One RFC 2231 segment: continuation index, percent-encoded or not, the bytes as written.
type Segment = (u32, bool, Vec<u8>);

/// Parses a parameterised header value (raw, folded bytes).
pub(crate) fn parse_params(raw: &[u8], quoting: Quoting) -> Params {
    let value = unfold(raw);
    let (main, raw) = raw_params(&value, quoting);
    let mut params: Vec<(String, String)> = Vec::new();
    // Extended parameters: base name -> its segments.
    let mut extended: Vec<(String, Vec<Segment>)> = Vec::new();
    for (name, value) in raw {
        if let Some(star) = name.find('*') {
            let base = name[..star].to_string();
            let rest = &name[star + 1..];
            let (index, encoded) = match rest {
                "" => (0, true),
                r => {
                    let (digits, enc) = match r.strip_suffix('*') {
                        Some(d) => (d, true),
                        None => (r, false),
                    };
                    match digits.parse::<u32>() {
                        Ok(n) if n <= MAX_CONTINUATION => (n, enc),
                        _ => continue,
                    }
                }
            };
            match extended.iter_mut().find(|(b, _)| *b == base) {
                Some((_, segs)) => segs.push((index, encoded, value)),
                None => extended.push((base, vec![(index, encoded, value)])),
            }
        } else if !params.iter().any(|(n, _)| *n == name) {
            params.push((name, decode_words(&value)));
        }
    }
    for (base, mut segs) in extended {
        segs.sort_by_key(|(i, _, _)| *i);
        segs.dedup_by_key(|(i, _, _)| *i);
        let mut charset = String::new();
        let mut bytes = Vec::new();
        for (n, (_, encoded, value)) in segs.iter().enumerate() {
            let mut data: &[u8] = value;
            if n == 0 && *encoded {
                // charset'language'data; a value without the two quotes is taken as data.
                let mut quotes = value.iter().enumerate().filter(|(_, &b)| b == b'\'');
                if let (Some((a, _)), Some((b, _))) = (quotes.next(), quotes.next()) {
                    charset = String::from_utf8_lossy(&value[..a]).into_owned();
                    data = &value[b + 1..];
                }
            }
            if *encoded {
                bytes.extend_from_slice(&percent_decode(data));
            } else {
                bytes.extend_from_slice(data);
            }
        }
        let text = if charset.is_empty() {
            utf8_or_latin1(&bytes)
        } else {
            decode_charset(&bytes, &charset)
        };
        match params.iter_mut().find(|(n, _)| *n == base) {
            Some(slot) => slot.1 = text,
            None => params.push((base, text)),
        }
    }
    Params {
        main: utf8_or_latin1(&main),
        params,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fields_and_keeps_junk_in_the_raw_block() {
        let raw = b"// Not an RFC-822 Document\r\nSubject: hi\r\n  there\r\nFro m: x\r\nTo: a@b\r\n\r\nbody";
        let h = split_header_block(raw, BlockEnd::Lenient);
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.text("subject").as_deref(), Some("hi  there"));
        assert_eq!(h.text("TO").as_deref(), Some("a@b"));
        assert!(h.raw.starts_with(b"// Not"));
        assert!(h.raw.ends_with(b"To: a@b"));
        assert_eq!(h.body, b"body");
    }

    #[test]
    fn a_missing_separator_starts_the_body() {
        let h = split_header_block(b"Subject: x\nHello there\nmore\n", BlockEnd::Lenient);
        assert_eq!(h.fields.len(), 1);
        assert_eq!(h.body, b"Hello there\nmore\n");
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words(b"=?iso-8859-1?Q?Fr\xf6sche?="), "Frösche");
        assert_eq!(
            decode_words(b"=?UTF-8?B?UsOp?= =?UTF-8?B?c3Vtw6k=?= attached"),
            "Résumé attached"
        );
        assert_eq!(decode_words(b"=?utf-8?q?a_b?= c"), "a b c");
        assert_eq!(decode_words(b"=?utf-8?x?a?= caf\xe9"), "=?utf-8?x?a?= café");
        // A UTF-8 character split across two words.
        assert_eq!(decode_words(b"=?UTF-8?Q?=C3?= =?UTF-8?Q?=A9?="), "é");
    }

    #[test]
    fn rfc2231_parameters() {
        let p = parse_params(
            b"attachment; filename=\"fallback.pdf\"; filename*=UTF-8''%E2%82%AC%20rates.pdf",
            Quoting::Mime,
        );
        assert_eq!(p.main, "attachment");
        assert_eq!(p.get("filename"), Some("€ rates.pdf"));
        let p = parse_params(
            b"application/pdf;\r\n name*0*=iso-8859-1''caf%E9;\r\n name*1=\".pdf\"",
            Quoting::Mime,
        );
        assert_eq!(p.main, "application/pdf");
        assert_eq!(p.get("name"), Some("café.pdf"));
        let p = parse_params(
            b"form-data; name=\"f\"; filename=\"C:\\x\\caf\xe9.txt\"",
            Quoting::Form,
        );
        assert_eq!(p.get("filename"), Some("C:\\x\\café.txt"));
        let p = parse_params(b"inline; filename=\"=?UTF-8?B?w6kudHh0?=\"", Quoting::Mime);
        assert_eq!(p.get("filename"), Some("é.txt"));
    }
}
