"""Retention of the access log through the CLI: records older than 180 days are archived (a signed
archive that checks offline), then purged; the purge is a record, and `audit verify` still passes
across it, while tampering with what is left is still caught.

The old records are written through AccessLog with an injected clock (the times a log kept for a
year would hold), before the tree and the checkpoints are made over them; everything after runs
in subprocesses, as an operator runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.home import Home
from keys.checkpoint import vkey as make_vkey
from keys.keystore import Keystore
from keys.merkle import Levels, leaf_hash, root
from lineage.audit import AccessLog

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OLD = 40  # records from 400 to ~220 days ago
RETENTION_ENV = "GOVSHARE_AUDIT_RETENTION_DAYS"


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "GOVSHARE_")) or k == "GOVSHARE_ROOT_KEY"}
    return {**env, "GOVSHARE_HOME": str(home), "GOVSHARE_GX": "inline", "PYTHONPATH": str(ROOT)}


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "govshare.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**base_env(home), **(env or {})})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = cli(home, *args, env=env)
    assert done.returncode == 0, (args, done.stderr)
    return done


def lines(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "audit" / "access-log.jsonl").read_text(encoding="utf-8").splitlines()]


def write_lines(home: Path, docs: list[dict]) -> None:
    (home / "audit" / "access-log.jsonl").write_text(
        "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for d in docs), encoding="utf-8")


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file of the access log (records, tree, checkpoints, kept leaves) and its head file."""
    files = [p for p in (home / "audit").rglob("*") if p.is_file()] + [home / "state" / "access-log-head.json"]
    return {str(p.relative_to(home)): p.read_bytes() for p in files}


