"""The sharing store on S3-compatible object storage (GOVSHARE_STORE=s3://bucket/prefix), against
a moto S3 server on loopback, through the real CLI: the same views as a local store, versions
visible only by their head markers, a writer killed before its marker leaves nothing visible, and
two publishers of one version number cannot both win."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.dags.test_airflow_stack import _free_port
from tests.integration.conftest import CliWorld, build_cli_world

pytestmark = pytest.mark.integration
BUCKET = "govshare-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "govshare-test", "AWS_SECRET_ACCESS_KEY": "govshare-test-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server on loopback with one bucket; the environment that reaches it."""
    import boto3

    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, log.read_text()
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_boto(env)).create_bucket(Bucket=BUCKET)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def _boto(env: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
            "region_name": env["AWS_DEFAULT_REGION"]}


def _s3(env: dict[str, str]):  # noqa: ANN202
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], **_boto(env))


def _keys(env: dict[str, str], prefix: str) -> list[str]:
    pages = _s3(env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory, demo_sources, s3_env):  # noqa: ANN001
    """The same sources published twice: to a local store and to the object store."""
    local = build_cli_world(tmp_path_factory.mktemp("local-store"), demo_sources)
    remote = build_cli_world(tmp_path_factory.mktemp("s3-store"), demo_sources,
                             {**s3_env, "GOVSHARE_STORE": f"s3://{BUCKET}/bureau-a"})
    return local, remote


def _pull(world: CliWorld, out: Path, *extra: str) -> list[dict]:
    done = world.run("pull", "population", "--subscriber", "approval-household", "--purpose", "户籍迁移审批",
                     "--out", str(out), *extra)
    assert done.returncode == 0, done.stderr
    world.assert_clean(done)
    table = pq.read_table(out)
    return sorted(table.drop_columns([c for c in table.column_names if c.startswith("_")]).to_pylist(),
                  key=lambda r: r["id_number"])


def test_the_object_store_holds_the_versions_and_serves_the_same_view(worlds, s3_env, tmp_path: Path) -> None:
    local, remote = worlds
    assert not (remote.home / "store").exists(), "an s3 store must not be written to the home's store folder"
    heads = _keys(s3_env, "bureau-a/population/heads/")
    assert heads == ["bureau-a/population/heads/00000001.json"]
    head = json.loads(_s3(s3_env).get_object(Bucket=BUCKET, Key=heads[0])["Body"].read())
    assert {"manifest.json", "manifest.sig", "upserts.parquet"} <= set(head["files"])
    for name, size in head["files"].items():
        assert _s3(s3_env).head_object(Bucket=BUCKET, Key=f"{head['objects']}/{name}")["ContentLength"] == size
    same_local = _pull(local, tmp_path / "local.parquet")
    from_s3 = _pull(remote, tmp_path / "s3.parquet")
    assert from_s3 == same_local and len(from_s3) > 0
    # a reader with an empty cache gets the versions from the object store alone
    shutil.rmtree(remote.home / "store-cache")
    assert _pull(remote, tmp_path / "again.parquet") == same_local
    assert (remote.home / "store-cache" / BUCKET / "bureau-a" / "population" / "versions" / "00000001").is_dir()
    verified = remote.run("audit", "verify")
    assert verified.returncode == 0, verified.stderr


