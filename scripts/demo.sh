#!/usr/bin/env bash
# The main job, locally: Postgres + an SQS/S3-compatible server (rustack) + mailroom-router
# serve + the mailroom worker, with sample SendGrid traffic posted to the router and landing in
# Postgres. Installs what it needs (pinned), prints the stored rows, then drains and stops.
# The worker is the example application's own binary (examples/custom-worker: Mailroom's builder
# plus an orders handler and a SendGrid hook), so the demo also shows an application queue and
# the hook marking bounced addresses once, though SendGrid posts the same batch twice. A
# forwarder delivers the stored events to a small Python application at a paced rate.
#
#   scripts/demo.sh           # run the demo, print the tables, stop everything
#   scripts/demo.sh --stay    # keep the stack running until Ctrl-C (post your own traffic)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
STAY=""; [ "${1:-}" = "--stay" ] && STAY=1
trap stop_started EXIT

log "building mailroom, mailroom-app (examples/custom-worker) and mailroom-router"
cargo build --quiet -p mailroom --bin mailroom && cargo build --quiet -p mailroom-router --bin mailroom-router \
  && cargo build --quiet -p mailroom-example-app --bin mailroom-app
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

ensure_postgres
start_rustack

sqs() { # sqs ACTION JSON: a call to the local server's SQS JSON API
  curl -sf -X POST -H "X-Amz-Target: AmazonSQS.$1" -H 'Content-Type: application/x-amz-json-1.0' \
    -d "$2" "$AWS_ENDPOINT_URL/"
}
queue_with_dlq() { # prints the queue URL
  local dlq_url dlq_arn
  dlq_url=$(sqs CreateQueue "{\"QueueName\":\"$1-dlq\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["QueueUrl"])')
  dlq_arn=$(sqs GetQueueAttributes "{\"QueueUrl\":\"$dlq_url\",\"AttributeNames\":[\"QueueArn\"]}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Attributes"]["QueueArn"])')
  sqs CreateQueue "{\"QueueName\":\"$1\",\"Attributes\":{\"VisibilityTimeout\":\"60\",\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":10}\"}}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["QueueUrl"])'
}
EVENTS_URL=$(queue_with_dlq mailroom-events)
INBOUND_URL=$(queue_with_dlq mailroom-inbound)
ORDERS_URL=$(queue_with_dlq app-orders)
curl -sf -X PUT "$AWS_ENDPOINT_URL/mailroom-large-bodies" >/dev/null
log "queues: $EVENTS_URL, $INBOUND_URL; bucket mailroom-large-bodies"

# The application behind the forwarder.
export MAILROOM_FORWARD_SECRET="demo-secret-$(date +%s)"
APP_PORT=$(free_port)
STATUS_PORT=$(free_port)
: >"$STACK_DIR/app.log"
python3 examples/forward-receiver/receiver.py "$APP_PORT" "$STACK_DIR/app.log" &
STARTED_PIDS+=($!)

DB=mailroom_demo
psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
cat >"$STACK_DIR/demo.toml" <<TOML
[worker]
total_concurrency = 32
shutdown_timeout_secs = 10
[sqs]
endpoint_url = "$AWS_ENDPOINT_URL"
region = "$AWS_REGION"
[s3]
buckets = ["mailroom-large-bodies"]
# /metrics, /health, /ready and the status page (docs/operations.md).
[telemetry]
listen = "127.0.0.1:$STATUS_PORT"
[[queue]]
name = "mailroom-events"
url = "$EVENTS_URL"
handler = "sendgrid"
wait_time_secs = 2
[[queue]]
name = "mailroom-inbound"
url = "$INBOUND_URL"
handler = "sendgrid"
concurrency = 4
wait_time_secs = 2
[[queue]]
name = "app-orders"
url = "$ORDERS_URL"
handler = "orders"
message_format = "plain"
wait_time_secs = 2
[handlers.orders]
default_currency = "EUR"
# Paced, signed delivery of the stored events to the application (docs/forward.md): here a small
# Python app (examples/forward-receiver) that verifies signatures and asks to slow down once.
[[forward]]
name = "demo-app"
url = "http://127.0.0.1:$APP_PORT/sendgrid-events"
rate_per_second = 20
batch_size = 500
concurrency = 2
signing_secrets_env = "MAILROOM_FORWARD_SECRET"
poll_interval_ms = 200
TOML
export MAILROOM_CONFIG="$STACK_DIR/demo.toml"
"$BIN/mailroom-app" migrate
psql -q -h 127.0.0.1 -U postgres -d "$DB" -f examples/custom-worker/schema.sql
"$BIN/mailroom-app" check

