#!/usr/bin/env bash
# The built Lambda bootstrap, run as Lambda runs it, against a real SQS server: `cargo lambda
# watch --only-lambda-apis` (cargo-lambda's local Lambda control plane: Runtime API, Invoke API,
# function URLs) runs on loopback without building or starting anything itself; the prebuilt
# bootstrap (x86_64, or arm64 under qemu-user) polls it like the provided.al2023 runtime's;
# each callback goes to a queue this script creates on rustack, and is read back and compared
# byte for byte.
#
#   scripts/lambda-local-check.sh                  # builds the x86_64 bootstrap (dev profile) first
#   scripts/lambda-local-check.sh --release        # ... release profile (slower)
#   scripts/lambda-local-check.sh --arm64          # the arm64 release bootstrap deploy/ ships, run
#                                                  # under qemu-user (apt: qemu-user, libc6-arm64-cross)
#   MAILROOM_LAMBDA_BOOTSTRAP=path/to/bootstrap scripts/lambda-local-check.sh   # no build
#
# Two invocations: the Invoke API with the API Gateway HTTP API (v2) fixture
# router/tests/data/v2-http-events.json, and a plain HTTP POST of events-body.json to the
# emulated function URL (cargo-lambda turns it into a v2 event). Both must answer 200 "queued"
# and land on the queue with the exact body. SQS is $AWS_ENDPOINT_URL (default
# http://127.0.0.1:4566), or a rustack this script starts when nothing answers there. Every
# wait is bounded; everything started is stopped on exit.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$ROOT/scripts/lib-deploy.sh"
cd "$ROOT"
trap 'stop_started; [ -z "${QUEUE_URL:-}" ] || sqs DeleteQueue "{\"QueueUrl\":\"$QUEUE_URL\"}" >/dev/null 2>&1 || true' EXIT

build_args=(--x86-64 --dev)
runner=()
for arg in "$@"; do
  case "$arg" in
    --release) build_args=(--x86-64) ;;
    --arm64) build_args=(--arm64); runner=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) log "unknown argument: $arg (see --help)"; exit 2 ;;
  esac
done

ensure_cargo_lambda
if [ -n "${MAILROOM_LAMBDA_BOOTSTRAP:-}" ]; then
  BOOTSTRAP="$MAILROOM_LAMBDA_BOOTSTRAP"
else
  # lambda-build.sh prints the sizes, then the bootstrap's path last.
  BOOTSTRAP=$(scripts/lambda-build.sh "${build_args[@]}" | tee /dev/stderr | tail -n1)
fi
[ -x "$BOOTSTRAP" ] || { log "no executable bootstrap at $BOOTSTRAP"; exit 1; }
if [ ${#runner[@]} -gt 0 ] && { ! command -v qemu-aarch64 >/dev/null 2>&1 \
     || [ ! -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]; }; then
  log "installing qemu-user and the arm64 glibc (apt) to run the arm64 bootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-user libc6-arm64-cross >/dev/null
fi

export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}"
sqs() { # sqs ACTION JSON: one SQS JSON-protocol call, its answer on stdout
  curl -sS -f -m 10 -X POST "$AWS_ENDPOINT_URL/" \
    -H 'Content-Type: application/x-amz-json-1.0' -H "X-Amz-Target: AmazonSQS.$1" -d "$2"
}
if ! sqs ListQueues '{}' >/dev/null 2>&1; then
  log "no SQS at $AWS_ENDPOINT_URL: starting rustack"
  start_rustack
fi
QUEUE_URL=$(sqs CreateQueue "{\"QueueName\":\"lambda-local-check-$$-$RANDOM\"}" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["QueueUrl"])')
log "queue $QUEUE_URL"

# The emulator: APIs only (--only-lambda-apis), so it neither builds nor starts the function.
port=$(free_port)
cargo lambda watch --only-lambda-apis --invoke-address 127.0.0.1 --invoke-port "$port" \
  --timeout 20 >"$STACK_DIR/lambda-watch.log" 2>&1 &
STARTED_PIDS+=($!)
wait_for 30 "cargo lambda watch on port $port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"

