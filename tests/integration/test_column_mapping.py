"""A bureau whose view uses GB/T 36903 element codes maps them to canonical names in the catalog.

The coded view is built on every source engine (SQLite, and the PostgreSQL and MariaDB servers
that scripts/test-servers.sh starts); the canonical view it is compared with is the demo's SQLite.
On PostgreSQL the unquoted DDL folds the codes to lower case, which the connector matches as SQL
does (case-insensitively).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from common.catalog import PROJECT_ROOT
from connectors.connections import parse_connection, to_url
from connectors.ddl import create_table_sql
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


CodedSource = Callable[[], str]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def coded_source(request: pytest.FixtureRequest, demo_sources: Any, tmp_path: Path) -> CodedSource:
    """Builds the coded view DZZZ_ZZXX from the demo's e_license rows on one engine; returns its URI."""
    if request.param == "sqlite":
        return lambda: coded_sqlite(demo_sources, tmp_path)
    return lambda: coded_server(demo_sources, request.getfixturevalue("scratch_database")(request.param))


def coded_sqlite(demo_sources: Any, tmp_path: Path) -> str:
    target = tmp_path / "coded.db"
    db = sqlite3.connect(target)
    db.execute("ATTACH DATABASE ? AS src", (str(demo_sources.paths["e_license"]),))
    select = ", ".join(f"{canonical} AS {code}" for canonical, code in CODES.items())
    db.execute(f"CREATE TABLE DZZZ_ZZXX AS SELECT {select} FROM src.e_license")
    db.commit()
    db.close()
    return f"sqlite:///{target}"


def coded_server(demo_sources: Any, uri: str) -> str:
    """The contract DDL of e_license under the codes, on a server, holding the demo's rows."""
    ddl = create_table_sql("e_license").replace("CREATE TABLE e_license", "CREATE TABLE DZZZ_ZZXX")
    for canonical, code in CODES.items():
        ddl = re.sub(rf"(?m)^(\s*){canonical}\b", rf"\g<1>{code}", ddl)
    ddl = ddl.replace("PRIMARY KEY (license_id)", f"PRIMARY KEY ({CODES['license_id']})")
    url = to_url("e_license_db", parse_connection("e_license_db", uri))
    if url.get_backend_name() in ("mysql", "mariadb"):
        ddl = re.sub(r"\bTIMESTAMP\b", "DATETIME(6)", ddl)
    db = sqlite3.connect(demo_sources.paths["e_license"])
    db.row_factory = sqlite3.Row
    select = ", ".join(f"{canonical} AS {code}" for canonical, code in CODES.items())
    rows = [dict(r) for r in db.execute(f"SELECT {select} FROM e_license")]
    db.close()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)
        # the names as the server spells them (PostgreSQL folds unquoted names to lower case)
        inspector = sa.inspect(conn)
        (name,) = inspector.get_table_names()
        spelled = {c["name"].lower(): c["name"] for c in inspector.get_columns(name)}
        coded = sa.table(name, *(sa.column(spelled[code.lower()]) for code in CODES.values()))
        conn.execute(sa.insert(coded), [{spelled[code.lower()]: v for code, v in r.items()} for r in rows])
    engine.dispose()
    return uri


def test_mapped_source_syncs_like_the_canonical_one(home, sources, demo_sources, coded_source, tmp_path, monkeypatch):
    assert main(["sync", "e_license"]) == 0
    canonical = tmp_path / "canonical.parquet"
    assert main(["pull", "e_license", "--subscriber", "approval-general", "--purpose", "对照", "--out", str(canonical)]) == 0

    shutil.rmtree(home.store / "e_license")
    shutil.rmtree(home.state)
    monkeypatch.setenv("GOVSHARE_CATALOG", str(mapped_catalog(tmp_path, CODES)))
    monkeypatch.setenv("AIRFLOW_CONN_E_LICENSE_DB", coded_source())
    assert main(["sync", "e_license"]) == 0
    mapped = tmp_path / "mapped.parquet"
    assert main(["pull", "e_license", "--subscriber", "approval-general", "--purpose", "对照", "--out", str(mapped)]) == 0

    left = pq.read_table(canonical).sort_by("license_id")
    right = pq.read_table(mapped).sort_by("license_id")
    assert right.num_rows == demo_sources.counts["e_license"].valid
    assert left.schema.names == right.schema.names
    assert left.equals(right)


def test_mapping_to_a_missing_column_is_exit_2_naming_it(
    home, sources, demo_sources, coded_source, tmp_path, monkeypatch, capsys
):
    codes = {**CODES, "issuer_code": "ZZBFJGDM_TYPO"}
    monkeypatch.setenv("GOVSHARE_CATALOG", str(mapped_catalog(tmp_path, codes)))
    monkeypatch.setenv("AIRFLOW_CONN_E_LICENSE_DB", coded_source())
    assert main(["sync", "e_license"]) == 2
    assert "ZZBFJGDM_TYPO" in capsys.readouterr().err
    assert not (home.store / "e_license").exists()
    assert not json.dumps(list(home.state.glob("*"))).count("e_license")
