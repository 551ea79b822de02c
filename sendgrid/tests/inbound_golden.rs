//! Golden files for Inbound Parse posts, written for this crate: parsed mode (CRLF, bare LF,
//! non-UTF-8 charsets, file parts), raw mode (simple and a nested multipart/mixed with exact
//! attachment bytes), and the malformed posts that must be refused clearly.

use mailroom_sendgrid::{parse_inbound, InboundEmail, InboundError, InboundMode};

const FORM: &str = "multipart/form-data; boundary=xYzZY";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/inbound/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(name: &str) -> InboundEmail {
    parse_inbound(FORM, &fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check_parsed(e: &InboundEmail, nl: &str) {
    assert_eq!(e.mode, Some(InboundMode::Parsed));
    assert_eq!(e.message_id.as_deref(), Some("<msg-42@mail.example.com>"));
    assert_eq!(e.from.as_deref(), Some("Alice Example <alice@example.com>"));
    assert_eq!(e.to.as_deref(), Some("inbound@parse.example.org"));
    assert_eq!(e.cc.as_deref(), Some("carol@example.com"));
    assert_eq!(e.subject.as_deref(), Some("Quarterly report"));
    assert_eq!(
        e.text.as_deref(),
        Some(format!("Hello,{nl}the report is attached.{nl}").as_str())
    );
    assert_eq!(
        e.html.as_deref(),
        Some("<p>Hello,</p><p>the report is attached.</p>")
    );
    assert!(e
        .headers
        .as_deref()
        .unwrap()
        .contains("Subject: Quarterly report"));
    assert_eq!(e.dkim.as_deref(), Some("{@example.com : pass}"));
    assert_eq!(e.spf.as_deref(), Some("pass"));
    assert_eq!(e.sender_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(e.spam_score, Some(0.1));
    assert!(e.spam_report.as_deref().unwrap().contains("score=0.1"));
    assert_eq!(
        e.envelope.as_ref().unwrap()["to"][0],
        "inbound@parse.example.org"
    );
    assert_eq!(e.charsets.as_ref().unwrap()["text"], "UTF-8");
    assert_eq!(e.content_ids, Some(serde_json::json!({})));
    assert!(e.attachments.is_empty());
    assert_eq!(e.raw_mime, None);
}

#[test]
fn parsed_mode_crlf() {
    check_parsed(&parse("parsed-crlf.multipart"), "\r\n");
}

#[test]
fn parsed_mode_bare_lf() {
    // Normalised to CRLF before multipart parsing, so values come back with CRLF.
    check_parsed(&parse("parsed-lf.multipart"), "\r\n");
}

#[test]
fn parsed_mode_charsets() {
    let e = parse("parsed-latin1.multipart");
    assert_eq!(e.from.as_deref(), Some("Zoë <zoe@example.com>"));
    assert_eq!(e.subject.as_deref(), Some("Café crème"));
    assert_eq!(e.text.as_deref(), Some("Grüße aus Köln — ½ €"));
    assert_eq!(e.html.as_deref(), Some("<p>Grüße</p>"));
    assert_eq!(e.message_id.as_deref(), Some("<latin@example.com>"));
}

#[test]
fn parsed_mode_two_attachments_in_order_with_exact_bytes() {
    let e = parse("parsed-attachments.multipart");
    assert_eq!(e.subject.as_deref(), Some("Two files"));
    assert_eq!(e.attachments.len(), 2);
    let pdf = &e.attachments[0];
    assert_eq!(pdf.filename.as_deref(), Some("report.pdf"));
    assert_eq!(pdf.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(pdf.disposition.as_deref(), Some("attachment"));
    assert_eq!(pdf.content_id, None);
    assert_eq!(pdf.data, fixture("expected-report.pdf"));
    let png = &e.attachments[1];
    assert_eq!(png.filename.as_deref(), Some("logo.png"));
    assert_eq!(png.content_type.as_deref(), Some("image/png"));
    assert_eq!(png.content_id.as_deref(), Some("logo@example.com"));
    assert_eq!(png.disposition.as_deref(), Some("inline"));
    assert_eq!(png.data, fixture("expected-logo.png"));
    assert_eq!(
        e.attachment_info.as_ref().unwrap()["attachment1"]["type"],
        "application/pdf"
    );
}

#[test]
fn raw_mode_simple() {
    let body = fixture("raw-simple.multipart");
    let e = parse_inbound(FORM, &body).unwrap();
    assert_eq!(e.mode, Some(InboundMode::Raw));
    assert_eq!(e.message_id.as_deref(), Some("<raw-1@example.com>"));
    assert_eq!(e.subject.as_deref(), Some("Plain raw"));
    assert_eq!(e.text.as_deref(), Some("Just text, café.\r\n"));
    assert_eq!(e.html, None);
    assert_eq!(e.spf.as_deref(), Some("neutral"));
    let headers = e.headers.as_deref().unwrap();
    assert!(headers.starts_with("MIME-Version: 1.0\r\n"), "{headers}");
    assert!(
        headers.ends_with("Content-Type: text/plain; charset=UTF-8"),
        "{headers}"
    );
    assert!(e.raw_mime.as_ref().unwrap().ends_with(b"caf\xc3\xa9.\r\n"));
}

#[test]
fn raw_mode_nested_mixed_with_exact_attachments() {
    let e = parse("raw-mixed.multipart");
    assert_eq!(e.mode, Some(InboundMode::Raw));
    assert_eq!(e.message_id.as_deref(), Some("<mixed-7@example.com>"));
    // No subject/from form fields: the MIME headers fill them, RFC 2047 decoded.
    assert_eq!(e.subject.as_deref(), Some("Résumé attached"));
    assert_eq!(e.from.as_deref(), Some("José <jose@example.com>"));
    assert_eq!(e.cc.as_deref(), Some("dan@example.com"));
    assert_eq!(e.to.as_deref(), Some("inbound@parse.example.org"));
    assert_eq!(e.text.as_deref(), Some("Résumé is attached. Bye."));
    assert_eq!(
        e.html.as_deref(),
        Some("<p>Résumé <img src=\"cid:pic1\"></p>")
    );

    assert_eq!(e.attachments.len(), 3, "{:#?}", e.attachments);
    let pic = &e.attachments[0];
    assert_eq!(pic.content_type.as_deref(), Some("image/gif"));
    // Without its angle brackets, as `cid:pic1` names it (and as parsed mode stores it).
    assert_eq!(pic.content_id.as_deref(), Some("pic1"));
    assert_eq!(pic.disposition.as_deref(), Some("inline"));
    assert_eq!(pic.filename, None);
    assert_eq!(pic.data, fixture("expected-pic.gif"));

    let blob = &e.attachments[1];
    assert_eq!(blob.filename.as_deref(), Some("blob.bin"));
    assert_eq!(
        blob.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(blob.disposition.as_deref(), Some("attachment"));
    assert_eq!(blob.data, fixture("expected-blob.bin"));

    let notes = &e.attachments[2];
    assert_eq!(notes.filename.as_deref(), Some("notes.txt"));
    assert_eq!(&notes.data[..], b"not the body");
}

#[test]
fn not_multipart() {
    let body = fixture("bad-not-multipart.txt");
    let err = parse_inbound("application/json", &body).unwrap_err();
    assert!(matches!(err, InboundError::NotMultipart(_)));
    assert!(err
        .to_string()
        .starts_with("content type is not multipart/form-data"));
    assert_eq!(
        parse_inbound("multipart/form-data", &body)
            .unwrap_err()
            .to_string(),
        "no boundary in content type"
    );
    let err = parse_inbound(FORM, &body).unwrap_err();
    assert!(
        err.to_string().starts_with("malformed multipart: "),
        "{err}"
    );
}

#[test]
fn no_closing_boundary() {
    let err = parse_inbound(FORM, &fixture("bad-no-closing-boundary.multipart")).unwrap_err();
    assert!(matches!(err, InboundError::Malformed(_)), "{err}");
}

#[test]
fn garbage_mime() {
    let err = parse_inbound(FORM, &fixture("bad-garbage-mime.multipart")).unwrap_err();
    assert!(matches!(err, InboundError::Mime(_)), "{err}");
    assert!(err.to_string().starts_with("MIME message: "), "{err}");
}

fn raw_form(mime: &[u8]) -> Vec<u8> {
    let mut body = b"--xYzZY\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n".to_vec();
    body.extend_from_slice(mime);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

#[test]
fn mime_bomb_depth_is_refused() {
    let mut mime = Vec::new();
    mime.extend_from_slice(b"MIME-Version: 1.0\r\nSubject: deep\r\n");
    for i in 0..40 {
        mime.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}x\"\r\n\r\n--b{i}x\r\n")
                .as_bytes(),
        );
    }
    mime.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhi\r\n");
    for i in (0..40).rev() {
        mime.extend_from_slice(format!("--b{i}x--\r\n").as_bytes());
    }
    let err = parse_inbound(FORM, &raw_form(&mime)).unwrap_err();
    assert!(err.to_string().contains("nested deeper than 32"), "{err}");
}

#[test]
fn mime_bomb_very_deep_does_not_overflow() {
    let mut mime = Vec::new();
    mime.extend_from_slice(b"MIME-Version: 1.0\r\n");
    for i in 0..20_000 {
        mime.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    let err = parse_inbound(FORM, &raw_form(&mime)).unwrap_err();
    assert!(err.to_string().contains("nested deeper than 32"), "{err}");
}

#[test]
fn mime_bomb_boundary_lines_are_refused() {
    let mut mime =
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
    mime.extend_from_slice(&b"--x\r\n".repeat(100_000));
    let err = parse_inbound(FORM, &raw_form(&mime)).unwrap_err();
    assert!(err.to_string().contains("more than 1000 parts"), "{err}");
    assert!(err.to_string().contains("boundary lines"), "{err}");
}

#[test]
fn mime_bomb_part_count_is_refused() {
    let mut mime =
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
    for _ in 0..1500 {
        mime.extend_from_slice(b"--x\r\nContent-Type: application/octet-stream\r\n\r\nA\r\n");
    }
    mime.extend_from_slice(b"--x--\r\n");
    let err = parse_inbound(FORM, &raw_form(&mime)).unwrap_err();
    assert!(err.to_string().contains("more than 1000 parts"), "{err}");
}
