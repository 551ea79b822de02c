#!/usr/bin/env python3
"""Writes the store/handler test fixtures in this folder (SendGrid-shaped bodies).

Run from this folder: python3 make_fixtures.py. The outputs are committed; this script only
documents how they were made (bytes in multipart bodies are exact, CRLF line ends).
"""
import base64
import json

T = 1764190000  # 2025-11-26T20:46:40Z


def ev(event, n, **kw):
    d = {"email": f"user{n}@example.com", "timestamp": T + n, "event": event,
         "sg_event_id": f"evt-{event}-{n}", "sg_message_id": f"msg{n}.filter0001.16648.5515E0B8.0",
         "smtp-id": f"<msg{n}@ismtpd-555>"}
    d.update(kw)
    return d


events = [
    ev("processed", 1, category=["welcome", "onboarding"], pool={"name": "transactional", "id": 210},
       user_id="42", marketing_campaign_id=12345, marketing_campaign_name="Welcome series"),
    ev("dropped", 2, reason="Bounced Address", status="5.0.0", category="cat facts"),
    ev("delivered", 3, response="250 OK", ip="168.1.1.1", tls=1),
    ev("deferred", 4, response="400 try again later", attempt="5", ip="168.1.1.2", tls=0),
    ev("bounce", 5, type="bounce", bounce_classification="Invalid Address",
       reason="550 5.1.1 unknown recipient", status="5.1.1", ip="168.1.1.3", tls=1),
    ev("bounce", 6, type="blocked", bounce_classification="Reputation",
       reason="554 blocked by policy", status="5.7.1"),
    ev("open", 7, useragent="Mozilla/5.0 (Macintosh)", ip="203.0.113.7", sg_machine_open=True),
    ev("click", 8, useragent="Mozilla/5.0 (Windows)", ip="203.0.113.8",
       url="https://example.com/pricing?utm=x", url_offset={"index": 2, "type": "html"}),
    ev("spamreport", 9),
    ev("unsubscribe", 10),
    ev("group_unsubscribe", 11, asm_group_id=10, useragent="Mozilla/5.0", ip="203.0.113.11",
       url="https://example.com/unsub", url_offset={"index": 0, "type": "html"}),
    ev("group_resubscribe", 12, asm_group_id="10", useragent="Mozilla/5.0", ip="203.0.113.12"),
    {"event": "account_status_change", "sg_event_id": "evt-account_status_change-13",
     "timestamp": T + 13, "type": "compliance_suspend"},
    ev("quantum_entangled", 14, future_field={"nested": [1, 2, 3]}),
]
with open("events_all_types.json", "w") as f:
    json.dump(events, f, indent=1)

# Same event twice in one body (SendGrid retries can do this), plus one more.
dup = [ev("delivered", 20, response="250 OK"), ev("delivered", 20, response="250 OK"),
       ev("open", 21)]
with open("events_duplicate_ids.json", "w") as f:
    json.dump(dup, f)

with open("events_malformed.json", "w") as f:
    f.write('[{"event": "delivered", "email": "x@example.com", "sg_event_id": "evt-broken"')


def form(boundary, fields):
    out = b""
    for name, value, extra in fields:
        out += b"--" + boundary + b"\r\n"
        disp = b'Content-Disposition: form-data; name="' + name.encode() + b'"'
        if extra.get("filename"):
            disp += b'; filename="' + extra["filename"].encode() + b'"'
        out += disp + b"\r\n"
        if extra.get("type"):
            out += b"Content-Type: " + extra["type"].encode() + b"\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


BLOB = bytes(range(256)) * 4 + b"\r\n--xYzZ\r\n\x00end"  # boundary lookalike, NULs
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
open("attachment_blob.bin", "wb").write(BLOB)
open("attachment_pixel.png", "wb").write(PIXEL)

headers = ("Received: by mx0001.sendgrid.net\r\nMessage-ID: <parsed-1@mail.example.org>\r\n"
           "From: =?iso-8859-1?q?Ren=E9?= <rene@example.org>\r\nTo: inbox@parse.example.com\r\n"
           "Subject: =?iso-8859-1?q?Caf=E9?=\r\n")