def leaf(record: dict) -> bytes:
    return leaf_hash(json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


@pytest.fixture(scope="module")
def aged(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> tuple[Path, str]:  # noqa: ANN001
    """A home whose log holds 40 records from 400 to 220 days ago (deliveries, completions,
    denials), then legal_entity published (a manifest head and a checkpoint at 40) and pulled
    now; returns it and a USCC that was delivered (never written anywhere by the tests)."""
    root_dir = tmp_path_factory.mktemp("retention")
    home = root_dir / "home"
    env = {f"AIRFLOW_CONN_{conn.upper()}": uri for conn, uri in demo_sources.connection_uris().items()}
    ok(home, "init")
    start = datetime.now(timezone.utc) - timedelta(days=400)
    moments = iter(start + timedelta(days=4.5 * i) for i in range(OLD))
    log = AccessLog.of(Home(home), Keystore(home / "keystore"), clock=lambda: next(moments))
    for i in range(OLD // 4):
        seq = log.append({"event": "delivery", "outcome": "pending", "channel": "cli", "subscriber": "approval-general",
                          "dataset": "population", "versions_read": [1, 1], "fields": ["name"], "purpose": "核验",
                          "case": f"办件-{i}"})["seq"]
        log.append({"event": "delivery-complete", "delivery": seq, "outcome": "confirmed", "channel": "cli"})
        log.append({"event": "denied", "channel": "agent", "subscriber": "sub-suspended", "reason": "suspended"})
        log.append({"event": "request", "channel": "agent", "method": "GET", "path": "/agent/v1/datasets",
                    "status": 200, "subscriber": "approval-general"})
    assert log.head().count == OLD
    ok(home, "sync", "legal_entity", env=env)  # its manifest signs head 40; a checkpoint of 40 at publish
    out = root_dir / "l.parquet"
    ok(home, "pull", "legal_entity", "--subscriber", "approval-general", "--purpose", "核验", "--out", str(out))
    uscc = pq.read_table(out).column("uscc").to_pylist()[0]
    out.unlink()
    return home, uscc


@pytest.fixture
def home(aged: tuple[Path, str], tmp_path: Path) -> Path:
    shutil.copytree(aged[0], tmp_path / "home", symlinks=True)
    return tmp_path / "home"


def archive(home: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return ok(home, "audit", "archive", "--out", str(out), *extra, env=env)


def publisher_pem(home: Path, tmp_path: Path) -> Path:
    doc = json.loads(next(l for l in (home / "audit" / "checkpoints.jsonl").read_text().splitlines()))  # noqa: E741
    key = Keystore(home / "keystore").public_key_pem(doc["key_id"])
    pem = tmp_path / "publisher.pem"
    pem.write_bytes(key)
    return pem


OFFLINE = {"GOVSHARE_ROOT_KEY": ""}  # and a GOVSHARE_HOME that does not exist: nothing of the publisher's


def offline(tmp_path: Path) -> dict[str, str]:
    return {**OFFLINE, "GOVSHARE_HOME": str(tmp_path / "no-home-here")}


@pytest.fixture
def purged(home: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The home with records 1..40 archived to tmp/archive.json and purged."""
    out = tmp_path / "archive.json"
    archive(home, out)
    ok(home, "audit", "purge", "--archive", str(out))
    return home, out


def test_archive_checks_offline_then_purge_keeps_the_log_verifiable(aged, home: Path, tmp_path: Path) -> None:  # noqa: ANN001
    before = lines(home)
    checkpoint_40 = next(c for c in map(json.loads, (home / "audit" / "checkpoints.jsonl").read_text().splitlines())
                         if c["size"] == OLD)
    out = tmp_path / "archive.json"
    done = archive(home, out)
    assert f"records 1..{OLD}" in done.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert doc["records"] == before[:OLD]  # verbatim, and only those older than 180 days
    assert all(datetime.fromisoformat(r["time"]) < datetime.now(timezone.utc) - timedelta(days=180) for r in doc["records"])
    assert datetime.fromisoformat(before[OLD]["time"]) > datetime.now(timezone.utc) - timedelta(days=1)
    # the archived records are leaves 0..39 of the tree the publisher signed at publish
    assert root([leaf(r) for r in doc["records"]]).hex() == checkpoint_40["root"] == doc["root"]
    assert doc["checkpoints"][-1]["size"] >= OLD and any(c["size"] == OLD for c in doc["checkpoints"])

    pem = publisher_pem(home, tmp_path)
    vkey = tmp_path / "publisher.vkey"
    public = serialization.load_pem_public_key(pem.read_bytes())
    origin = (home / "audit" / "origin").read_text(encoding="utf-8").strip()
    vkey.write_text(make_vkey(origin, public.public_bytes_raw()) + "\n", encoding="utf-8")
    for key in (pem, vkey):
        checked = cli(home, "audit", "check-archive", str(out), "--key", str(key), env=offline(tmp_path))
        assert checked.returncode == 0, checked.stderr
        assert f"records 1..{OLD}" in checked.stdout and f"leaves 0..{OLD - 1}" in checked.stdout
    standalone = subprocess.run([sys.executable, "-m", "keys.archivecheck", str(out), "--key", str(pem)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
    assert standalone.returncode == 0, standalone.stderr

    done = ok(home, "audit", "purge", "--archive", str(out))
    assert f"records 1..{OLD} purged" in done.stdout
    after = lines(home)
    anchor, retained, purge = after[0], after[1:-1], after[-1]
    assert anchor["first_seq"] == OLD + 1 and anchor["prev_hash"] == before[OLD - 1]["hash"]
    assert retained == before[OLD:]  # the retained records verbatim
    sha = anchor["archives"][0]["sha256"]
    assert purge["event"] == "purge" and purge["purged"] == [1, OLD] and purge["archive_sha256"] == sha
    assert purge["anchor"] == anchor and purge["checkpoint"]["size"] >= OLD
    assert all(r["seq"] > OLD for r in after[1:])
    levels = Levels(home / "audit" / "tree")
    assert levels.size == purge["seq"] and levels.root(OLD).hex() == checkpoint_40["root"]  # the tree is whole

    verified = ok(home, "audit", "verify")
    assert f"the first {OLD} archived and purged" in verified.stdout
    assert "against 2 signed head(s)" in verified.stdout  # the head file and the manifest's head at 40
    assert ok(home, "audit", "verify", "--archive", str(out)).returncode == 0

    proof = tmp_path / "proof.json"
    ok(home, "audit", "prove", str(OLD + 1), "--out", str(proof))
    checked = cli(home, "audit", "check-proof", str(proof), "--key", str(pem), env=offline(tmp_path))
    assert checked.returncode == 0 and f"record {OLD + 1} is in the access log" in checked.stdout
    refused = cli(home, "audit", "prove", "7", "--out", str(proof))
    assert refused.returncode == 2 and "archived and purged" in refused.stderr and sha in refused.stderr

    listed = ok(home, "audit", "list", "--json")
    assert [json.loads(l)["seq"] for l in listed.stdout.splitlines()] == [r["seq"] for r in after[1:]]  # noqa: E741
    assert "are archived in" in ok(home, "audit", "list").stdout
    uscc = aged[1]
    subject = ok(home, "audit", "subject", uscc)
    assert "1 delivery(ies) contained this record" in subject.stdout  # the pull made now is retained
    assert f"records 1..{OLD}" in subject.stdout and f"archived in {sha[:16]}" in subject.stdout
    log_text = (home / "audit" / "access-log.jsonl").read_text(encoding="utf-8")
    assert uscc not in log_text and uscc not in out.read_text(encoding="utf-8") and uscc not in subject.stderr
    assert ok(home, "audit", "verify").returncode == 0  # the subject query appended after the purge


def test_two_purges_chain_their_archives(home: Path, tmp_path: Path) -> None:
    records = lines(home)
    cut = datetime.fromisoformat(records[14]["time"]).astimezone(timezone.utc).isoformat()  # records 1..14 before it
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    assert "records 1..14" in archive(home, first, "--before", cut).stdout
    ok(home, "audit", "purge", "--archive", str(first))
    assert f"records 15..{OLD}" in archive(home, second).stdout
    doc = json.loads(second.read_text(encoding="utf-8"))
    assert doc["prefix"]["size"] == 14 and doc["prev_hash"] == records[13]["hash"]
    pem = publisher_pem(home, tmp_path)
    for out in (first, second):
        assert cli(home, "audit", "check-archive", str(out), "--key", str(pem), env=offline(tmp_path)).returncode == 0
    ok(home, "audit", "purge", "--archive", str(second))
    anchor = lines(home)[0]
    assert anchor["first_seq"] == OLD + 1 and [(a["first"], a["last"]) for a in anchor["archives"]] == [(1, 14), (15, OLD)]
    for out in (first, second):
        assert ok(home, "audit", "verify", "--archive", str(out)).returncode == 0
    refused = cli(home, "audit", "prove", "3", "--out", str(tmp_path / "p.json"))
    assert refused.returncode == 2 and anchor["archives"][0]["sha256"] in refused.stderr


def _edit_record(home: Path, seq: int) -> None:
    docs = lines(home)
    next(d for d in docs if d.get("seq") == seq)["purpose"] = "改过的事由"
    write_lines(home, docs)


def _edit_anchor(field: str, value: object):  # noqa: ANN202
    def edit(home: Path) -> None:
        docs = lines(home)
        docs[0][field] = value
        write_lines(home, docs)
    return edit


def _drop_purge(home: Path, keep_after: bool) -> None:
    docs = lines(home)
    if keep_after:  # a record after the purge record, so that it is removed from the middle
        write_lines(home, docs)
        AccessLog.of(Home(home), Keystore(home / "keystore")).append({"event": "request", "purpose": "之后"})
        docs = lines(home)
    write_lines(home, [d for d in docs if d.get("event") != "purge"])


def _swap_leaf(home: Path) -> None:
    path = home / "audit" / "purged-leaves.bin"
    data = bytearray(path.read_bytes())
    data[5 * 32] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper, says", [
    (lambda home: _edit_record(home, OLD + 1), f"record {OLD + 1}: its content does not match its hash"),
    (_edit_anchor("prev_hash", "ab" * 32), f"record {OLD + 1}: does not link to the hash the retention anchor"),
    (_edit_anchor("first_seq", OLD), f"leaf hashes of the purged records 1..{OLD - 1} are not the ones"),
    (_edit_anchor("root", "cd" * 32), "do not make the root the retention anchor"),
    (_edit_anchor("archives", [{"first": 1, "last": OLD, "sha256": "ef" * 32, "last_time": "x"}]),
     "is not the one purge record"),
    (lambda home: _drop_purge(home, keep_after=True), "sequence number"),
    (lambda home: _drop_purge(home, keep_after=False), "removed from the end"),
    (lambda home: write_lines(home, lines(home)[1:]), f"record 1: sequence number {OLD + 1}; the records before it"),
    (_swap_leaf, "purged-leaves.bin: the leaf hashes of the purged records"),
    (lambda home: (home / "audit" / "purged-leaves.bin").unlink(), "purged-leaves.bin is missing"),
], ids=["retained record edited", "anchor's prev_hash edited", "anchor's first_seq edited", "anchor's root edited",
        "anchor's archive edited", "purge record removed", "purge record cut off the end", "anchor removed",
        "purged leaf altered", "purged leaves removed"])
def test_tampering_after_a_purge_is_exit_3(purged: tuple[Path, Path], tamper, says: str) -> None:  # noqa: ANN001
    home, _ = purged
    tamper(home)
    done = cli(home, "audit", "verify")
    assert done.returncode == 3, done.stdout
    assert says in done.stderr, done.stderr


def test_a_swapped_archive_is_caught_by_the_purge_record(home: Path, tmp_path: Path) -> None:
    records = lines(home)
    earlier = tmp_path / "earlier.json"  # a genuine archive of the same log, of records 1..9 only
    archive(home, earlier, "--before", datetime.fromisoformat(records[9]["time"]).isoformat())
    out = tmp_path / "archive.json"
    archive(home, out)
    ok(home, "audit", "purge", "--archive", str(out))
    pem = publisher_pem(home, tmp_path)
    assert cli(home, "audit", "check-archive", str(earlier), "--key", str(pem), env=offline(tmp_path)).returncode == 0
    shutil.copy(earlier, out)  # the archive kept beside the purge is swapped for another, validly signed
    done = cli(home, "audit", "verify", "--archive", str(out))
    assert done.returncode == 3 and "is not an archive the purge records name" in done.stderr, done.stderr


@pytest.fixture
def archived(home: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The home, its archive of records 1..40 (not purged) and the publisher's PEM."""
    out = tmp_path / "archive.json"
    archive(home, out)
    return home, out, publisher_pem(home, tmp_path)


def test_check_archive_refuses_another_key_and_a_missing_file(archived: tuple[Path, Path, Path], tmp_path: Path) -> None:
    home, out, pem = archived
    stranger = Ed25519PrivateKey.generate().public_key()
    other = tmp_path / "other.pem"
    other.write_bytes(stranger.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    done = cli(home, "audit", "check-archive", str(out), "--key", str(other), env=offline(tmp_path))
    assert done.returncode == 3 and "does not verify under the given key" in done.stderr
    missing = cli(home, "audit", "check-archive", str(tmp_path / "missing.json"), "--key", str(pem), env=offline(tmp_path))
    assert missing.returncode == 2 and "no such file" in missing.stderr


@pytest.mark.parametrize("change, says", [
    (lambda d: d["records"][3].update(purpose="另一个事由"), "digest differs"),
    (lambda d: d["records"].pop(), "digest differs"),
    (lambda d: d.update(last_seq=d["last_seq"] - 1), "digest differs"),
    (lambda d: d.update(signature=d["signature"].replace("\n", "\nx", 1)), "signature"),
    (lambda d: d.pop("signature"), "no signature"),
], ids=["record edited", "record dropped", "range shortened", "signature edited", "signature removed"])
def test_check_archive_refuses_an_altered_archive(archived: tuple[Path, Path, Path], tmp_path: Path, change,  # noqa: ANN001
                                                  says: str) -> None:
    home, out, pem = archived
    doc = json.loads(out.read_text(encoding="utf-8"))
    change(doc)
    out.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    done = cli(home, "audit", "check-archive", str(out), "--key", str(pem), env=offline(tmp_path))
    assert done.returncode == 3, done.stderr
    assert says in done.stderr, done.stderr


@pytest.mark.parametrize("raw", ["179", "0", "abc", "180.5", "-200", " "])
def test_a_retention_below_180_days_or_not_a_whole_number_is_refused(home: Path, tmp_path: Path, raw: str) -> None:
    done = cli(home, "audit", "archive", "--out", str(tmp_path / "a.json"), env={RETENTION_ENV: raw})
    if not raw.strip():  # unset or blank: the default, 180
        assert done.returncode == 0 and f"records 1..{OLD}" in done.stdout
        return
    assert done.returncode == 2, done.stderr
    assert RETENTION_ENV in done.stderr and "网络安全法" in done.stderr
    assert not (tmp_path / "a.json").exists()


def test_the_cut_may_only_move_earlier(home: Path, tmp_path: Path) -> None:
    later = (datetime.now(timezone.utc) - timedelta(days=100)).date().isoformat()
    done = cli(home, "audit", "archive", "--out", str(tmp_path / "a.json"), "--before", later)
    assert done.returncode == 2 and "--before may only move the cut earlier" in done.stderr
    done = cli(home, "audit", "archive", "--out", str(tmp_path / "a.json"), "--before", "someday")
    assert done.returncode == 2
    longer = archive(home, tmp_path / "b.json", env={RETENTION_ENV: "300"})  # a longer retention keeps more
    kept = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["records"]
    assert 0 < len(kept) < OLD and "records 1.." in longer.stdout
    assert all(datetime.fromisoformat(r["time"]) < datetime.now(timezone.utc) - timedelta(days=300) for r in kept)
    assert "nothing archived" in ok(home, "audit", "archive", "--out", str(tmp_path / "c.json"), "--before",
                                    "2000-01-01").stdout
    assert not (tmp_path / "c.json").exists()


def _forged(home: Path, out: Path) -> None:
    """Record 3 changed and the archive re-signed by someone without the publisher's key."""
    doc = json.loads(out.read_text(encoding="utf-8"))
    doc["records"][2]["purpose"] = "改过的事由"
    out.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("spoil, code, says", [
    (lambda home, out: out.unlink(), 2, "no such file"),
    (lambda home, out: out.write_text("{not json", encoding="utf-8"), 3, "not JSON"),
    (_forged, 3, "digest differs"),
    (lambda home, out: _edit_record(home, 5), 3, "record 5: its content does not match its hash"),
    (lambda home, out: None, 2, "within the retention period"),
], ids=["missing", "not JSON", "archive altered", "live log altered", "retention raised since"])
def test_purge_without_a_valid_archive_changes_nothing(home: Path, tmp_path: Path, spoil, code: int, says: str) -> None:  # noqa: ANN001
    out = tmp_path / "archive.json"
    archive(home, out)
    spoil(home, out)
    kept = snapshot(home)
    env = {RETENTION_ENV: "330"} if says.startswith("within") else None
    done = cli(home, "audit", "purge", "--archive", str(out), env=env)
    assert done.returncode == code, done.stderr
    assert says in done.stderr, done.stderr
    assert snapshot(home) == kept


def test_purge_of_an_archive_already_purged_is_refused(purged: tuple[Path, Path]) -> None:
    home, out = purged
    kept = snapshot(home)
    done = cli(home, "audit", "purge", "--archive", str(out))
    assert done.returncode == 2 and "purged already" in done.stderr
    assert snapshot(home) == kept


def test_a_crash_before_the_rename_leaves_the_log_as_it_was(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "archive.json"
    archive(home, out)
    log_before = (home / "audit" / "access-log.jsonl").read_bytes()
    done = cli(home, "audit", "purge", "--archive", str(out), env={"GOVSHARE_FAULT": "purge-written"})
    assert done.returncode == -9  # SIGKILL: no cleanup ran
    assert (home / "audit" / "access-log.jsonl").read_bytes() == log_before
    assert "archived and purged" not in ok(home, "audit", "verify").stdout
    ok(home, "audit", "purge", "--archive", str(out))  # the purge can be run again
    assert not list((home / "audit").glob(".access-log.jsonl.*.tmp"))
    assert "archived and purged" in ok(home, "audit", "verify").stdout


def test_a_crash_after_the_rename_leaves_a_purged_log_that_verifies(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "archive.json"
    archive(home, out)
    done = cli(home, "audit", "purge", "--archive", str(out), env={"GOVSHARE_FAULT": "purge-renamed"})
    assert done.returncode == -9
    assert lines(home)[-1]["event"] == "purge"  # the head file and the tree cache lag; both catch up
    assert f"the first {OLD} archived and purged" in ok(home, "audit", "verify").stdout
    ok(home, "audit", "prove", str(OLD + 2), "--out", str(tmp_path / "p.json"))
    assert ok(home, "audit", "verify").returncode == 0