"$BIN/mailroom-app" run >"$STACK_DIR/worker.log" 2>&1 &
WORKER=$!; STARTED_PIDS+=($WORKER)
PORT=$(free_port)
# Two named webhook routes beside the default ones (router/README.md, "Several webhooks"): the
# marketing webhook's events and a second receiving domain's mail, each stored with its name.
# (No message_group here: rustack has no fair queues and refuses a group id on a standard queue.)
MAILROOM_ROUTES='{"events": {"marketing": {}}, "inbound": {"support-example-com": {}}}' \
MAILROOM_EVENTS_QUEUE_URL="$EVENTS_URL" MAILROOM_INBOUND_QUEUE_URL="$INBOUND_URL" \
  MAILROOM_LARGE_BODY_BUCKET=mailroom-large-bodies MAILROOM_MAX_MESSAGE_BYTES=262144 \
  "$BIN/mailroom-router" serve --listen "127.0.0.1:$PORT" >"$STACK_DIR/router.log" 2>&1 &
STARTED_PIDS+=($!)
ROUTER="http://127.0.0.1:$PORT"
wait_for 20 "mailroom-router" curl -sf "$ROUTER/healthz"
log "router on $ROUTER, worker pid $WORKER (logs in .stack/)"

post() { # post PATH CONTENT-TYPE FILE
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Content-Type: $2" --data-binary "@$3" "$ROUTER$1")
  log "POST $1 $(basename "$3") -> $code"
}
SAMPLES=examples/sendgrid
post /sendgrid/events application/json "$SAMPLES/events.json"
post /sendgrid/events application/json "$SAMPLES/events.json"   # SendGrid retried: no new rows
post /sendgrid/inbound 'multipart/form-data; boundary=xYzZY' "$SAMPLES/inbound-parsed.multipart"
post /sendgrid/inbound 'multipart/form-data; boundary=xYzZY' "$SAMPLES/inbound-raw.multipart"
# A batch over the 256 KiB message limit: offloaded to S3, fetched by the worker.
python3 - "$STACK_DIR/large-batch.json" <<'PY'
import json, sys
events = [{"email": f"user{i}@example.com", "timestamp": 1764190000 + i, "event": "delivered",
           "sg_event_id": f"demo-large-{i:06d}", "sg_message_id": f"demo-large.{i}",
           "response": "250 OK " + "x" * 80} for i in range(2500)]
open(sys.argv[1], "w").write(json.dumps(events))
PY
post /sendgrid/events application/json "$STACK_DIR/large-batch.json"
# The marketing webhook's own route: the same kind of batch, stored with source = 'marketing'.
python3 - "$STACK_DIR/marketing.json" <<'PY'
import json, sys
events = [{"email": f"fan{i}@example.com", "timestamp": 1764190000 + i, "event": "open",
           "sg_event_id": f"demo-marketing-{i:03d}", "sg_message_id": f"demo-mkt.{i}",
           "tenant": "acme"} for i in range(20)]
open(sys.argv[1], "w").write(json.dumps(events))
PY
post /sendgrid/events/marketing application/json "$STACK_DIR/marketing.json"
post /sendgrid/events/markting application/json "$STACK_DIR/marketing.json"   # a typo in the URL: 404
# A 12 MB email (a 9 MB attachment) to the second domain: past Lambda's 6 MB, so serve streams
# it to S3 as it arrives and queues a pointer; the worker stores the attachment byte for byte.
python3 - "$STACK_DIR/big-inbound.multipart" "$STACK_DIR/big-attachment.bin" <<'PY'
import os, sys
attachment = os.urandom(9 * 1024 * 1024)
open(sys.argv[2], "wb").write(attachment)
b = b"xYzZY"
parts = [(b'name="from"', b"Ada <ada@example.net>"), (b'name="to"', b"support@example.com"),
         (b'name="subject"', b"Quarterly report (large)"), (b'name="text"', b"Report attached."),
         (b'name="attachments"', b"1")]
