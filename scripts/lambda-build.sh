#!/usr/bin/env bash
# Builds the router's Lambda package: `bootstrap` for the provided.al2023 runtime, zipped, with
# cargo-lambda (pinned, from PyPI; its zig links against glibc 2.34 whatever this machine has,
# so the binary runs on al2023). The same command SAM's `BuildMethod: rust-cargolambda` runs,
# so what is measured here is what deploy/ ships. Prints the bootstrap's and the zip's size and
# the build time.
#
#   scripts/lambda-build.sh              # arm64 release (what deploy/template.yaml deploys)
#   scripts/lambda-build.sh --x86-64     # x86_64 release
#   scripts/lambda-build.sh --x86-64 --dev   # x86_64, dev profile (fast; scripts/lambda-local-check.sh)
#
# Output: target/lambda/mailroom-router/bootstrap and bootstrap.zip. The release cross build is
# heavy (a full LTO build of the AWS SDK for another target): run it niced on a shared machine.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$ROOT/scripts/lib-deploy.sh"
cd "$ROOT"

arch=arm64
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --arm64) arch=arm64 ;;
    --x86-64) arch=x86_64 ;;
    --dev) profile=dev ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
  shift
done

case "$arch" in
  arm64) triple=aarch64-unknown-linux-gnu; arch_flag=--arm64 ;;
  x86_64) triple=x86_64-unknown-linux-gnu; arch_flag=--x86-64 ;;
esac

ensure_cargo_lambda
if ! rustup target list --installed | grep -qx "$triple"; then
  log "adding the Rust target $triple (rustup, once)"
  rustup target add "$triple"
fi

release_flag=()
[ "$profile" = release ] && release_flag=(--release)

log "cargo lambda build $arch_flag ${release_flag[*]} -p mailroom-router (cargo-lambda $CARGO_LAMBDA_VERSION)"
start=$SECONDS
cargo lambda build "$arch_flag" "${release_flag[@]}" -p mailroom-router --output-format zip
elapsed=$((SECONDS - start))

# The zip holds the binary as `bootstrap`; unpack it beside the zip so both can be measured and
# the binary run (scripts/lambda-local-check.sh).
out="${CARGO_TARGET_DIR:-$ROOT/target}/lambda/mailroom-router"
python3 - "$out" <<'PY'
import sys, zipfile, os
out = sys.argv[1]
with zipfile.ZipFile(os.path.join(out, "bootstrap.zip")) as z:
    names = z.namelist()
    if names != ["bootstrap"]:
        sys.exit(f"bootstrap.zip holds {names}, expected only bootstrap")
    z.extract("bootstrap", out)
os.chmod(os.path.join(out, "bootstrap"), 0o755)
PY

machine=$(python3 - "$out/bootstrap" <<'PY'
import sys
# ELF e_machine (little endian) at offset 18: 0x3e x86-64, 0xb7 aarch64.
with open(sys.argv[1], "rb") as f:
    head = f.read(20)
print({0x3e: "x86_64", 0xb7: "arm64"}.get(int.from_bytes(head[18:20], "little"), "unknown"))
PY
)
if [ "$machine" != "$arch" ]; then
  log "bootstrap is $machine, expected $arch"
  exit 1
fi

bytes=$(stat -c %s "$out/bootstrap")
zip_bytes=$(stat -c %s "$out/bootstrap.zip")
printf 'bootstrap (%s, %s): %s bytes (%s MiB), bootstrap.zip %s bytes (%s MiB), built in %s s\n' \
  "$arch" "$profile" "$bytes" "$(awk "BEGIN {printf \"%.1f\", $bytes / 1048576}")" \
  "$zip_bytes" "$(awk "BEGIN {printf \"%.1f\", $zip_bytes / 1048576}")" "$elapsed"
printf '%s\n' "$out/bootstrap"
