"""The whole path through the public surface: real SQLite sources, real files, real keys.

sync -> versions -> verify -> pull -> lineage -> audit, and what must go wrong when it should.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.catalog import load_catalog
from govshare.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PURPOSE = "户籍迁移审批 核验申请人身份"
ID_LIKE = re.compile(r"\d{17}[\dXx]")


def sync(dataset: str, *extra: str) -> int:
    return main(["sync", dataset, *extra])


def pull(dataset: str, subscriber: str, out: Path, *extra: str, purpose: str | None = PURPOSE) -> int:
    args = ["pull", dataset, "--subscriber", subscriber, "--out", str(out), *extra]
    if purpose is not None:
        args += ["--purpose", purpose]
    return main(args)


def version_dir(home, dataset: str, version: int = 1) -> Path:
    return home.store / dataset / "versions" / f"{version:08d}"


def flip_byte(path: Path, offset: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- publishing ---------------------------------------------------------------------------


def test_sync_publishes_exactly_the_valid_rows_and_quarantines_the_defective(home, sources, demo_sources, tmp_path):
    assert sync("population") == 0
    counts = demo_sources.counts["population"]
    manifest = json.loads((version_dir(home, "population") / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"]["upserts"] == counts.valid
    assert manifest["rows"]["quarantined"] == counts.defective
    assert manifest["rows"]["deletes"] == 0  # nothing was published before: withdrawn rows change nothing
    assert manifest["kind"] == "snapshot" and manifest["previous"] is None

    out = tmp_path / "household.parquet"
    assert pull("population", "approval-household", out) == 0
    published = set(pq.read_table(out).column("id_number").to_pylist())
    defective = set().union(*(keys for (ds, _), keys in demo_sources.defect_keys.items() if ds == "population"))
    assert published.isdisjoint(defective)
    assert published.isdisjoint(demo_sources.deleted_keys["population"])
    assert len(published) == counts.valid
    for (ds, kind), keys in demo_sources.variant_keys.items():
        if ds == "population":  # lowercase x, 15-digit and padded keys arrive normalised
            assert keys <= published, kind


def test_quarantine_is_encrypted_and_counts_every_rule(home, sources, demo_sources):
    assert sync("population") == 0
    files = list((home.quarantine / "population").glob("cli_*.parquet"))
    assert len(files) == 1
    with pytest.raises(Exception):
        pq.read_table(files[0])  # no keys, no rows
    meta = json.loads(next((home.quarantine / "population").glob("*.json")).read_text(encoding="utf-8"))
    assert meta["files"] == [files[0].name]
    assert sum(meta["rules"].values()) >= demo_sources.counts["population"].defective


def test_second_sync_without_source_changes_publishes_nothing(home, sources, capsys):
    assert sync("legal_entity") == 0
    capsys.readouterr()
    assert sync("legal_entity") == 0
    assert "nothing new" in capsys.readouterr().out
    assert [p.name for p in (home.store / "legal_entity" / "versions").iterdir()] == ["00000001"]


def test_incremental_sync_publishes_changes_and_deletes_as_a_feed(home, sources, tmp_path):
    assert sync("legal_entity") == 0
    base = tmp_path / "base.parquet"
    assert pull("legal_entity", "approval-general", base) == 0
    usccs = pq.read_table(base).column("uscc").to_pylist()[:3]
    db = sqlite3.connect(sources["legal_entity_db"])
    with db:
        db.execute("UPDATE legal_entity SET entity_name = '新名称有限公司', updated_at = datetime('now', '+8 hours') "
                   "WHERE upper(trim(uscc)) = ?", (usccs[0],))
        db.execute("UPDATE legal_entity SET is_deleted = 1, updated_at = datetime('now', '+8 hours') WHERE upper(trim(uscc)) = ?", (usccs[1],))
    db.close()
    assert sync("legal_entity") == 0

    feed = tmp_path / "feed.parquet"
    assert pull("legal_entity", "approval-general", feed, "--since", "1") == 0
    rows = {r["uscc"]: r for r in pq.read_table(feed).to_pylist()}
    assert set(rows) == {usccs[0], usccs[1]}
    assert rows[usccs[0]]["_change_type"] == "upsert" and rows[usccs[0]]["entity_name"] == "新名称有限公司"
    assert rows[usccs[1]]["_change_type"] == "delete"
    assert {r["_commit_version"] for r in rows.values()} == {2}

    full = tmp_path / "full.parquet"
    assert pull("legal_entity", "approval-general", full) == 0
    state = {r["uscc"]: r for r in pq.read_table(full).to_pylist()}
    assert usccs[1] not in state and state[usccs[0]]["entity_name"] == "新名称有限公司"
    assert len(state) == pq.read_table(base).num_rows - 1
    assert set(pq.read_table(full).column("_change_type").to_pylist()) == {"upsert"}


def test_full_resync_publishes_a_snapshot_that_deletes_what_vanished(home, sources, tmp_path):
    assert sync("legal_entity") == 0
    db = sqlite3.connect(sources["legal_entity_db"])
    with db:
        gone = db.execute("SELECT uscc FROM legal_entity WHERE is_deleted = 0 ORDER BY uscc LIMIT 1").fetchone()[0]
        db.execute("DELETE FROM legal_entity WHERE uscc = ?", (gone,))
    db.close()
    assert sync("legal_entity", "--full") == 0
    manifest = json.loads((version_dir(home, "legal_entity", 2) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "snapshot" and manifest["rows"]["deletes"] == 1
    feed = tmp_path / "feed.parquet"
    assert pull("legal_entity", "approval-general", feed, "--since", "1") == 0
    deleted = [r["uscc"] for r in pq.read_table(feed).to_pylist() if r["_change_type"] == "delete"]
    assert deleted == [gone.strip().upper()]


# -- integrity ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["upserts.parquet", "deletes.parquet", "manifest.json", "manifest.sig"])
def test_one_changed_byte_fails_verify_and_pull_with_exit_3(home, sources, tmp_path, target):
    assert sync("e_license") == 0
    assert main(["verify", "e_license"]) == 0
    path = version_dir(home, "e_license") / target
    if target == "manifest.json":
        path.write_bytes(path.read_bytes().replace(b'"kind":"snapshot"', b'"kind":"snapshoT"'))
    else:
        flip_byte(path)
    assert main(["verify", "e_license"]) == 3
    assert pull("e_license", "approval-general", tmp_path / "x.parquet") == 3
    assert not (tmp_path / "x.parquet").exists()


def test_removed_version_breaks_the_chain(home, sources):
    assert sync("legal_entity") == 0
    db = sqlite3.connect(sources["legal_entity_db"])
    with db:
        db.execute("UPDATE legal_entity SET entity_name = entity_name || '分公司', updated_at = datetime('now', '+8 hours') "
                   "WHERE uscc = (SELECT uscc FROM legal_entity WHERE is_deleted = 0 ORDER BY uscc LIMIT 1)")
    db.close()
    assert sync("legal_entity") == 0
    assert version_dir(home, "legal_entity", 2).is_dir()
    import shutil

    shutil.rmtree(version_dir(home, "legal_entity", 1))
    assert main(["verify", "legal_entity"]) == 3


def test_extra_file_in_a_version_is_an_integrity_failure(home, sources):
    assert sync("legal_entity") == 0
    (version_dir(home, "legal_entity") / "smuggled.parquet").write_bytes(b"x")
    assert main(["verify", "legal_entity"]) == 3


def test_conditional_fields_are_not_readable_without_keys(home, sources, tmp_path):
    assert sync("population") == 0
    path = version_dir(home, "population") / "upserts.parquet"
    with pytest.raises(Exception):
        pq.read_table(path)
    assert pull("population", "approval-household", tmp_path / "p.parquet") == 0
    raw = path.read_bytes()
    for id_number in pq.read_table(tmp_path / "p.parquet").column("id_number").to_pylist():
        assert id_number.encode("ascii") not in raw


# -- access ---------------------------------------------------------------------------------


def test_general_subscriber_gets_no_conditional_and_no_withheld_field(home, sources, tmp_path):
    catalog = load_catalog()
    for dataset in ("population", "legal_entity", "e_license"):
        assert sync(dataset) == 0
        out = tmp_path / f"{dataset}.parquet"
        assert pull(dataset, "approval-general", out) == 0
        columns = pq.read_schema(out).names
        ds = catalog.dataset(dataset)
        fields = [c for c in columns if not c.startswith("_")]
        assert fields == [f.name for f in ds.fields_of("unconditional")]
        assert columns[-3:] == ["_change_type", "_commit_version", "_disputed"]
        assert not {f.name for f in ds.fields if f.sharing != "unconditional"} & set(columns)


def test_household_subscriber_gets_decrypted_conditional_fields_but_never_phone(home, sources, tmp_path):
    assert sync("population") == 0
    out = tmp_path / "p.parquet"
    assert pull("population", "approval-household", out) == 0
    table = pq.read_table(out)
    assert "phone" not in table.schema.names
    assert all(ID_LIKE.fullmatch(v) for v in table.column("id_number").to_pylist())
    assert table.column("name").null_count == 0


def test_subscriber_without_a_grant_is_denied_with_exit_4(home, sources, tmp_path, capsys):
    assert sync("legal_entity") == 0
    assert pull("legal_entity", "approval-household", tmp_path / "x.parquet") == 4
    assert "no grant" in capsys.readouterr().err
    assert pull("legal_entity", "nobody-at-all", tmp_path / "x.parquet") == 4
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("purpose", [None, "", "   ", "x" * 201])
def test_missing_empty_or_overlong_purpose_is_denied_with_exit_4(home, sources, tmp_path, purpose):
    assert sync("legal_entity") == 0
    assert pull("legal_entity", "approval-general", tmp_path / "x.parquet", purpose=purpose) == 4
    assert not (tmp_path / "x.parquet").exists()


def test_purpose_of_200_characters_is_accepted(home, sources, tmp_path):
    assert sync("legal_entity") == 0
    assert pull("legal_entity", "approval-general", tmp_path / "x.parquet", purpose="审" * 200) == 0


# -- lineage and audit ------------------------------------------------------------------------


def test_lineage_report_counts_quarantine_and_deliveries_without_values(home, sources, demo_sources, tmp_path):
    assert sync("population") == 0
    assert pull("population", "approval-household", tmp_path / "p.parquet") == 0
    assert main(["lineage", "population", "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
    assert main(["lineage", "population", "--out", str(tmp_path / "r.html")]) == 0
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["rows"]["quarantined"] == demo_sources.counts["population"].defective
    assert sum(report["quarantine_by_rule"].values()) >= demo_sources.counts["population"].defective
    assert [d["subscriber"] for d in report["deliveries"]] == ["approval-household"]
    assert report["deliveries"][0]["purpose"] == PURPOSE
    protection = {p["field"]: p["action"] for p in report["protection"]}
    assert protection["id_number"] == "encrypted" and protection["phone"] == "withheld" and protection["sex_code"] == "plain"
    assert any(e["eventType"] == "COMPLETE" for e in report["openlineage_events"])
    assert report["quarantine_cases"] == {"open": demo_sources.counts["population"].defective}
    assert set(report["quality_feedback"]) == {"json", "csv", "html"}
    feedback = json.loads(Path(report["quality_feedback"]["json"]).read_text(encoding="utf-8"))
    assert feedback["totals"]["rows_rejected"] == demo_sources.counts["population"].defective
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http://" not in html.split("</style>")[0]
    for text in (html, (tmp_path / "r.json").read_text(encoding="utf-8")):
        ids = set(pq.read_table(tmp_path / "p.parquet").column("id_number").to_pylist())
        assert not any(i in text for i in ids)


def test_access_log_is_chained_and_tampering_is_exit_3(home, sources, tmp_path):
    assert sync("legal_entity") == 0
    for n in range(3):
        assert pull("legal_entity", "approval-general", tmp_path / f"{n}.parquet") == 0
    assert main(["audit", "verify"]) == 0
    log = home.audit / "access-log.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    log.write_text("\n".join([lines[0], lines[2]]) + "\n", encoding="utf-8")
    assert main(["audit", "verify"]) == 3
    log.write_text("\n".join([lines[0], lines[1].replace(PURPOSE, "别的事由"), lines[2]]) + "\n", encoding="utf-8")
    assert main(["audit", "verify"]) == 3


# -- configuration and gate ---------------------------------------------------------------------


def test_uninitialised_home_says_to_run_init_with_exit_2(sources, capsys):
    assert sync("population") == 2
    assert "govshare init" in capsys.readouterr().err


def test_unknown_dataset_is_exit_2(home, capsys):
    assert main(["verify", "nonesuch"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_gate_blocks_publication_with_exit_5_and_keeps_the_previous_version(home, sources, tmp_path, monkeypatch):
    assert sync("population") == 0
    strict = tmp_path / "catalogs"
    import shutil

    shutil.copytree(ROOT / "catalogs", strict)
    pop = strict / "population.yaml"
    pop.write_text(pop.read_text(encoding="utf-8").replace("max_rejected_share: 0.5", "max_rejected_share: 0.0"), encoding="utf-8")
    monkeypatch.setenv("GOVSHARE_CATALOG", str(strict))
    watermark = (home.state / "population.json").read_text(encoding="utf-8")
    assert sync("population", "--full") == 5
    assert [p.name for p in (home.store / "population" / "versions").iterdir()] == ["00000001"]
    assert (home.state / "population.json").read_text(encoding="utf-8") == watermark
    assert main(["verify", "population"]) == 0


def test_broken_catalog_is_exit_2_listing_every_problem(home, tmp_path, monkeypatch, capsys):
    import shutil

    broken = tmp_path / "catalogs"
    shutil.copytree(ROOT / "catalogs", broken)
    pop = broken / "population.yaml"
    pop.write_text(pop.read_text(encoding="utf-8").replace("sharing: none", "sharing: nope").replace("type: date", "type: day"), encoding="utf-8")
    monkeypatch.setenv("GOVSHARE_CATALOG", str(broken))
    assert main(["sync", "population"]) == 2
    err = capsys.readouterr().err
    assert "sharing 'nope'" in err and "type 'day'" in err


def test_console_script_runs_and_maps_exit_codes(home, tmp_path):
    script = ROOT / ".venv" / "bin" / "govshare"
    result = subprocess.run([str(script), "pull", "population", "--subscriber", "approval-general", "--out", str(tmp_path / "x")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 4
    assert "Traceback" not in result.stderr and "--purpose" in result.stderr
