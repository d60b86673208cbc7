"""Hostile source values, one case a row: the value injected into one source row, the engines that
can hold it, the exit code of ``govshare sync`` (the real CLI, in a subprocess: its stderr is
the real one) and what must hold after.

Every case: no traceback and no plaintext ID number or name on stderr; ``govshare verify``
passes; the good rows are published; the watermark (GOVSHARE_HOME/state/population.json) is not
past now + the tolerance; and a later ordinary change to another row is published by the next
sync. A quarantined case (exit 0) also shows the row under its rule in the quarantine, and still
there after the next sync (read again, not duplicated). An exit-2 case names the column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from common.times import SOURCE_ZONE
from connectors.connections import parse_connection, to_url
from connectors.ddl import create_table_sql
from validation.identifiers import id_check_char

pytestmark = pytest.mark.integration
BASE = datetime(2026, 11, 1, 8, 0, 0)
GOOD_ROWS = 10
HOSTILE = GOOD_ROWS + 1
TOLERANCE = timedelta(days=1)  # the catalog's default source.future_tolerance
GOVSHARE = [sys.executable, "-m", "govshare.cli"]


def person_id(n: int) -> str:
    body = f"110105{1980}0101{n:03d}"
    return body + id_check_char(body)


def row(n: int, updated_at: Any = BASE, **changes: Any) -> dict[str, Any]:
    values = {
        "id_number": person_id(n), "name": f"测试{n}", "sex_code": "1" if n % 2 else "2", "ethnicity_code": "01",
        "birth_date": "1980-01-01", "household_division_code": "110105", "household_address": f"北京市朝阳区{n}号",
        "phone": "13800000000", "person_status": "1", "updated_at": updated_at, "is_deleted": 0,
    }
    values.update(changes)
    return values


@dataclass(frozen=True)
class Case:
    id: str
    column: str
    value: Any
    engines: tuple[str, ...]
    exit_code: int
    stderr: str = ""  # a part of the message (exit 2)
    rule: str | None = None  # the rule the row is quarantined under (exit 0)


FAR = "9999-12-31 23:59:59"
ALL = ("sqlite", "postgresql", "mariadb")
CASES = [
    Case("far-future-9999", "updated_at", FAR, ("sqlite", "postgresql"), 0, rule="updated_at.watermark"),
    Case("far-future-2038", "updated_at", "2038-01-19 03:14:07", ALL, 0, rule="updated_at.watermark"),
    Case("tomorrow-plus-an-hour", "updated_at", "tomorrow+1h", ALL, 0, rule="updated_at.watermark"),
    Case("infinity", "updated_at", "infinity", ("postgresql",), 0, rule="updated_at.watermark"),
    Case("year-20000", "updated_at", "20000-01-01 00:00:00", ("sqlite", "postgresql"), 0, rule="updated_at.watermark"),
    Case("zero-date", "updated_at", "0000-00-00 00:00:00", ("sqlite", "mariadb"), 0, rule="updated_at.watermark"),
    Case("text-yesterday", "updated_at", "yesterday", ("sqlite",), 0, rule="updated_at.watermark"),
    Case("text-empty", "updated_at", "", ("sqlite",), 0, rule="updated_at.watermark"),
    Case("feb-30", "updated_at", "2026-02-30 10:00:00", ("sqlite",), 0, rule="updated_at.watermark"),
    Case("an-integer", "updated_at", 1_700_000_000, ("sqlite",), 0, rule="updated_at.watermark"),
    Case("year-1899", "updated_at", "1899-12-31 23:59:59", ALL[:2], 0, rule="updated_at.watermark"),
    Case("blob-in-name", "name", b"\xff\xfe\x00ab", ("sqlite",), 2, "column 'name'"),
    Case("invalid-utf8-address", "household_address", b"\xc3\x28", ("sqlite",), 2, "column 'household_address'"),
    Case("unreadable-birth-date", "birth_date", "1980-02-31", ("sqlite",), 2, "column 'birth_date'"),
    Case("zero-birth-date", "birth_date", "0000-00-00", ("mariadb",), 2, "column 'birth_date'"),
    Case("is-deleted-2", "is_deleted", 2, ALL, 2, "column 'is_deleted'"),
    Case("is-deleted-text", "is_deleted", "x", ("sqlite",), 2, "column 'is_deleted'"),
]


def _engine_cases() -> list[Any]:
    return [pytest.param(case, engine, id=f"{case.id}-{engine}") for case in CASES for engine in case.engines]


def _uri(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'population.db'}"
    return request.getfixturevalue("scratch_database")(engine)


def _value(case: Case, engine: str) -> Any:
    if case.value == "tomorrow+1h":
        return (datetime.now(SOURCE_ZONE).replace(tzinfo=None, microsecond=0) + TOLERANCE + timedelta(hours=1)).strftime(
            "%Y-%m-%d %H:%M:%S")
    return case.value


def _write(engine: sa.Engine, rows: list[dict[str, Any]], permissive: bool = False) -> None:
    table = sa.table("population_person", *(sa.column(c) for c in rows[0]))
    with engine.begin() as conn:
        if permissive:
            conn.exec_driver_sql("SET SESSION sql_mode = ''")  # MariaDB: zero dates for this session only
        for r in rows:
            conn.execute(sa.delete(table).where(table.c.id_number == r["id_number"]))
        conn.execute(sa.insert(table), rows)


def _govshare(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GOVSHARE, *args], env=env, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])


def _clean(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "a bug" not in stderr, stderr
    for n in range(1, HOSTILE + 2):
        assert person_id(n) not in stderr and f"测试{n}" not in stderr, stderr


def _watermark(home: Path) -> datetime | None:
    state = home / "state" / "population.json"
    if not state.exists():
        return None
    raw = json.loads(state.read_text(encoding="utf-8"))["watermark"]
    return datetime.fromisoformat(raw) if raw else None


def _published_rows(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    out = tmp_path / f"{name}.parquet"
    done = _govshare(env, "pull", "population", "--subscriber", "approval-household", "--purpose", "核验",
                     "--out", str(out))
    assert done.returncode == 0, done.stderr
    return {r["id_number"]: r for r in pq.read_table(out).to_pylist()}


def _quarantined(env: dict[str, str]) -> list[dict[str, Any]]:
    done = _govshare(env, "quarantine", "list", "population", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(("case", "engine"), _engine_cases())
def test_hostile_source_value(case: Case, engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    uri = _uri(engine, tmp_path, request)
    db = sa.create_engine(to_url("population_db", parse_connection("population_db", uri)), poolclass=sa.pool.NullPool)
    with db.begin() as conn:
        conn.exec_driver_sql(create_table_sql("population_person"))
    if engine == "mariadb" and case.column == "updated_at":
        with db.begin() as conn:  # MariaDB's TIMESTAMP ends in 2038; DATETIME holds zero dates
            conn.exec_driver_sql("ALTER TABLE population_person MODIFY updated_at DATETIME NOT NULL")
    _write(db, [row(n, BASE.strftime("%Y-%m-%d %H:%M:%S")) for n in range(1, GOOD_ROWS + 1)])
    hostile = row(HOSTILE, BASE.strftime("%Y-%m-%d %H:%M:%S"))
    hostile[case.column] = _value(case, engine)
    _write(db, [hostile], permissive=engine == "mariadb")

    env = {**os.environ, "GOVSHARE_HOME": str(tmp_path / "home"), "AIRFLOW_CONN_POPULATION_DB": uri,
           "GOVSHARE_GX": "inline"}
    env.pop("GOVSHARE_DEBUG", None)
    assert _govshare(env, "init").returncode == 0
    first = _govshare(env, "sync", "population")
    _clean(first.stderr)
    assert first.returncode == case.exit_code, first.stderr
    assert case.stderr in first.stderr
    home = tmp_path / "home"
    ceiling = datetime.now(SOURCE_ZONE).replace(tzinfo=None) + TOLERANCE

    if case.exit_code == 0:
        assert _govshare(env, "verify", "population").returncode == 0
        assert set(_published_rows(env, tmp_path, "first")) == {person_id(n) for n in range(1, GOOD_ROWS + 1)}
        assert _watermark(home) == BASE
        cases = _quarantined(env)
        assert [c["rules"] for c in cases] == [case.rule], cases
    else:
        assert _watermark(home) is None  # nothing published, the watermark never moved
        _write(db, [row(HOSTILE, BASE.strftime("%Y-%m-%d %H:%M:%S"))])  # the source fixes the row

    # A later ordinary change to another row is published by the next sync.
    later = BASE + timedelta(hours=2)
    _write(db, [row(1, later.strftime("%Y-%m-%d %H:%M:%S"), name="改名一")])
    second = _govshare(env, "sync", "population")
    _clean(second.stderr)
    assert second.returncode == 0, second.stderr
    assert _govshare(env, "verify", "population").returncode == 0
    published = _published_rows(env, tmp_path, "second")
    assert published[person_id(1)]["name"] == "改名一"
    watermark = _watermark(home)
    assert watermark == later and watermark <= ceiling
    if case.exit_code == 0:
        assert person_id(HOSTILE) not in published
        again = _quarantined(env)
        assert len(again) == 1 and again[0]["rules"] == case.rule, again  # refreshed, not duplicated
    else:
        assert len(published) == GOOD_ROWS + 1
    db.dispose()


@dataclass(frozen=True)
class PathCase:
    id: str
    home: str | None  # GOVSHARE_HOME, None: a fresh folder
    source: str | None  # the population connection, None: an empty SQLite file
    command: tuple[str, ...]
    exit_code: int
    names: str


PATH_CASES = [
    PathCase("source-is-a-text-file", None, "sqlite:////etc/passwd", ("sync", "population"), 2, "/etc/passwd"),
    PathCase("source-is-a-folder", None, "sqlite:////tmp", ("sync", "population"), 2, "/tmp"),
    PathCase("source-is-an-empty-file", None, None, ("sync", "population"), 2, "population_person"),
    PathCase("home-is-a-file-init", "/etc/hostname", None, ("init",), 2, "/etc/hostname"),
    PathCase("home-is-a-file-sync", "/etc/hostname", None, ("sync", "population"), 2, "/etc/hostname"),
]


@pytest.mark.parametrize("case", PATH_CASES, ids=[c.id for c in PATH_CASES])
def test_paths_that_are_not_what_they_name(case: PathCase, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    home = case.home or str(tmp_path / "home")
    env = {**os.environ, "GOVSHARE_HOME": home, "AIRFLOW_CONN_POPULATION_DB": case.source or f"sqlite:///{empty}",
           "GOVSHARE_GX": "inline"}
    env.pop("GOVSHARE_DEBUG", None)
    if case.home is None:
        assert _govshare(env, "init").returncode == 0
    done = _govshare(env, *case.command)
    _clean(done.stderr)
    assert done.returncode == case.exit_code, done.stderr
    assert case.names in done.stderr


def test_bad_watermark_fail_stops_the_run_naming_the_column_and_count(tmp_path: Path) -> None:
    import shutil

    from common.catalog import PROJECT_ROOT

    catalogs = tmp_path / "catalogs"
    shutil.copytree(PROJECT_ROOT / "catalogs", catalogs)
    pop = catalogs / "population.yaml"
    pop.write_text(pop.read_text(encoding="utf-8").replace(
        "  lookback: 1h", "  lookback: 1h\n  bad_watermark: fail\n  future_tolerance: 6h"), encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'population.db'}"
    db = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with db.begin() as conn:
        conn.exec_driver_sql(create_table_sql("population_person"))
    _write(db, [row(n, BASE.strftime("%Y-%m-%d %H:%M:%S")) for n in range(1, GOOD_ROWS + 1)]
           + [row(HOSTILE, FAR), row(HOSTILE + 1, "yesterday")])
    env = {**os.environ, "GOVSHARE_HOME": str(tmp_path / "home"), "AIRFLOW_CONN_POPULATION_DB": uri,
           "GOVSHARE_GX": "inline", "GOVSHARE_CATALOG": str(catalogs)}
    assert _govshare(env, "init").returncode == 0
    done = _govshare(env, "sync", "population")
    _clean(done.stderr)
    assert done.returncode == 2, done.stderr
    assert "2 row(s)" in done.stderr and "'updated_at'" in done.stderr and "now + 6h" in done.stderr
    assert _watermark(tmp_path / "home") is None
    db.dispose()
