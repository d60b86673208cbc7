"""The access log as a Merkle tree: checkpoints at publish and on demand, `audit verify` against
them, `audit prove` and its offline check, through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from govshare.cli import main
from keys.checkpoint import verify_note
from keys.merkle import Levels, leaf_hash, root
from tests.logforge import rewrite_and_resign

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "govshare.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def pull(tmp_path: Path, n: int) -> None:
    assert main(["pull", "legal_entity", "--subscriber", "approval-general", "--purpose", "核验",
                 "--out", str(tmp_path / f"{n}.parquet")]) == 0


def records(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "audit" / "access-log.jsonl").read_text(encoding="utf-8").splitlines()]


def checkpoints(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "audit" / "checkpoints.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def logged(home, sources, tmp_path: Path) -> Path:
    """legal_entity published, three pulls (six records), population published."""
    assert main(["sync", "legal_entity"]) == 0
    for n in range(3):
        pull(tmp_path, n)
    assert main(["sync", "population"]) == 0
    return home.root


def test_every_publish_signs_a_checkpoint_of_the_tree_the_records_make(logged: Path) -> None:
    kept = checkpoints(logged)
    assert [(c["size"], c["reason"]) for c in kept] == [(0, "publish legal_entity"), (6, "publish population")]
    leaves = [leaf_hash(json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()) for r in
              records(logged)]
    assert kept[1]["root"] == root(leaves).hex()  # RFC 6962 over the records as stored
    manifest = json.loads((logged / "store" / "population" / "versions" / "00000001" / "manifest.json").read_text())
    assert manifest["access_log"]["checkpoint"] == {"size": 6, "root": root(leaves).hex()}
    assert Levels(logged / "audit" / "tree").root(6) == root(leaves)  # the cache agrees

    done = cli("audit", "checkpoint")
    assert done.returncode == 0, done.stderr
    assert "checkpoint of 6 record(s)" in done.stdout and "\n6\n" in done.stdout
    done = cli("audit", "verify")
    assert done.returncode == 0, done.stderr
    assert "6 record(s)" in done.stdout and "3 signed checkpoint(s)" in done.stdout


def _edit_checkpoint(home: Path, line: int, old: str, new: str) -> None:
    path = home / "audit" / "checkpoints.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    doc = json.loads(lines[line])
    doc["note"] = doc["note"].replace(old, new, 1)
    lines[line] = json.dumps(doc, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_rewrite_the_chain_cannot_see_is_caught_by_the_checkpoints(logged: Path) -> None:
    # someone with the publisher's key rewrites record 3 and re-signs the chain, the head file and
    # the tree, but cannot unsign the checkpoint of 6 records made at publish
    kept = (logged / "audit" / "checkpoints.jsonl").read_text(encoding="utf-8")
    rewrite_and_resign(logged, 3)
    (logged / "audit" / "checkpoints.jsonl").write_text(kept, encoding="utf-8")
    done = cli("audit", "verify")
    assert done.returncode == 3
    assert "records 1..6 are not the ones checkpoint checkpoints.jsonl line 2" in done.stderr or \
        "is not the one population version 1 manifest signed" in done.stderr, done.stderr


@pytest.mark.parametrize("tamper, says", [
    (lambda home: _edit_checkpoint(home, 1, "\n6\n", "\n5\n"), "no publisher key's signature on it verifies"),
    (lambda home: (home / "audit" / "origin").unlink(), "origin file"),
    (lambda home: (home / "audit" / "access-log.jsonl").write_text(
        "".join((home / "audit" / "access-log.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:4]),
        encoding="utf-8"), "removed from the end"),
    (lambda home: (home / "audit" / "checkpoints.jsonl").write_text("not json\n"), "is not a checkpoint record"),
    (lambda home: (home / "audit" / "tree" / "level-0.bin").write_bytes(b"\x00" * 32 * 6), "tree cache"),
], ids=["checkpoint edited", "origin removed", "records cut off (checkpoint and head hold)", "checkpoints garbled",
        "tree cache altered"])
def test_tampering_with_the_tree_or_its_checkpoints_is_exit_3(logged: Path, tamper, says: str) -> None:  # noqa: ANN001
    tamper(logged)
    done = cli("audit", "verify")
    assert done.returncode == 3, done.stderr
    assert says in done.stderr


def test_a_lost_tree_cache_is_rebuilt_from_the_log(logged: Path, tmp_path: Path) -> None:
    shutil.rmtree(logged / "audit" / "tree")
    pull(tmp_path, 9)  # two more records: the cache is rebuilt, then extended
    assert Levels(logged / "audit" / "tree").size == 8
    done = cli("audit", "prove", "7", "--out", str(tmp_path / "p.json"))
    assert done.returncode == 0, done.stderr
    done = cli("audit", "verify")
    assert done.returncode == 0, done.stderr


def test_a_proof_checks_offline_with_the_publishers_key_alone(logged: Path, tmp_path: Path) -> None:
    proof_file = tmp_path / "proof-4.json"
    done = cli("audit", "prove", "4", "--out", str(proof_file))
    assert done.returncode == 0, done.stderr
    proof = json.loads(proof_file.read_text(encoding="utf-8"))
    assert proof["record"] == records(logged)[3] and proof["leaf_index"] == 3 and proof["tree_size"] >= 6
    pem = tmp_path / "publisher.pem"
    pem.write_text(proof["publisher_key"]["public_pem"], encoding="utf-8")
    vkey = tmp_path / "publisher.vkey"
    vkey.write_text(proof["publisher_key"]["vkey"] + "\n", encoding="utf-8")
    offline = {"GOVSHARE_HOME": str(tmp_path / "no-home-here"), "GOVSHARE_ROOT_KEY": ""}  # nothing of the publisher's
    for key in (pem, vkey):
        done = cli("audit", "check-proof", str(proof_file), "--key", str(key), env=offline)
        assert done.returncode == 0, done.stderr
        assert "record 4 is in the access log" in done.stdout
    done = subprocess.run([sys.executable, "-m", "keys.proofcheck", str(proof_file), "--key", str(pem)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    done = cli("audit", "check-proof", str(proof_file), "--key", str(other), env=offline)
    assert done.returncode == 3 and "does not verify under the given key" in done.stderr

    def altered(change) -> subprocess.CompletedProcess:  # noqa: ANN001
        doc = json.loads(proof_file.read_text(encoding="utf-8"))
        change(doc)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        return cli("audit", "check-proof", str(bad), "--key", str(pem), env=offline)

    for change in (lambda d: d["record"].update(purpose="另一个事由"),
                   lambda d: d.update(leaf_hash=None) or d["record"].update(rows=1),
                   lambda d: d["inclusion"].reverse() if len(d["inclusion"]) > 1 else d["inclusion"].append("00" * 32),
                   lambda d: d["inclusion"].pop(),
                   lambda d: d.update(leaf_index=d["leaf_index"] + 1),
                   lambda d: d.update(checkpoint=d["checkpoint"].replace("\n", "\nx", 1))):
        done = altered(change)
        assert done.returncode == 3, done.stderr
        assert "Traceback" not in done.stderr

    # the checkpoint in the proof is the publisher's own: it verifies under the key in the keystore
    note = proof["checkpoint"].encode("utf-8")
    public = serialization.load_pem_public_key(pem.read_bytes())
    assert verify_note(note, proof["publisher_key"]["name"], public).size == proof["tree_size"]


@pytest.mark.parametrize("args, code", [(("prove", "0", "--out", "x.json"), 2), (("prove", "99", "--out", "x.json"), 2),
                                        (("prove", "two", "--out", "x.json"), 2), (("prove", "3"), 2),
                                        (("check-proof", "missing.json", "--key", "missing.pem"), 2)])
def test_bad_audit_arguments_are_exit_2(logged: Path, tmp_path: Path, args: tuple[str, ...], code: int) -> None:
    done = subprocess.run([sys.executable, "-m", "govshare.cli", "audit", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.startswith("govshare: ")
