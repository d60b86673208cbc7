# Source this to configure Airflow the way govshare runs it: this checkout's airflow.cfg and
# dags/, state (metadata DB, logs, OpenLineage file) under GOVSHARE_HOME (default ./var), the
# virtualenv's bin first on PATH (so components find the same `airflow` for their children), and
# the secrets every Airflow component must share, generated once into
# $GOVSHARE_HOME/airflow/shared-secrets.env (0600, never committed):
#   [api_auth] jwt_secret  signs the tokens the scheduler gives tasks for the execution API
#   [api] secret_key       signs the api-server's sessions
#   [core] fernet_key      encrypts connections and variables stored in the metadata database
_govshare_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GOVSHARE_ROOT="$_govshare_root"
export GOVSHARE_HOME="$(realpath -m "${GOVSHARE_HOME:-$_govshare_root/var}")"
export AIRFLOW_HOME="$GOVSHARE_HOME/airflow"
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/root-key-env.sh"
export AIRFLOW_CONFIG="$_govshare_root/airflow.cfg"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# The api-server's port on 127.0.0.1 (airflow.cfg derives the UI and execution API URLs from it).
export GOVSHARE_AIRFLOW_PORT="${GOVSHARE_AIRFLOW_PORT:-8080}"
export PATH="$_govshare_root/.venv/bin:$PATH"
export TQDM_DISABLE=1 GX_ANALYTICS_ENABLED=false
mkdir -p "$AIRFLOW_HOME/logs" "$AIRFLOW_HOME/plugins" "$GOVSHARE_HOME/lineage"
# Written once (scripts/secrets-once.py): concurrent first runs agree on one set, none is replaced.
"$_govshare_root/.venv/bin/python" "$_govshare_root/scripts/secrets-once.py" "$AIRFLOW_HOME/shared-secrets.env" \
  AIRFLOW__API_AUTH__JWT_SECRET=urlsafe:64 AIRFLOW__API__SECRET_KEY=urlsafe:32 AIRFLOW__CORE__FERNET_KEY=fernet
# shellcheck disable=SC1091
source "$AIRFLOW_HOME/shared-secrets.env"
unset _govshare_root
