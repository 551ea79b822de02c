#!/usr/bin/env bash
# Restart Mailroom worker processes after a deploy: one at a time (rolling, the default) or all
# at once, waiting until each is READY before going on, and failing loudly if one is not.
#
#   scripts/deploy-restart.sh                         # rolling, every active mailroom@N (systemd)
#   scripts/deploy-restart.sh --instances 4           # rolling, mailroom@1..4
#   scripts/deploy-restart.sh --all                   # all at once (one systemctl restart of every unit)
#   scripts/deploy-restart.sh --upstart --instances 4 # Upstart: mailroom-worker N=1..4
#   scripts/deploy-restart.sh --ready-url 'http://127.0.0.1:909%i/ready'  # also wait for /ready
#   scripts/deploy-restart.sh --dry-run ...           # print what would run
#
# Why this is safe: SIGTERM makes a worker stop receiving, finish what runs (up to
# shutdown_timeout_secs), release the rest to SQS (visibility 0) and exit 0; with Type=notify
# `systemctl restart` returns only once the new process sent READY=1 (Postgres and SQS reached,
# receive loops running). Rolling keeps N-1 processes consuming throughout.
set -euo pipefail

MODE=rolling
INIT=systemd
INSTANCES=""
READY_URL=""
TIMEOUT=120
DRY_RUN=0
SUDO="${SUDO:-}"

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
log() { printf '[deploy-restart] %s\n' "$*" >&2; }
run() { if (( DRY_RUN )); then echo "+ $*"; else "$@"; fi; }

while (($#)); do
  case "$1" in
    --rolling) MODE=rolling ;;
    --all) MODE=all ;;
    --upstart) INIT=upstart ;;
    --systemd) INIT=systemd ;;
    --instances) INSTANCES="$2"; shift ;;
    --ready-url) READY_URL="$2"; shift ;;
    --timeout) TIMEOUT="$2"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage 0 ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
  shift
done

instances() {
  if [ -n "$INSTANCES" ]; then seq 1 "$INSTANCES"; return; fi
  if [ "$INIT" = systemd ]; then
    systemctl list-units 'mailroom@*.service' --all --plain --no-legend 2>/dev/null \
      | awk '{print $1}' | sed -n 's/^mailroom@\(.*\)\.service$/\1/p' | sort -V
  else
    initctl list 2>/dev/null | sed -n 's/^mailroom-worker (\([^)]*\)).*/\1/p' | sort -V
  fi
}

wait_ready_url() { # wait_ready_url INSTANCE
  [ -n "$READY_URL" ] || return 0
  local url="${READY_URL//%i/$1}" deadline=$((SECONDS + TIMEOUT))
  (( DRY_RUN )) && { echo "+ wait for 200 from $url"; return 0; }
  until curl -fsS -o /dev/null --max-time 5 "$url"; do
    if (( SECONDS >= deadline )); then log "instance $1: $url not ready after ${TIMEOUT}s"; return 1; fi
    sleep 1
  done
}

restart_one() { # restart_one INSTANCE
  local i=$1
  log "restarting instance $i"
  if [ "$INIT" = systemd ]; then
    # Blocks until the new process sent READY=1 (Type=notify); the old one drained first.
    run timeout "$TIMEOUT" $SUDO systemctl restart "mailroom@$i.service"
    run $SUDO systemctl is-active --quiet "mailroom@$i.service"
  else
    # Upstart has no readiness protocol: stop (drains), start, then wait for /ready if given.
    run $SUDO stop mailroom-worker "N=$i" || true
    run timeout "$TIMEOUT" $SUDO start mailroom-worker "N=$i"
  fi
  wait_ready_url "$i"
  log "instance $i is ready"
}

mapfile -t LIST < <(instances)
if [ "${#LIST[@]}" -eq 0 ]; then
  log "no Mailroom instances found (pass --instances N)"; exit 1
fi
log "$MODE restart of ${#LIST[@]} instance(s) via $INIT: ${LIST[*]}"

if [ "$MODE" = rolling ]; then
  for i in "${LIST[@]}"; do restart_one "$i"; done
elif [ "$INIT" = systemd ]; then
  units=(); for i in "${LIST[@]}"; do units+=("mailroom@$i.service"); done
  # One job per unit, run in parallel; returns when every one is READY (or failed).
  run timeout "$TIMEOUT" $SUDO systemctl restart "${units[@]}"
  for i in "${LIST[@]}"; do run $SUDO systemctl is-active --quiet "mailroom@$i.service"; wait_ready_url "$i"; done
else
  for i in "${LIST[@]}"; do run $SUDO stop mailroom-worker "N=$i" || true; done
  for i in "${LIST[@]}"; do run timeout "$TIMEOUT" $SUDO start mailroom-worker "N=$i"; wait_ready_url "$i"; done
fi
log "done: ${#LIST[@]} instance(s) restarted and ready"
