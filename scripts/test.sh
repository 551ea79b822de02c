#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs (pinned), starts Postgres
# and SQS-compatible servers on loopback, runs fmt, clippy, every test (rustack for the suite,
# LocalStack for the SQS behaviours rustack lacks, the conformance check over
# ../shared/conformance when present), and stops what it started.
#
#   scripts/test.sh            # everything
#   MAILROOM_SKIP_LOCALSTACK=1 scripts/test.sh   # skip the LocalStack-only tests (faster)
#   MAILROOM_CI_LAMBDA=1 scripts/test.sh         # also build the Lambda package and run it locally
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
trap stop_started EXIT

step() { log "== $*"; }

# Disk first: a full build of the suite takes about 4 GB under target/ (fuzz builds about 1 GB
# more). A disk that runs out mid-link shows up as "ld terminated with signal 7 [Bus error]".
free_kb=$(df -Pk "$ROOT" | awk 'NR==2 {print $4}')
log "disk: $((free_kb / 1024 / 1024)) GiB free beside the checkout"
if [ "$free_kb" -lt $((6 * 1024 * 1024)) ]; then
  log "warning: under 6 GiB free; the build may run out of disk (ld: Bus error)"
fi

step "formatting"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "observability rules (promtool: check and unit-test the alert rules, parse the dashboard's queries)"
scripts/observability-check.sh

step "cfn-lint (the SAM template and the CloudWatch alarms, pinned cfn-lint, must be clean)"
source "$ROOT/scripts/lib-deploy.sh"
ensure_cfn_lint
"$CFN_LINT" deploy/template.yaml deploy/observability/cloudwatch-alarms.yaml
"$CFN_LINT_PYTHON" deploy/check_template.py deploy/template.yaml   # what deploy/README.md promises

step "services"
ensure_postgres
drop_leftover_test_databases
start_rustack

step "systemd-analyze (tests/ops_systemd.rs verifies the units with it)"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  log "installing systemd (apt) for systemd-analyze"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
export MAILROOM_REQUIRE_SYSTEMD_ANALYZE=1

step "feed readers (tests/feed_partition_moves.rs runs docs/feed.md's Python and Ruby readers)"
if ! /usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1 \
   || ! ruby -e "require 'active_record'; require 'pg'" >/dev/null 2>&1; then
  log "installing python3-psycopg, ruby-activerecord and ruby-pg (apt) for the feed reader test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    python3-psycopg ruby-activerecord ruby-pg >/dev/null
fi
export MAILROOM_REQUIRE_FEED_READERS=1

step "chromium (tests/ops_status_page.rs loads the status page in it, headless)"
if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium (apt) for the status page test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

step "tests (rustack at $AWS_ENDPOINT_URL, Postgres at $DATABASE_URL)"
cargo test --workspace --quiet 2>&1 | tee "$STACK_DIR/test-output.log"

CONFORMANCE="${MAILROOM_CONFORMANCE_DIR:-$ROOT/../shared/conformance}"
if [ -d "$CONFORMANCE" ]; then
  step "conformance over $CONFORMANCE"
  export MAILROOM_CONFORMANCE_DIR="$(cd "$CONFORMANCE" && pwd)"
  cargo test --workspace --quiet --test conformance -- --ignored
else
  log "no ../shared/conformance here: conformance check not run"
fi

# The Lambda package, opt-in (MAILROOM_CI_LAMBDA=1): the arm64 release cross build that
# deploy/ ships (about 15 minutes here, heavy on 2 cores), that bootstrap under qemu-user, then
# the x86_64 bootstrap (dev profile), each under cargo-lambda's local Lambda emulator, posting
# to this run's rustack.
if [ -n "${MAILROOM_CI_LAMBDA:-}" ]; then
  step "Lambda: scripts/lambda-build.sh (arm64 release) and scripts/lambda-local-check.sh"
  scripts/lambda-build.sh
  scripts/lambda-local-check.sh --arm64
  scripts/lambda-local-check.sh
else
  log "Lambda build and local check skipped (opt in with MAILROOM_CI_LAMBDA=1)"
fi

if [ -z "${MAILROOM_SKIP_LOCALSTACK:-}" ]; then
  step "LocalStack-only SQS behaviours"
  start_localstack
  cargo test --quiet --test localstack -- --ignored
  cargo test --quiet --test ops_localstack -- --ignored
  cargo test --quiet --test fair_queues -- --ignored
  cargo test --quiet --test sqs_receive -- --ignored
fi
# A short fuzz of every decoder (crashes fail the run). libFuzzer needs nightly and cargo-fuzz;
# they are installed once (about 3 minutes) when missing. If they cannot be installed (no
# registry access), the step says so and is skipped; MAILROOM_SKIP_FUZZ=1 skips it on purpose.
ensure_fuzz_tools() {
  rustup toolchain list 2>/dev/null | grep -q '^nightly' \
    || rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || return 1
  command -v cargo-fuzz >/dev/null 2>&1 \
    || cargo +nightly install cargo-fuzz --locked --quiet >/dev/null 2>&1 || return 1
}
if [ -n "${MAILROOM_SKIP_FUZZ:-}" ]; then
  log "fuzz smoke skipped (MAILROOM_SKIP_FUZZ)"
elif ensure_fuzz_tools; then
  step "fuzz smoke (${MAILROOM_FUZZ_SECS:-10} s per decoder)"
  FUZZ_SECS="${MAILROOM_FUZZ_SECS:-10}" scripts/fuzz.sh
else
  log "fuzz smoke skipped: nightly or cargo-fuzz could not be installed here (scripts/fuzz.sh)"
fi
log "all green"
