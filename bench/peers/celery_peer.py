"""Peer for the benchmark: Celery with kombu's SQS transport, as Celery's docs set it up, one
task per SendGrid callback storing it with psycopg2 (one INSERT per event).

    python celery_peer.py fill FILE          # send each line of FILE as a task (by Celery)
    celery -A celery_peer worker -Q QUEUE    # consume

Env: QUEUE_NAME, QUEUE_URL, AWS_ENDPOINT_URL (rustack), DATABASE_URL.
"""
import base64
import hashlib
import json
import os
import sys
from urllib.parse import urlparse

import psycopg2
from celery import Celery

endpoint = urlparse(os.environ["AWS_ENDPOINT_URL"])
queue = os.environ["QUEUE_NAME"]
app = Celery("celery_peer", broker=f"sqs://test:test@{endpoint.hostname}:{endpoint.port}")
app.conf.broker_transport_options = {
    "region": "us-east-1",
    "is_secure": False,
    "wait_time_seconds": 1,
    "predefined_queues": {queue: {"url": os.environ["QUEUE_URL"], "access_key_id": "test", "secret_access_key": "test"}},
}
app.conf.task_default_queue = queue
app.conf.worker_prefetch_multiplier = 4
app.conf.worker_hijack_root_logger = False

_conn = None


def conn():
    global _conn
    if _conn is None:
        _conn = psycopg2.connect(os.environ["DATABASE_URL"])
    return _conn


@app.task(name="peer.store")
def store(sqs_body):
    envelope = json.loads(sqs_body)
    body = base64.b64decode(envelope["body_b64"])
    c = conn()
    with c, c.cursor() as cur:
        if envelope["kind"] == "events":
            for e in json.loads(body):
                cur.execute(
                    "INSERT INTO mailroom_events (sg_event_id, event, email, occurred_at, payload, sqs_message_id, queue) "
                    "VALUES (%s, %s, %s, to_timestamp(%s), %s, %s, %s) ON CONFLICT (sg_event_id) DO NOTHING",
                    (e["sg_event_id"], e["event"], e.get("email"), e.get("timestamp"), json.dumps(e), store.request.id, "peer"),
                )
        else:
            cur.execute(
                "INSERT INTO mailroom_inbound_emails (dedup_key, sqs_message_id, queue, mode, raw_mime) "
                "VALUES (%s, %s, %s, 'parsed', %s) ON CONFLICT (dedup_key) DO NOTHING",
                (hashlib.sha256(body).hexdigest(), store.request.id, "peer", psycopg2.Binary(body)),
            )


if __name__ == "__main__" and sys.argv[1:2] == ["fill"]:
    with open(sys.argv[2]) as f:
        for line in f:
            if line.strip():
                store.apply_async(args=[line.rstrip("\n")], queue=queue)