body = b"".join(b"--" + b + b"\r\nContent-Disposition: form-data; " + h + b"\r\n\r\n" + v + b"\r\n"
                for h, v in parts)
body += (b"--" + b + b'\r\nContent-Disposition: form-data; name="attachment1"; filename="report.bin"'
         b"\r\nContent-Type: application/octet-stream\r\n\r\n" + attachment + b"\r\n--" + b + b"--\r\n")
open(sys.argv[1], "wb").write(body)
PY
post /sendgrid/inbound/support-example-com 'multipart/form-data; boundary=xYzZY' "$STACK_DIR/big-inbound.multipart"
# Not an Event Webhook batch at all: kept in the dead-letter table with its reason.
printf 'this is not json' >"$STACK_DIR/garbage.txt"
post /sendgrid/events application/json "$STACK_DIR/garbage.txt"
# The application's own queue: plain JSON orders, one of them sent twice.
for order in '{"order_id":"A-1001","customer_email":"ana@example.com","total_cents":4200}' \
             '{"order_id":"A-1002","customer_email":"bo@example.com","total_cents":990,"currency":"USD"}' \
             '{"order_id":"A-1001","customer_email":"ana@example.com","total_cents":4200}'; do
  sqs SendMessage "$(python3 -c 'import json,sys; print(json.dumps({"QueueUrl": sys.argv[1], "MessageBody": sys.argv[2]}))' "$ORDERS_URL" "$order")" >/dev/null
done
log "sent 3 order messages (one duplicate) to app-orders"

q() { psql -h 127.0.0.1 -U postgres -d "$DB" -At -c "$1"; }
expected_events=$(( $(python3 -c 'import json; print(len(json.load(open("examples/sendgrid/events.json"))))') + 2500 + 20 ))
deadline=$((SECONDS + 60))
until [ "$(q 'select count(*) from mailroom_events')" -ge "$expected_events" ] \
   && [ "$(q 'select count(*) from mailroom_inbound_emails')" -ge 3 ] \
   && [ "$(q 'select count(*) from mailroom_dead_letters')" -ge 1 ] \
   && [ "$(q 'select count(*) from app_orders')" -ge 2 ]; do
  if (( SECONDS >= deadline )); then log "timed out waiting for rows; see .stack/worker.log"; exit 1; fi
  sleep 0.5
done
# ... and for the forwarder to have delivered every event to the application.
until [ "$(q "select acked_rows from mailroom_feed_consumers where name = 'demo-app'")" = "$expected_events" ]; do
  if (( SECONDS >= deadline + 30 )); then log "timed out waiting for the forwarder; see .stack/worker.log"; exit 1; fi
  sleep 0.5
done

show() { echo; echo "== $1"; psql -h 127.0.0.1 -U postgres -d "$DB" -P pager=off -c "$2"; }
show "events (first 12 of $(q 'select count(*) from mailroom_events'))" \
  "select event, email, occurred_at, categories, bounce_type, bounce_classification, attempt, url, sg_event_id from mailroom_events order by id limit 12"
show "inbound emails" \
  "select id, mode, from_addr, subject, left(text_body, 50) as text, spf, spam_score from mailroom_inbound_emails order by id"
show "attachments" \
  "select email_id, filename, content_type, size_bytes, left(sha256, 16) as sha256 from mailroom_inbound_attachments order by id"
show "dead letters" "select queue, receive_count, reason from mailroom_dead_letters"
show "rows by source (the router's route name; NULL = the default routes)" \
  "select 'events' as rows, source, count(*) from mailroom_events group by source
   union all select 'inbound emails', source, count(*) from mailroom_inbound_emails group by source order by 1, 2"
