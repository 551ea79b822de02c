#!/usr/bin/env python3
"""Builds the raw-mode oracle corpus: for each case NAME, NAME.eml (the MIME message) and
NAME.json (what Python's `email` package, policy=default, reads from it). The Rust test
sendgrid/tests/inbound_corpus.rs wraps each .eml as a raw-mode Inbound Parse post and compares
what mailroom-sendgrid decodes with the JSON. Python is needed only to regenerate:

    python3 sendgrid/tests/data/inbound/corpus/generate.py

Stdlib only, deterministic (seeded boundaries, no dates). The oracle:

- subject: str(msg['subject']); from/to: [display name, addr-spec] of each address;
- text / html: get_body(('plain',)) / get_body(('html',)), get_content();
- attachments, in document order: every leaf part that is not one of those two bodies, and not
  a text/plain or text/html alternative that lost to another (multipart/alternative shows
  one); message/rfc822 is a leaf. For each: filename, content type, sha256 and size of
  get_payload(decode=True); for message/rfc822 the attached message's subject and text.

Where Mailroom deliberately reads a malformed message differently from Python (documented in
docs/schema.md, "Raw mode"), the case says so in `differs` and the expected value is set by
hand below; everything else is Python's reading, untouched.
"""

import hashlib
import json
import os
import random
from email import policy
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser

HERE = os.path.dirname(os.path.abspath(__file__))
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
PDF = b"%PDF-1.4\n" + bytes(range(256)) + b"\n%%EOF\n"
random.seed(11)  # boundaries are drawn as each message below is serialised


def content(part):
    """get_content(); a charset Python does not know is read as UTF-8 with replacements (what
    Python's own get_payload fallback and Mailroom do) instead of raising LookupError."""
    try:
        return part.get_content()
    except LookupError:
        return (part.get_payload(decode=True) or b"").decode("utf-8", "replace")


def oracle(raw):
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    text_part = msg.get_body(("plain",))
    html_part = msg.get_body(("html",))
    out = {
        "subject": None if msg["subject"] is None else str(msg["subject"]),
        "from": addresses(msg["from"]),
        "to": addresses(msg["to"]),
        "text": content(text_part) if text_part is not None else None,
        "html": content(html_part) if html_part is not None else None,
        "attachments": [],
    }

    def walk(part, in_alternative):
        ctype = part.get_content_type()
        if ctype != "message/rfc822" and part.is_multipart():
            for sub in part.iter_parts():
                walk(sub, ctype == "multipart/alternative")
            return
        if part is text_part or part is html_part:
            return
        if (in_alternative and ctype in ("text/plain", "text/html")
                and not part.is_attachment() and part.get_filename() is None):
            return
        att = {"filename": part.get_filename(), "content_type": ctype}
        if ctype == "message/rfc822":
            inner = part.get_payload(0)
            body = inner.get_body(("plain",))
            att["message"] = {
                "subject": str(inner["subject"]),
                "text": content(body) if body is not None else None,
            }
        else:
            data = part.get_payload(decode=True) or b""
            att["sha256"] = hashlib.sha256(data).hexdigest()
            att["size"] = len(data)
        out["attachments"].append(att)

    walk(msg, False)
    return out


def addresses(header):
    if header is None:
        return None
    return [[a.display_name, a.addr_spec] for a in header.addresses]


def sha(data):
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


CASES = []


def case(name, raw, differs=None, fix=None):
    CASES.append((name, raw, differs, fix))


def crlf(msg):
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


# ---- well-formed messages, built by Python's email package -------------------------------

m = EmailMessage()
m["From"] = "Alice Example <alice@example.com>"
m["To"] = "inbound@parse.example.org"
m["Subject"] = "Plain and simple"
m.set_content("Hello,\nthis is plain text.\n")
case("plain_utf8_crlf", crlf(m))

m = EmailMessage()
m["From"] = "José Müller <jose@example.com>"
m["To"] = "Zoë <zoe@example.org>, bob@example.org"
m["Subject"] = "Résumé, café crème and a rather long subject line that Python folds: ½ € ✓"
m.set_content("Grüße aus Köln — ½ €\n")
m.add_alternative("<p>Grüße aus <b>Köln</b> — ½ €</p>\n", subtype="html")
case("alternative_utf8_lf", bytes(m))

m = EmailMessage()
m["From"] = "news@example.com"
m["To"] = "reader@example.org"
m["Subject"] = "Related with an inline image"
m.set_content("Text version.\n")
m.add_alternative('<p>Logo: <img src="cid:logo@example.com"></p>\n', subtype="html")
m.get_payload()[1].add_related(GIF, "image", "gif", cid="<logo@example.com>", filename="logo.gif")
case("alternative_related_inline_image", crlf(m))

