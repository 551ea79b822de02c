#!/usr/bin/env bash
# Mailroom's benchmarks from one command: builds the release binaries, starts its own rustack on
# a free loopback port, ensures Postgres, installs the peers (pinned, in a cache dir outside the
# repo), runs mailroom-bench (ideal client, worker, peers, scaling, memory, the store path alone)
# and the router's criterion bench, and prints the tables. See BENCHMARKS.md.
#
#   scripts/bench.sh                 # N = 5000 messages
#   scripts/bench.sh --quick         # N = 500, no router criterion run
#   BENCH_MESSAGES=50000 scripts/bench.sh
#   scripts/bench.sh --only worker,ideal
#   BENCH_SQS_LATENCY_MS=10 scripts/bench.sh --only ideal,worker   # AWS-like SQS latency (a delay proxy)
# The worker runs the shipped defaults unless a BENCH_* tuning variable says otherwise.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
trap stop_started EXIT

QUICK=""
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    *) log "unknown argument $1"; exit 2 ;;
  esac
  shift
done
MESSAGES="${BENCH_MESSAGES:-$([ -n "$QUICK" ] && echo 500 || echo 5000)}"

# Peers, pinned. npm: sqs-consumer 14 with the AWS SDK v3 SQS client it peers on, and pg.
# PyPI: Celery with kombu's SQS extra (boto3, pycurl), psycopg2.
SQS_CONSUMER_VERSION="14.2.8"
AWS_SDK_SQS_VERSION="3.1175.0"
PG_VERSION="8.16.3"
CELERY_VERSION="5.4.0"
BOTO3_VERSION="1.35.99"
PSYCOPG2_VERSION="2.9.10"
PEERS="$TOOLS_DIR/peers"

install_peers() {
  mkdir -p "$PEERS/node"
  local stamp="$PEERS/.installed-$SQS_CONSUMER_VERSION-$AWS_SDK_SQS_VERSION-$PG_VERSION-$CELERY_VERSION-$BOTO3_VERSION-$PSYCOPG2_VERSION"
  [ -f "$stamp" ] && return 0
  if command -v npm >/dev/null 2>&1; then
    log "installing sqs-consumer $SQS_CONSUMER_VERSION, pg $PG_VERSION (npm, into $PEERS/node)"
    (cd "$PEERS/node" && { [ -f package.json ] || echo '{"name":"mailroom-bench-peers","private":true}' >package.json; } \
      && npm install --no-audit --no-fund --silent "sqs-consumer@$SQS_CONSUMER_VERSION" \
           "@aws-sdk/client-sqs@$AWS_SDK_SQS_VERSION" "pg@$PG_VERSION")
  else
    log "no npm: the sqs-consumer peer will be skipped"
  fi
  log "installing celery[sqs] $CELERY_VERSION (PyPI, into $PEERS/celery-venv)"
  [ -x "$PEERS/celery-venv/bin/python" ] || python3 -m venv "$PEERS/celery-venv"
  "$PEERS/celery-venv/bin/pip" install -q "celery[sqs]==$CELERY_VERSION" "boto3==$BOTO3_VERSION" \
    "psycopg2-binary==$PSYCOPG2_VERSION"
  touch "$stamp"
}

log "building release binaries"
cargo build --release --quiet -p mailroom -p mailroom-router -p mailroom-bench

ensure_postgres
start_rustack
install_peers

log "mailroom-bench: $MESSAGES messages (rustack at $AWS_ENDPOINT_URL, Postgres at $DATABASE_URL)"
OUT="$STACK_DIR/bench-$(date +%Y%m%d-%H%M%S).md"
target/release/mailroom-bench --endpoint "$AWS_ENDPOINT_URL" --database-url "$DATABASE_URL" \
  --mailroom target/release/mailroom --messages "$MESSAGES" --peers "$PEERS" \
  --work "$STACK_DIR/bench-work" ${ONLY:+--only "$ONLY"} | tee "$OUT"

{
  echo
  echo "Binaries (release):"
  echo
  echo '| binary | size (ls -l target/release) | stripped |'
  echo '|---|---:|---:|'
  for b in mailroom mailroom-router; do
    size=$(stat -c %s "target/release/$b")
    strip -o "$STACK_DIR/$b.stripped" "target/release/$b" 2>/dev/null || cp "target/release/$b" "$STACK_DIR/$b.stripped"
    stripped=$(stat -c %s "$STACK_DIR/$b.stripped")
    awk -v b="$b" -v s="$size" -v t="$stripped" \
      'BEGIN { printf "| %s | %d bytes (%.1f MiB) | %.1f MiB |\n", b, s, s / 1048576, t / 1048576 }'
  done
} | tee -a "$OUT"

if [ -z "$QUICK" ] && { [ -z "$ONLY" ] || [[ ",$ONLY," == *",router,"* ]]; }; then
  log "router: cargo bench -p mailroom-router --bench app"
  cargo bench --quiet -p mailroom-router --bench app -- --noplot 2>/dev/null \
    | tee "$STACK_DIR/router-bench.txt" \
    | awk '/^handle\// {name=$1} /%/ {next} match($0, /time: +\[.*\]/) {print "| " name " | " substr($0, RSTART + 6, RLENGTH - 6) " |"}' \
    | { echo; echo "Router (criterion, per request, in-memory sink):"; echo; echo '| case | time [low est high] |'; echo '|---|---|'; cat; } \
    | tee -a "$OUT"
fi
log "results in $OUT"
