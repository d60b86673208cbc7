#!/usr/bin/env bash
# make demo: demo sources, keys, the three sync DAGs run through Airflow, pulls, lineage reports.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GOVSHARE_HOME="$(realpath -m "${GOVSHARE_HOME:-$root/var}")"
gs="$root/.venv/bin/govshare"
airflow="$root/scripts/airflow"
# shellcheck disable=SC1091
source "$root/scripts/demo-home.sh"
# shellcheck disable=SC1091
source "$root/scripts/root-key-env.sh"
datasets=(population legal_entity e_license)
# pulls and reports leave the home: --out may not point into GOVSHARE_HOME or the source tree
out="$(realpath -m "${GOVSHARE_DEMO_OUT:-${TMPDIR:-/tmp}/govshare-demo-$(id -u)}")"
reports="$out/reports"
pulls="$out/pulls"
mkdir -p "$GOVSHARE_HOME/airflow"

step() { printf '\n== %s\n' "$*"; }

step "govshare init (keys under $GOVSHARE_HOME/keystore, generated here, never committed, wrapped by the root key $GOVSHARE_ROOT_KEY)"
govshare_home_init

step "demo sources (SQLite), valid rows plus a known share of defective ones"
govshare_demo_sources
# shellcheck disable=SC1091
source "$GOVSHARE_HOME/demo/connections.env"

step "Airflow metadata database (SQLite)"
"$airflow" db migrate > "$GOVSHARE_HOME/airflow/db-migrate.log" 2>&1 || { tail -20 "$GOVSHARE_HOME/airflow/db-migrate.log"; exit 1; }

for d in "${datasets[@]}"; do
  step "Airflow: dags test sync_$d"
  log="$GOVSHARE_HOME/airflow/dags-test-sync_$d.log"
  if ! "$airflow" dags test "sync_$d" > "$log" 2>&1; then
    tail -40 "$log"; echo "sync_$d failed; full log: $log"; exit 1
  fi
  grep -E "Marking run .* (successful|failed)|state=.*(success|failed)" "$log" | tail -1 || true
  "$gs" versions "$d" | tail -n 2
done

step "verify every dataset's latest version"
for d in "${datasets[@]}"; do "$gs" verify "$d"; done

step "pulls by the demo subscribers"
for d in "${datasets[@]}"; do
  "$gs" pull "$d" --subscriber approval-general --purpose "一网通办 综合窗口 办件核验 (demo)" --out "$pulls/approval-general-$d.parquet"
done
"$gs" pull population --subscriber approval-household --purpose "户籍迁移审批 核验申请人身份 (demo)" --out "$pulls/approval-household-population.parquet"

step "two parties: the sharing service (HTTPS, local CA) and the subscribers' agents, each with its own keys"
agents="$out/agents"
rm -rf "$agents" && mkdir -p "$agents"
serve_log="$GOVSHARE_HOME/service/demo-serve.log"
"$gs" serve --port 0 > "$serve_log" 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 120); do
  url=$(sed -n 's/^serving \(https:[^ ]*\).*/\1/p' "$serve_log" | head -1)
  [ -n "$url" ] && break
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.5
done
[ -n "$url" ] || { cat "$serve_log"; echo "govshare serve did not start"; exit 1; }
echo "service at $url"
for s in approval-household approval-general; do
  "$gs" subscriber enroll "$s" --server "$url" --out "$agents/$s.enrolment.json"
  GOVSHARE_AGENT_HOME="$agents/$s" "$gs" agent init --enrollment "$agents/$s.enrolment.json"
done
GOVSHARE_AGENT_HOME="$agents/approval-household" "$gs" agent datasets
GOVSHARE_AGENT_HOME="$agents/approval-household" "$gs" agent pull population \
  --purpose "户籍迁移审批 核验申请人身份 (demo)" --case "HJ-2026-000123" --out "$pulls/agent-approval-household-population.parquet"
GOVSHARE_AGENT_HOME="$agents/approval-general" "$gs" agent pull legal_entity \
  --purpose "一网通办 综合窗口 办件核验 (demo)" --out "$pulls/agent-approval-general-legal_entity.parquet"
"$gs" subscriber profile approval-general --purpose "一网通办 综合窗口 办件核验 (demo)" --server "$url" \
  --out "$agents/approval-general.share"
REQUESTS_CA_BUNDLE="$agents/approval-general.share.ca.pem" SSL_CERT_FILE="$agents/approval-general.share.ca.pem" \
  "$root/.venv/bin/python" - "$agents/approval-general.share" <<'PY'
import sys
import delta_sharing
profile = sys.argv[1]
tables = delta_sharing.SharingClient(profile).list_all_tables()
print("stock Delta Sharing client sees:", ", ".join(f"{t.share}.{t.schema}.{t.name}" for t in tables))
frame = delta_sharing.load_as_pandas(f"{profile}#govshare.base.legal_entity")
print(f"  govshare.base.legal_entity: {len(frame)} rows, columns {', '.join(frame.columns)}")
PY
kill "$serve_pid" && wait "$serve_pid" 2>/dev/null || true
trap - EXIT

step "lineage reports"
for d in "${datasets[@]}"; do
  "$gs" lineage "$d" --format html --out "$reports/lineage-$d.html"
  "$gs" lineage "$d" --format json --out "$reports/lineage-$d.json" > /dev/null
done
"$gs" audit verify

step "published"
for d in "${datasets[@]}"; do
  "$root/.venv/bin/python" - "$reports/lineage-$d.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1], encoding="utf-8"))
v, rows = r["version"], r["rows"]
print(f"{r['dataset']['id']:13} version {v['number']}: {rows['upserts']} rows published, {rows['deletes']} deleted, "
      f"{rows['quarantined']} quarantined; manifest {v['manifest_sha256'][:16]}...")
PY
done
cat <<MSG

Where to look:
  sharing sets      $GOVSHARE_HOME/store/<dataset>/versions/
  subscriber pulls  $pulls/ (agent-*.parquet: fetched over HTTPS by the subscribers' agents)
  agents            $agents/<subscriber>/ (each agent's own keys, pinned publisher key, mirror)
  lineage reports   $reports/lineage-<dataset>.html (and .json)
  quarantine        $GOVSHARE_HOME/quarantine/ (encrypted at rest)
  access log        $GOVSHARE_HOME/audit/access-log.jsonl
  OpenLineage       $GOVSHARE_HOME/lineage/openlineage.jsonl, airflow-openlineage.jsonl
MSG