def test_a_writer_killed_before_its_head_marker_leaves_no_visible_version(worlds, s3_env, tmp_path: Path) -> None:
    _, remote = worlds
    before = _keys(s3_env, "bureau-a/legal_entity/heads/")
    # a changed row, so the next sync has a version to publish
    src = Path(remote.env["AIRFLOW_CONN_LEGAL_ENTITY_DB"].removeprefix("sqlite:///"))
    import sqlite3

    with sqlite3.connect(src) as db:
        db.execute("UPDATE legal_entity SET address = address || '甲', updated_at = datetime('now', '+8 hours') WHERE rowid IN (SELECT rowid FROM legal_entity WHERE is_deleted = 0 LIMIT 3)")
    killed = remote.run("sync", "legal_entity", env={"GOVSHARE_FAULT": "manifest"})
    assert killed.returncode == -9, killed.stderr
    objects = _keys(s3_env, "bureau-a/legal_entity/objects/")
    assert any(k.endswith("/manifest.json") and "/00000002-" in k for k in objects), "the killed writer uploaded its files"
    assert _keys(s3_env, "bureau-a/legal_entity/heads/") == before, "no head marker: the version is not visible"
    # a fresh reader sees the last complete version only
    shutil.rmtree(remote.home / "store-cache")
    listed = remote.run("versions", "legal_entity")
    assert listed.returncode == 0, listed.stderr
    assert "2" not in [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.split()]
    kept = remote.run("sync", "legal_entity", env={"GOVSHARE_FAULT": "manifest"})  # killed again, within the TTL
    assert kept.returncode == -9, kept.stderr
    dead = [k for k in _keys(s3_env, "bureau-a/legal_entity/objects/") if "/00000002-" in k]
    assert len(dead) > len([k for k in objects if "/00000002-" in k]), "a recent writer's uploads are left alone"
    # past the lease's TTL the killed writers' uploads are removed by the next run that holds the lease
    finished = remote.run("sync", "legal_entity", env={"GOVSHARE_SYNC_LEASE_TTL": "0"})
    assert finished.returncode == 0, finished.stderr
    assert _keys(s3_env, "bureau-a/legal_entity/heads/") == before + ["bureau-a/legal_entity/heads/00000002.json"]
    head = json.loads(_s3(s3_env).get_object(Bucket=BUCKET, Key="bureau-a/legal_entity/heads/00000002.json")["Body"].read())
    left = {k.rsplit("/", 1)[0] for k in _keys(s3_env, "bureau-a/legal_entity/objects/") if "/00000002-" in k}
    assert left == {head["objects"]}, "only the published attempt's objects remain"
    assert remote.run("audit", "verify").returncode == 0


def test_two_publishers_of_one_version_number_cannot_both_win(worlds, s3_env, tmp_path: Path, monkeypatch) -> None:
    from common.errors import PublishConflict
    from sharing.store import SharingStore

    _, remote = worlds
    for key, value in {**s3_env, "GOVSHARE_STORE": f"s3://{BUCKET}/bureau-a", "GOVSHARE_HOME": str(remote.home)}.items():
        monkeypatch.setenv(key, value)
    from common.home import home

    cache = home().store
    first, second = SharingStore(cache, "e_license"), SharingStore(cache, "e_license")
    assert first.remote is not None
    latest = first.latest() or 0
    staged_a, staged_b = first.stage("run-a"), second.stage("run-b")
    (staged_a / "upserts.parquet").write_bytes(b"a")
    (staged_b / "upserts.parquet").write_bytes(b"b")
    # both decided on the same version number before either wrote its marker
    real_latest = SharingStore.latest
    monkeypatch.setattr(SharingStore, "latest", lambda self: latest)
    first.commit(staged_a, latest + 1, b'{"a": 1}', {"sig": "a"})
    with pytest.raises(PublishConflict, match="another publisher was first"):
        second.commit(staged_b, latest + 1, b'{"b": 1}', {"sig": "b"})
    monkeypatch.setattr(SharingStore, "latest", real_latest)
    head = first.head(latest + 1)
    assert head is not None and "run-a" in head["objects"]
    # remove the test's version again, so the other tests' chains stay whole
    _s3(s3_env).delete_object(Bucket=BUCKET, Key=f"bureau-a/e_license/heads/{latest + 1:08d}.json")
    shutil.rmtree(first.version_dir(latest + 1), ignore_errors=True)


@pytest.mark.parametrize("value", ["s3://", "s3://UPPER/x", "gs://bucket/x", "s3:/bucket", "s3://b..b/x",
                                   "s3://bucket/../x"])
