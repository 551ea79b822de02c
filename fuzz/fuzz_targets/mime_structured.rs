//! Raw-mode Inbound Parse on *structured* input: the fuzzer's bytes are read as instructions
//! that build a nested MIME message (random nesting depth, boundaries, content types, transfer
//! encodings, damaged base64 and quoted-printable, odd header lines), so the parser's deep
//! paths are reached, not only its first header line (which is mostly what the `mime` target
//! exercises). Messages go past the depth limit too: they must be refused, never crash.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Reads the input a byte at a time; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<'s>(&mut self, options: &[&'s str]) -> &'s str {
        options[usize::from(self.byte()) % options.len()]
    }

    fn take(&mut self, max: usize) -> Vec<u8> {
        let n = usize::from(self.byte()) % (max + 1);
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
}

const TYPES: &[&str] = &[
    "text/plain; charset=utf-8",
    "text/html; charset=iso-8859-1",
    "text/plain",
    "application/octet-stream; name=\"a.bin\"",
    "image/png",
    "message/rfc822",
    "text/plain; charset=x-unknown",
    "",
];
const SUBTYPES: &[&str] = &["mixed", "alternative", "related", "digest", "signed"];
const ENCODINGS: &[&str] = &["base64", "quoted-printable", "7bit", "8bit", "x-uuencode", ""];
const DISPOSITIONS: &[&str] = &[
    "",
    "Content-Disposition: attachment; filename=\"f.txt\"\r\n",
    "Content-Disposition: inline\r\n",
    "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC.txt\r\n",
    "Content-ID: <cid@x>\r\n",
    "Fro m: not a header\r\n",
];

fn part(input: &mut Bytes<'_>, level: usize, out: &mut Vec<u8>) {
    let op = input.byte();
    // Up to 40 levels: past MAX_MIME_DEPTH (32), so the refusal is exercised too.
    if op % 3 != 0 && level < 40 {
        let b = format!("b{level}_{}", input.byte());
        out.extend_from_slice(
            format!(
                "Content-Type: multipart/{}; boundary=\"{b}\"\r\n\r\npreamble\r\n",
                input.pick(SUBTYPES)
            )
            .as_bytes(),
        );
        let n = 1 + usize::from(input.byte() % 4);
        for _ in 0..n {
            out.extend_from_slice(format!("--{b}\r\n").as_bytes());
            part(input, level + 1, out);
            out.extend_from_slice(b"\r\n");
        }
        // Sometimes no closing boundary.
        if input.byte() % 5 != 0 {
            out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        }
        return;
    }
    let ctype = input.pick(TYPES);
    if !ctype.is_empty() {
        out.extend_from_slice(format!("Content-Type: {ctype}\r\n").as_bytes());
    }
    out.extend_from_slice(input.pick(DISPOSITIONS).as_bytes());
    let enc = input.pick(ENCODINGS);
    if !enc.is_empty() {
        out.extend_from_slice(format!("Content-Transfer-Encoding: {enc}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    // The body: raw fuzzer bytes (damaged encodings come for free).
    out.extend_from_slice(&input.take(200));
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mut mime = b"From: =?iso-8859-1?Q?J=F6rg?= <a@example.com>\r\nSubject: fuzz\r\n".to_vec();
    part(&mut input, 0, &mut mime);
    let mut body = b"--xYzZY\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n".to_vec();
    body.extend_from_slice(&mime);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    let _ = mailroom_sendgrid::parse_inbound("multipart/form-data; boundary=xYzZY", &body);
});
