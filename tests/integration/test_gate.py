"""The validation gate: past a catalog threshold nothing is published, the previous version stays
current, the watermark stays, and the quality report says why."""

from __future__ import annotations

import json
import sqlite3

import pytest

from govshare.cli import main

pytestmark = pytest.mark.integration


def versions(home, dataset: str) -> list[str]:
    return sorted(p.name for p in (home.store / dataset / "versions").iterdir())


def quality_gate(home, dataset: str) -> dict:
    reports = sorted((home.root / "reports" / "quality" / dataset).glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(reports[-1].read_text(encoding="utf-8"))["gate"]


def test_collapsed_snapshot_is_blocked(home, sources):
    assert main(["sync", "legal_entity"]) == 0
    db = sqlite3.connect(sources["legal_entity_db"])
    with db:
        db.execute("DELETE FROM legal_entity WHERE rowid % 3 <> 0")  # two thirds vanish at the source
    db.close()
    state = (home.state / "legal_entity.json").read_text(encoding="utf-8")
    assert main(["sync", "legal_entity", "--full"]) == 5
    assert versions(home, "legal_entity") == ["00000001"]
    assert (home.state / "legal_entity.json").read_text(encoding="utf-8") == state
    gate = quality_gate(home, "legal_entity")
    assert gate["blocked"] and gate["snapshot_ratio"] < 0.5


def test_mass_delete_is_blocked(home, sources, capsys):
    assert main(["sync", "legal_entity"]) == 0
    db = sqlite3.connect(sources["legal_entity_db"])
    with db:
        db.execute("UPDATE legal_entity SET is_deleted = 1, updated_at = datetime('now', '+8 hours') WHERE rowid % 2 = 0")
    db.close()
    assert main(["sync", "legal_entity"]) == 5
    assert "deletes against" in capsys.readouterr().err
    assert versions(home, "legal_entity") == ["00000001"]


def test_missing_required_fields_are_blocked(home, sources, capsys):
    db = sqlite3.connect(sources["legal_entity_db"])
    with db:
        db.execute("UPDATE legal_entity SET entity_name = '  ' WHERE rowid % 4 = 0")
    db.close()
    assert main(["sync", "legal_entity"]) == 5
    assert "lack a required field" in capsys.readouterr().err
    assert not (home.store / "legal_entity" / "versions").exists()
