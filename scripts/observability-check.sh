#!/usr/bin/env bash
# Checks deploy/observability/: the Prometheus alert rules parse (promtool check rules), their
# unit tests pass (promtool test rules alerts_test.yml), and every PromQL expression of the
# Grafana dashboard parses (checked by promtool as recording rules, with the dashboard's
# variables replaced by plain values). Installs promtool (Debian package `prometheus`) when it
# is missing. Exits non-zero on the first failure.
#
#   scripts/observability-check.sh
#
# tests/ops_observability.rs checks the other half: every metric named in these files is one
# the worker really exports.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

DIR=deploy/observability

if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (apt package prometheus)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
command -v promtool >/dev/null 2>&1 || { log "promtool is still missing after the install"; exit 1; }
log "$(promtool --version 2>&1 | head -n1)"

log "promtool check rules $DIR/alerts.yml"
promtool check rules "$DIR/alerts.yml"

log "promtool test rules $DIR/alerts_test.yml"
promtool test rules "$DIR/alerts_test.yml"

log "dashboard PromQL parses ($DIR/grafana-dashboard.json)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$DIR/grafana-dashboard.json" "$work/dashboard-rules.yml" <<'PY'
import json, sys

dashboard = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for panel in panels:
        walk(panel.get("panels", []))
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("type") == "prometheus":
                exprs.append((panel["title"], target["refId"], target["expr"]))
walk(dashboard["panels"])
for var in dashboard["templating"]["list"]:
    if var.get("datasource", {}).get("type") == "prometheus":
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        # label_values(METRIC, LABEL) is Grafana's, not PromQL: check its selector.
        if query.startswith("label_values("):
            query = query[len("label_values("):].rsplit(",", 1)[0]
        exprs.append(("variable " + var["name"], "query", query))
if not exprs:
    sys.exit("no Prometheus expression found in the dashboard")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, ref, expr) in enumerate(exprs):
        expr = expr.replace("$__rate_interval", "5m").replace("$queue", ".*")
        if "$" in expr:
            sys.exit(f"{title} ({ref}): unknown variable in {expr!r}")
        out.write(f"      # {title} ({ref})\n")
        out.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(expr)}\n")
print(f"{len(exprs)} expressions", file=sys.stderr)
PY
promtool check rules "$work/dashboard-rules.yml"

log "observability checks passed"
