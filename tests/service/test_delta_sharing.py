"""The Delta Sharing plain view, read with the stock ``delta_sharing`` client (in a subprocess,
its TLS trust pointed at the service's CA) and probed over HTTP: it equals ``govshare pull`` of
the same subscriber narrowed to its 无条件共享 fields, per version and as a change feed; no
有条件共享 field ever leaves; credentials, grants and parameters are enforced (401, 403, 404,
400); every request is in the access log, which still verifies.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.catalog import load_catalog
from common.home import Home
from service import filetokens, profiles
from service.delta import SERVICE_KEY
from tests.integration.conftest import CliWorld, build_cli_world

pytestmark = pytest.mark.integration

PLAIN_POPULATION = ("sex_code", "ethnicity_code", "household_division_code", "person_status")
CONDITIONAL_POPULATION = ("id_number", "name", "birth_date", "household_address", "phone")
CLIENT = Path(__file__).with_name("delta_client.py")
T = "/delta-sharing/shares/govshare/schemas/base/tables"


# -- the service over a published home -------------------------------------------------------------


@dataclass(frozen=True)
class ServiceWorld:
    world: CliWorld
    root_dir: Path
    url: str  # the service's base URL, https://127.0.0.1:PORT
    ca: Path  # the CA certificate clients trust

    def __getattr__(self, name: str):  # noqa: ANN204 - the CLI world's attributes and methods
        return getattr(self.world, name)


@pytest.fixture(scope="module")
def service_world(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> Iterator[ServiceWorld]:  # noqa: ANN001
    """A published home (population, legal_entity) and the service over it, in-process over
    HTTPS with the home's local CA (the certificate `govshare init` made)."""
    import uvicorn

    from service.app import create_app
    from service.context import ServiceContext
    from service.tls import tls_material

    root = tmp_path_factory.mktemp("delta-world")
    world = build_cli_world(root, demo_sources)
    home = Home(world.home)
    tls = tls_material(home)
    ca = root / "ca.pem"
    ca.write_bytes(tls.ca_pem)
    app = create_app(ServiceContext.open(load_catalog(world.catalog), home))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                           ssl_certfile=str(tls.cert_path), ssl_keyfile=str(tls.key_path)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield ServiceWorld(world, root, f"https://127.0.0.1:{port}", ca)
    server.should_exit = True
    thread.join(timeout=10)


# -- the world: population v1..v2, legal_entity v1..v3 with updates and deletes ----------------------


