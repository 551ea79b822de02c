//! A large inbound post is held once while it is decoded: `parse_inbound_shared` hands out
//! slices of the body for everything stored as sent (raw mode's `raw_mime`, parts without a
//! transfer encoding, parsed mode's file parts) instead of copies. Before, a 25 MB raw-mode post
//! was copied whole by the form splitter and again into `raw_mime`, which with the store's bind
//! buffers took the worker past the memory its body budget promised.

use bytes::Bytes;
use mailroom_sendgrid::{parse_inbound_shared, InboundMode};

const CT: &str = "multipart/form-data; boundary=xYzZY";

fn form(fields: &[(&str, Option<&str>, &[u8])]) -> Bytes {
    let mut out = Vec::new();
    for (name, filename, value) in fields {
        let file = filename
            .map(|f| format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream"))
            .unwrap_or_default();
        out.extend_from_slice(
            format!("--xYzZY\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n")
                .as_bytes(),
        );
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--xYzZY--\r\n");
    Bytes::from(out)
}

/// Does `part` lie inside `body`'s buffer (a slice of it, not a copy)?
fn within(body: &Bytes, part: &[u8]) -> bool {
    let start = body.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    at >= start && at + part.len() <= start + body.len()
}

#[test]
fn the_raw_mime_and_the_parts_kept_as_sent_were_copies_of_the_body() {
    let mime = b"From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n\
--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"b.csv\"\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nx,y\r\n1,2\r\n--b--\r\n";
    let body = form(&[("to", None, b"b@example.com"), ("email", None, mime)]);
    let email = parse_inbound_shared(CT, &body).expect("parses");
    assert_eq!(email.mode, Some(InboundMode::Raw));
    let raw = email.raw_mime.as_deref().expect("raw mode");
    assert_eq!(raw, &mime[..], "byte-exact");
    assert!(within(&body, raw), "raw_mime is a slice of the body");
    assert_eq!(email.attachments.len(), 2);
    let (pdf, csv) = (&email.attachments[0], &email.attachments[1]);
    assert_eq!(
        &pdf.data[..],
        b"%PDF-1",
        "base64 is decoded into its own buffer"
    );
    assert_eq!(&csv.data[..], b"x,y\r\n1,2");
    assert!(
        within(&body, &csv.data),
        "an 8bit part is a slice of the body"
    );
}

#[test]
fn a_parsed_mode_file_part_was_a_copy_of_the_body() {
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let body = form(&[
        ("subject", None, b"s"),
        ("attachment1", Some("f.bin"), &blob),
    ]);
    let email = parse_inbound_shared(CT, &body).expect("parses");
    assert_eq!(email.attachments.len(), 1);
    let data = &email.attachments[0].data;
    assert!(data[..] == blob[..], "byte-exact");
    assert!(within(&body, data), "the file part is a slice of the body");
}