m = EmailMessage()
m["From"] = "reports@example.com"
m["To"] = "finance@example.org"
m["Subject"] = "Two attachments"
m.set_content("See the attached files.\n")
m.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
m.add_attachment("naïve notes, line one\nline two\n".encode("utf-8"), maintype="text",
                 subtype="plain", filename="notes.txt", cte="quoted-printable")
m.add_attachment(b"\x00\x01\x02binary", maintype="application", subtype="octet-stream",
                 filename="Überweisung 2026 – März.bin")
case("mixed_attachments_rfc2231_filename", crlf(m))

inner = EmailMessage()
inner["From"] = "original@example.net"
inner["To"] = "someone@example.com"
inner["Subject"] = "The original"
inner.set_content("Original text, not the outer body.\n")
inner.add_attachment(b"inner attachment", maintype="application", subtype="octet-stream",
                     filename="inner.bin")
m = EmailMessage()
m["From"] = "forwarder@example.com"
m["To"] = "inbound@parse.example.org"
m["Subject"] = "Fwd: The original"
m.set_content("Forwarding the message below.\n")
m.add_attachment(inner)
case("forwarded_message_rfc822", crlf(m))

m = MIMEMultipart("mixed", boundary="==outer==")
m["From"] = "=?iso-8859-1?q?Ren=E9?= <rene@example.fr>"
m["To"] = "inbound@parse.example.org"
m["Subject"] = "=?iso-8859-1?q?Caf=E9?= =?utf-8?b?4oKs?= ok"
alt = MIMEMultipart("alternative", boundary="==alt==")
alt.attach(MIMEText("Café in Latin-1.\n", "plain", "iso-8859-1"))
alt.attach(MIMEText("<p>Café in Latin-1.</p>\n", "html", "iso-8859-1"))
m.attach(alt)
img = MIMEImage(GIF, "gif")
img.add_header("Content-Disposition", "attachment", filename="pixel.gif")
m.attach(img)
app = MIMEApplication(b"PK\x03\x04zip-ish", "zip")
app.add_header("Content-Disposition", "attachment", filename=("utf-8", "", "архив.zip"))
m.attach(app)
case("legacy_mime_latin1_alternative", m.as_bytes())

for charset, text in [
    ("koi8-r", "Привет, мир\n"),
    ("shift_jis", "こんにちは世界\n"),
    ("iso-2022-jp", "こんにちは\n"),
    ("gb2312", "你好，世界\n"),
    ("big5", "你好\n"),
    ("euc-kr", "안녕하세요\n"),
    ("windows-1251", "Здравствуйте\n"),
    ("iso-8859-15", "Prix: 5 € ½\n".replace("½", "œ")),
]:
    m = MIMEText(text, "plain", charset)
    m["From"] = "sender@example.com"
    m["To"] = "inbound@parse.example.org"
    m["Subject"] = "Charset " + charset
    case("charset_" + charset.replace("-", "_"), m.as_bytes())

m = EmailMessage()
m["From"] = "b64@example.com"
m["To"] = "inbound@parse.example.org"
m["Subject"] = "Base64 body"
m.set_content("Long UTF-8 line ✓ " * 20 + "\n", cte="base64")
m.add_alternative("<p>" + "Zürich " * 30 + "</p>\n", subtype="html", cte="quoted-printable")
case("base64_and_qp_bodies", crlf(m))

# ---- malformed messages, written by hand --------------------------------------------------

def mixed_with(att_headers, att_body, text="See the file."):
    return (
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: file\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n"
        "--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n"
        "--B\r\n" + att_headers + "\r\n\r\n" + att_body + "\r\n--B--\r\n"
    ).encode("latin-1")


TXT = ("Content-Type: text/plain; name=hello.txt\r\n"
       "Content-Disposition: attachment; filename=hello.txt\r\n"
       "Content-Transfer-Encoding: base64")
case("bad_base64_unpadded", mixed_with(TXT, "aGVsbG8"))
case("bad_base64_garbage_characters", mixed_with(TXT, "aGV*sbG8g\r\nd29y!bGQ=\r\n"))
case("bad_base64_truncated_line", mixed_with(TXT, "aGVsbG8gd29ybGQh\r\naGVsbG8gd29ybGQhI"),
     differs="a final base64 character that makes no byte is dropped and the rest decoded; "
             "Python keeps the whole part undecoded",
     fix=lambda e: e["attachments"][0].update(sha(b"hello world!hello world!")))
