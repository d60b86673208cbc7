"""An id that is neither in the environment nor in Airflow: a ConfigError that says what to set.

Runs in a fresh interpreter with its own AIRFLOW_HOME, so Airflow's real lookup (secrets
backends, metadata database) is used without touching the developer's Airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
from connectors.connections import resolve_url
from common.errors import ConfigError
try:
    resolve_url("nowhere_db")
except ConfigError as exc:
    print("CONFIG:" + exc.message)
"""


def test_unknown_connection_id_through_airflow(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("CONFIG:"))
    assert "nowhere_db" in line and "AIRFLOW_CONN_NOWHERE_DB" in line
