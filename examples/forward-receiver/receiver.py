#!/usr/bin/env python3
"""A stand-in for the application behind a Mailroom forwarder (docs/forward.md).

Verifies each delivery's Mailroom-Signature (HMAC-SHA256 over "<t>.<body>"), answers 429 with a
Retry-After to the first request (to show the forwarder slowing down), dedupes events on
sg_event_id, and appends one JSON line per request to the log file it is given.

    MAILROOM_FORWARD_SECRET=... receiver.py PORT LOGFILE
"""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["MAILROOM_FORWARD_SECRET"].encode()
PORT, LOG = int(sys.argv[1]), sys.argv[2]
seen_events = set()
requests = 0


def verify(header: str, body: bytes) -> bool:
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    t = next((v for k, v in parts if k == "t"), None)
    if t is None or abs(time.time() - int(t)) > 300:
        return False
    expected = hmac.new(SECRET, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(v, expected) for k, v in parts if k == "v1")


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global requests
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        requests += 1
        if not verify(self.headers.get("Mailroom-Signature", ""), body):
            self.send_response(401)
            self.end_headers()
            return
        if requests == 1:
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.end_headers()
            self.log("slow down", 0, 0)
            return
        events = json.loads(body)
        new = [e for e in events if e.get("sg_event_id") not in seen_events]
        seen_events.update(e.get("sg_event_id") for e in events)
        self.send_response(200)
        self.end_headers()
        self.log("delivered", len(events), len(new))

    def log(self, what, events, new):
        with open(LOG, "a") as f:
            f.write(json.dumps({"what": what, "key": self.headers.get("Idempotency-Key"),
                                "attempt": self.headers.get("Mailroom-Delivery-Attempt"),
                                "events": events, "new": new}) + "\n")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