parsed = form(b"xYzZY", [
    (b"headers".decode(), headers.encode(), {}),
    ("dkim", b"{@example.org : pass}", {}),
    ("content-ids", b'{"pixel@example.org":"attachment2"}', {}),
    ("to", b"inbox@parse.example.com", {}),
    ("html", "<p>Caf\u00e9 cr\u00e8me <img src=\"cid:pixel@example.org\"></p>".encode("utf-8"), {}),
    ("from", "Ren\u00e9 <rene@example.org>".encode("iso-8859-1"), {}),
    ("text", "Caf\u00e9 cr\u00e8me, d\u00e9j\u00e0 vu.\r\n".encode("iso-8859-1"), {}),
    ("sender_ip", b"192.0.2.10", {}),
    ("spam_report", b"Spam detection software... 0.1 points", {}),
    ("envelope", b'{"to":["inbox@parse.example.com"],"from":"rene@example.org"}', {}),
    ("attachments", b"2", {}),
    ("subject", "Caf\u00e9".encode("iso-8859-1"), {}),
    ("spam_score", b"0.1", {}),
    ("attachment-info", json.dumps({
        "attachment1": {"filename": "blob.bin", "name": "blob.bin", "type": "application/octet-stream"},
        "attachment2": {"filename": "pixel.png", "name": "pixel.png", "type": "image/png",
                        "content-id": "pixel@example.org"}}).encode(), {}),
    ("charsets", b'{"to":"UTF-8","html":"UTF-8","subject":"iso-8859-1","from":"iso-8859-1","text":"iso-8859-1"}', {}),
    ("SPF", b"pass", {}),
    ("attachment1", BLOB, {"filename": "blob.bin", "type": "application/octet-stream"}),
    ("attachment2", PIXEL, {"filename": "pixel.png", "type": "image/png"}),
])
open("inbound_parsed.multipart", "wb").write(parsed)

PDF = b"%PDF-1.4\n" + bytes((i * 7) % 256 for i in range(3000)) + b"\n%%EOF\n"
open("attachment_report.pdf", "wb").write(PDF)
pdf_b64 = base64.encodebytes(PDF).replace(b"\n", b"\r\n")
mime = (b"Received: by mx0002.sendgrid.net\r\n"
        b"Message-ID: <raw-1@mail.example.org>\r\n"
        b"From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.org>\r\n"
        b"To: inbox@parse.example.com\r\n"
        b"Cc: team@example.com\r\n"
        b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="outer"\r\n'
        b"\r\n"
        b"--outer\r\n"
        b'Content-Type: multipart/alternative; boundary="inner"\r\n'
        b"\r\n"
        b"--inner\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Sch=F6ne Gr=FC=DFe aus M=FCnchen.\r\n"
        b"--inner\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        + base64.encodebytes("<p>Sch\u00f6ne Gr\u00fc\u00dfe</p>".encode()).replace(b"\n", b"\r\n")
        + b"--inner--\r\n"
        b"--outer\r\n"
        b'Content-Type: application/pdf; name="report.pdf"\r\n'
        b'Content-Disposition: attachment; filename="report.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        + pdf_b64
        + b"--outer--\r\n")
raw = form(b"xYzZY", [
    ("dkim", b"{@example.org : pass}", {}),
    ("email", mime, {}),
    ("to", b"inbox@parse.example.com", {}),
    ("from", b"juergen@example.org", {}),
    ("sender_ip", b"192.0.2.11", {}),
    ("envelope", b'{"to":["inbox@parse.example.com"],"from":"juergen@example.org"}', {}),
    ("subject", "Gr\u00fc\u00dfe".encode("utf-8"), {}),
    ("spam_score", b"1.5", {}),
    ("charsets", b'{"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}', {}),
    ("SPF", b"softfail", {}),
])
open("inbound_raw.multipart", "wb").write(raw)
open("inbound_raw.eml", "wb").write(mime)

# No closing boundary: the multipart body is cut off.
open("inbound_truncated.multipart", "wb").write(parsed[: len(parsed) // 2])
# A raw-mode post whose `email` field is not MIME at all.
open("inbound_garbage_mime.multipart", "wb").write(form(b"xYzZY", [
    ("email", b"\x00\x01\x02 this is : not\r\n\x7f\xff mime at all", {}),
    ("to", b"x@example.com", {}),
]))

# Signed Event Webhook: a P-256 key pair, and a signature over timestamp + events body.
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

key = ec.generate_private_key(ec.SECP256R1())
pub_der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
open("signing_public_key.b64", "w").write(base64.b64encode(pub_der).decode())
SIGNED_AT = "1764190100"
open("events_all_types.timestamp", "w").write(SIGNED_AT)
body = open("events_all_types.json", "rb").read()
sig = key.sign(SIGNED_AT.encode() + body, ec.ECDSA(hashes.SHA256()))
open("events_all_types.sig", "w").write(base64.b64encode(sig).decode())
