//! Whatever bytes arrive, every decoder returns a value or an error: it never panics.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mailroom_sendgrid::inbound::mime::MAX_MIME_DEPTH;
use mailroom_sendgrid::{check_timestamp, parse_events, parse_inbound, verify_signature};
use proptest::prelude::*;

/// A generated MIME tree: structured input for the raw-mode parser (random bytes alone rarely
/// get past the first boundary).
#[derive(Debug, Clone)]
enum Mime {
    Leaf {
        ctype: &'static str,
        encoding: &'static str,
        filename: Option<String>,
        data: Vec<u8>,
    },
    Multipart {
        subtype: &'static str,
        boundary: String,
        parts: Vec<Mime>,
    },
}

impl Mime {
    fn depth(&self) -> usize {
        match self {
            Mime::Leaf { .. } => 0,
            Mime::Multipart { parts, .. } => 1 + parts.iter().map(Mime::depth).max().unwrap_or(0),
        }
    }

    /// Renders the part; `level` keeps nested boundaries distinct.
    fn render(&self, level: usize, out: &mut Vec<u8>) {
        match self {
            Mime::Leaf {
                ctype,
                encoding,
                filename,
                data,
            } => {
                out.extend_from_slice(format!("Content-Type: {ctype}\r\n").as_bytes());
                if let Some(f) = filename {
                    out.extend_from_slice(
                        format!("Content-Disposition: attachment; filename=\"{f}\"\r\n").as_bytes(),
                    );
                }
                out.extend_from_slice(
                    format!("Content-Transfer-Encoding: {encoding}\r\n\r\n").as_bytes(),
                );
                match *encoding {
                    "base64" => {
                        let text = STANDARD.encode(data);
                        for chunk in text.as_bytes().chunks(76) {
                            out.extend_from_slice(chunk);
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                    "quoted-printable" => {
                        for &b in data {
                            if b.is_ascii_alphanumeric() || b == b' ' {
                                out.push(b);
                            } else {
                                out.extend_from_slice(format!("={b:02X}").as_bytes());
                            }
                        }
                    }
                    _ => out.extend_from_slice(data),
                }
            }
            Mime::Multipart {
                subtype,
                boundary,
                parts,
            } => {
                let b = format!("{boundary}_{level}");
                out.extend_from_slice(
                    format!("Content-Type: multipart/{subtype}; boundary=\"{b}\"\r\n\r\n")
                        .as_bytes(),
                );
                for p in parts {
                    out.extend_from_slice(format!("--{b}\r\n").as_bytes());
                    p.render(level + 1, out);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
            }
        }
    }

    fn message(&self) -> Vec<u8> {
        let mut out =
            b"From: a@example.com\r\nSubject: generated\r\nMIME-Version: 1.0\r\n".to_vec();
        self.render(0, &mut out);
        out
    }

    /// The attachment leaves' data, in document order.
    fn files(&self, out: &mut Vec<Vec<u8>>) {
        match self {
            Mime::Leaf {
                filename: Some(_),
                data,
                ..
            } => out.push(data.clone()),
            Mime::Leaf { .. } => {}
            Mime::Multipart { parts, .. } => parts.iter().for_each(|p| p.files(out)),
        }
    }
}

fn mime_tree(files_only: bool) -> impl Strategy<Value = Mime> {
    let leaf = (
        prop::sample::select(vec![
            "text/plain",
            "text/html",
            "application/octet-stream",
            "image/png",
            "message/rfc822",
        ]),
        prop::sample::select(vec!["base64", "quoted-printable", "7bit", "8bit"]),
        proptest::option::of("[a-z]{1,8}\\.[a-z]{3}"),
        proptest::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(move |(ctype, encoding, filename, data)| {
            if files_only {
                let encoding = if encoding == "quoted-printable" {
                    encoding
                } else {
                    "base64"
                };
                Mime::Leaf {
                    ctype: "application/octet-stream",
                    encoding,
                    filename: Some(filename.unwrap_or_else(|| "f.bin".into())),
                    data,
                }
            } else {
                Mime::Leaf {
                    ctype,
                    encoding,
                    filename,
                    data,
                }
            }
        });
    leaf.prop_recursive(6, 40, 5, |inner| {
        (
            prop::sample::select(vec!["mixed", "alternative", "related", "digest", "x-other"]),
            "[A-Za-z0-9'()+_,./:=?-]{1,30}",
            proptest::collection::vec(inner, 1..5),
        )
            .prop_map(|(subtype, boundary, parts)| Mime::Multipart {
                subtype,
                boundary,
                parts,
            })
    })
}

/// Wraps a tree in `n` more single-part multipart/mixed levels.
fn deepen(mut tree: Mime, n: usize) -> Mime {
    for i in 0..n {
        tree = Mime::Multipart {
            subtype: "mixed",
            boundary: format!("deep{i}"),
            parts: vec![tree],
        };
    }
    tree
}

fn form(name: &str, value: &[u8]) -> Vec<u8> {
    let mut body =
        format!("--xYzZY\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").into_bytes();
    body.extend_from_slice(value);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

proptest! {
    #[test]
    fn events_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_events(&body);
    }

    #[test]
    fn events_json_like_never_panic(s in r#"[\[\]{}",:0-9a-z_.\- ]{0,300}"#) {
        let _ = parse_events(s.as_bytes());
        let _ = parse_events(format!("[{{\"event\":\"x\",{s}").as_bytes());
    }

    #[test]
    fn inbound_never_panics(ct in ".{0,60}", body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_inbound(&ct, &body);
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &body);
    }

    #[test]
    fn inbound_fields_never_panic(
        name in "(email|charsets|headers|text|attachment1|envelope|x)",
        value in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form(&name, &value));
    }

    #[test]
    fn mime_never_panics(s in "[A-Za-z:;=\\-\r\n \"/]{0,400}") {
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", s.as_bytes()));
        let mime = format!("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n{s}");
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", mime.as_bytes()));
    }

    #[test]
    fn nested_mime_is_read_up_to_the_depth_limit(tree in mime_tree(false), extra in 0usize..40) {
        let tree = deepen(tree, extra);
        let result = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", &tree.message()));
        if tree.depth() <= MAX_MIME_DEPTH {
            prop_assert!(result.is_ok(), "{:?}", result.err());
        } else {
            let err = result.expect_err("too deep");
            prop_assert!(err.to_string().contains("nested deeper than"), "{}", err);
        }
    }

    #[test]
    fn nested_mime_attachments_keep_their_bytes(tree in mime_tree(true)) {
        let e = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", &tree.message()))
            .expect("well-formed");
        let mut files = Vec::new();
        tree.files(&mut files);
        let got: Vec<Vec<u8>> = e.attachments.iter().map(|a| a.data.to_vec()).collect();
        prop_assert_eq!(got, files);
        prop_assert!(e.attachments.iter().all(|a| a.decode_note.is_none()));
    }

    #[test]
    fn damaged_nested_mime_never_panics(
        tree in mime_tree(false),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut mime = tree.message();
        for (at, byte) in flips {
            let i = at.index(mime.len());
            mime[i] = byte;
        }
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", &mime));
        mime.truncate(cut.index(mime.len() + 1));
        let _ = parse_inbound("multipart/form-data; boundary=xYzZY", &form("email", &mime));
    }

    #[test]
    fn signature_never_panics(
        key in ".{0,120}",
        sig in ".{0,120}",
        ts in ".{0,20}",
        key_bytes in proptest::collection::vec(any::<u8>(), 0..100),
        sig_bytes in proptest::collection::vec(any::<u8>(), 0..80),
        body in proptest::collection::vec(any::<u8>(), 0..100),
        now in any::<i64>(),
        window in any::<i64>(),
    ) {
        prop_assert!(verify_signature(&key, &sig, &ts, &body).is_err());
        let _ = verify_signature(&STANDARD.encode(&key_bytes), &STANDARD.encode(&sig_bytes), &ts, &body);
        let _ = check_timestamp(&ts, now, window);
    }
}
