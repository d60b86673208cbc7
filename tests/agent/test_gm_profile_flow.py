"""The 国密 profile end to end: a home made with GOVSHARE_CRYPTO_PROFILE=gm publishes sealed SM4
files under SM3-digested, SM2-signed manifests; agents enrol with SM2 keys, pull through the
signed protocol and decrypt only their grant; the plain view, the quarantine and the access log
work as in the standard profile."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from agent.home import AgentHome
from common.errors import IntegrityError
from common.files import canonical_json, digest_file
from keys import gm
from keys.chunkseal import SealedParquetFile, is_sealed
from keys.datakeys import data_key, envelope_info, open_sealed
from keys.keystore import Keystore
from keys.requestsig import sign_request
from sharing.store import SharingStore
from sharing.verify import verify_chain
from tests.agent.test_agent import CONDITIONAL, GENERAL, HOUSEHOLD, Parties, two_parties

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).resolve().parent.parent / "service" / "delta_client.py"


@pytest.fixture(scope="module")
def gm_parties(tmp_path_factory: pytest.TempPathFactory, demo_sources):  # noqa: ANN001, ANN201
    yield from two_parties(tmp_path_factory.mktemp("gm-parties"), demo_sources, {"GOVSHARE_CRYPTO_PROFILE": "gm"})


def test_a_gm_home_publishes_sealed_sm4_files_under_sm3_and_sm2(gm_parties: Parties) -> None:
    home = gm_parties.world.home
    ks = Keystore(home / "keystore")
    assert ks.profile.name == "gm"
    store = SharingStore(home / "store", "population")
    manifest = store.read_manifest(1)
    assert manifest.doc["digest"] == "SM3" and manifest.digest == gm.sm3(manifest.raw).hex()
    assert store.read_signature(1)["algorithm"] == "SM2"
    assert "HMAC-SM3" in manifest.doc["system_columns"]["_key_ref"]
    for entry in manifest.files():
        path = store.version_dir(1) / entry["path"]
        assert "sha256" not in entry and entry["sm3"] == digest_file(path, "SM3") == gm.sm3(path.read_bytes()).hex()
        assert is_sealed(path)
    assert manifest.doc["protection"]["upserts"]["algorithm"] == "SM4-GCM"
    for listed in manifest.doc["data_keys"]:  # 16-byte SM4 data keys, one per group
        assert len(data_key(ks, listed["key_id"])) == gm.SM4_KEY_BYTES
    upserts = store.version_dir(1) / "upserts.parquet"
    # without keys a sealed file shows no value, plain columns included (they are sealed under the footer key)
    with SealedParquetFile(upserts, {}) as handle, pytest.raises(IntegrityError, match="no data key"):
        handle.read(columns=["sex_code"])
    verified = gm_parties.ok("verify", "population")
    assert "verified" in verified.stdout


def test_the_gm_agents_view_equals_govshare_pull_full_and_since(gm_parties: Parties, tmp_path: Path) -> None:
    for subscriber, agent, dataset, *extra in (
            (HOUSEHOLD, "household", "population"), (GENERAL, "general", "legal_entity"),
            (GENERAL, "general", "population")):
        gm_parties.same_view(subscriber, agent, dataset, tmp_path, *extra)
    gm_parties.change_population()
    for subscriber, agent, *extra in ((HOUSEHOLD, "household"), (HOUSEHOLD, "household", "--since", "1"),
                                      (GENERAL, "general", "--since", "1")):
        gm_parties.same_view(subscriber, agent, "population", tmp_path, *extra)
    changes = pq.read_table(tmp_path / "agent-household-population--since1.parquet")
    assert set(changes.column("_change_type").to_pylist()) == {"upsert", "delete"}
    # incremental versions stay SM3-chained: version 2 links to version 1 by its SM3 digest
    store = SharingStore(gm_parties.world.home / "store", "population")
    second = store.read_manifest(2)
    assert second.doc["previous"] == {"version": 1, "manifest_sm3": store.read_manifest(1).digest}


def test_a_gm_agent_decrypts_nothing_outside_its_grant(gm_parties: Parties, tmp_path: Path) -> None:
    out = tmp_path / "general.parquet"
    gm_parties.ok("agent", "pull", "population", "--purpose", "综合窗口核验", "--out", str(out), agent="general")
    assert not set(CONDITIONAL) & set(pq.read_table(out).column_names)
    home = AgentHome(gm_parties.root / "agents" / "general")
    enrolled = home.load()
    assert enrolled.signing_key.algorithm == "SM2"
    body = json.dumps({"version": 1}, sort_keys=True).encode()
    target = "/agent/v1/datasets/population/envelopes"
    headers = sign_request(enrolled.signing_key, enrolled.agent_id, "POST", target, body, "核验")
    with httpx.Client(base_url=gm_parties.served.url, verify=str(gm_parties.served.ca)) as http:
        answer = http.post(target, content=body, headers={**headers, "content-type": "application/json"}).json()
    assert {e["group"] for e in answer["envelopes"]} == {"footer"}
    keys = {e["key_id"]: open_sealed(base64.b64decode(e["sealed"]), enrolled.envelope_key,
                                     envelope_info("population", e["version"], e["group"], e["key_id"], GENERAL))
            for e in answer["envelopes"]}
    assert {len(k) for k in keys.values()} == {gm.SM4_KEY_BYTES}
    upserts = home.root / "mirror" / "population" / "versions" / "00000001" / "upserts.parquet"
    with SealedParquetFile(upserts, keys) as handle:
        assert handle.read(columns=["sex_code"]).num_rows > 0
        for field in CONDITIONAL:
            with pytest.raises(IntegrityError, match="no data key"):
                handle.read(columns=[field])


def test_a_gm_manifest_re_digested_under_sha256_is_refused(gm_parties: Parties, tmp_path: Path) -> None:
    """The digest goes with the signature's algorithm: an SM2-signed manifest that names SHA-256
    (its files re-digested to match) is refused before anything is read."""
    src = gm_parties.world.home / "store" / "legal_entity"
    copy = tmp_path / "store"
    shutil.copytree(src, copy / "legal_entity")
    store = SharingStore(copy, "legal_entity")
    manifest = store.read_manifest(1)
    doc = dict(manifest.doc)
    doc["digest"] = "SHA-256"
    doc["files"] = [{**{k: v for k, v in f.items() if k != "sm3"},
                     "sha256": digest_file(store.version_dir(1) / f["path"], "SHA-256")} for f in doc["files"]]
    (store.version_dir(1) / "manifest.json").write_bytes(canonical_json(doc))

    class AcceptsAll:  # a verifier fooled into accepting the bytes: the binding must still refuse them
        def verify(self, data: bytes, signature_doc: dict) -> None:
            return None

    with pytest.raises(IntegrityError, match="re-digested"):
        verify_chain(store, AcceptsAll(), store.latest())
    # and with the real keystore the altered manifest fails its SM2 signature (exit 3 from the CLI)
    with pytest.raises(IntegrityError, match="signature"):
        verify_chain(store, Keystore(gm_parties.world.home / "keystore"), store.latest())


def test_gm_quarantine_audit_and_the_plain_view(gm_parties: Parties, tmp_path: Path) -> None:
    listed = gm_parties.ok("quarantine", "list", "population")
    assert listed.stdout.strip()
    kept = sorted((gm_parties.world.home / "quarantine" / "population").glob("*-*.parquet"))
    assert kept and all(is_sealed(p) for p in kept)
    assert gm_parties.ok("audit", "verify").returncode == 0
    subject = gm_parties.ok("audit", "subject", gm_parties.world.id_numbers[0])
    assert gm_parties.world.id_numbers[0] not in subject.stdout
    # the stock Delta Sharing client reads the plain view of a gm home
    profile = tmp_path / "general.share"
    gm_parties.ok("subscriber", "profile", GENERAL, "--purpose", "一网通办核验", "--out", str(profile),
                  "--server", gm_parties.served.url)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"profile": str(profile), "dir": str(tmp_path),
                                "ops": {"le": {"kind": "load", "table": "legal_entity"}}}), encoding="utf-8")
    env = {**gm_parties.world.env, "REQUESTS_CA_BUNDLE": str(gm_parties.served.ca),
           "SSL_CERT_FILE": str(gm_parties.served.ca)}
    done = subprocess.run([sys.executable, str(CLIENT), str(spec)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])["le"]
    assert "path" in result, result
    pulled = tmp_path / "le.parquet"
    gm_parties.ok("pull", "legal_entity", "--subscriber", GENERAL, "--purpose", "核对", "--out", str(pulled))
    assert pq.read_table(result["path"]).num_rows == pq.read_table(pulled).num_rows > 0
