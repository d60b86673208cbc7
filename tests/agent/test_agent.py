"""Two parties over real HTTPS on loopback: the publisher's ``govshare serve`` and subscribers'
agents (``govshare agent ...``) in their own homes, through the CLI and the agent protocol."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.home import AgentHome
from common.catalog import PROJECT_ROOT
from common.errors import IntegrityError
from keys.datakeys import envelope_info, open_sealed
from keys.kms import decryption_with
from keys.masking import mask_values
from keys.requestsig import sign_request
from tests.integration.conftest import MASKED, CliWorld, build_cli_world
from tests.service.conftest import Served, start_service

pytestmark = pytest.mark.integration

HOUSEHOLD, GENERAL = "approval-household", "approval-general"
CONDITIONAL = ("id_number", "name", "birth_date", "household_address")


class Parties:
    def __init__(self, world: CliWorld, served: Served, root: Path) -> None:
        self.world, self.served, self.root = world, served, root

    def agent_env(self, name: str) -> dict[str, str]:
        return {"GOVSHARE_AGENT_HOME": str(self.root / "agents" / name)}

    def ok(self, *args: str, agent: str | None = None):  # noqa: ANN201
        done = self.world.run(*args, env=self.agent_env(agent) if agent else None)
        assert done.returncode == 0, (args, done.stderr)
        self.world.assert_clean(done)
        return done

    def run(self, *args: str, agent: str | None = None):  # noqa: ANN201
        done = self.world.run(*args, env=self.agent_env(agent) if agent else None)
        self.world.assert_clean(done)
        return done

    def enrol(self, subscriber: str, agent: str, hours: int = 72) -> Path:
        file = self.root / f"{agent}.enrolment.json"
        self.ok("subscriber", "enroll", subscriber, "--out", str(file), "--server", self.served.url, "--hours", str(hours))
        return file

    def same_view(self, subscriber: str, agent: str, dataset: str, folder: Path, *extra: str) -> None:
        """The agent's pull and ``govshare pull`` for the subscriber give the same table."""
        mine, theirs = folder / f"agent-{agent}-{dataset}{''.join(extra)}.parquet", folder / f"pull{''.join(extra)}.parquet"
        self.ok("agent", "pull", dataset, "--purpose", "办件核验", "--case", "BJ-1", "--out", str(mine), *extra, agent=agent)
        self.ok("pull", dataset, "--subscriber", subscriber, "--purpose", "核对", "--out", str(theirs), *extra)
        _same(mine, theirs)

    def change_population(self, rows: int = 5) -> None:
        """Change some published rows and delete one at the source, then sync a new version."""
        source = self.world.env["AIRFLOW_CONN_POPULATION_DB"].removeprefix("sqlite:///")
        with sqlite3.connect(source) as db:
            db.execute("UPDATE population_person SET household_address = household_address || '（更正）', "
                       f"updated_at = datetime('now', '+8 hours') WHERE rowid IN (SELECT rowid FROM population_person "
                       f"ORDER BY rowid LIMIT {rows})")
            db.execute("UPDATE population_person SET is_deleted = 1, updated_at = datetime('now', '+8 hours') "
                       "WHERE rowid = (SELECT max(rowid) FROM population_person WHERE is_deleted = 0)")
        self.ok("sync", "population")


def two_parties(root: Path, demo_sources, extra_env: dict[str, str] | None = None):  # noqa: ANN001, ANN201
    """A published home, its service and three enrolled agents; yields Parties, stops the service."""
    world = build_cli_world(root, demo_sources, extra_env)
    served = start_service(world.env)
    p = Parties(world, served, root)
    for subscriber, agent in ((HOUSEHOLD, "household"), (GENERAL, "general"), (MASKED, "masked")):
        p.ok("agent", "init", "--enrollment", str(p.enrol(subscriber, agent)), agent=agent)
    yield p
    assert served.stop() == 0


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory, demo_sources):  # noqa: ANN001, ANN201
    yield from two_parties(tmp_path_factory.mktemp("two-parties"), demo_sources)


def _same(a: Path, b: Path) -> None:
    left, right = pq.read_table(a), pq.read_table(b)
    assert left.schema == right.schema
    assert left.equals(right), "the agent's view differs from govshare pull's"


