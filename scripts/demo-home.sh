# Source this (GOVSHARE_HOME set) for the two steps that make a GOVSHARE_HOME usable by the
# DAGs, shared by demo.sh and airflow-stack: keys, and demo source databases with their connections.
_govshare_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin"

# Keystore and the demo subscribers' key pairs under $GOVSHARE_HOME/keystore (idempotent).
govshare_home_init() {
  "$_govshare_bin/govshare" init
}

# Demo SQLite sources under $GOVSHARE_HOME/demo (DEMO_ROWS rows, default 2000) and
# connections.env pointing the AIRFLOW_CONN_*_DB connections at them.
govshare_demo_sources() {
  "$_govshare_bin/govshare" demo-data --rows "${DEMO_ROWS:-2000}" --out "$GOVSHARE_HOME/demo"
}