# The function, with the variables the emulator asks for (function name "_": its default) and
# the router's own configuration.
AWS_LAMBDA_FUNCTION_NAME=_ AWS_LAMBDA_FUNCTION_VERSION=1 AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 \
  AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$port/.rt" \
  MAILROOM_EVENTS_QUEUE_URL="$QUEUE_URL" MAILROOM_INBOUND_QUEUE_URL="$QUEUE_URL" \
  "${runner[@]}" "$BOOTSTRAP" >"$STACK_DIR/lambda-bootstrap.log" 2>&1 &
STARTED_PIDS+=($!)
bootstrap_pid=$!

started=$SECONDS
ROOT="$ROOT" PORT="$port" QUEUE_URL="$QUEUE_URL" BOOTSTRAP_PID="$bootstrap_pid" python3 - <<'PY'
import base64, json, os, sys, time, urllib.request, urllib.error

port, queue, endpoint = os.environ["PORT"], os.environ["QUEUE_URL"], os.environ["AWS_ENDPOINT_URL"]
data = os.path.join(os.environ["ROOT"], "router", "tests", "data")
fixture = json.load(open(os.path.join(data, "v2-http-events.json")))
events_body = open(os.path.join(data, "events-body.json"), "rb").read()

def fail(message):
    sys.exit(f"lambda-local-check: {message}")

def post(url, body, headers, timeout=25):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def bootstrap_alive():
    try:
        os.kill(int(os.environ["BOOTSTRAP_PID"]), 0)
        return True
    except OSError:
        return False

# 1. Invoke API with the API Gateway v2 fixture. The emulator holds the invocation until the
# function answers; retried (bounded) while the bootstrap is still starting.
invoke = f"http://127.0.0.1:{port}/2015-03-31/functions/_/invocations"
deadline = time.monotonic() + 60
while True:
    if not bootstrap_alive():
        fail("the bootstrap exited (see .stack/lambda-bootstrap.log)")
    try:
        status, raw = post(invoke, json.dumps(fixture).encode(), {"content-type": "application/json"})
        break
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        if time.monotonic() > deadline:
            fail(f"invoke did not answer within 60 s: {e}")
        time.sleep(0.5)
if status != 200:
    fail(f"invoke answered HTTP {status}: {raw[:300]!r}")
reply = json.loads(raw)
if reply.get("statusCode") != 200 or '"queued"' not in reply.get("body", ""):
    fail(f"invoke: the function answered {reply}")
print(f"invoke (API Gateway v2 fixture): statusCode 200, {reply['body']}")

# 2. The emulated function URL: a plain HTTP POST, as SendGrid would send it.
url = f"http://127.0.0.1:{port}/lambda-url/_/sendgrid/events"
status, raw = post(url, events_body, {"content-type": "application/json", "user-agent": "SendGrid Event API"})
if status != 200 or b'"queued"' not in raw:
    fail(f"function URL answered HTTP {status}: {raw[:300]!r}")
print(f"function URL POST /sendgrid/events: HTTP 200, {raw.decode()}")

# 3. Both on the queue, each the exact events body in a router envelope.
def sqs(action, payload):
    request = urllib.request.Request(f"{endpoint}/", data=json.dumps(payload).encode(), method="POST",
        headers={"content-type": "application/x-amz-json-1.0", "x-amz-target": f"AmazonSQS.{action}"})
    with urllib.request.urlopen(request, timeout=15) as answer:
        return json.loads(answer.read() or b"{}")

expected = {fixture["body"].encode(), events_body}
got = []
deadline = time.monotonic() + 20
while len(got) < 2 and time.monotonic() < deadline:
    for message in sqs("ReceiveMessage", {"QueueUrl": queue, "MaxNumberOfMessages": 10,
                                          "WaitTimeSeconds": 1}).get("Messages", []):
        got.append(json.loads(message["Body"]))
if len(got) != 2:
    fail(f"{len(got)} message(s) on the queue, expected 2")
for envelope in got:
    if envelope.get("mailroom") != 1 or envelope.get("kind") != "events":
        fail(f"not an events envelope: {envelope}")
    body = base64.b64decode(envelope["body_b64"])
    if body not in expected:
        fail(f"queued body differs from what was posted: {body[:200]!r}")
if {base64.b64decode(e["body_b64"]) for e in got} != expected:
    fail("the two messages are not the two posted bodies")
print(f"queue: 2 envelopes, kind events, bodies byte-identical to the posts ({queue})")
PY
log "lambda local check passed in $((SECONDS - started)) s (bootstrap $BOOTSTRAP)"