def _mutate(db: Path, sql: list[tuple[str, tuple]]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for statement, params in sql:
            assert conn.execute(statement, params).rowcount == 1, statement
    conn.close()


def _pull(world, name: str, dataset: str, *extra: str) -> pa.Table:
    out = world.root_dir / f"{name}.parquet"
    done = world.run("pull", dataset, "--subscriber", "approval-general", "--purpose", "核验", "--out", str(out), *extra)
    assert done.returncode == 0, done.stderr
    return pq.read_table(out)


@pytest.fixture(scope="module")
def world(service_world):
    """The published world and the pulls taken as it grew (the truth the plain view must match)."""
    w = service_world
    le_db = Path(w.env["AIRFLOW_CONN_LEGAL_ENTITY_DB"].removeprefix("sqlite:///"))
    pop_db = Path(w.env["AIRFLOW_CONN_POPULATION_DB"].removeprefix("sqlite:///"))
    pulls: dict[str, pa.Table] = {"le_v1": _pull(w, "le_v1", "legal_entity")}
    usccs = sorted(pulls["le_v1"].column("uscc").to_pylist())
    now = "datetime('now', '+8 hours')"
    where = "WHERE upper(trim(uscc)) = ?"
    _mutate(le_db, [(f"UPDATE legal_entity SET entity_name = '新名称一有限公司', updated_at = {now} {where}", (usccs[0],)),
                    (f"UPDATE legal_entity SET address = '新地址一号', updated_at = {now} {where}", (usccs[1],)),
                    (f"UPDATE legal_entity SET is_deleted = 1, updated_at = {now} {where}", (usccs[2],))])
    assert w.run("sync", "legal_entity").returncode == 0
    pulls["le_since1"] = _pull(w, "le_since1", "legal_entity", "--since", "1")
    later = "datetime('now', '+8 hours', '+1 second')"
    _mutate(le_db, [(f"UPDATE legal_entity SET entity_name = '新名称二有限公司', updated_at = {later} {where}", (usccs[0],)),
                    (f"UPDATE legal_entity SET is_deleted = 1, updated_at = {later} {where}", (usccs[3],))])
    assert w.run("sync", "legal_entity").returncode == 0
    pulls["le_since2"] = _pull(w, "le_since2", "legal_entity", "--since", "2")
    pulls["le_v2"] = _pull(w, "le_v2", "legal_entity", "--version", "2")
    pulls["le_v3"] = _pull(w, "le_v3", "legal_entity")
    pulls["pop_v1"] = _pull(w, "pop_v1", "population")
    ids = sorted(w.id_numbers)
    pw = "WHERE upper(trim(id_number)) = ?"
    swap = "CASE ethnicity_code WHEN '01' THEN '02' ELSE '01' END"
    _mutate(pop_db, [(f"UPDATE population_person SET ethnicity_code = {swap}, updated_at = {now} {pw}", (ids[0],)),
                     (f"UPDATE population_person SET is_deleted = 1, updated_at = {now} {pw}", (ids[1],))])
    assert w.run("sync", "population").returncode == 0
    pulls["pop_since1"] = _pull(w, "pop_since1", "population", "--since", "1")
    pulls["pop_v2"] = _pull(w, "pop_v2", "population")
    assert {r["_change_type"] for r in pulls["le_since1"].to_pylist()} == {"upsert", "delete"}
    return w, pulls


@pytest.fixture(scope="module")
def general(world) -> dict[str, Any]:
    """A profile of approval-general, made with the CLI."""
    w, _ = world
    out = w.root_dir / "general.share"
    done = w.run("subscriber", "profile", "approval-general", "--purpose", "一网通办核验", "--out", str(out),
                 "--server", w.url)
    assert done.returncode == 0, done.stderr
    w.assert_clean(done)
    return json.loads(out.read_text(encoding="utf-8")) | {"path": out}


def _token(w, subscriber: str, days: int = 1, now: datetime | None = None) -> str:
    return profiles.issue(Home(w.home), subscriber, "测试", days, now=now).token


def _http(w) -> httpx.Client:
    return httpx.Client(base_url=w.url, verify=ssl.create_default_context(cafile=str(w.ca)), timeout=30)


def _client(w, profile: Path, ops: dict[str, dict]) -> dict[str, Any]:
    spec = w.root_dir / "spec.json"
    spec.write_text(json.dumps({"profile": str(profile), "dir": str(w.root_dir), "ops": ops}), encoding="utf-8")
    env = {**w.env, "REQUESTS_CA_BUNDLE": str(w.ca), "SSL_CERT_FILE": str(w.ca)}  # requests; aiohttp
    done = subprocess.run([sys.executable, str(CLIENT), str(spec)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rows(table: pa.Table, columns: list[str]) -> list[tuple]:
    return sorted(tuple("" if v is None else str(v) for v in r.values()) for r in table.select(columns).to_pylist())


def _upsert(change: str) -> str:
    return {"insert": "upsert", "update_postimage": "upsert"}.get(change, change)


@pytest.fixture(scope="module")
def read(world, general) -> dict[str, Any]:
    """Everything the stock client reads, in one subprocess."""
    w, _ = world
    ops = {
        "tables": {"kind": "tables"},
        "le_version": {"kind": "version", "table": "legal_entity"},
        "le_v1": {"kind": "load", "table": "legal_entity", "version": 1},
        "le_v2": {"kind": "load", "table": "legal_entity", "version": 2},
        "le_v3": {"kind": "load", "table": "legal_entity"},
        "le_c1": {"kind": "changes", "table": "legal_entity", "start": 1, "end": 1},
        "le_c2": {"kind": "changes", "table": "legal_entity", "start": 2, "end": 2},
        "le_c23": {"kind": "changes", "table": "legal_entity", "start": 2},
        "pop_v1": {"kind": "load", "table": "population", "version": 1},
        "pop_v2": {"kind": "load", "table": "population"},
        "pop_c2": {"kind": "changes", "table": "population", "start": 2, "end": 2},
    }
    got = _client(w, general["path"], ops)
    for name, result in got.items():
        assert "error" not in result, (name, result)
    return {k: pq.read_table(v["path"]) if "path" in v else v for k, v in got.items()}


# -- what the stock client reads ------------------------------------------------------------------


def test_the_client_lists_the_granted_published_tables_and_the_version(read):
    assert read["tables"]["tables"] == ["legal_entity", "population"]  # e_license: granted, never published
    assert read["le_version"]["version"] == 3


def test_snapshots_equal_pull_narrowed_to_the_unconditional_fields(world, read):
    _, pulls = world
    ds = load_catalog(world[0].catalog).dataset("legal_entity")
    le_fields = [f.name for f in ds.fields if f.sharing == "unconditional"]
    for version in ("le_v1", "le_v2", "le_v3"):
        assert read[version].column_names == [*le_fields, "_disputed"]
        cols = [*le_fields, "_disputed"]
        assert _rows(read[version], cols) == _rows(pulls[version], cols), version
    for version in ("pop_v1", "pop_v2"):
        assert read[version].column_names == [*PLAIN_POPULATION, "_disputed"]
        cols = [*PLAIN_POPULATION, "_disputed"]
        assert _rows(read[version], cols) == _rows(pulls[version], cols), version
    assert read["pop_v2"].num_rows == read["pop_v1"].num_rows - 1


def test_the_change_feed_equals_pull_since(world, read):
    w, pulls = world
    le_fields = [f.name for f in load_catalog(w.catalog).dataset("legal_entity").fields if f.sharing == "unconditional"]
    cols = [*le_fields, "_disputed", "_change_type", "_commit_version"]
    for got, want in (("le_c2", [pulls["le_since1"]]), ("le_c23", [pulls["le_since1"], pulls["le_since2"]])):
        feed = read[got]
        assert {"_change_type", "_commit_version", "_commit_timestamp"} <= set(feed.column_names)
        assert set(feed.column("_change_type").to_pylist()) <= {"insert", "update_postimage", "delete"}
        mapped = feed.set_column(feed.column_names.index("_change_type"), "_change_type",
                                 pa.array([_upsert(c) for c in feed.column("_change_type").to_pylist()]))
        assert _rows(mapped, cols) == sorted(r for t in want for r in _rows(t, cols)), got
    changes2 = {r["uscc"]: r["_change_type"] for r in read["le_c2"].to_pylist()}
    assert sorted(changes2.values()) == ["delete", "update_postimage", "update_postimage"]
    assert set(read["le_c1"].column("_change_type").to_pylist()) == {"insert"}
    assert read["le_c1"].num_rows == read["le_v1"].num_rows
    published = json.loads((w.home / "store" / "legal_entity" / "versions" / "00000002" / "manifest.json").read_text())
    stamp = int(datetime.fromisoformat(published["created_at"]).timestamp() * 1000)
    assert set(read["le_c2"].column("_commit_timestamp").to_pylist()) == {stamp}

    pop = read["pop_c2"]
    assert sorted(pop.column("_change_type").to_pylist()) == ["delete", "update_postimage"]
    mapped = pop.set_column(pop.column_names.index("_change_type"), "_change_type",
                            pa.array([_upsert(c) for c in pop.column("_change_type").to_pylist()]))
    pcols = [*PLAIN_POPULATION, "_disputed", "_change_type", "_commit_version"]
    assert _rows(mapped, pcols) == _rows(pulls["pop_since1"], pcols)


def test_no_conditional_field_is_in_any_file_served(world, general, read):
    w, _ = world
    headers = {"Authorization": f"Bearer {general['bearerToken']}"}
    with _http(w) as http:
        answers = [http.post(f"{T}/population/query", headers=headers, json={}),
                   http.post(f"{T}/population/query", headers=headers, json={"version": 1}),
                   http.get(f"{T}/population/changes", headers=headers, params={"startingVersion": 1})]
        urls = []
        for answer in answers:
            assert answer.status_code == 200, answer.text
            for line in answer.text.splitlines():
                doc = json.loads(line)
                action = doc.get("file") or doc.get("cdf") or doc.get("add") or doc.get("remove")
                if action:
                    urls.append(action["url"])
                if "metaData" in doc:
                    schema = json.loads(doc["metaData"]["schemaString"])
                    assert not {f["name"] for f in schema["fields"]} & set(CONDITIONAL_POPULATION)
        assert len(urls) == 4
        for url in urls:
            got = http.get(url)
            assert got.status_code == 200
            table = pq.read_table(io.BytesIO(got.content))
            assert set(table.column_names) <= {*PLAIN_POPULATION, "_disputed", "_change_type"}
            values = {str(v) for c in table.columns for v in c.to_pylist()}
            assert not values & set(w.id_numbers)
    for name in ("pop_v1", "pop_v2", "pop_c2"):
        assert not set(read[name].column_names) & set(CONDITIONAL_POPULATION)


def test_the_cache_is_private_and_reused(world, read):
    w, _ = world
    cache = w.home / "service" / "cache"
    files = sorted(cache.rglob("*.parquet"))
    assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    assert all(p.stat().st_mode & 0o777 == 0o700 for p in [cache, *(d for d in cache.rglob("*") if d.is_dir())])
    assert not list(cache.rglob("*.tmp"))
    before = {p: p.stat().st_mtime_ns for p in files}
    _client(w, w.root_dir / "general.share", {"again": {"kind": "load", "table": "population", "version": 1}})
    assert all(p.stat().st_mtime_ns == m for p, m in before.items())


# -- credentials, grants, parameters ---------------------------------------------------------------


def test_unknown_missing_and_expired_tokens_are_401(world):
    w, _ = world
    expired = _token(w, "approval-general", days=1, now=datetime.now(timezone.utc) - timedelta(days=2))
    with _http(w) as http:
        for headers in ({}, {"Authorization": "Bearer " + "A" * 43}, {"Authorization": "Basic abc"},
                        {"Authorization": f"Bearer {expired}"}):
            got = http.get("/delta-sharing/shares", headers=headers)
            assert got.status_code == 401, headers
            assert got.json()["errorCode"] == "UNAUTHENTICATED"
        got = http.get("/delta-sharing/shares", headers={"Authorization": f"Bearer {expired}"})
        assert "expired" in got.json()["message"]
        revoked = _token(w, "sub-revoked")  # credentials of a revoked subscriber: refused as such
        got = http.get("/delta-sharing/shares", headers={"Authorization": f"Bearer {revoked}"})
        assert got.status_code == 401 and "revoked" in got.json()["message"]


def test_the_stock_client_is_refused_with_an_expired_profile(world):
    w, _ = world
    expired = _token(w, "approval-general", days=1, now=datetime.now(timezone.utc) - timedelta(days=2))
    profile = w.root_dir / "expired.share"
    profile.write_text(json.dumps({"shareCredentialsVersion": 1, "endpoint": f"{w.url}/delta-sharing",
                                   "bearerToken": expired}), encoding="utf-8")
    got = _client(w, profile, {"p": {"kind": "load", "table": "population"}})
    assert "401" in got["p"]["error"]


def test_outside_the_grant_or_not_in_force_is_403(world):
    w, _ = world
    household = _token(w, "approval-household")  # population only
    suspended = _token(w, "sub-suspended")
    expired_approval = _token(w, "sub-approval-expired")  # its population grant needs an approval
    with _http(w) as http:
        def status(token: str, table: str) -> int:
            return http.post(f"{T}/{table}/query", headers={"Authorization": f"Bearer {token}"}, json={}).status_code

        assert status(household, "legal_entity") == 403
        assert status(household, "population") == 200  # its plain view: the unconditional fields only
        assert status(suspended, "population") == 403
        assert status(expired_approval, "population") == 403
        assert status(expired_approval, "legal_entity") == 200  # no approval needed there
        got = http.get(f"{T}/legal_entity/metadata", headers={"Authorization": f"Bearer {household}"})
        assert got.status_code == 403 and got.json()["errorCode"] == "PERMISSION_DENIED"
        tables = http.get("/delta-sharing/shares/govshare/all-tables", headers={"Authorization": f"Bearer {household}"})
        assert [t["name"] for t in tables.json()["items"]] == ["population"]


def test_unknown_share_schema_or_table_is_404(world, general):
    w, _ = world
    headers = {"Authorization": f"Bearer {general['bearerToken']}"}
    with _http(w) as http:
        for path in ("/delta-sharing/shares/other", "/delta-sharing/shares/other/schemas",
                     "/delta-sharing/shares/govshare/schemas/other/tables", f"{T}/nosuch/metadata",
                     f"{T}/e_license/version"):
            got = http.get(path, headers=headers)
            assert got.status_code == 404, path
            assert got.json()["errorCode"] == "RESOURCE_DOES_NOT_EXIST"
        assert http.get("/delta-sharing/shares/GovShare/schemas/BASE/tables/Population/version",
                        headers=headers).headers["delta-table-version"] == "2"  # names are case-insensitive


def test_bad_parameters_are_400(world, general):
    w, _ = world
    headers = {"Authorization": f"Bearer {general['bearerToken']}"}
    with _http(w) as http:
        q = f"{T}/legal_entity/query"
        c = f"{T}/legal_entity/changes"
        for got in (http.post(q, headers=headers, content=b"not json"),
                    http.post(q, headers=headers, content=b"[1]"),
                    http.post(q, headers=headers, json={"version": 9}),
                    http.post(q, headers=headers, json={"version": "x"}),
                    http.post(q, headers=headers, json={"version": True}),
                    http.post(q, headers=headers, json={"startingVersion": 1}),
                    http.post(q, headers=headers, json={"timestamp": "yesterday"}),
                    http.post(q, headers=headers, json={"timestamp": "2000-01-01T00:00:00Z"}),
                    http.get(c, headers=headers),
                    http.get(c, headers=headers, params={"startingVersion": "0"}),
                    http.get(c, headers=headers, params={"startingVersion": "3", "endingVersion": "2"}),
                    http.get(c, headers=headers, params={"startingVersion": "1",
                                                         "startingTimestamp": "2026-01-01T00:00:00Z"}),
                    http.get(f"{T}/legal_entity/metadata", headers=headers, params={"version": "-1"}),
                    http.get("/delta-sharing/shares", headers=headers, params={"maxResults": "many"})):
            assert got.status_code == 400, (got.request.url, got.text)
            assert got.json()["errorCode"] == "INVALID_PARAMETER_VALUE"
        assert http.post(q, headers=headers, content=b"x" * 70_000).status_code == 413


def test_timestamps_select_versions(world, general):
    w, _ = world
    headers = {"Authorization": f"Bearer {general['bearerToken']}"}
    manifest = json.loads((w.home / "store" / "legal_entity" / "versions" / "00000002" / "manifest.json").read_text())
    at = datetime.fromisoformat(manifest["created_at"]).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with _http(w) as http:
        got = http.get(f"{T}/legal_entity/version", headers=headers, params={"startingTimestamp": at})
        assert got.status_code == 200 and got.headers["delta-table-version"] == "2"
        got = http.post(f"{T}/legal_entity/query", headers=headers, json={"timestamp": at})
        assert got.status_code == 200 and got.headers["delta-table-version"] in ("2", "3")


def test_file_urls_tampered_expired_or_another_subscribers_are_401(world, general):
    w, _ = world
    headers = {"Authorization": f"Bearer {general['bearerToken']}"}
    with _http(w) as http:
        answer = http.post(f"{T}/legal_entity/query", headers=headers, json={})
        url = json.loads(answer.text.splitlines()[-1])["file"]["url"]
        assert http.get(url).status_code == 200  # no bearer needed, as for a presigned URL
        body, mac = url.rsplit("/", 1)[1].split(".")
        payload = json.loads(filetokens._unb64(body))
        forged = filetokens._b64(json.dumps({**payload, "s": "approval-household"}).encode())
        flipped = url.replace(f".{mac}", f".{'B' if mac.startswith('A') else 'A'}{mac[1:]}")
        for bad in (flipped, url.replace(body, forged), url + "x"):
            got = http.get(bad)
            assert got.status_code == 401 and got.json()["errorCode"] == "UNAUTHENTICATED"
        from keys.keystore import Keystore

        key = Keystore(Home(w.home).keystore).hmac_key(SERVICE_KEY)
        old, _ = filetokens.issue(key, "approval-general", payload["f"], now=datetime.now().timestamp() - 3600)
        got = http.get(url.replace(url.rsplit("/", 1)[1], old))
        assert got.status_code == 401 and "expired" in got.json()["message"]
        other = _token(w, "approval-household")
        assert http.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 401


def test_every_request_is_in_the_access_log_and_it_verifies(world, general, read):
    w, _ = world
    with _http(w) as http:
        marker = http.get("/delta-sharing/shares/govshare/schemas",
                          headers={"Authorization": f"Bearer {general['bearerToken']}"}, params={"maxResults": "1"})
        assert marker.status_code == 200
    log = w.access_log()
    requests = [r for r in log if r["event"] == "request" and r["path"].startswith("/delta-sharing")]
    assert requests[-1]["path"] == "/delta-sharing/shares/govshare/schemas"
    assert requests[-1]["subscriber"] == "approval-general" and requests[-1]["purpose"] == "一网通办核验"
    assert all(r["channel"] == "delta-sharing" for r in requests)
    files = [r for r in requests if r["path"].startswith("/delta-sharing/files/")]
    assert files and all(r["subscriber"] for r in files if r["status"] < 400)
    assert any(r["status"] == 401 for r in files)
    # a file URL's token is a credential while it lasts: the log keeps only a digest of it
    assert all(re.fullmatch(r"/delta-sharing/files/sha256:[0-9a-f]{16}", r["path"]) for r in files)
    queries = [r for r in requests if r["path"].endswith(("/query", "/changes")) and r["status"] == 200]
    assert queries and all(r["subscriber"] and r.get("delivery") and r["fields"] and "rows" in r for r in queries)
    deliveries = {r["seq"]: r for r in log if r["event"] == "delivery" and r.get("channel") == "delta-sharing"}
    assert {q["delivery"] for q in queries} <= set(deliveries)
    assert all(d["outcome"] == "released" and d["purpose"] for d in deliveries.values())
    assert all(not set(d["fields"]) & set(CONDITIONAL_POPULATION) for d in deliveries.values())
    denied = [r for r in requests if r["status"] in (401, 403)]
    assert denied and all(r.get("reason") for r in denied)
    done = w.run("audit", "verify")
    assert done.returncode == 0, done.stderr
    assert "started, not confirmed" not in done.stdout


# -- the profile command ---------------------------------------------------------------------------


def test_the_profile_file(world, general):
    w, _ = world
    path: Path = general["path"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert general["shareCredentialsVersion"] == 1 and general["endpoint"] == f"{w.url}/delta-sharing"
    assert len(general["bearerToken"]) >= 43 and general["expirationTime"].endswith("Z")
    assert Path(f"{path}.ca.pem").read_bytes() == w.ca.read_bytes()
    state = (w.home / "service" / "state.db").read_bytes()
    assert general["bearerToken"].encode() not in state


@pytest.mark.parametrize(("args", "code"), [
    (["nobody", "--purpose", "核验"], 4),
    (["approval-general", "--purpose", ""], 4),
    (["approval-general", "--purpose", "长" * 201], 4),
    (["sub-revoked", "--purpose", "核验"], 4),
    (["approval-general", "--purpose", "核验", "--days", "0"], 2),
    (["approval-general", "--purpose", "核验", "--server", "http://example.org"], 2),
])
def test_profile_refusals(world, args, code):
    w, _ = world
    out = w.root_dir / "refused.share"
    done = w.run("subscriber", "profile", *args, "--out", str(out))
    assert done.returncode == code, done.stderr
    w.assert_clean(done)
    assert not out.exists()
