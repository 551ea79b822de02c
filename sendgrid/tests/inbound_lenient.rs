//! Issue 11: Inbound Parse must be as lenient as mail clients. One regression test per thing
//! that broke, named after it: one bad part or header line used to lose (dead-letter) the whole
//! email; Content-ID differed between modes; 8-bit bytes in encoded words and part headers were
//! lost; deep nesting overflowed the stack; the body parts did not follow what mail clients show.

use mailroom_sendgrid::{parse_inbound, Attachment, InboundEmail, InboundError, InboundMode};

const FORM: &str = "multipart/form-data; boundary=xYzZY";

fn raw_form(mime: &[u8]) -> Vec<u8> {
    let mut body = b"--xYzZY\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n".to_vec();
    body.extend_from_slice(mime);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

fn raw(mime: &[u8]) -> InboundEmail {
    let e = parse_inbound(FORM, &raw_form(mime)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.mode, Some(InboundMode::Raw));
    e
}

/// multipart/mixed: "See the file." and hello.txt with the given transfer encoding and body.
fn with_attachment(encoding: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: file\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the file.\r\n\
         --B\r\nContent-Type: text/plain; name=hello.txt\r\n\
         Content-Disposition: attachment; filename=hello.txt\r\n\
         Content-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n--B--\r\n"
    )
    .into_bytes()
}

fn only_attachment(e: &InboundEmail) -> &Attachment {
    assert_eq!(e.text.as_deref(), Some("See the file."));
    assert_eq!(e.subject.as_deref(), Some("file"));
    assert_eq!(e.attachments.len(), 1, "{:#?}", e.attachments);
    let a = &e.attachments[0];
    assert_eq!(a.filename.as_deref(), Some("hello.txt"));
    a
}

#[test]
fn unpadded_base64_attachment_keeps_the_email() {
    let e = raw(&with_attachment("base64", "aGVsbG8"));
    let a = only_attachment(&e);
    assert_eq!(&a.data[..], b"hello");
    assert_eq!(a.decode_note.as_deref(), Some("base64: missing padding"));
}

#[test]
fn clean_base64_attachment_has_no_note() {
    let e = raw(&with_attachment("base64", "aGVsbG8=\r\n"));
    let a = only_attachment(&e);
    assert_eq!(&a.data[..], b"hello");
    assert_eq!(a.decode_note, None);
}

#[test]
fn truncated_base64_line_keeps_the_email() {
    // "hello world!" twice, the last line cut short by one character.
    let e = raw(&with_attachment(
        "base64",
        "aGVsbG8gd29ybGQh\r\naGVsbG8gd29ybGQhI",
    ));
    let a = only_attachment(&e);
    assert_eq!(&a.data[..], b"hello world!hello world!");
    assert!(a.decode_note.as_deref().unwrap().contains("truncated"));
}

#[test]
fn garbage_characters_in_base64_keep_the_email() {
    let e = raw(&with_attachment("base64", "aGV*sbG8g\r\nd29y!bGQ=\r\n"));
    let a = only_attachment(&e);
    assert_eq!(&a.data[..], b"hello world");
    assert_eq!(
        a.decode_note.as_deref(),
        Some("base64: 2 invalid characters ignored")
    );
}

#[test]
fn text_labelled_base64_that_is_not_base64_keeps_its_bytes() {
    let e = raw(&with_attachment(
        "base64",
        "Hello, this is plain text.\r\nBye.",
    ));
    let a = only_attachment(&e);
    assert_eq!(&a.data[..], b"Hello, this is plain text.\r\nBye.");
    assert!(a
        .decode_note
        .as_deref()
        .unwrap()
        .starts_with("labelled base64 but is not base64"));

    // The same as the body: the text is kept as sent.
    let mime = b"From: a@example.com\r\nSubject: s\r\nContent-Type: text/plain\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nSee the file, it is attached.\r\n";
    assert_eq!(
        raw(mime).text.as_deref(),
        Some("See the file, it is attached.\r\n")
    );
}

#[test]
fn malformed_quoted_printable_keeps_the_email() {
    let e = raw(&with_attachment(
        "quoted-printable",
        "caf=E9 =ZZ 100%=\r\nsoft",
    ));
    let a = only_attachment(&e);
    assert_eq!(&a.data[..], b"caf\xe9 =ZZ 100%soft");
    assert_eq!(
        a.decode_note.as_deref(),
        Some("quoted-printable: 1 malformed escapes kept as they are")
    );
}

#[test]
fn malformed_header_line_keeps_the_email() {
    let mime = b"Subject: hi\r\nFro m: bad@example.com\r\nFrom: good@example.com\r\n\r\nbody\r\n";
    let e = raw(mime);
    assert_eq!(e.subject.as_deref(), Some("hi"));
    assert_eq!(e.from.as_deref(), Some("good@example.com"));
    assert_eq!(e.text.as_deref(), Some("body\r\n"));
    assert!(e
        .headers
        .as_deref()
        .unwrap()
        .contains("Fro m: bad@example.com"));
}