def test_datasets_lists_the_grant_and_its_fields(parties: Parties) -> None:
    listed = json.loads(parties.ok("agent", "datasets", "--json", agent="household").stdout)
    population = {d["dataset"]: d for d in listed}["population"]
    assert population["in_force"] and set(CONDITIONAL) <= set(population["fields"])
    assert set(population["conditional"]) == set(CONDITIONAL)
    general = {d["dataset"] for d in json.loads(parties.ok("agent", "datasets", "--json", agent="general").stdout)}
    assert {"population", "legal_entity"} <= general
    assert "grant(s)" in parties.ok("agent", "datasets", agent="general").stdout


def test_the_agents_view_equals_govshare_pull_full_version_and_since(parties: Parties, tmp_path: Path) -> None:
    def both(subscriber: str, agent: str, dataset: str, *extra: str) -> None:
        parties.same_view(subscriber, agent, dataset, tmp_path, *extra)

    both(HOUSEHOLD, "household", "population")
    both(GENERAL, "general", "legal_entity")
    both(GENERAL, "general", "population")  # a grant without the key field folds like the publisher's
    parties.change_population()
    both(HOUSEHOLD, "household", "population")
    both(HOUSEHOLD, "household", "population", "--version", "1")
    both(HOUSEHOLD, "household", "population", "--since", "1")
    both(GENERAL, "general", "population", "--since", "1")
    changes = pq.read_table(tmp_path / "agent-household-population--since1.parquet")
    kinds = set(changes.column("_change_type").to_pylist())
    assert kinds == {"upsert", "delete"} and set(changes.column("_commit_version").to_pylist()) == {2}


def test_a_database_target_continues_from_the_last_version_applied(parties: Parties, tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'household.db'}"
    pull = ("agent", "pull", "population", "--purpose", "户籍迁移审批", "--out", target)
    first = parties.ok(*pull, agent="household")
    assert "rows" in first.stdout
    assert "nothing new" in parties.ok(*pull, agent="household").stdout
    parties.change_population(rows=3)
    after = parties.ok(*pull, agent="household")
    assert "changes after version" in after.stdout
    full = tmp_path / "full.parquet"
    parties.ok("pull", "population", "--subscriber", HOUSEHOLD, "--purpose", "核对", "--out", str(full))
    expected = pq.read_table(full)
    with sqlite3.connect(tmp_path / "household.db") as db:
        rows = db.execute("SELECT id_number, household_address FROM population ORDER BY id_number").fetchall()
    assert rows == sorted(zip(expected.column("id_number").to_pylist(), expected.column("household_address").to_pylist()))


