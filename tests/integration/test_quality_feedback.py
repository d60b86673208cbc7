"""Quality feedback end to end: real demo sources, real syncs, real keys, real quarantine files.

The demo draws license holders from valid, published people and entities only, so the test first
points some valid licenses at holders that are *not* published: population / legal-entity rows
with a defect that leaves their key valid (blank name, bad sex code, ...) and soft-deleted rows.
Those licenses pass e_license's own validation and must be flagged by crossref, not rejected.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.catalog import load_catalog
from govshare.cli import main
from keys.keystore import Keystore
from keys.protection import staging_encryption
from sharing.index import published_refs
from validation.crossref import crossref
from validation.quality import quality_report, write_quality_report
from keys.masking import mask_keys

pytestmark = pytest.mark.integration
ID_LIKE = re.compile(r"\d{17}[\dXx]")
# Defects that leave the key itself valid: the row is quarantined, the key is never published.
PERSON_KEY_VALID = ("blank_name", "unknown_sex_code", "birth_date_mismatch", "sex_mismatch")
ENTITY_KEY_VALID = ("blank_name", "negative_capital", "unknown_status")
MOVED_PER_KIND = 2


def _keys(demo_sources, dataset: str, kinds: tuple[str, ...]) -> list[str]:
    return sorted(set().union(*(demo_sources.defect_keys.get((dataset, k), frozenset()) for k in kinds)))


def _licenses(db: Path, demo_sources, id_type: str) -> list[tuple[str, str]]:
    """(raw license_id, normalised license_id) of live, valid licenses of one holder id type."""
    bad = set().union(*(keys for (ds, _), keys in demo_sources.defect_keys.items() if ds == "e_license"))
    bad |= demo_sources.deleted_keys["e_license"]
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT license_id FROM e_license WHERE holder_id_type = ? AND is_deleted = 0 "
                           "ORDER BY license_id", (id_type,)).fetchall()
    finally:
        con.close()
    return [(raw, raw.strip().upper()) for (raw,) in rows if raw.strip().upper() not in bad]


def _point_at_unpublished_holders(sources, demo_sources) -> dict[str, list[str]]:
    """Re-point a few valid licenses at unpublished holders; returns check -> normalised license ids."""
    people = _keys(demo_sources, "population", PERSON_KEY_VALID)[: MOVED_PER_KIND * 3]
    people += sorted(demo_sources.deleted_keys["population"])[:MOVED_PER_KIND]
    entities = _keys(demo_sources, "legal_entity", ENTITY_KEY_VALID)[: MOVED_PER_KIND * 2]
    assert len(people) >= 4 and len(entities) >= 2, "the demo data has too few defects to test with"
    moved: dict[str, list[str]] = {}
    con = sqlite3.connect(sources["e_license_db"])
    try:
        with con:
            for check, id_type, holders in (("holder_id.in_population", "111", people),
                                            ("holder_id.in_legal_entity", "001", entities)):
                licenses = _licenses(sources["e_license_db"], demo_sources, id_type)[: len(holders)]
                for (raw, _), holder in zip(licenses, holders):
                    con.execute("UPDATE e_license SET holder_id = ? WHERE license_id = ?", (holder, raw))
                moved[check] = [norm for _, norm in licenses]
    finally:
        con.close()
    return moved


def _expected_checked(db: Path, demo_sources, id_type: str) -> int:
    return len(_licenses(db, demo_sources, id_type))


def _good_file(dataset, keystore: Keystore, path: Path) -> tuple[Path, dict]:
    """The run's good rows as the pipeline stages them (it deletes its own after publishing)."""
    from connectors import open_source
    from govshare.pipeline import today
    from keys.pseudonyms import with_fingerprints
    from validation.engine import Validator

    source = open_source(dataset)
    validator = Validator(dataset, today(), gx=False)
    writer = None
    try:
        for batch in source.read_batches(None, source.high_watermark()):
            good = with_fingerprints(validator.check(batch).good, dataset, keystore.hmac_key())
            if writer is None:
                writer = pq.ParquetWriter(path, good.schema, compression="zstd",
                                          encryption_properties=staging_encryption(keystore).file_encryption_properties)
            writer.write_batch(good)
    finally:
        if writer is not None:
            writer.close()
    return path, validator.summary()


