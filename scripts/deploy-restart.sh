#!/usr/bin/env bash
# Restart Mailroom worker processes after a deploy: one at a time (rolling, the default) or all
# at once, waiting until each is READY before going on, and failing loudly if one is not.
#
#   scripts/deploy-restart.sh                         # rolling, every active mailroom@N (systemd)
#   scripts/deploy-restart.sh --instances 4           # rolling, mailroom@1..4
#   scripts/deploy-restart.sh --all                   # all at once (one systemctl restart of every unit)
#   scripts/deploy-restart.sh --upstart --instances 4 # Upstart: mailroom-worker N=1..4
#   scripts/deploy-restart.sh --ready-url 'http://127.0.0.1:909%i/ready'  # also wait for /ready
#   scripts/deploy-restart.sh --timeout 120           # seconds per restart (and per /ready wait)
#   scripts/deploy-restart.sh --dry-run ...           # print what would run; change nothing
#
# Without --instances: the mailroom@N units systemd reports active (Upstart: the running
# mailroom-worker N), so a unit stopped on purpose stays stopped. A failed unit is not
# restarted either: see why first (systemctl status mailroom@N), or name it with --instances.
#
# Why this is safe: SIGTERM makes a worker stop receiving, finish what runs (up to
# shutdown_timeout_secs), release the rest to SQS (visibility 0) and exit 0; with Type=notify
# `systemctl restart` returns only once the new process sent READY=1 (Postgres and SQS reached,
# receive loops running). Rolling keeps N-1 processes consuming throughout.
#
# On failure it stops at the failed instance and exits 1, the last lines saying which instance,
# what failed (the command and its exit status, or the /ready URL) and why (systemd's own
# message, the unit's state and result), and which instances were left on the old release.
set -euo pipefail

MODE=rolling
INIT=systemd
INSTANCES=""
READY_URL=""
TIMEOUT=120
DRY_RUN=0
SUDO="${SUDO:-}"

# The leading comment block, whatever its length (it used to print a fixed line range, which
# included the `set` line below it).
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit "${1:-0}"; }
log() { printf '[deploy-restart] %s\n' "$*" >&2; }
fail() { printf '[deploy-restart] FAILED: %s\n' "$*" >&2; }

while (($#)); do
  case "$1" in
    --rolling) MODE=rolling ;;
    --all) MODE=all ;;
    --upstart) INIT=upstart ;;
    --systemd) INIT=systemd ;;
    --instances) INSTANCES="${2:?--instances needs a number}"; shift ;;
    --ready-url) READY_URL="${2:?--ready-url needs a URL}"; shift ;;
    --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
  shift
done

instances() {
  if [ -n "$INSTANCES" ]; then seq 1 "$INSTANCES"; return; fi
  if [ "$INIT" = systemd ]; then
    # Active units only; the ACTIVE column is checked too, whatever --state a systemctl honours.
    systemctl list-units 'mailroom@*.service' --state=active --plain --no-legend 2>/dev/null \
      | awk '$3 == "active" { print $1 }' | sed -n 's/^mailroom@\(.*\)\.service$/\1/p' | sort -V
  else
    initctl list 2>/dev/null | sed -n 's/^mailroom-worker (\([^)]*\)) start\/running.*/\1/p' | sort -V
  fi
}

DONE=()     # restarted and ready
LIST=()     # every instance of this run

left_over() { # left_over INSTANCE: the instances after it in LIST
  local seen=0 out=() i
  for i in "${LIST[@]}"; do
    if (( seen )); then out+=("$i"); fi
    if [ "$i" = "$1" ]; then seen=1; fi
  done
  echo "${out[*]:-}"
}

# report_failure INSTANCE WHAT [WHY...]: the failure as the last lines of the output.
report_failure() {
  local i=$1 what=$2 why rest; shift 2
  fail "instance $i: $what"
  for why in "$@"; do if [ -n "$why" ]; then printf '[deploy-restart]   %s\n' "$why" >&2; fi; done
  if [ "$MODE" = rolling ]; then
    rest=$(left_over "$i")
    log "restarted and ready before it: ${DONE[*]:-none}; not restarted (still on the old release): ${rest:-none}"
  fi
}