#[test]
fn non_header_first_line_keeps_the_email() {
    let mime = b"// Not an RFC-822 Document\nFrom: a@example.com\nSubject: odd\n\nhello\n";
    let e = raw(mime);
    assert_eq!(e.subject.as_deref(), Some("odd"));
    assert_eq!(e.from.as_deref(), Some("a@example.com"));
    assert_eq!(e.text.as_deref(), Some("hello\n"));
    assert!(e
        .headers
        .as_deref()
        .unwrap()
        .starts_with("// Not an RFC-822 Document\n"));
}

#[test]
fn message_without_any_header_is_still_refused() {
    let err = parse_inbound(FORM, &raw_form(b"just some text\r\nand more\r\n")).unwrap_err();
    assert!(matches!(err, InboundError::Mime(_)), "{err}");
    assert!(err.to_string().contains("no header fields"), "{err}");
}

#[test]
fn content_id_has_no_angle_brackets_in_raw_mode() {
    let mime = b"From: a@example.com\r\nContent-Type: multipart/related; boundary=R\r\n\r\n\
        --R\r\nContent-Type: text/html\r\n\r\n<img src=\"cid:logo@x\">\r\n\
        --R\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n\
        Content-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n--R--\r\n";
    let e = raw(mime);
    assert_eq!(e.html.as_deref(), Some("<img src=\"cid:logo@x\">"));
    assert_eq!(e.attachments[0].content_id.as_deref(), Some("logo@x"));
    assert_eq!(e.attachments[0].disposition.as_deref(), Some("inline"));
}

#[test]
fn encoded_word_with_raw_8bit_byte_keeps_the_character() {
    let e = raw(b"From: a@example.com\r\nSubject: =?iso-8859-1?Q?Fr\xf6sche?= und =?utf-8?B?S8O2bG4=?=\r\n\r\nx");
    assert_eq!(e.subject.as_deref(), Some("Frösche und Köln"));
}

#[test]
fn undeclared_charset_8bit_body_reads_as_windows_1252() {
    let e = raw(b"From: a@example.com\r\nSubject: s\r\n\r\ncaf\xe9 \x80\r\n");
    assert_eq!(e.text.as_deref(), Some("café €\r\n"));
    let e =
        raw(b"From: a@example.com\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\ncaf\xe9");
    assert_eq!(e.text.as_deref(), Some("café"));
}

fn nested(depth: usize) -> Vec<u8> {
    let mut mime = b"From: a@example.com\r\nMIME-Version: 1.0\r\n".to_vec();
    for i in 0..depth {
        mime.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .as_bytes(),
        );
    }
    mime.extend_from_slice(b"Content-Type: text/plain\r\n\r\ndeep\r\n");
    for i in (0..depth).rev() {
        mime.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    mime
}

#[test]
fn deep_nesting_is_refused_without_overflowing_a_small_stack() {
    let body = raw_form(&nested(1000));
    let result = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || parse_inbound(FORM, &body).map(|_| ()))
        .expect("spawn")
        .join()
        .expect("the parse must not crash");
    let err = result.unwrap_err();
    assert!(err.to_string().contains("nested deeper than 32"), "{err}");
}

#[test]
fn nesting_up_to_the_limit_is_read() {
    let e = raw(&nested(mailroom_sendgrid::inbound::mime::MAX_MIME_DEPTH));
    assert_eq!(e.text.as_deref(), Some("deep"));
}

#[test]
fn alternative_takes_text_and_html_from_the_alternatives() {
    let mime = b"From: a@example.com\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n\
        --A\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
        --A\r\nContent-Type: text/enriched\r\n\r\n<bold>rich</bold>\r\n\
        --A\r\nContent-Type: multipart/related; boundary=R\r\n\r\n\
        --R\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n\
        --R\r\nContent-Type: image/gif\r\nContent-ID: <g>\r\n\r\nGIF\r\n--R--\r\n\
        --A--\r\n";
    let e = raw(mime);
    assert_eq!(e.text.as_deref(), Some("plain"));
    assert_eq!(e.html.as_deref(), Some("<p>html</p>"));
    let types: Vec<_> = e
        .attachments
        .iter()
        .map(|a| a.content_type.as_deref().unwrap())
        .collect();
    assert_eq!(types, ["text/enriched", "image/gif"]);
}

#[test]
fn alternative_last_text_wins() {
    let mime = b"From: a@example.com\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n\
        --A\r\nContent-Type: text/html\r\n\r\n<p>old</p>\r\n\
        --A\r\nContent-Type: text/html\r\n\r\n<p>new</p>\r\n--A--\r\n";
    let e = raw(mime);
    assert_eq!(e.html.as_deref(), Some("<p>new</p>"));
    assert!(e.attachments.is_empty());
}

