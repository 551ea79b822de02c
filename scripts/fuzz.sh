#!/usr/bin/env bash
# Fuzz every decoder for a bounded time (libFuzzer through cargo-fuzz; needs a nightly toolchain,
# which it installs with rustup when missing). Seeds each corpus from the crates' own fixtures.
# scripts/test.sh runs the same targets for 10 s each when nightly and cargo-fuzz are present
# (FUZZ_SECS=10 scripts/fuzz.sh); crashes land in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh               # 60 s per target
#   FUZZ_SECS=300 scripts/fuzz.sh events mime
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/fuzz"
SECS="${FUZZ_SECS:-60}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --locked
TARGETS=("$@"); [ ${#TARGETS[@]} -gt 0 ] || TARGETS=(envelope java_map events inbound_multipart mime mime_structured signature)

seed() { # seed TARGET FILES...
  local target=$1; shift
  mkdir -p "corpus/$target"
  for f in "$@"; do [ -f "$f" ] && cp -n "$f" "corpus/$target/" 2>/dev/null || true; done
}
seed envelope ../envelope/tests/data/*.json
seed events ../sendgrid/tests/data/events/*.json ../examples/sendgrid/events.json
seed inbound_multipart ../sendgrid/tests/data/inbound/*
seed mime ../tests/data/store/inbound_raw.eml

failed=()
for target in "${TARGETS[@]}"; do
  log "fuzzing $target for ${SECS}s"
  if ! cargo +nightly fuzz run "$target" -- -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 \
      >"$STACK_DIR/fuzz-$target.log" 2>&1; then
    failed+=("$target")
    log "$target FAILED: see $STACK_DIR/fuzz-$target.log and fuzz/artifacts/$target/"
  else
    log "$target: $(grep -E '^Done [0-9]+ runs' "$STACK_DIR/fuzz-$target.log" | tail -n1)"
  fi
done
[ ${#failed[@]} -eq 0 ] || { log "crashes in: ${failed[*]}"; exit 1; }
log "no crashes"
