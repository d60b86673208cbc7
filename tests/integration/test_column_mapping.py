"""A bureau whose view uses GB/T 36903 element codes maps them to canonical names in the catalog."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.catalog import PROJECT_ROOT
from govshare.cli import main

pytestmark = pytest.mark.integration

# canonical field -> the source's GB/T 36903 element code
CODES = {
    "license_id": "ZZBS", "license_type_code": "ZZLXDM", "license_name": "ZZMC", "license_number": "ZZBH",
    "holder_name": "CZZT", "holder_id_type": "CZZTDMLXDM", "holder_id": "CZZTDM", "issuer_name": "ZZBFJG",
    "issuer_code": "ZZBFJGDM", "issued_on": "ZZBFRQ", "valid_from": "YXQQSRQ", "valid_until": "YXQJZRQ",
    "license_status": "ZZZT", "updated_at": "GXSJ", "is_deleted": "SCBZ",
}


def mapped_catalog(tmp_path: Path, codes: dict[str, str]) -> Path:
    catalogs = tmp_path / "catalogs"
    shutil.copytree(PROJECT_ROOT / "catalogs", catalogs)
    path = catalogs / "e_license.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        out.append(line)
        stripped = line.strip().rstrip(":")
        if line.startswith("  ") and not line.startswith("    ") and stripped in codes and stripped not in ("updated_at", "is_deleted"):
            out.append(f"    column: {codes[stripped]}")
    text = "\n".join(out) + "\n"
    text = text.replace("  table: e_license", "  table: DZZZ_ZZXX")
    text = text.replace("  watermark_column: updated_at", f"  watermark_column: {codes['updated_at']}")
    text = text.replace("  deleted_column: is_deleted", f"  deleted_column: {codes['is_deleted']}")
    path.write_text(text, encoding="utf-8")
    return catalogs


def coded_source(demo_sources, tmp_path: Path) -> Path:
    target = tmp_path / "coded.db"
    db = sqlite3.connect(target)
    db.execute("ATTACH DATABASE ? AS src", (str(demo_sources.paths["e_license"]),))
    select = ", ".join(f"{canonical} AS {code}" for canonical, code in CODES.items())
    db.execute(f"CREATE TABLE DZZZ_ZZXX AS SELECT {select} FROM src.e_license")
    db.commit()
    db.close()
    return target


def test_mapped_source_syncs_like_the_canonical_one(home, sources, demo_sources, tmp_path, monkeypatch):
    assert main(["sync", "e_license"]) == 0
    canonical = tmp_path / "canonical.parquet"
    assert main(["pull", "e_license", "--subscriber", "approval-general", "--purpose", "对照", "--out", str(canonical)]) == 0

    shutil.rmtree(home.store / "e_license")
    shutil.rmtree(home.state)
    monkeypatch.setenv("GOVSHARE_CATALOG", str(mapped_catalog(tmp_path, CODES)))
    monkeypatch.setenv("AIRFLOW_CONN_E_LICENSE_DB", f"sqlite:///{coded_source(demo_sources, tmp_path)}")
    assert main(["sync", "e_license"]) == 0
    mapped = tmp_path / "mapped.parquet"
    assert main(["pull", "e_license", "--subscriber", "approval-general", "--purpose", "对照", "--out", str(mapped)]) == 0

    left = pq.read_table(canonical).sort_by("license_id")
    right = pq.read_table(mapped).sort_by("license_id")
    assert right.num_rows == demo_sources.counts["e_license"].valid
    assert left.schema.names == right.schema.names
    assert left.equals(right)


def test_mapping_to_a_missing_column_is_exit_2_naming_it(home, sources, demo_sources, tmp_path, monkeypatch, capsys):
    codes = {**CODES, "issuer_code": "ZZBFJGDM_TYPO"}
    monkeypatch.setenv("GOVSHARE_CATALOG", str(mapped_catalog(tmp_path, codes)))
    monkeypatch.setenv("AIRFLOW_CONN_E_LICENSE_DB", f"sqlite:///{coded_source(demo_sources, tmp_path)}")
    assert main(["sync", "e_license"]) == 2
    assert "ZZBFJGDM_TYPO" in capsys.readouterr().err
    assert not (home.store / "e_license").exists()
    assert not json.dumps(list(home.state.glob("*"))).count("e_license")