def test_a_field_outside_the_grant_cannot_be_decrypted_from_everything_the_agent_holds(parties: Parties,
                                                                                         tmp_path: Path) -> None:
    out = tmp_path / "general.parquet"
    parties.ok("agent", "pull", "population", "--purpose", "综合窗口核验", "--out", str(out), agent="general")
    assert not set(CONDITIONAL) & set(pq.read_table(out).column_names)
    home = AgentHome(parties.root / "agents" / "general")
    enrolled = home.load()
    # every envelope the service ever gives this agent, opened with its own key
    body = json.dumps({"version": 1}, sort_keys=True).encode()
    target = "/agent/v1/datasets/population/envelopes"
    headers = sign_request(enrolled.signing_key, enrolled.agent_id, "POST", target, body, "核验")
    with httpx.Client(base_url=parties.served.url, verify=str(parties.served.ca)) as http:
        answer = http.post(target, content=body, headers={**headers, "content-type": "application/json"}).json()
    groups = {e["group"] for e in answer["envelopes"]}
    assert groups == {"footer"}
    keys = {e["key_id"]: open_sealed(base64.b64decode(e["sealed"]), enrolled.envelope_key,
                                     envelope_info("population", e["version"], e["group"], e["key_id"], GENERAL))
            for e in answer["envelopes"]}
    upserts = home.root / "mirror" / "population" / "versions" / "00000001" / "upserts.parquet"
    assert upserts.is_file()
    decryption = decryption_with(keys)
    assert pq.read_table(upserts, columns=["sex_code"], decryption_properties=decryption).num_rows > 0
    for field in CONDITIONAL:
        with pytest.raises((OSError, IntegrityError)):
            pq.read_table(upserts, columns=[field], decryption_properties=decryption)
    # and the agent's home holds none of the publisher's key material
    secrets = []
    keystore = parties.world.home / "keystore"
    from keys.keystore import Keystore

    ks = Keystore(keystore)
    for entry in ks.entries().values():
        if entry.purpose in ("master", "hmac"):
            secrets.append(ks.master_key(entry.key_id) if entry.purpose == "master" else ks.hmac_key(entry.name))
    held = b"".join(p.read_bytes() for p in home.root.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret not in held and secret.hex().encode() not in held and base64.b64encode(secret) not in held
    assert not list(home.root.rglob("*.key"))


def _envelopes(parties: Parties, agent: str, subscriber: str, version: int) -> tuple[set[str], dict[str, bytes]]:
    """Every envelope the service gives this agent for the version, opened with its own key."""
    enrolled = AgentHome(parties.root / "agents" / agent).load()
    body = json.dumps({"version": version}, sort_keys=True).encode()
    target = "/agent/v1/datasets/population/envelopes"
    headers = sign_request(enrolled.signing_key, enrolled.agent_id, "POST", target, body, "核验")
    with httpx.Client(base_url=parties.served.url, verify=str(parties.served.ca)) as http:
        answer = http.post(target, content=body, headers={**headers, "content-type": "application/json"}).json()
    keys = {e["key_id"]: open_sealed(base64.b64decode(e["sealed"]), enrolled.envelope_key,
                                     envelope_info("population", e["version"], e["group"], e["key_id"], subscriber))
            for e in answer["envelopes"]}
    return {e["group"] for e in answer["envelopes"]}, keys


def test_a_masked_grant_receives_masked_values_and_no_envelope_for_the_plain_field(parties: Parties,
                                                                                    tmp_path: Path) -> None:
    mine, preview, plain = tmp_path / "masked.parquet", tmp_path / "preview.parquet", tmp_path / "plain.parquet"
    parties.ok("agent", "pull", "population", "--purpose", "脱敏核验", "--out", str(mine), agent="masked")
    parties.ok("pull", "population", "--subscriber", MASKED, "--purpose", "核对", "--out", str(preview))
    _same(mine, preview)
    got = pq.read_table(mine)
    assert got.column_names[:4] == ["id_number", "name", "sex_code", "household_division_code"]
    assert not {"birth_date", "household_address", "phone"} & set(got.column_names)
    ids, names = got.column("id_number").to_pylist(), got.column("name").to_pylist()
    assert ids and all(len(i) == 18 and i[3:14] == "*" * 11 for i in ids)
    assert all(n[1:] == "*" * (len(n) - 1) for n in names)
    # the masked values are the published plain values, masked: the same multiset as a full grantee's
    parties.ok("pull", "population", "--subscriber", HOUSEHOLD, "--purpose", "核对", "--out", str(plain))
    full = pq.read_table(plain)
    assert sorted(ids) == sorted(mask_values(full.column("id_number"), 3, 4).to_pylist())
    assert sorted(names) == sorted(mask_values(full.column("name"), 1, 0).to_pylist())
    assert not set(ids) & set(full.column("id_number").to_pylist())

    latest = max(int(r["version"]) for r in parties.world.access_log() if r.get("dataset") == "population"
                 and r.get("event") == "delivery" and r.get("version"))
    groups, keys = _envelopes(parties, "masked", MASKED, latest)
    assert groups == {"footer", "id_number__masked", "name__masked"}
    upserts = parties.root / "agents" / "masked" / "mirror" / "population" / "versions" / f"{latest:08d}" / "upserts.parquet"
    decryption = decryption_with(keys)
    opened = pq.ParquetFile(upserts, decryption_properties=decryption)  # the latest version: full or a delta
    masked_names = opened.read(columns=["name__masked"]).column("name__masked").to_pylist()
    assert len(masked_names) == opened.metadata.num_rows > 0
    assert all(n[1:] == "*" * (len(n) - 1) for n in masked_names)
    for field in CONDITIONAL:  # the plain fields stay closed to everything it was ever given
        with pytest.raises((OSError, IntegrityError)):
            pq.read_table(upserts, columns=[field], decryption_properties=decryption)
    record = [r for r in parties.world.access_log() if r.get("event") == "delivery" and r.get("subscriber") == MASKED][-1]
    assert record["masked"] == ["id_number", "name"]
    # masked keys are not unique: no database target keyed on them
    refused = parties.run("agent", "pull", "population", "--purpose", "脱敏核验", "--out",
                          f"sqlite:///{tmp_path / 'masked.db'}", agent="masked")
    assert refused.returncode == 2 and "masked" in refused.stderr
    assert not (tmp_path / "masked.db").exists()


def test_the_access_log_names_the_authenticated_subscriber_purpose_and_case(parties: Parties, tmp_path: Path) -> None:
    before = len(parties.world.access_log())
    parties.ok("agent", "pull", "legal_entity", "--purpose", "企业开办核验", "--case", "QY-2026-77",
               "--out", str(tmp_path / "l.parquet"), agent="general")
    records = parties.world.access_log()[before:]
    pending = [r for r in records if r["event"] == "delivery" and r.get("channel") == "agent"]
    assert len(pending) == 1
    delivery = pending[0]
    assert delivery["subscriber"] == GENERAL and delivery["purpose"] == "企业开办核验" and delivery["case"] == "QY-2026-77"
    assert delivery["outcome"] == "pending" and delivery["fields"]
    complete = [r for r in records if r["event"] == "delivery-complete" and r.get("delivery") == delivery["seq"]]
    assert len(complete) == 1 and complete[0]["outcome"] == "confirmed" and complete[0]["output_sha256"]
    envelope_requests = [r for r in records if r["event"] == "request" and r["path"].endswith("/envelopes")]
    assert envelope_requests and envelope_requests[0]["seq"] > delivery["seq"]  # logged before the release
    requests = [r for r in records if r["event"] == "request"]
    assert requests and all(r["subscriber"] == GENERAL and r["case"] == "QY-2026-77" for r in requests)
    done = parties.ok("audit", "verify")
    assert f"record {delivery['seq']} started" not in done.stdout


def test_enrolment_tokens_are_one_time_and_expire(parties: Parties, tmp_path: Path) -> None:
    file = parties.enrol(GENERAL, "twice")
    parties.ok("agent", "init", "--enrollment", str(file), agent="twice")
    again = parties.run("agent", "init", "--enrollment", str(file), agent="twice")
    assert again.returncode == 2 and "already" in again.stderr  # this home is an agent already
    reused = parties.run("agent", "init", "--enrollment", str(file), agent="twice-2")
    assert reused.returncode == 4 and "already used" in reused.stderr, reused.stderr
    assert not (parties.root / "agents" / "twice-2" / "agent.json").exists()
    # an expired token: the service refuses it
    from datetime import datetime, timedelta, timezone

    from common.home import Home
    from keys.agentproto import enrolment_proof, raw_public
    from service import enrolment

    home = Home(parties.world.home)
    issued = enrolment.issue(home, GENERAL, 1, now=datetime.now(timezone.utc) - timedelta(hours=2))
    signing, envelope = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    sp, ep = raw_public(signing.public_key()), raw_public(envelope.public_key())
    proof = base64.b64encode(signing.sign(enrolment_proof(issued.token, GENERAL, sp, ep))).decode()
    body = {"token": issued.token, "subscriber": GENERAL, "signing_pub": sp, "encryption_pub": ep, "proof": proof}
    with httpx.Client(base_url=parties.served.url, verify=str(parties.served.ca)) as http:
        expired = http.post("/agent/v1/enrol", json=body)
        assert expired.status_code == 401 and "expired" in expired.json()["message"]
        fresh = enrolment.issue(home, GENERAL, 1)
        wrong_proof = {**body, "token": fresh.token}  # the proof was made for the other token
        assert http.post("/agent/v1/enrol", json=wrong_proof).status_code == 401
        other = {**body, "token": fresh.token, "subscriber": HOUSEHOLD,
                 "proof": base64.b64encode(signing.sign(enrolment_proof(fresh.token, HOUSEHOLD, sp, ep))).decode()}
        assert http.post("/agent/v1/enrol", json=other).status_code == 401  # issued for another subscriber
    assert parties.run("subscriber", "enroll", "sub-suspended", "--out", str(tmp_path / "s.json")).returncode == 4
    assert parties.run("subscriber", "enroll", GENERAL, "--out", str(tmp_path / "s.json"), "--hours", "0").returncode == 2


def _signed(parties: Parties, agent: str, method: str, target: str, body: bytes = b"", purpose: str = "核验",
            key: Ed25519PrivateKey | None = None, now: float | None = None) -> httpx.Response:
    enrolled = AgentHome(parties.root / "agents" / agent).load()
    headers = sign_request(key or enrolled.signing_key, enrolled.agent_id, method, target, body, purpose, now=now)
    with httpx.Client(base_url=parties.served.url, verify=str(parties.served.ca)) as http:
        return http.request(method, target, content=body, headers={**headers, "content-type": "application/json"})


def test_signed_requests_are_refused_with_their_status_and_logged(parties: Parties) -> None:
    before = len(parties.world.access_log())
    versions = "/agent/v1/datasets/population/versions"
    assert _signed(parties, "household", "GET", versions).status_code == 200
    with httpx.Client(base_url=parties.served.url, verify=str(parties.served.ca)) as http:
        assert http.get(versions).status_code == 401  # no signature at all
    assert _signed(parties, "household", "GET", versions, key=Ed25519PrivateKey.generate()).status_code == 401
    # another subscriber's agent key, claiming this agent's id
    other = AgentHome(parties.root / "agents" / "general").load().signing_key
    assert _signed(parties, "household", "GET", versions, key=other).status_code == 401
    assert _signed(parties, "household", "GET", versions, now=time.time() - 600).status_code == 401
    enrolled = AgentHome(parties.root / "agents" / "household").load()
    headers = sign_request(enrolled.signing_key, enrolled.agent_id, "GET", versions, b"", "核验")
    with httpx.Client(base_url=parties.served.url, verify=str(parties.served.ca)) as http:
        assert http.get(versions, headers=headers).status_code == 200
        replay = http.get(versions, headers=headers)
        assert replay.status_code == 401 and "nonce" in replay.json()["message"]
        tampered = http.get("/agent/v1/datasets/legal_entity/versions", headers=headers)
        assert tampered.status_code == 401  # the signature covers the path
    big = b'{"version": 1, "pad": "' + b"x" * (70 * 1024) + b'"}'
    assert _signed(parties, "household", "POST", "/agent/v1/datasets/population/envelopes", big).status_code == 413
    missing = _signed(parties, "household", "GET", versions, purpose="")
    assert missing.status_code == 400 and "purpose" in missing.json()["message"]
    assert _signed(parties, "household", "GET", "/agent/v1/datasets/legal_entity/versions").status_code == 403
    assert _signed(parties, "household", "GET",
                   "/agent/v1/datasets/population/versions/1/files/secret.parquet").status_code == 404
    assert _signed(parties, "household", "GET", "/agent/v1/datasets/population/versions/99/manifest").status_code == 404
    bad_body = _signed(parties, "household", "POST", "/agent/v1/datasets/population/envelopes", b'{"version": "x"}')
    assert bad_body.status_code == 400
    records = [r for r in parties.world.access_log()[before:] if r["event"] == "request"]
    outcomes = [r["outcome"] for r in records]
    assert outcomes.count("unauthenticated") >= 6 and "too large" in outcomes and "bad request" in outcomes
    assert "denied" in outcomes and "not found" in outcomes
    assert all(r.get("reason") for r in records if r["status"] >= 400)
    # as authenticated, never as claimed: refused signatures name nobody
    assert all(r["subscriber"] in (None, HOUSEHOLD) for r in records)
    # (a body over the limit is refused before it is read, so before its signature is checked: nobody)
    assert all(r["subscriber"] == HOUSEHOLD for r in records if r["status"] in (400, 403, 404))
    assert parties.ok("audit", "verify")


def test_envelopes_open_only_with_the_agents_own_key(parties: Parties) -> None:
    body = json.dumps({"version": 1}, sort_keys=True).encode()
    answer = _signed(parties, "household", "POST", "/agent/v1/datasets/population/envelopes", body).json()
    groups = {e["group"] for e in answer["envelopes"]}
    assert {"footer", *CONDITIONAL} <= groups
    envelope = answer["envelopes"][0]
    info = envelope_info("population", envelope["version"], envelope["group"], envelope["key_id"], HOUSEHOLD)
    mine = AgentHome(parties.root / "agents" / "household").load().envelope_key
    assert len(open_sealed(base64.b64decode(envelope["sealed"]), mine, info)) == 32
    with pytest.raises(IntegrityError):
        open_sealed(base64.b64decode(envelope["sealed"]), X25519PrivateKey.generate(), info)
    with pytest.raises(IntegrityError):  # made for another subscriber
        open_sealed(base64.b64decode(envelope["sealed"]), mine,
                    envelope_info("population", envelope["version"], envelope["group"], envelope["key_id"], GENERAL))


def test_a_missing_purpose_or_a_dataset_outside_the_grant_is_exit_4(parties: Parties, tmp_path: Path) -> None:
    out = str(tmp_path / "x.parquet")
    assert parties.run("agent", "pull", "population", "--out", out, agent="household").returncode == 4
    before = len(parties.world.access_log())
    outside = parties.run("agent", "pull", "legal_entity", "--purpose", "核验", "--out", out, agent="household")
    assert outside.returncode == 4 and "403" in outside.stderr
    assert not Path(out).exists()
    denied = [r for r in parties.world.access_log()[before:] if r.get("status") == 403]
    assert denied and denied[0]["subscriber"] == HOUSEHOLD


def test_an_agent_home_inside_govshare_home_is_refused(parties: Parties) -> None:
    done = parties.world.run("agent", "datasets", env={"GOVSHARE_AGENT_HOME": str(parties.world.home / "agent")})
    assert done.returncode == 2 and "GOVSHARE_AGENT_HOME" in done.stderr


def test_a_replaced_pin_or_another_publishers_service_is_exit_3(parties: Parties, tmp_path: Path) -> None:
    home = parties.root / "agents" / "tampered"
    shutil.copytree(parties.root / "agents" / "household", home)
    shutil.rmtree(home / "mirror", ignore_errors=True)
    doc = json.loads((home / "agent.json").read_text())
    fake = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.PEM,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    doc["publisher_keys"] = [{**k, "public_pem": fake.decode()} for k in doc["publisher_keys"]]
    (home / "agent.json").write_text(json.dumps(doc))
    env = {"GOVSHARE_AGENT_HOME": str(home)}
    done = parties.world.run("agent", "pull", "population", "--purpose", "核验", "--out", str(tmp_path / "t.parquet"),
                             env=env)
    assert done.returncode == 3, done.stderr
    assert not (tmp_path / "t.parquet").exists()
    # a service that is not the enrolled publisher's: its TLS certificate is not the pinned CA's
    other_root = tmp_path / "other"
    other = parties.world.run("init", env={"GOVSHARE_HOME": str(other_root / "home")})
    assert other.returncode == 0, other.stderr
    impostor = start_service({**parties.world.env, "GOVSHARE_HOME": str(other_root / "home")})
    try:
        doc = json.loads(((parties.root / "agents" / "household") / "agent.json").read_text())
        shutil.rmtree(home)
        shutil.copytree(parties.root / "agents" / "household", home)
        (home / "agent.json").write_text(json.dumps({**doc, "service_url": impostor.url}))
        done = parties.world.run("agent", "pull", "population", "--purpose", "核验",
                                 "--out", str(tmp_path / "u.parquet"), env=env)
        assert done.returncode == 3 and "pinned" in done.stderr, done.stderr
    finally:
        assert impostor.stop() == 0


def test_the_service_down_is_exit_75_and_nothing_is_written(parties: Parties, tmp_path: Path) -> None:
    home = parties.root / "agents" / "offline"
    shutil.copytree(parties.root / "agents" / "household", home)
    doc = json.loads((home / "agent.json").read_text())
    (home / "agent.json").write_text(json.dumps({**doc, "service_url": "https://127.0.0.1:9"}))
    done = parties.world.run("agent", "pull", "population", "--purpose", "核验", "--out", str(tmp_path / "o.parquet"),
                             env={"GOVSHARE_AGENT_HOME": str(home)})
    assert done.returncode == 75 and "https://127.0.0.1:9" in done.stderr, done.stderr
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("subscriber", ["sub-approval-expired", "sub-approval-future", "sub-approval-suspended"])
def test_an_approval_out_of_force_releases_no_envelope(parties: Parties, subscriber: str, tmp_path: Path) -> None:
    agent = f"agent-{subscriber}"
    parties.ok("agent", "init", "--enrollment", str(parties.enrol(subscriber, agent)), agent=agent)
    listed = {d["dataset"]: d for d in json.loads(parties.ok("agent", "datasets", "--json", agent=agent).stdout)}
    assert not listed["population"]["in_force"] and listed["population"]["reason"]
    before = len(parties.world.access_log())
    done = parties.run("agent", "pull", "population", "--purpose", "核验", "--out", str(tmp_path / "x.parquet"),
                       agent=agent)
    assert done.returncode == 4 and "403" in done.stderr, done.stderr
    assert not (tmp_path / "x.parquet").exists()
    records = parties.world.access_log()[before:]
    assert not [r for r in records if r["event"] == "delivery"]  # no delivery, so no envelope
    assert any(r.get("status") == 403 and r["subscriber"] == subscriber for r in records)


def test_a_delivery_is_completed_once_and_only_by_its_agent(parties: Parties, tmp_path: Path) -> None:
    parties.ok("agent", "pull", "legal_entity", "--purpose", "核验", "--out", str(tmp_path / "l.parquet"), agent="general")
    seq = [r for r in parties.world.access_log() if r["event"] == "delivery" and r.get("channel") == "agent"][-1]["seq"]
    body = json.dumps({"outcome": "confirmed", "rows": 1}, sort_keys=True).encode()
    target = f"/agent/v1/deliveries/{seq}/complete"
    assert _signed(parties, "general", "POST", target, body).status_code == 409  # the agent completed it already
    assert _signed(parties, "household", "POST", target, body).status_code == 404  # not that agent's delivery
    completions = [r for r in parties.world.access_log() if r["event"] == "delivery-complete" and r["delivery"] == seq]
    assert len(completions) == 1
    refused_enrolments = [r for r in parties.world.access_log()
                          if r["event"] == "request" and r["path"] == "/agent/v1/enrol" and r["status"] == 401]
    assert refused_enrolments and all(r["subscriber"] is None for r in refused_enrolments)  # never as claimed


def test_an_agent_witnesses_the_access_log_and_catches_a_rewritten_history(parties: Parties, tmp_path: Path) -> None:
    """Each pull first checks a fresh checkpoint against the one the agent holds (consistency
    proof); a log rewritten and re-signed with the publisher's own key is exit 3 at the agent."""
    agent_home = parties.root / "agents" / "general"
    parties.ok("agent", "pull", "legal_entity", "--purpose", "核验", "--out", str(tmp_path / "a.parquet"), agent="general")
    held = json.loads((agent_home / "witness.json").read_text(encoding="utf-8"))
    assert held["size"] > 0 and held["origin"].startswith("govshare.local/access-log/")
    parties.ok("agent", "pull", "legal_entity", "--purpose", "核验", "--out", str(tmp_path / "b.parquet"), agent="general")
    grown = json.loads((agent_home / "witness.json").read_text(encoding="utf-8"))
    assert grown["size"] > held["size"]  # the first pull's records are in the tree the second one checked
    events = [json.loads(line) for line in (agent_home / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["outcome"] for e in events[-2:]] == ["consistent", "consistent"]

    audit, head = parties.world.home / "audit", parties.world.home / "state" / "access-log-head.json"
    shutil.copytree(audit, tmp_path / "audit")
    shutil.copy(head, tmp_path / "head.json")
    try:
        done = subprocess.run([sys.executable, "-m", "tests.logforge", str(parties.world.home), "1"], cwd=PROJECT_ROOT,
                              env={**parties.world.env}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        done = parties.run("agent", "pull", "legal_entity", "--purpose", "核验", "--out", str(tmp_path / "c.parquet"),
                           agent="general")
        assert done.returncode == 3, done.stderr
        assert "access log was rewritten" in done.stderr
        assert not (tmp_path / "c.parquet").exists()
        assert json.loads((agent_home / "witness.json").read_text(encoding="utf-8"))["size"] == grown["size"]  # kept
        last = json.loads((agent_home / "events.jsonl").read_text(encoding="utf-8").splitlines()[-1])
        assert last["outcome"] == "rewritten" and last["held"]["size"] == grown["size"]
    finally:
        shutil.rmtree(audit)
        shutil.copytree(tmp_path / "audit", audit)
        shutil.copy(tmp_path / "head.json", head)
    parties.ok("agent", "pull", "legal_entity", "--purpose", "核验", "--out", str(tmp_path / "d.parquet"), agent="general")