case("bad_base64_not_base64_attachment",
     mixed_with(TXT, "Hello, this is plain text,\r\nnot base64 at all."),
     differs="a part labelled base64 that is not base64 is kept as sent (with a note); "
             "Python decodes the letters into noise",
     fix=lambda e: e["attachments"][0].update(
         sha(b"Hello, this is plain text,\r\nnot base64 at all.")))
case("bad_base64_text_body_not_base64",
     b"From: a@example.com\r\nSubject: body\r\nContent-Type: text/plain; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\nSee the file, it is attached.\r\n",
     differs="a body labelled base64 that is not base64 is kept as sent",
     fix=lambda e: e.update(text="See the file, it is attached.\r\n"))
case("bad_qp_escapes", mixed_with(
    "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=q.bin\r\n"
    "Content-Transfer-Encoding: quoted-printable", "caf=E9 =ZZ 100%=\r\nsoft=3d=3D"))
case("bad_header_line",
     b"From: a@example.com\r\nFro m: broken@example.com\r\nTo: b@example.com\r\n"
     b"Subject: still here\r\n\r\nThe body.\r\n",
     differs="a line that is not a header field is skipped; Python starts the body there",
     fix=lambda e: e.update(subject="still here", to=[["", "b@example.com"]], text="The body.\r\n"))
case("bad_first_line",
     b"// Not an RFC-822 Document\nFrom: a@example.com\nSubject: odd first line\n\nhello\n",
     differs="a first line that is not a header field is skipped; Python reads no headers",
     fix=lambda e: e.update(subject="odd first line", **{"from": [["", "a@example.com"]]},
                            text="hello\n"))
case("bad_missing_closing_boundary",
     b"From: a@example.com\nSubject: no end\nContent-Type: multipart/mixed; boundary=M\n\n"
     b"--M\nContent-Type: text/plain\n\ntext\n--M\nContent-Type: application/pdf\n"
     b"Content-Disposition: attachment; filename=a.pdf\nContent-Transfer-Encoding: base64\n\n"
     b"JVBERi0xLjQK\n")
case("bad_encoded_word_raw_8bit",
     b"From: =?iso-8859-1?Q?J=F6rg?= <jorg@example.de>\r\n"
     b"Subject: =?iso-8859-1?Q?Fr\xf6sche?=\r\n\r\nquak\r\n")
case("bad_charset_us_ascii_8bit",
     b"From: a@example.com\r\nSubject: 8bit\r\nContent-Type: text/plain; charset=us-ascii\r\n"
     b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9\r\n",
     differs="8-bit bytes under us-ascii (or no charset) are read as windows-1252; "
             "Python replaces them with U+FFFD",
     fix=lambda e: e.update(text="café\r\n"))
case("bad_charset_utf8_declared_latin1_sent",
     b"From: a@example.com\r\nSubject: wrong\r\nContent-Type: text/plain; charset=utf-8\r\n"
     b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9 ok\r\n")
case("bad_charset_unknown",
     b"From: a@example.com\r\nSubject: unknown\r\nContent-Type: text/plain; charset=x-no-such\r\n"
     b"\r\nplain \xc3\xa9\r\n")
case("bad_no_content_type_lf", b"From: a@example.com\nTo: b@example.com\nSubject: bare\n\nJust text.\n")


def deep(n):
    s = "From: a@example.com\r\nSubject: deep\r\n"
    for i in range(n):
        s += "Content-Type: multipart/mixed; boundary=\"d%d\"\r\n\r\n--d%d\r\n" % (i, i)
    s += "Content-Type: text/plain\r\n\r\ndeep\r\n"
    for i in reversed(range(n)):
        s += "--d%d--\r\n" % i
    return s.encode()


case("deep_nesting_30", deep(30))
case("deep_nesting_40", deep(40),
     differs="more than 32 levels of multipart nesting is refused (a MIME bomb); Python reads it",
     fix=lambda e: (e.clear(), e.update(error="nested deeper than 32 levels")))


def main():
    for name in os.listdir(HERE):
        if name.endswith((".eml", ".json")):
            os.remove(os.path.join(HERE, name))
    for name, raw, differs, fix in CASES:
        expected = oracle(raw)
        if differs:
            expected["python"] = json.loads(json.dumps(expected))
            fix(expected)
            expected["differs"] = differs
        with open(os.path.join(HERE, name + ".eml"), "wb") as f:
            f.write(raw)
        with open(os.path.join(HERE, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(expected, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.write("\n")
    print("%d cases written to %s" % (len(CASES), HERE))


if __name__ == "__main__":
    main()