big_sha=$(sha256sum "$STACK_DIR/big-attachment.bin" | cut -c1-64)
if [ "$(q "select count(*) from mailroom_inbound_attachments where sha256 = '$big_sha'")" = 1 ]; then
  log "the 9 MB attachment streamed through serve and S3 is in Postgres byte for byte (sha256 ${big_sha:0:16}...)"
else
  log "the large attachment did not arrive intact; see .stack/worker.log"; exit 1
fi
show "app_orders (the application's own queue; the duplicate added no row)" \
  "select order_id, customer_email, total_cents, currency from app_orders order by order_id"
show "app_users marked by the SendGrid hook (once per event, though the batch was posted twice)" \
  "select u.email, u.email_status, u.email_status_at, (select count(*) from app_email_status_changes c where c.email = u.email) as changes from app_users u order by email"

show "message status (per X-Message-Id and recipient; the state by SendGrid's precedence, not arrival)" \
  "select message_id, email, state, state_occurred_at, event_count, open_count, click_count from mailroom_message_status where message_id like 'demo-msg%' order by message_id, email"
show "suppressions (may these addresses be mailed?)" \
  "select email, asm_group_id, reason, active, mailroom_may_send(email, nullif(asm_group_id, 0)) as may_send from mailroom_suppressions order by email, asm_group_id"
echo; echo "== the feed's consumers (mailroom feed status)"
"$BIN/mailroom-app" feed status
echo; echo "== what the application received from the forwarder (.stack/app.log)"
python3 - "$STACK_DIR/app.log" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
delivered = [l for l in lines if l["what"] == "delivered"]
print(f"{len(lines)} requests, all signed: {sum(1 for l in lines if l['what'] == 'slow down')} answered 429 (the forwarder slowed down and retried), "
      f"{len(delivered)} delivered with {sum(l['events'] for l in delivered)} events ({sum(l['new'] for l in delivered)} new to the app)")
for l in lines[:4]:
    print(f"  {l['what']:<10} attempt {l['attempt']}  key {l['key']}  events {l['events']}")
PY

echo; echo "== the worker's status page: http://127.0.0.1:$STATUS_PORT/ (also /status.json and /metrics; scripts/demo.sh --stay keeps it up)"
if curl -sf -o "$STACK_DIR/status.json" "http://127.0.0.1:$STATUS_PORT/status.json"; then
  python3 - "$STACK_DIR/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"phase {s['phase']}, up {s['uptime_secs']} s")
for q in s["queues"]:
    print(f"  queue {q['name']:<18} received {q['received']:>5}  handled {q['handled']}  dead-lettered {q['dead_lettered']}")
for f in s["forwarders"]:
    print(f"  forwarder {f['name']}: delivered {f['delivered']}, slowed {f['slowed']}, retried {f['retried']}")
print(f"  recent dead letters: {len(s['dead_letters']['rows'])}")
PY
else
  log "status page not reachable (see .stack/worker.log)"
fi
echo; echo "== handler batches (mailroom_handler_batch_messages on /metrics: one transaction each for the sendgrid handler)"
if curl -sf -o "$STACK_DIR/metrics.txt" "http://127.0.0.1:$STATUS_PORT/metrics"; then
  python3 - "$STACK_DIR/metrics.txt" <<'PY'
import re, sys
sums, counts = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r'mailroom_handler_batch_messages_(sum|count)\{([^}]*)\} ([0-9.e+]+)', line)
    if not m:
        continue
    queue = re.search(r'queue="([^"]*)"', m.group(2)).group(1)
    (sums if m.group(1) == "sum" else counts)[queue] = float(m.group(3))
for queue in sorted(counts):
    n = counts[queue]
    print(f"  queue {queue:<18} {int(n):>4} batches, {sums.get(queue, 0) / max(n, 1):.1f} messages each on average")
print("  (up to max_batch_messages each; a partial batch waits while another runs, so a busy queue gets full ones)")
PY
fi

if [ -n "$STAY" ]; then
  log "stack running; DATABASE_URL=$DATABASE_URL, router $ROUTER. Ctrl-C to stop."
  wait "$WORKER"
else
  log "draining the worker (SIGTERM)"
  kill -TERM "$WORKER"; wait "$WORKER" && log "worker exited 0"
fi
