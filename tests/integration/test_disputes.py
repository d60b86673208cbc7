"""Objections (异议): raised by an approval system, visible as _disputed, cleared by a correction
at the source or resolved by the bureau; every step kept."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.parquet as pq
import pytest

from govshare.cli import main

pytestmark = pytest.mark.integration


def pull(tmp_path, name: str, *extra: str) -> dict[str, dict]:
    out = tmp_path / f"{name}.parquet"
    assert main(["pull", "legal_entity", "--subscriber", "approval-general", "--purpose", "异议核对",
                 "--out", str(out), *extra]) == 0
    return {r["uscc"]: r for r in pq.read_table(out).to_pylist()}


def first_published(tmp_path) -> str:
    return sorted(pull(tmp_path, "base"))[0]


def test_dispute_is_visible_until_the_source_corrects_the_record(home, sources, tmp_path, capsys):
    assert main(["sync", "legal_entity"]) == 0
    uscc = first_published(tmp_path)
    assert main(["dispute", "legal_entity", uscc.lower(), "--subscriber", "approval-general",
                 "--reason", "登记地址与现场核验不一致"]) == 0
    out = capsys.readouterr().out
    assert uscc not in out and "legal_entity-1" in out  # masked in messages

    rows = pull(tmp_path, "after-dispute")
    assert rows[uscc]["_disputed"] is True
    assert sum(r["_disputed"] for r in rows.values()) == 1

    db = sqlite3.connect(sources["legal_entity_db"])
    with db:
        db.execute("UPDATE legal_entity SET address = '更正后的住所', updated_at = datetime('now', '+8 hours') WHERE trim(upper(uscc)) = ?", (uscc,))
    db.close()
    assert main(["sync", "legal_entity"]) == 0
    rows = pull(tmp_path, "after-correction")
    assert rows[uscc]["_disputed"] is False and rows[uscc]["address"] == "更正后的住所"

    capsys.readouterr()
    assert main(["dispute", "list", "legal_entity", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["id"], d["status"]) for d in listed] == [("legal_entity-1", "cleared")]
    assert listed[0]["closed_by"]["version"] == 2


def test_bureau_resolves_a_dispute(home, sources, tmp_path, capsys):
    assert main(["sync", "legal_entity"]) == 0
    uscc = first_published(tmp_path)
    assert main(["dispute", "legal_entity", uscc, "--subscriber", "approval-general", "--reason", "名称疑似有误"]) == 0
    assert main(["dispute", "resolve", "legal_entity", "legal_entity-1", "--by", "省数据资源局", "--note", "经核实数据无误"]) == 0
    assert pull(tmp_path, "after-resolve")[uscc]["_disputed"] is False
    assert main(["dispute", "resolve", "legal_entity", "legal_entity-1", "--by", "x", "--note", "y"]) == 2


def test_dispute_needs_a_grant_a_reason_and_a_published_record(home, sources, tmp_path):
    assert main(["sync", "legal_entity"]) == 0
    uscc = first_published(tmp_path)
    assert main(["dispute", "legal_entity", uscc, "--subscriber", "approval-household", "--reason", "x"]) == 4
    assert main(["dispute", "legal_entity", uscc, "--subscriber", "approval-general", "--reason", " "]) == 2
    assert main(["dispute", "legal_entity", "91110000600037341L", "--subscriber", "approval-general", "--reason", "x"]) == 2


def test_tampered_dispute_log_is_an_integrity_failure(home, sources, tmp_path):
    assert main(["sync", "legal_entity"]) == 0
    uscc = first_published(tmp_path)
    assert main(["dispute", "legal_entity", uscc, "--subscriber", "approval-general", "--reason", "原因"]) == 0
    log = home.root / "disputes" / "legal_entity.jsonl"
    log.write_text(log.read_text(encoding="utf-8").replace("原因", "别的"), encoding="utf-8")
    assert main(["dispute", "list", "legal_entity"]) == 3
