#!/usr/bin/env bash
# Peak RSS of `mailroom-router serve` while it takes 30 MB Inbound Parse posts (a 20 MB
# attachment of random bytes each), streamed to S3: once with one post, once with 4 at once,
# each in a fresh process, read from /proc/<pid>/status (VmHWM) after the posts were answered.
#
# Needs an SQS/S3 server (rustack) at AWS_ENDPOINT_URL (default http://127.0.0.1:4566), the aws
# CLI, curl and python3. Not part of CI (it posts 150 MB). Usage:
#   cargo build --release -p mailroom-router
#   router/scripts/serve-rss.sh [path/to/mailroom-router] [concurrent posts, default "1 4"]
set -euo pipefail

BIN=${1:-target/release/mailroom-router}
COUNTS=${2:-"1 4"}
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}
export AWS_REGION=${AWS_REGION:-us-east-1} AWS_DEFAULT_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
# Older aws CLIs ignore AWS_ENDPOINT_URL.
aws() { command aws --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p mailroom-router)" >&2; exit 1; }

WORK=$(mktemp -d)
NAME="mailroom-rss-$$-$(date +%s)"
BUCKET=$NAME
QUEUE_URL=$(aws sqs create-queue --queue-name "$NAME" --query QueueUrl --output text)
aws s3api create-bucket --bucket "$BUCKET" >/dev/null
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  aws sqs delete-queue --queue-url "$QUEUE_URL" 2>/dev/null || true
  aws s3 rb "s3://$BUCKET" --force >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

BOUNDARY=xYzZY-mailroom-rss
python3 - "$WORK/post" "$BOUNDARY" <<'PY'
import os, sys
path, boundary = sys.argv[1], sys.argv[2]
total, attachment = 30_000_000, 20_000_000
def field(name, value):
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
head = b"".join(field(k, v) for k, v in [("from", "a@example.com"), ("to", "in@example.com"),
    ("subject", "rss"), ("attachments", "1")])
html_head = f'--{boundary}\r\nContent-Disposition: form-data; name="html"\r\n\r\n'.encode()
file_head = (f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="attachment1"; '
             f'filename="a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
tail = f'\r\n--{boundary}--\r\n'.encode()
pad = total - len(head) - len(html_head) - len(file_head) - attachment - len(tail)
with open(path, "wb") as f:
    f.write(head + html_head + b"x" * pad + file_head + os.urandom(attachment) + tail)
PY

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for n in $COUNTS; do
  MAILROOM_INBOUND_QUEUE_URL=$QUEUE_URL MAILROOM_LARGE_BODY_BUCKET=$BUCKET \
    MAILROOM_LOG_FORMAT=json RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" &
  PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
  done
  idle=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  start=$(date +%s.%N)
  posts=()
  for i in $(seq 1 "$n"); do
    curl -s -o /dev/null -w '%{http_code}\n' -H 'Expect:' \
      -H "Content-Type: multipart/form-data; boundary=$BOUNDARY" \
      --data-binary "@$WORK/post" "http://127.0.0.1:$PORT/sendgrid/inbound" >"$WORK/status.$i" &
    posts+=($!)
  done
  wait "${posts[@]}"
  end=$(date +%s.%N)
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  statuses=$(cat "$WORK"/status.* | sort | uniq -c | tr -s ' ' | tr '\n' ';')
  rm -f "$WORK"/status.*
  kill -TERM "$PID"; wait "$PID" || true; PID=
  printf 'posts=%s statuses=[%s] idle_VmHWM=%s KiB peak_VmHWM=%s KiB (%.1f MiB) wall=%.1f s\n' \
    "$n" "$statuses" "$idle" "$peak" "$(echo "$peak/1024" | bc -l)" "$(echo "$end-$start" | bc -l)"
done
echo "messages on the queue: $(aws sqs get-queue-attributes --queue-url "$QUEUE_URL" \
  --attribute-names ApproximateNumberOfMessages --query Attributes.ApproximateNumberOfMessages --output text)"
