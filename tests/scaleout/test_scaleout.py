"""The scale-out stack (scripts/scaleout-stack, ``make scaleout``) publishes what the embedded default
publishes: the three syncs and an incremental one, triggered through Airflow's REST API and run by
CeleryExecutor on two Celery workers with work folders of their own, the sharing store on moto's S3
server, the sync lease in PostgreSQL, the store's endpoint and keys from an Airflow connection. Every version's manifest equals the embedded run's on the
same sources (except what is random or local by design: times, run ids, data key ids, digests of
encrypted files, signatures, the home's own access log), the pulled views are equal row for row,
both workers ran tasks, and an enrolled agent pulls the same view from the stack's ``govshare
serve``, which reads the object store and hands the agent pre-signed URLs of its files.

Run by ``make test-scaleout`` (GOVSHARE_TEST_SCALEOUT=1); ``make test`` does not collect it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.dags.test_airflow_stack import Api, Stack, _free_port, _group_members, _wait_for

ROOT = Path(__file__).resolve().parents[2]
SCALEOUT = ROOT / "scripts" / "scaleout-stack"
GOVSHARE = ROOT / ".venv" / "bin" / "govshare"
DATASETS = {"population": "population_person", "legal_entity": "legal_entity", "e_license": "e_license"}
# who pulls what: the household system decrypts population's 有条件共享 fields under a purpose
PULLS = {"population": "approval-household", "legal_entity": "approval-general", "e_license": "approval-general"}
KEYS = {"population": "id_number", "legal_entity": "uscc", "e_license": "license_id"}
RUN_TIMEOUT = 600
POPULATION_ROWS, PART_ROWS = 3000, 1000  # the catalog's smallest part size: three parts or so
pytestmark = pytest.mark.scaleout

# Manifest fields that differ between two publications of the same rows by design.
RANDOM_OR_LOCAL = {
    "created_at",  # when
    "run_id",  # an Airflow run id against the CLI's
    "data_keys", "column_keys", "footer_key_id",  # fresh data keys per run
    "sha256", "bytes",  # encrypted files: fresh keys and nonces
    "previous",  # the previous manifest's digest, which holds the above
    "access_log",  # each home's own deliveries so far
}


def _comparable(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _comparable(v) for k, v in doc.items() if k not in RANDOM_OR_LOCAL}
    if isinstance(doc, list):
        return [_comparable(v) for v in doc]
    return doc


class ScaleoutStack(Stack):
    """scripts/scaleout-stack, started and stopped like scripts/airflow-stack."""

    script = SCALEOUT
    ready = "[scaleout-stack] running:"
    start_timeout = 300  # PostgreSQL, Redis and the S3 server first, then Airflow's migrations

    def settings(self) -> dict[str, str]:
        """The variables of the running stack (its scaleout.env), for govshare commands beside it."""
        found = {}
        for line in (self.home / "airflow" / "scaleout.env").read_text().splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = subprocess.run(["bash", "-c", f"printf %s {value}"], capture_output=True, text=True,
                                             check=True).stdout
        return found


@dataclass
class World:
    stack: ScaleoutStack
    env: dict[str, str]  # the stack's home, as govshare commands beside the stack see it
    embedded: dict[str, str]  # the embedded home: same keys, same sources, local store, file lease
    sources: dict[str, Path]
    root: Path

    def s3(self) -> tuple[Any, str, str]:
        """A boto3 client of the stack's object store (from its Airflow connection), the bucket, the prefix."""
        import boto3

        assert not any(k.startswith("AWS_") for k in self.env), "the stack's store is reached by its connection alone"
        conn = json.loads(self.env["AIRFLOW_CONN_GOVSHARE_STORE"])
        client = boto3.client("s3", endpoint_url=conn["extra"]["endpoint_url"], region_name=conn["extra"]["region_name"],
                              aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])
        bucket, _, prefix = self.env["GOVSHARE_STORE"].removeprefix("s3://").partition("/")
        return client, bucket, prefix

    def govshare(self, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(GOVSHARE), *args], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (args, done.stderr[-3000:])
        assert "Traceback" not in done.stderr
        return done


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from govshare.demo import write_demo_sources

    root = tmp_path_factory.mktemp("scaleout")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "GOVSHARE_", "AWS_")) or k == "GOVSHARE_ROOT_KEY"}
    demo = write_demo_sources(root / "sources", rows=POPULATION_ROWS, seed=11)
    sources = {conn_id: Path(uri.removeprefix("sqlite:///")) for conn_id, uri in demo.connection_uris().items()}
    base.update(demo.environment())
    # population's full read in key-range parts: mapped ingest tasks, on either worker
    catalog = root / "catalogs"
    shutil.copytree(ROOT / "catalogs", catalog)
    population = catalog / "population.yaml"
    text = population.read_text(encoding="utf-8")
    assert "  table: population_person\n" in text
    population.write_text(text.replace("  table: population_person\n",
                                       f"  table: population_person\n  part_rows: {PART_ROWS}\n"), encoding="utf-8")
    base["GOVSHARE_CATALOG"] = str(catalog)
    home = root / "stack-home"
    database = f"scaleout_{os.getpid()}_{int(time.time())}"
    stack_env = {**base, "GOVSHARE_HOME": str(home), "PATH": "/usr/bin:/bin", "GOVSHARE_SCALEOUT_DB": database,
                 **{name: str(_free_port()) for name in ("GOVSHARE_AIRFLOW_PORT", "GOVSHARE_REDIS_PORT",
                                                         "GOVSHARE_S3_PORT", "GOVSHARE_SERVE_PORT")}}
    init = subprocess.run([str(GOVSHARE), "init"], env=stack_env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    # the embedded home: a copy of the freshly initialised one (the same keystore and root key)
    shutil.copytree(home, root / "embedded-home")
    embedded = {**base, "GOVSHARE_HOME": str(root / "embedded-home"), "GOVSHARE_GX": "inline"}
    stack = ScaleoutStack(home, stack_env, root / "scaleout-stack.out")
    try:
        stack.wait_until_ready()
        env = {**base, **stack.settings()}
        yield World(stack, env, embedded, sources, root)
    finally:
        stack.stop()
        _drop_database(database)


def _drop_database(name: str) -> None:
    url = subprocess.run(["bash", str(ROOT / "scripts" / "test-servers.sh"), "env"], capture_output=True, text=True)
    if url.returncode != 0:
        return
    import psycopg
    from psycopg import sql

    admin = url.stdout.split("GOVSHARE_TEST_POSTGRES_URL='", 1)[1].split("'", 1)[0]
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run_dags(api: Api, deadline: float) -> list[dict[str, Any]]:
    """Trigger the three sync DAGs at once and wait until every run of them has finished; the
    task instances of the triggered runs."""
    triggered = {}
    for ds in DATASETS:
        dag = f"sync_{ds}"
        _wait_for(f"the dag-processor to parse {dag}", lambda dag=dag: api.call("GET", f"/api/v2/dags/{dag}"), deadline)
        api.call("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
        triggered[dag] = api.call("POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None})["dag_run_id"]

    def all_finished() -> bool:
        # unpausing also schedules the latest interval (catchup off): every run must finish
        runs = [r for dag in triggered for r in api.call("GET", f"/api/v2/dags/{dag}/dagRuns")["dag_runs"]]
        return all(r["state"] in ("success", "failed") for r in runs)

    _wait_for("every sync run to finish", all_finished, deadline)
    instances = []
    for dag in triggered:
        runs = api.call("GET", f"/api/v2/dags/{dag}/dagRuns")["dag_runs"]
        assert [r["state"] for r in runs] == ["success"] * len(runs), (dag, runs)
        for run in runs:
            path = f"/api/v2/dags/{dag}/dagRuns/{urllib.request.quote(run['dag_run_id'])}/taskInstances"
            instances += api.call("GET", path)["task_instances"]
    return instances


def _change_sources(sources: dict[str, Path]) -> None:
    """Changes for an incremental run: updated rows and a delete in each source, at the source's
    local time (UTC+8) now."""
    now = "datetime('now', '+8 hours')"
    edits = {
        "population_db": ["UPDATE population_person SET household_address = household_address || '（更正）', "
                          f"updated_at = {now} WHERE rowid % 37 = 0 AND is_deleted = 0",
                          f"UPDATE population_person SET is_deleted = 1, updated_at = {now} "
                          "WHERE rowid = (SELECT max(rowid) FROM population_person WHERE is_deleted = 0)"],
        "legal_entity_db": [f"UPDATE legal_entity SET address = address || '甲', updated_at = {now} "
                            "WHERE rowid % 23 = 0 AND is_deleted = 0",
                            f"UPDATE legal_entity SET is_deleted = 1, updated_at = {now} "
                            "WHERE rowid = (SELECT min(rowid) FROM legal_entity WHERE is_deleted = 0)"],
        "e_license_db": [f"UPDATE e_license SET license_status = '03', updated_at = {now} "
                         "WHERE rowid % 19 = 0 AND is_deleted = 0"],
    }
    for conn_id, statements in edits.items():
        with sqlite3.connect(sources[conn_id]) as db:
            for statement in statements:
                assert db.execute(statement).rowcount > 0, statement


def _stack_manifest(world: World, ds: str, version: int) -> dict[str, Any]:
    """The version's manifest as the object store holds it (its head marker names its objects)."""
    s3, bucket, prefix = world.s3()
    head = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/{ds}/heads/{version:08d}.json")["Body"].read())
    return json.loads(s3.get_object(Bucket=bucket, Key=f"{head['objects']}/manifest.json")["Body"].read())


def _embedded_manifest(world: World, ds: str, version: int) -> dict[str, Any]:
    path = Path(world.embedded["GOVSHARE_HOME"]) / "store" / ds / "versions" / f"{version:08d}" / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _pulled(world: World, env: dict[str, str], ds: str, out: Path, *extra: str) -> pa.Table:
    world.govshare(env, "pull", ds, "--subscriber", PULLS[ds], "--purpose", "户籍迁移审批 核验申请人身份",
                   "--out", str(out), *extra)
    table = pq.read_table(out)
    return table.sort_by([(KEYS[ds], "ascending")] + ([("_change_type", "ascending")] if "_change_type" in
                                                       table.column_names else []))


def _assert_same_publications(world: World, version: int, tmp: Path) -> None:
    for ds in DATASETS:
        stack_versions = json.loads(world.govshare(world.env, "versions", ds, "--json").stdout)
        embedded_versions = json.loads(world.govshare(world.embedded, "versions", ds, "--json").stdout)
        assert [v["version"] for v in stack_versions] == list(range(1, version + 1)), (ds, stack_versions)
        for mine, theirs in zip(stack_versions, embedded_versions, strict=True):
            assert {k: v for k, v in mine.items() if k not in ("created_at", "manifest_sha256")} == \
                   {k: v for k, v in theirs.items() if k not in ("created_at", "manifest_sha256")}, ds
        stacked, embedded = _stack_manifest(world, ds, version), _embedded_manifest(world, ds, version)
        assert stacked["version"] == version and stacked["rows"]["upserts"] + stacked["rows"]["deletes"] > 0, ds
        assert _comparable(stacked) == _comparable(embedded), ds
        assert stacked["run_id"] != embedded["run_id"], "the stack's version came from an Airflow run"
        extra = ("--since", str(version - 1)) if version > 1 else ()
        from_stack = _pulled(world, world.env, ds, tmp / f"stack-{ds}-{version}.parquet", *extra)
        from_embedded = _pulled(world, world.embedded, ds, tmp / f"embedded-{ds}-{version}.parquet", *extra)
        assert from_stack.num_rows > 0, ds
        assert from_stack.schema == from_embedded.schema, ds
        assert from_stack.equals(from_embedded), f"{ds} version {version}: the views differ"


def test_the_stack_publishes_what_the_embedded_default_publishes(world: World, tmp_path: Path) -> None:
    stack = world.stack
    api = stack.login()
    deadline = time.monotonic() + RUN_TIMEOUT

    first = _run_dags(api, deadline)
    for ds in DATASETS:
        world.govshare(world.embedded, "sync", ds)
    _assert_same_publications(world, 1, tmp_path)

    _change_sources(world.sources)
    second = _run_dags(api, time.monotonic() + RUN_TIMEOUT)
    for ds in DATASETS:
        world.govshare(world.embedded, "sync", ds)
    _assert_same_publications(world, 2, tmp_path)
    for ds in DATASETS:  # the second runs read incrementally, from the first ones' watermarks
        assert _stack_manifest(world, ds, 2)["source"]["watermark"]["from"] is not None, ds

    # the work was spread: tasks ran on both Celery workers (each names itself, one machine here)
    ran = [ti for ti in first + second if ti["state"] == "success"]
    parts = [ti for ti in ran if ti["dag_id"] == "sync_population" and ti["task_id"] == "ingest"]
    assert len(parts) >= 2 and all(ti["map_index"] >= 0 for ti in parts), "population's first read ran in parts"
    assert len(_stack_manifest(world, "population", 1)["data_keys"]) == len(_embedded_manifest(world, "population", 1)["data_keys"])
    hosts = {ti["hostname"].split("@", 1)[0] for ti in ran}
    assert hosts == {"worker-1", "worker-2"}, sorted({ti["hostname"] for ti in ran})
    # each worker kept its own store cache; no run's hand-over is left in the store once it finished
    for name in ("worker-1", "worker-2"):
        assert (stack.home / "workers" / name / "store-cache").is_dir(), name
    assert not (stack.home / "store-cache" / "govshare" / "store" / "population" / ".staging").is_dir() or \
        not any((stack.home / "store-cache" / "govshare" / "store" / "population" / ".staging").iterdir())
    s3, bucket, prefix = world.s3()
    left = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/.runs/").get("Contents", [])
    assert left == [], [o["Key"] for o in left]


def test_an_agent_pulls_the_same_view_from_the_stacks_service(world: World, tmp_path: Path) -> None:
    stack_versions = json.loads(world.govshare(world.env, "versions", "population", "--json").stdout)
    assert stack_versions, "the first test publishes"
    url = f"https://127.0.0.1:{world.stack.env['GOVSHARE_SERVE_PORT']}"
    enrolment = tmp_path / "household.enrolment.json"
    world.govshare(world.env, "subscriber", "enroll", "approval-household", "--out", str(enrolment), "--server", url)
    agent = {**world.env, "GOVSHARE_AGENT_HOME": str(tmp_path / "agent")}
    world.govshare(agent, "agent", "init", "--enrollment", str(enrolment))
    for extra in ((), ("--since", "1")):
        mine = tmp_path / f"agent{''.join(extra)}.parquet"
        theirs = tmp_path / f"pull{''.join(extra)}.parquet"
        world.govshare(agent, "agent", "pull", "population", "--purpose", "办件核验", "--case", "BJ-1", "--out", str(mine),
                       *extra)
        world.govshare(world.env, "pull", "population", "--subscriber", "approval-household", "--purpose", "核对",
                       "--out", str(theirs), *extra)
        left, right = pq.read_table(mine), pq.read_table(theirs)
        assert left.num_rows > 0 and left.schema == right.schema
        assert left.equals(right), f"the agent's view differs from govshare pull's {extra}"
    # the agent fetched the version files from the object store by pre-signed URLs; the service
    # wrote each request and delivery to the access log, which verifies
    log = world.stack.home / "audit" / "access-log.jsonl"
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    files = [r for r in records if "/agent/v1/" in str(r.get("path")) and "/files/" in str(r.get("path"))]
    assert files and all(r.get("status") == 307 and r.get("presigned") for r in files), files
    world.govshare(world.env, "audit", "verify")


def test_the_stack_stops_cleanly(world: World) -> None:
    stack = world.stack
    assert stack.stop() == 0, stack.report()
    assert _group_members(stack.groups) == []
    assert not (stack.home / "airflow" / "airflow-stack.pids").exists()
    secrets = stack.home / "airflow" / "scaleout-secrets.env"
    assert secrets.stat().st_mode & 0o777 == 0o600
    names = {line.split("=")[0].removeprefix("export ") for line in secrets.read_text().splitlines()}
    assert names == {"GOVSHARE_REDIS_PASSWORD", "GOVSHARE_S3_ACCESS_KEY_ID", "GOVSHARE_S3_SECRET_ACCESS_KEY"}