unit_state() { # unit_state INSTANCE: the unit's state on one line, from systemctl show
  $SUDO systemctl show "mailroom@$1.service" -p ActiveState -p SubState -p Result \
    -p ExecMainStatus --no-pager 2>/dev/null | paste -sd' ' - || true
}

systemd_why() { # systemd_why INSTANCE: the unit's state and where its logs are
  if [ "$INIT" = systemd ]; then
    echo "unit state: $(unit_state "$1")"
    echo "logs: journalctl -u mailroom@$1.service -n 50"
  fi
}

wait_ready_url() { # wait_ready_url INSTANCE
  [ -n "$READY_URL" ] || return 0
  local url="${READY_URL//%i/$1}" deadline=$((SECONDS + TIMEOUT)) answer code last="no answer"
  while :; do
    # The body too: a 503 from /ready says why (not ready: postgres: ...).
    if answer=$(curl -sS --max-time 5 -w '\n%{http_code}' "$url" 2>&1); then
      code=${answer##*$'\n'}
      [ "$code" = 200 ] && return 0
      last="HTTP $code: $(printf '%s' "${answer%$'\n'*}" | tr '\n' ' ' | cut -c1-300)"
    else
      last="no answer: $(printf '%s' "$answer" | tr '\n' ' ' | cut -c1-300)"
    fi
    if (( SECONDS >= deadline )); then
      local extra=(); mapfile -t extra < <(systemd_why "$1")
      report_failure "$1" "$url did not answer 200 within ${TIMEOUT}s (--timeout)" \
        "last answer: $last" "${extra[@]}"
      return 1
    fi
    sleep 1
  done
}

# run_step INSTANCE WHAT COMMAND...: run it; on failure say what failed, how, and why.
run_step() {
  local i=$1 what=$2 out status=0 how; shift 2
  out=$("$@" 2>&1) || status=$?
  (( status == 0 )) && return 0
  if (( status == 124 )); then how="timed out after ${TIMEOUT}s (--timeout)"; else how="exit status $status"; fi
  local said="${out//$'\n'/ }" extra=()
  mapfile -t extra < <(systemd_why "$i")
  report_failure "$i" "$what ($how)" "${said:+said: $said}" "${extra[@]}"
  return 1
}

plan_one() { # what a rolling restart of INSTANCE would do
  local i=$1
  if [ "$INIT" = systemd ]; then
    echo "+ timeout $TIMEOUT $SUDO${SUDO:+ }systemctl restart mailroom@$i.service"
    echo "+ $SUDO${SUDO:+ }systemctl is-active --quiet mailroom@$i.service"
  else
    echo "+ $SUDO${SUDO:+ }stop mailroom-worker N=$i"
    echo "+ timeout $TIMEOUT $SUDO${SUDO:+ }start mailroom-worker N=$i"
  fi
  if [ -n "$READY_URL" ]; then echo "+ wait up to ${TIMEOUT}s for 200 from ${READY_URL//%i/$i}"; fi
}

restart_one() { # restart_one INSTANCE
  local i=$1
  log "restarting instance $i"
  if [ "$INIT" = systemd ]; then
    # Blocks until the new process sent READY=1 (Type=notify); the old one drained first.
    run_step "$i" "systemctl restart mailroom@$i.service failed" \
      timeout "$TIMEOUT" $SUDO systemctl restart "mailroom@$i.service" || return 1
    run_step "$i" "mailroom@$i.service is not active after its restart (systemctl is-active)" \
      $SUDO systemctl is-active "mailroom@$i.service" || return 1
  else
    # Upstart has no readiness protocol: stop (drains), start, then wait for /ready if given.
    $SUDO stop mailroom-worker "N=$i" >/dev/null 2>&1 || true
    run_step "$i" "start mailroom-worker N=$i failed" timeout "$TIMEOUT" $SUDO start mailroom-worker "N=$i" || return 1
  fi
  wait_ready_url "$i" || return 1
  DONE+=("$i")
  log "instance $i is ready"
}

mapfile -t LIST < <(instances)
if [ "${#LIST[@]}" -eq 0 ]; then
  if [ "$INIT" = systemd ]; then
    log "no active mailroom@N units found (pass --instances N to name them)"
  else
    log "no running mailroom-worker instances found (pass --instances N to name them)"
  fi
  exit 1
fi

if (( DRY_RUN )); then
  log "dry run: would do a $MODE restart of ${#LIST[@]} instance(s) via $INIT: ${LIST[*]}"
  if [ "$MODE" = rolling ]; then
    for i in "${LIST[@]}"; do
      log "would restart instance $i, then wait for it to be ready before the next"
      plan_one "$i"
    done
  elif [ "$INIT" = systemd ]; then
    units=(); for i in "${LIST[@]}"; do units+=("mailroom@$i.service"); done
    log "would restart every instance at once, then check each is active"
    echo "+ timeout $TIMEOUT $SUDO${SUDO:+ }systemctl restart ${units[*]}"
    for i in "${LIST[@]}"; do
      echo "+ $SUDO${SUDO:+ }systemctl is-active --quiet mailroom@$i.service"
      if [ -n "$READY_URL" ]; then echo "+ wait up to ${TIMEOUT}s for 200 from ${READY_URL//%i/$i}"; fi
    done
  else
    log "would stop every instance, then start each and wait for it"
    for i in "${LIST[@]}"; do echo "+ $SUDO${SUDO:+ }stop mailroom-worker N=$i"; done
    for i in "${LIST[@]}"; do
      echo "+ timeout $TIMEOUT $SUDO${SUDO:+ }start mailroom-worker N=$i"
      if [ -n "$READY_URL" ]; then echo "+ wait up to ${TIMEOUT}s for 200 from ${READY_URL//%i/$i}"; fi
    done
  fi
  log "dry run: nothing was restarted"
  exit 0
fi

log "$MODE restart of ${#LIST[@]} instance(s) via $INIT: ${LIST[*]}"

if [ "$MODE" = rolling ]; then
  for i in "${LIST[@]}"; do restart_one "$i" || exit 1; done
elif [ "$INIT" = systemd ]; then
  units=(); for i in "${LIST[@]}"; do units+=("mailroom@$i.service"); done
  # One job per unit, run in parallel; returns when every one is READY (or failed).
  out=""; status=0
  out=$(timeout "$TIMEOUT" $SUDO systemctl restart "${units[@]}" 2>&1) || status=$?
  failed=()
  for i in "${LIST[@]}"; do
    if ! $SUDO systemctl is-active --quiet "mailroom@$i.service"; then failed+=("$i"); fi
  done
  if (( status != 0 || ${#failed[@]} > 0 )); then
    how="exit status $status"
    if (( status == 124 )); then how="timed out after ${TIMEOUT}s (--timeout)"; fi
    fail "systemctl restart ${units[*]} ($how); not active afterwards: ${failed[*]:-none}"
    if [ -n "$out" ]; then printf '[deploy-restart]   said: %s\n' "${out//$'\n'/ }" >&2; fi
    for i in "${failed[@]}"; do
      printf '[deploy-restart]   mailroom@%s.service: %s (logs: journalctl -u mailroom@%s.service -n 50)\n' \
        "$i" "$(unit_state "$i")" "$i" >&2
    done
    exit 1
  fi
  for i in "${LIST[@]}"; do wait_ready_url "$i" || exit 1; DONE+=("$i"); done
else
  for i in "${LIST[@]}"; do $SUDO stop mailroom-worker "N=$i" >/dev/null 2>&1 || true; done
  for i in "${LIST[@]}"; do
    run_step "$i" "start mailroom-worker N=$i failed" timeout "$TIMEOUT" $SUDO start mailroom-worker "N=$i" || exit 1
    wait_ready_url "$i" || exit 1
    DONE+=("$i")
  done
fi
log "done: ${#LIST[@]} instance(s) restarted and ready"
