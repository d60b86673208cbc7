"""Keys over time through the CLI: listing (never material), rotation without rewriting anything,
revocation of a subscriber taking effect from the next request, for its agent and its profile."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import build_cli_world
from tests.service.conftest import start_service

pytestmark = pytest.mark.integration

PULL = ("pull", "population", "--subscriber", "approval-household", "--purpose", "核验")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, demo_sources):  # noqa: ANN001, ANN201
    return build_cli_world(tmp_path_factory.mktemp("key-lifecycle"), demo_sources)


def _ok(world, *args: str, env: dict[str, str] | None = None):  # noqa: ANN001, ANN202
    done = world.run(*args, env=env)
    assert done.returncode == 0, (args, done.stderr)
    world.assert_clean(done)
    return done


def test_keys_list_names_every_key_and_the_root_key_never_material(world) -> None:  # noqa: ANN001
    listed = json.loads(_ok(world, "keys", "list", "--json").stdout)
    assert listed["root_key"].startswith("file:")
    ids = {k["key_id"] for k in listed["keys"]}
    assert {"publisher.v1", "population.conditional.v1", "govshare.audit.v1"} <= ids
    assert all(k["status"] == "active" for k in listed["keys"])
    text = _ok(world, "keys", "list").stdout
    from keys.keystore import Keystore

    keystore = Keystore(world.home / "keystore")
    for key_id in ("population.conditional.v1", "population.footer.v1"):
        material = keystore.master_key(key_id)
        assert material.hex() not in text and material.hex() not in json.dumps(listed)


def test_rotation_keeps_old_versions_readable_and_new_versions_use_the_new_key(world, tmp_path: Path) -> None:  # noqa: ANN001
    before = tmp_path / "before.parquet"
    _ok(world, *PULL, "--version", "1", "--out", str(before))
    done = _ok(world, "keys", "rotate", "population.conditional")
    assert "population.conditional.v2" in done.stdout and "retired" in done.stdout
    keys = {k["key_id"]: k for k in json.loads(_ok(world, "keys", "list", "--json").stdout)["keys"]}
    assert keys["population.conditional.v1"]["status"] == "retired"
    assert keys["population.conditional.v2"]["status"] == "active"
    again = tmp_path / "again.parquet"
    _ok(world, *PULL, "--version", "1", "--out", str(again))  # nothing was rewritten; v1 still opens
    assert pq.read_table(again).equals(pq.read_table(before))
    published = _ok(world, "sync", "population", "--full")
    version = int(published.stdout.split("published version ")[1].split()[0])
    manifest = json.loads((world.home / "store" / "population" / "versions" / f"{version:08d}" / "manifest.json").read_text())
    masters = {}
    for entry in manifest["data_keys"]:
        doc = json.loads((world.home / "keystore" / "datakeys" / f"{entry['key_id']}.json").read_text())
        masters[entry["group"]] = doc["master_key_id"]
    assert {masters[g] for g in masters if g != "footer"} == {"population.conditional.v2"}
    latest = tmp_path / "latest.parquet"
    _ok(world, *PULL, "--out", str(latest))
    assert pq.read_table(latest).num_rows == pq.read_table(before).num_rows
    log = [r for r in world.access_log() if r.get("event") == "key-rotated"]
    assert log and log[-1]["retired"] == "population.conditional.v1" and log[-1]["active"] == "population.conditional.v2"


@pytest.mark.parametrize("name,why", [("govshare.audit", "pseudonyms"), ("publisher", "--publisher"),
                                      ("nonesuch", "keys that rotate")])
def test_keys_that_do_not_rotate_are_refused(world, name: str, why: str) -> None:  # noqa: ANN001
    done = world.run("keys", "rotate", name)
    assert done.returncode == 2 and why in done.stderr, done.stderr
    world.assert_clean(done)


def test_revocation_takes_effect_from_the_next_request(world, tmp_path: Path) -> None:  # noqa: ANN001
    served = start_service(world.env)
    try:
        enrol = tmp_path / "enrol.json"
        _ok(world, "subscriber", "enroll", "sub-active", "--out", str(enrol), "--server", served.url)
        agent_env = {"GOVSHARE_AGENT_HOME": str(tmp_path / "agent")}
        _ok(world, "agent", "init", "--enrollment", str(enrol), env=agent_env)
        profile = tmp_path / "p.share"
        _ok(world, "subscriber", "profile", "sub-active", "--purpose", "核验", "--out", str(profile),
            "--server", served.url)
        token = json.loads(profile.read_text())["bearerToken"]
        pull = ("agent", "pull", "legal_entity", "--purpose", "核验", "--out")
        _ok(world, *pull, str(tmp_path / "a.parquet"), env=agent_env)
        with httpx.Client(base_url=served.url, verify=str(served.ca)) as http:
            shares = http.get("/delta-sharing/shares", headers={"Authorization": f"Bearer {token}"})
            assert shares.status_code == 200

            assert world.run("subscriber", "revoke", "sub-active").returncode == 2  # a reason is required
            done = _ok(world, "subscriber", "revoke", "sub-active", "--reason", "审批系统停用")
            assert "1 agent(s)" in done.stdout and "1 profile token(s)" in done.stdout

            refused = world.run(*pull, str(tmp_path / "b.parquet"), env=agent_env)
            assert refused.returncode == 4 and "401" in refused.stderr, refused.stderr
            assert not (tmp_path / "b.parquet").exists()
            assert http.get("/delta-sharing/shares", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        preview = world.run("pull", "legal_entity", "--subscriber", "sub-active", "--purpose", "核验",
                            "--out", str(tmp_path / "c.parquet"))
        assert preview.returncode == 4 and "revoked" in preview.stderr, preview.stderr
        again = world.run("subscriber", "profile", "sub-active", "--purpose", "核验", "--out", str(tmp_path / "q.share"))
        assert again.returncode == 4
        assert "revoked already" in _ok(world, "subscriber", "revoke", "sub-active", "--reason", "x").stdout
        assert world.run("subscriber", "revoke", "nonesuch", "--reason", "x").returncode == 2
    finally:
        assert served.stop() == 0
    log = world.access_log()
    revoked = [r for r in log if r.get("event") == "subscriber-revoked"]
    assert len(revoked) == 1 and revoked[0]["subscriber"] == "sub-active" and revoked[0]["reason"] == "审批系统停用"
    after = log[log.index(revoked[0]) + 1:]
    assert any(r.get("event") == "request" and r.get("status") == 401 and r.get("path", "").startswith("/agent/v1")
               for r in after)
    assert _ok(world, "audit", "verify")


def _resign_all(store: Path, key_id: str) -> None:
    """Re-sign every manifest of a store consistently with a key no agent was told of."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    for folder in sorted((store / "versions").iterdir()):
        raw = (folder / "manifest.json").read_bytes()
        (folder / "manifest.sig").write_text(json.dumps({"algorithm": "Ed25519", "key_id": key_id,
                                                         "signature": base64.b64encode(private.sign(raw)).decode()}))