def test_a_bad_store_url_is_a_usage_error(worlds, value: str) -> None:
    _, remote = worlds
    done = remote.run("versions", "population", env={"GOVSHARE_STORE": value})
    assert done.returncode == 2, (value, done.stderr)
    assert "GOVSHARE_STORE" in done.stderr and "Traceback" not in done.stderr


def test_an_unreachable_object_store_is_a_temporary_failure(worlds) -> None:
    _, remote = worlds
    done = remote.run("versions", "population", env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}",
                                                      "AWS_MAX_ATTEMPTS": "1"})
    assert done.returncode == 75, done.stderr
    assert "object store" in done.stderr and "Traceback" not in done.stderr


def _store_connection(s3_env: dict[str, str], endpoint: str) -> str:
    return json.dumps({"conn_type": "aws", "login": s3_env["AWS_ACCESS_KEY_ID"], "password": s3_env["AWS_SECRET_ACCESS_KEY"],
                       "extra": {"endpoint_url": endpoint, "region_name": s3_env["AWS_DEFAULT_REGION"]}})


def test_the_stores_endpoint_and_keys_come_from_an_airflow_connection(worlds, s3_env, tmp_path: Path) -> None:
    local, remote = worlds
    # the environment points elsewhere, with other keys: the connection alone reaches the store
    wrong = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}", "AWS_ACCESS_KEY_ID": "nobody",
             "AWS_SECRET_ACCESS_KEY": "nothing", "AWS_MAX_ATTEMPTS": "1",
             "GOVSHARE_STORE_CONNECTION": "bureau_store",
             "AIRFLOW_CONN_BUREAU_STORE": _store_connection(s3_env, s3_env["AWS_ENDPOINT_URL"])}
    shutil.rmtree(remote.home / "store-cache", ignore_errors=True)  # every version from the store itself
    done = remote.run("pull", "population", "--subscriber", "approval-household", "--purpose", "户籍迁移审批",
                      "--out", str(tmp_path / "via-connection.parquet"), env=wrong)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "via-connection.parquet")
    assert table.num_rows > 0
    # a connection to an endpoint where nothing listens is a temporary failure that names the store
    dead = {**wrong, "AIRFLOW_CONN_BUREAU_STORE": _store_connection(s3_env, f"http://127.0.0.1:{_free_port()}")}
    shutil.rmtree(remote.home / "store-cache", ignore_errors=True)
    failed = remote.run("versions", "population", env=dead)
    assert failed.returncode == 75, failed.stderr
    assert "object store" in failed.stderr and "Traceback" not in failed.stderr
    # a connection of the wrong type is a usage error naming it, never showing its secret
    other = {**wrong, "AIRFLOW_CONN_BUREAU_STORE": json.dumps({"conn_type": "postgres", "login": "u",
                                                               "password": s3_env["AWS_SECRET_ACCESS_KEY"]})}
    refused = remote.run("versions", "population", env=other)
    assert refused.returncode == 2, refused.stderr
    assert "bureau_store" in refused.stderr and s3_env["AWS_SECRET_ACCESS_KEY"] not in refused.stderr


def test_a_local_store_folder_is_honoured(demo_sources, tmp_path: Path) -> None:  # noqa: ANN001
    world = build_cli_world(tmp_path, demo_sources, {"GOVSHARE_STORE": str(tmp_path / "elsewhere")})
    assert (tmp_path / "elsewhere" / "population" / "versions" / "00000001" / "manifest.json").is_file()
    assert not (world.home / "store").exists()
    assert os.listdir(tmp_path / "elsewhere")


@pytest.fixture(scope="module")
def s3_parties(tmp_path_factory: pytest.TempPathFactory, demo_sources, s3_env):  # noqa: ANN001, ANN201
    from tests.agent.test_agent import two_parties

    yield from two_parties(tmp_path_factory.mktemp("s3-parties"), demo_sources,
                           {**s3_env, "GOVSHARE_STORE": f"s3://{BUCKET}/bureau-b"})


