# Source this to configure Airflow the way govshare runs it: this checkout's airflow.cfg and
# dags/, state (metadata DB, logs, OpenLineage file) under GOVSHARE_HOME (default ./var).
_govshare_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GOVSHARE_ROOT="$_govshare_root"
export GOVSHARE_HOME="$(realpath -m "${GOVSHARE_HOME:-$_govshare_root/var}")"
export AIRFLOW_HOME="$GOVSHARE_HOME/airflow"
export AIRFLOW_CONFIG="$_govshare_root/airflow.cfg"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export TQDM_DISABLE=1 GX_ANALYTICS_ENABLED=false
mkdir -p "$AIRFLOW_HOME/logs" "$AIRFLOW_HOME/plugins" "$GOVSHARE_HOME/lineage"
unset _govshare_root
