"""DAG tests: the DagBag imports cleanly, DAGs follow the house rules, and one real run works."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = ROOT / "scripts" / "airflow"
pytestmark = pytest.mark.dags


def _airflow_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["GOVSHARE_HOME"] = str(home)
    return env


def _airflow(home: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**_airflow_env(home), **(extra_env or {})}
    return subprocess.run([str(AIRFLOW), *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    """Parse the dags folder in a subprocess configured exactly as scripts/airflow does it."""
    home = tmp_path_factory.mktemp("dagbag-home")
    probe = (
        "import json, os\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=os.environ['GOVSHARE_ROOT'] + '/dags')\n"
        "print(json.dumps({'errors': {k: str(v)[:500] for k, v in bag.import_errors.items()},\n"
        " 'dags': {d.dag_id: {'tags': sorted(d.tags), 'owner': d.owner, 'retries': [t.retries for t in d.tasks],\n"
        "   'tasks': sorted(t.task_id for t in d.tasks), 'schedule': str(getattr(d, 'timetable_summary', '')),\n"
        "   'outlets': {t.task_id: [o.uri for o in t.outlets] for t in d.tasks}} for d in bag.dags.values()}}))\n"
    )
    result = subprocess.run(
        ["bash", "-c", f'source {ROOT}/scripts/airflow-env.sh && exec {ROOT}/.venv/bin/python -c "$0"', probe],
        env=_airflow_env(home), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag["errors"] == {}


def test_one_sync_dag_per_dataset(dagbag):
    assert set(dagbag["dags"]) == {"sync_population", "sync_legal_entity", "sync_e_license"}


def test_every_dag_has_tags_retries_owner_and_the_four_stages(dagbag):
    for dag_id, dag in dagbag["dags"].items():
        assert "govshare" in dag["tags"], dag_id
        assert dag["owner"] == "data-resource-bureau", dag_id
        assert all(r >= 1 for r in dag["retries"]), dag_id
        assert dag["tasks"] == ["ingest", "plan", "protect", "publish"], dag_id


def test_publish_task_declares_the_dataset_asset(dagbag):
    assert dagbag["dags"]["sync_population"]["outlets"]["publish"] == ["govshare://sharing-set/population"]
    assert dagbag["dags"]["sync_population"]["outlets"]["ingest"] == []


def test_dag_run_end_to_end_publishes_a_version_and_an_asset_event(tmp_path: Path, demo_sources):
    home = tmp_path / "home"
    env = {"GOVSHARE_HOME": str(home)}
    init = subprocess.run([str(ROOT / ".venv/bin/govshare"), "init"], env={**_airflow_env(home), **env},
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    migrate = _airflow(home, "db", "migrate")
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    conn = {"AIRFLOW_CONN_LEGAL_ENTITY_DB": demo_sources.connection_uris()["legal_entity_db"]}
    run = _airflow(home, "dags", "test", "sync_legal_entity", extra_env=conn)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    versions = sorted((home / "store" / "legal_entity" / "versions").iterdir())
    assert [v.name for v in versions] == ["00000001"]
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    extras = [json.loads(row[0]) for row in db.execute(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
        ("govshare://sharing-set/legal_entity",))]
    assert [e["version"] for e in extras] == [1]
    events = (home / "lineage" / "airflow-openlineage.jsonl").read_text(encoding="utf-8").splitlines()
    jobs = {json.loads(line)["job"]["name"] for line in events}
    assert {"sync_legal_entity.ingest", "sync_legal_entity.publish"} <= jobs