#[test]
fn related_root_is_the_body_and_the_rest_inline() {
    let mime = b"From: a@example.com\r\n\
        Content-Type: multipart/related; boundary=R; start=\"<root@x>\"\r\n\r\n\
        --R\r\nContent-Type: text/html\r\nContent-ID: <other@x>\r\n\r\n<p>not the body</p>\r\n\
        --R\r\nContent-Type: text/html\r\nContent-ID: <root@x>\r\n\r\n<p>body</p>\r\n--R--\r\n";
    let e = raw(mime);
    assert_eq!(e.html.as_deref(), Some("<p>body</p>"));
    assert_eq!(e.attachments.len(), 1);
    assert_eq!(e.attachments[0].content_id.as_deref(), Some("other@x"));
    assert_eq!(e.attachments[0].disposition.as_deref(), Some("inline"));
}

#[test]
fn attached_email_is_one_attachment_and_not_merged() {
    let inner = "From: inner@example.com\r\nSubject: inner\r\n\r\ninner text\r\n";
    let mime = format!(
        "From: a@example.com\r\nSubject: outer\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n\
         --M\r\nContent-Type: text/plain\r\n\r\nouter text\r\n\
         --M\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n--M--\r\n"
    );
    let e = raw(mime.as_bytes());
    assert_eq!(e.subject.as_deref(), Some("outer"));
    assert_eq!(e.text.as_deref(), Some("outer text"));
    assert_eq!(e.attachments.len(), 1);
    let a = &e.attachments[0];
    assert_eq!(a.content_type.as_deref(), Some("message/rfc822"));
    assert_eq!(a.disposition.as_deref(), Some("attachment"));
    assert_eq!(a.data, inner.as_bytes());
}

#[test]
fn missing_closing_boundary_keeps_the_last_part() {
    let mime = b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n\
        --M\r\nContent-Type: text/plain\r\n\r\ntext\r\n\
        --M\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n%PDF";
    let e = raw(mime);
    assert_eq!(e.text.as_deref(), Some("text"));
    assert_eq!(&e.attachments[0].data[..], b"%PDF");
}

/// A parsed-mode post with one file part whose Content-Disposition is `disposition`.
fn parsed_file(disposition: &[u8]) -> Vec<u8> {
    let mut body = b"--xYzZY\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nfiles\r\n\
        --xYzZY\r\nContent-Disposition: form-data; name=\"attachments\"\r\n\r\n1\r\n\
        --xYzZY\r\nContent-Disposition: "
        .to_vec();
    body.extend_from_slice(disposition);
    body.extend_from_slice(b"\r\nContent-Type: text/plain\r\n\r\nDATA\r\n--xYzZY--\r\n");
    body
}

fn parsed_filename(disposition: &[u8]) -> Option<String> {
    let e = parse_inbound(FORM, &parsed_file(disposition)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.mode, Some(InboundMode::Parsed));
    assert_eq!(e.subject.as_deref(), Some("files"));
    assert_eq!(e.attachments.len(), 1);
    assert_eq!(&e.attachments[0].data[..], b"DATA");
    assert_eq!(e.attachments[0].content_type.as_deref(), Some("text/plain"));
    e.attachments[0].filename.clone()
}

#[test]
fn parsed_mode_latin1_filename_is_kept() {
    assert_eq!(
        parsed_filename(b"form-data; name=\"attachment1\"; filename=\"caf\xe9.txt\"").as_deref(),
        Some("café.txt")
    );
    assert_eq!(
        parsed_filename(b"form-data; name=\"attachment1\"; filename=\"x\xff.txt\"").as_deref(),
        Some("xÿ.txt")
    );
    assert_eq!(
        parsed_filename("form-data; name=\"attachment1\"; filename=\"日本.txt\"".as_bytes())
            .as_deref(),
        Some("日本.txt")
    );
}

#[test]
fn parsed_mode_rfc2231_filename_is_decoded() {
    assert_eq!(
        parsed_filename(
            b"form-data; name=\"attachment1\"; filename=\"EUR rates.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt"
        )
        .as_deref(),
        Some("€ rates.txt")
    );
}

#[test]
fn parsed_mode_control_bytes_in_part_header_keep_the_email() {
    assert_eq!(
        parsed_filename(b"form-data; name=\"attachment1\"; filename=\"a\x00b.txt\"").as_deref(),
        Some("a\0b.txt")
    );
    assert_eq!(
        parsed_filename(b"form-data; name=\"attachment1\"; filename=\"a\x01b.txt\"").as_deref(),
        Some("a\u{1}b.txt")
    );
}