def test_an_agent_pulls_the_same_view_from_a_service_on_the_object_store(s3_parties, s3_env, tmp_path: Path) -> None:
    from tests.agent.test_agent import HOUSEHOLD

    s3_parties.same_view(HOUSEHOLD, "household", "population", tmp_path)
    s3_parties.change_population()
    assert _keys(s3_env, "bureau-b/population/heads/")[-1].endswith("/00000002.json")
    # the service's cache loses everything: version 2 and its predecessor come from the object store
    shutil.rmtree(s3_parties.world.home / "store-cache")
    s3_parties.same_view(HOUSEHOLD, "household", "population", tmp_path, "--since", "1")
    s3_parties.same_view(HOUSEHOLD, "household", "population", tmp_path / "full")
    assert (s3_parties.world.home / "store-cache" / BUCKET / "bureau-b" / "population" / "versions" / "00000002").is_dir()


def test_with_presigned_urls_the_agent_fetches_files_from_the_object_store(s3_parties, s3_env, tmp_path: Path) -> None:
    from tests.agent.test_agent import HOUSEHOLD, Parties
    from tests.service.conftest import start_service

    world = s3_parties.world
    served = start_service({**world.env, "GOVSHARE_PRESIGN_SECONDS": "60"})
    try:
        p = Parties(world, served, tmp_path)
        p.ok("agent", "init", "--enrollment", str(p.enrol(HOUSEHOLD, "presigned")), agent="presigned")
        before = len(world.access_log())
        p.same_view(HOUSEHOLD, "presigned", "population", tmp_path)
        p.same_view(HOUSEHOLD, "presigned", "population", tmp_path, "--since", "1")
    finally:
        assert served.stop() == 0
    records = world.access_log()[before:]
    files = [r for r in records if "/files/" in str(r.get("path", ""))]
    assert files and all(r.get("presigned") == 60 and r.get("status") == 307 for r in files), files
    assert any(r.get("event") == "delivery" for r in records), "the release is recorded as ever"


@pytest.mark.parametrize("value", ["60s", "-1", "901", "yes"])
def test_a_bad_presign_setting_stops_the_service_at_start(worlds, value: str) -> None:
    _, remote = worlds
    done = remote.run("serve", "--port", "0", env={"GOVSHARE_PRESIGN_SECONDS": value})
    assert done.returncode == 2, done.stderr
    assert "GOVSHARE_PRESIGN_SECONDS" in done.stderr and "Traceback" not in done.stderr


def test_the_access_logs_checkpoints_are_copied_to_the_object_store_and_verified(worlds, s3_env) -> None:
    _, remote = worlds
    copies = _keys(s3_env, "bureau-a/.log/checkpoints/")
    assert copies, "publishing signs a checkpoint, and its copy goes to the store"
    first = json.loads(_s3(s3_env).get_object(Bucket=BUCKET, Key=copies[0])["Body"].read())
    assert {"size", "root", "note", "key_id", "time"} <= set(first) and first["note"].count("\n") >= 3
    verified = remote.run("audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"{len(copies)} of them the copies on the object store" in verified.stdout
    # a copy altered on the store no longer verifies: exit 3, naming it
    altered = dict(first, size=first["size"] + 1)
    key = copies[0].rsplit("/", 1)[0] + "/999999999999-altered.json"
    _s3(s3_env).put_object(Bucket=BUCKET, Key=key, Body=json.dumps(altered).encode())
    try:
        failed = remote.run("audit", "verify")
        assert failed.returncode == 3, failed.stderr
        assert "999999999999-altered.json" in failed.stderr and "Traceback" not in failed.stderr
    finally:
        _s3(s3_env).delete_object(Bucket=BUCKET, Key=key)