def _raw_values(db: Path, table: str, columns: tuple[str, ...]) -> set[str]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
    finally:
        con.close()
    return {str(v).strip() for row in rows for v in row if v is not None and len(str(v).strip()) >= 3}


def test_crossref_flags_licenses_of_unpublished_holders_and_the_report_shows_no_raw_value(
        home, sources, demo_sources, tmp_path):
    moved = _point_at_unpublished_holders(sources, demo_sources)
    for dataset in ("population", "legal_entity", "e_license"):
        assert main(["sync", dataset]) == 0, dataset

    catalog = load_catalog()
    ds = catalog.dataset("e_license")
    keystore = Keystore(home.keystore)
    good, summary = _good_file(ds, keystore, tmp_path / "good-0.parquet")
    result = crossref(ds, [good], keystore, published_refs(home.state))

    by_check = {f.check: f for f in result.findings}
    db = sources["e_license_db"]
    for check, id_type in (("holder_id.in_population", "111"), ("holder_id.in_legal_entity", "001")):
        finding = by_check[check]
        assert finding.checked, check
        assert finding.rows_checked == _expected_checked(db, demo_sources, id_type), check
        assert finding.not_found == len(moved[check]) > 0, check
        expected = mask_keys(pa.array(moved[check], pa.string())).to_pylist()
        assert Counter(finding.masked_keys) == Counter(expected), check
        assert finding.masked_keys_omitted == 0

    # Legal representatives are drawn from published people: all of them are found.
    entity_ds = catalog.dataset("legal_entity")
    entity_good, _ = _good_file(entity_ds, keystore, tmp_path / "entity-good-0.parquet")
    (reps,) = crossref(entity_ds, [entity_good], keystore, published_refs(home.state)).findings
    assert reps.checked and reps.rows_checked > 0 and reps.not_found == 0

    # The quality report over the real quarantine of the e_license run.
    quarantine = home.quarantine / "e_license"
    (meta_path,) = quarantine.glob("*.json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    files = [quarantine / name for name in meta["files"]]
    report = quality_report(ds, meta["run_id"], summary, files, keystore, cross=result, version=meta["version"])
    assert report["header"]["version"] == meta["version"] == 1
    counts = demo_sources.counts["e_license"]
    assert report["totals"]["rows_rejected"] == counts.defective
    assert report["totals"]["rows_passed"] == counts.valid + counts.deleted
    for rule in report["rules"]:
        assert rule["rows_quarantined"] == meta["rules"].get(rule["rule_id"], 0) == rule["rows_failed"], rule["rule_id"]
        assert len(rule["masked_keys"]) + rule["masked_keys_omitted"] + rule["rows_without_key"] == rule["rows_quarantined"]
    assert sum(len(r["masked_keys"]) for r in report["rules"]) >= counts.defective

    paths = write_quality_report(report, tmp_path / "feedback")
    secrets = _raw_values(db, "e_license", ("license_id", "holder_name", "holder_id", "license_number"))
    secrets |= _raw_values(sources["population_db"], "population_person", ("id_number", "name", "phone"))
    for kind, path in paths.items():
        text = path.read_text(encoding="utf-8-sig")
        assert not ID_LIKE.search(text), kind
        leaked = [v for v in secrets if v in text]
        assert not leaked, f"{kind}: {len(leaked)} raw values in the output"  # count only, never the values


def test_valid_status_with_a_past_expiry_is_reported_not_rejected(home, sources, tmp_path):
    import sqlite3

    from govshare.cli import main

    db = sqlite3.connect(sources["e_license_db"])
    with db:
        keys = [k for (k,) in db.execute(
            "SELECT license_id FROM e_license WHERE license_status = '10' AND is_deleted = 0 AND valid_until IS NOT NULL "
            "AND valid_from < '2020-01-01' ORDER BY license_id LIMIT 3")]
        db.executemany("UPDATE e_license SET valid_until = '2020-01-01' WHERE license_id = ?", [(k,) for k in keys])
    db.close()
    assert main(["sync", "e_license"]) == 0
    assert main(["lineage", "e_license", "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
    import json

    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    finding = next(f for f in report["cross_dataset"] if f["check"] == "license_status.expired_but_valid")
    assert finding["not_found"] >= len(keys) > 0
