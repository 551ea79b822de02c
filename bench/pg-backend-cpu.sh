#!/usr/bin/env bash
# Postgres CPU per stored event of two schemas, side by side: the CPU of the one backend doing
# the inserts (utime + stime of /proc/<pg_backend_pid()>/stat), so other load on a shared
# Postgres does not count. 120,000 events in 48 transactions of 2,500 (INSERT ... SELECT from
# generate_series, ON CONFLICT DO NOTHING, a 260-byte SendGrid-like payload), into a fresh
# database migrated by each binary; ROUNDS rounds, alternating. Postgres must be local (reads
# /proc). BENCHMARKS.md, "partitioned events".
#
#   bench/pg-backend-cpu.sh OLD_MAILROOM_BINARY NEW_MAILROOM_BINARY
#   env: PGHOST (127.0.0.1), PGUSER (postgres), ROUNDS (3)
set -euo pipefail
old=$1 new=$2
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tck=$(getconf CLK_TCK)
for v in old new; do
  psql -q -c "DROP DATABASE IF EXISTS mailroom_cpu_$v" -c "CREATE DATABASE mailroom_cpu_$v" 2>/dev/null
  printf '[store]\ndatabase_url = "postgres://%s@%s/mailroom_cpu_%s"\n[[queue]]\nname = "unused"\nhandler = "sendgrid"\n' \
    "$PGUSER" "$PGHOST" "$v" > "$work/$v.toml"
  bin=$old; [ "$v" = new ] && bin=$new
  env -u DATABASE_URL "$bin" --config "$work/$v.toml" migrate > /dev/null
done
for round in $(seq "$rounds"); do
  for v in old new; do
    cast=json; [ "$v" = old ] && cast=jsonb
    {
      echo "SELECT pg_backend_pid() AS pid \\gset"
      echo "\\setenv PID :pid"
      echo "\\! awk '{print \$14 + \$15}' /proc/\$PID/stat > $work/cpu0"
      for k in $(seq 0 47); do
        echo "INSERT INTO mailroom_events (sg_event_id, event, email, occurred_at, sg_message_id, payload, sqs_message_id, queue, received_at)
SELECT 'r$round-' || g || '-' || md5(g::text), 'delivered', 'user' || (g % 50000) || '@example.com',
       now() - (g % 1000) * interval '1 second', md5((g / 5)::text) || '.filter0001.' || g || '.0',
       ('{\"event\":\"delivered\",\"email\":\"user' || g || '@example.com\",\"sg_event_id\":\"ev-' || g
        || '\",\"sg_message_id\":\"' || md5((g / 5)::text) || '.filter0001\",\"timestamp\":' || (1700000000 + g)
        || ',\"smtp-id\":\"<' || g || '@example.com>\",\"category\":[\"newsletter\"]}')::$cast,
       'sqs-' || (g / 25), 'sendgrid-events', now()
FROM generate_series($k * 2500 + 1, ($k + 1) * 2500) g ON CONFLICT DO NOTHING;"
      done
      echo "\\! awk '{print \$14 + \$15}' /proc/\$PID/stat > $work/cpu1"
    } | psql -q -d "mailroom_cpu_$v" > /dev/null
    t0=$(cat "$work/cpu0") t1=$(cat "$work/cpu1")
    echo "round $round $v: $(( (t1 - t0) * 1000000 / tck / 120000 )) us of backend CPU per event"
  done
done
for v in old new; do psql -q -c "DROP DATABASE IF EXISTS mailroom_cpu_$v"; done