def test_agents_follow_an_announced_publisher_key_and_refuse_an_unannounced_one(world, tmp_path: Path) -> None:  # noqa: ANN001
    served = start_service(world.env)
    try:
        enrol = tmp_path / "enrol.json"
        _ok(world, "subscriber", "enroll", "approval-general", "--out", str(enrol), "--server", served.url)
        agent_env = {"GOVSHARE_AGENT_HOME": str(tmp_path / "agent")}
        _ok(world, "agent", "init", "--enrollment", str(enrol), env=agent_env)
        pull = ("agent", "pull", "legal_entity", "--purpose", "核验", "--out")
        _ok(world, *pull, str(tmp_path / "a.parquet"), env=agent_env)

        rotated = _ok(world, "keys", "rotate", "--publisher")
        assert "publisher.v1 -> publisher.v2" in rotated.stdout
        assert world.run("keys", "rotate", "--publisher", "population.footer").returncode == 2
        source = world.env["AIRFLOW_CONN_LEGAL_ENTITY_DB"].removeprefix("sqlite:///")
        import sqlite3

        with sqlite3.connect(source) as db:
            db.execute("UPDATE legal_entity SET address = '更正后的住所', updated_at = datetime('now', '+8 hours') WHERE rowid <= 5")
        _ok(world, "sync", "legal_entity")
        store = world.home / "store" / "legal_entity"
        latest = max(int(p.name) for p in (store / "versions").iterdir())
        manifest = json.loads((store / "versions" / f"{latest:08d}" / "manifest.json").read_text())
        assert [t["transition"]["to"] for t in manifest["key_transitions"]] == ["publisher.v2"]
        assert json.loads((store / "versions" / f"{latest:08d}" / "manifest.sig").read_text())["key_id"] == "publisher.v2"
        _ok(world, "verify", "legal_entity")

        followed = _ok(world, *pull, str(tmp_path / "b.parquet"), env=agent_env)
        assert f"version {latest}" in followed.stdout
        pinned = json.loads((tmp_path / "agent" / "agent.json").read_text())["publisher_keys"]
        assert [k["key_id"] for k in pinned] == ["publisher.v1", "publisher.v2"]
        # an agent enrolled now pins both keys and reads every version
        _ok(world, "subscriber", "enroll", "approval-general", "--out", str(tmp_path / "e2.json"), "--server", served.url)
        fresh = {"GOVSHARE_AGENT_HOME": str(tmp_path / "agent2")}
        _ok(world, "agent", "init", "--enrollment", str(tmp_path / "e2.json"), env=fresh)
        _ok(world, *pull, str(tmp_path / "c.parquet"), env=fresh)
        assert pq.read_table(tmp_path / "c.parquet").equals(pq.read_table(tmp_path / "b.parquet"))

        # the whole chain re-signed, consistently, by a key nobody announced: refused
        backup = tmp_path / "store-backup"
        import shutil

        shutil.copytree(store, backup)
        try:
            _resign_all(store, "publisher.v3")
            for agent in ("agent", "agent2"):
                shutil.rmtree(tmp_path / agent / "mirror")
                refused = world.run(*pull, str(tmp_path / "d.parquet"), env={"GOVSHARE_AGENT_HOME": str(tmp_path / agent)})
                assert refused.returncode == 3 and "publisher.v3" in refused.stderr, refused.stderr
                world.assert_clean(refused)
            assert not (tmp_path / "d.parquet").exists()
        finally:
            shutil.rmtree(store)
            shutil.copytree(backup, store)
    finally:
        assert served.stop() == 0
