# Shared shell functions for Mailroom's scripts: install pinned tools, start and stop the local
# services on loopback. Sourced, not run. Everything it starts is recorded in $STACK_DIR and
# stopped by stop_started.
set -euo pipefail

RUSTACK_VERSION="0.12.0"
LOCALSTACK_VERSION="4.9.2"
TOOLS_DIR="${MAILROOM_TOOLS_DIR:-$HOME/.cache/mailroom-tools}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.stack}"
mkdir -p "$STACK_DIR" "$TOOLS_DIR"
STARTED_PIDS=()

log() { printf '[mailroom] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then log "timed out after ${secs}s waiting for $what"; return 1; fi
    sleep 0.2
  done
}

# Postgres: the machine's cluster on 127.0.0.1:5432; started if down, installed if missing.
ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
    wait_for 60 "PostgreSQL" pg_isready -h 127.0.0.1 -p 5432 -q
  fi
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
}

# Databases the test suite creates, one per test, dropped by each test when it ends; a test that
# failed half-way leaves its own behind. Dropped before a run so they never pile up.
drop_leftover_test_databases() {
  local names
  names=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc \
    "select datname from pg_database where datname ~ '^(e2e|conformance|legacy|check_ok|mailroom_ops|fault|hostile|app)_'") || return 0
  for db in $names; do
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE \"$db\" WITH (FORCE)" >/dev/null || true
  done
  [ -z "$names" ] || log "dropped $(echo "$names" | wc -l) test database(s) left by an earlier failed run"
}

# rustack (crates.io rustack-cli, SQS + S3), pinned, built once and cached in $TOOLS_DIR.
ensure_rustack() {
  RUSTACK="$TOOLS_DIR/rustack-$RUSTACK_VERSION/bin/rustack"
  # An installed rustack of the pinned version will do.
  if [ ! -x "$RUSTACK" ] && command -v rustack >/dev/null 2>&1 \
     && [ "$(rustack --version 2>/dev/null)" = "rustack $RUSTACK_VERSION" ]; then
    RUSTACK="$(command -v rustack)"
  fi
  if [ ! -x "$RUSTACK" ]; then
    log "building rustack $RUSTACK_VERSION (once; about 2-4 minutes)"
    cargo install rustack-cli --version "=$RUSTACK_VERSION" --no-default-features --features sqs,s3 \
      --root "$TOOLS_DIR/rustack-$RUSTACK_VERSION" --quiet
  fi
}

# start_rustack: starts a rustack on a free loopback port; sets AWS_ENDPOINT_URL.
start_rustack() {
  ensure_rustack
  local port; port=$(free_port)
  GATEWAY_LISTEN="127.0.0.1:$port" "$RUSTACK" >"$STACK_DIR/rustack.log" 2>&1 &
  STARTED_PIDS+=($!)
  echo $! >"$STACK_DIR/rustack.pid"
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  wait_for 30 "rustack on port $port" curl -sf "$AWS_ENDPOINT_URL/_localstack/health" \
    || wait_for 5 "rustack on port $port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
  log "rustack $RUSTACK_VERSION on $AWS_ENDPOINT_URL"
}

# LocalStack-core, pinned, in its own virtualenv: slow, but faithful where rustack is not
# (batch partial failures, StartMessageMoveTask, bodies over 256 KiB).
ensure_localstack() {
  # Pins beyond localstack-core's own: newer cbor2 (6.x) and pyOpenSSL (24.3+) removed APIs that
  # LocalStack 4.9.2 calls at start-up.
  local pins=("localstack-core[runtime]==$LOCALSTACK_VERSION" "cbor2==5.7.1" "pyopenssl==24.2.1")
  local venv="$TOOLS_DIR/localstack-$LOCALSTACK_VERSION-r2"
  LOCALSTACK_PY="$venv/bin/python"
  if [ ! -x "$LOCALSTACK_PY" ] || [ ! -f "$venv/.complete" ]; then
    log "installing localstack-core $LOCALSTACK_VERSION (once)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$LOCALSTACK_PY" -m pip install -q --disable-pip-version-check "${pins[@]}"
    touch "$venv/.complete"
  fi
}

# start_localstack: on a free loopback port; sets LOCALSTACK_ENDPOINT_URL.
start_localstack() {
  ensure_localstack
  local port; port=$(free_port)
  mkdir -p "$STACK_DIR/localstack"
  GATEWAY_LISTEN="127.0.0.1:$port" GATEWAY_SERVER=hypercorn OVERRIDE_IN_DOCKER=0 \
    SKIP_SSL_CERT_DOWNLOAD=1 SERVICES=sqs,s3 DISABLE_EVENTS=1 LOCALSTACK_VOLUME_DIR="$STACK_DIR/localstack" \
    "$LOCALSTACK_PY" -m localstack.runtime.main >"$STACK_DIR/localstack.log" 2>&1 &
  STARTED_PIDS+=($!)
  export LOCALSTACK_ENDPOINT_URL="http://127.0.0.1:$port"
  wait_for 120 "LocalStack on port $port" curl -sf "$LOCALSTACK_ENDPOINT_URL/_localstack/health"
  log "localstack $LOCALSTACK_VERSION on $LOCALSTACK_ENDPOINT_URL"
}

stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# Dummy credentials for the local servers; real AWS uses the normal chain.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
