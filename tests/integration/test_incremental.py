"""The incremental scenario: what `pull --since` shows after updates, late rows, double updates
and soft deletes. Runs against every source engine the `source_db` fixture offers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from common.run import RunRecord
from connectors.connections import parse_connection, to_url
from connectors.ddl import create_table_sql
from govshare.cli import main
from lineage.runs import runs_dir
from validation.identifiers import id_check_char

pytestmark = pytest.mark.integration
BASE = datetime(2026, 11, 1, 8, 0, 0)


def person_id(n: int, year: int = 1980) -> str:
    body = f"110105{year}0101{n:03d}"
    return body + id_check_char(body)


# the first sequence number >= 13 whose ID ends in the check character X
X_CHECK = next(n for n in range(13, 200) if person_id(n).endswith("X"))


def row(n: int, updated_at: datetime, **changes) -> dict:
    values = {
        "id_number": person_id(n), "name": f"测试{n}", "sex_code": "1" if n % 2 else "2", "ethnicity_code": "01",
        "birth_date": "1980-01-01", "household_division_code": "110105", "household_address": f"北京市朝阳区{n}号",
        "phone": "13800000000", "person_status": "1", "updated_at": updated_at.strftime("%Y-%m-%d %H:%M:%S"), "is_deleted": 0,
    }
    values.update(changes)
    return values


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def source_db(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    """The population view on every source engine (servers from make test's scripts/test-servers.sh)."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'population.db'}"
    else:
        uri = request.getfixturevalue("scratch_database")(request.param)
    yield from population_view(uri, monkeypatch)


def population_view(uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """An empty population view at uri, the population connection pointing at it (for a fixture)."""
    engine = sa.create_engine(to_url("population_db", parse_connection("population_db", uri)), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(create_table_sql("population_person"))
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", uri)
    yield engine
    engine.dispose()


def write(engine: sa.Engine, rows: list[dict]) -> None:
    columns = list(rows[0])
    table = sa.table("population_person", *(sa.column(c) for c in columns))
    with engine.begin() as conn:
        for r in rows:
            conn.execute(sa.delete(table).where(table.c.id_number == r["id_number"]))
        conn.execute(sa.insert(table), rows)


def feed(tmp_path: Path, since: int) -> dict[str, dict]:
    out = tmp_path / f"feed-{since}.parquet"
    assert main(["pull", "population", "--subscriber", "approval-household", "--purpose", "增量核验",
                 "--out", str(out), "--since", str(since)]) == 0
    return {r["id_number"]: r for r in pq.read_table(out).to_pylist()}


def latest_version(home) -> int:
    return max(int(p.name) for p in (home.store / "population" / "versions").iterdir())


def test_incremental_scenario(home, source_db, tmp_path):
    write(source_db, [row(n, BASE) for n in range(1, 11)]
          + [row(11, BASE, is_deleted=1)])  # withdrawn before ever being published
    assert main(["sync", "population"]) == 0
    assert latest_version(home) == 1
    first = feed(tmp_path, 0)
    assert set(first) == {person_id(n) for n in range(1, 11)}

    # The last sync's watermark is BASE. Now, at the source:
    write(source_db, [
        row(1, BASE + timedelta(hours=2), name="改名一"),                       # an update
        row(2, BASE, household_address="晚到的地址"),                            # late, on the watermark
        row(3, BASE - timedelta(minutes=30), person_status="3"),              # late, inside the lookback
        row(4, BASE + timedelta(hours=3), is_deleted=1),                       # a soft delete
        row(5, BASE + timedelta(hours=1), name="第一次"),                       # changed twice ...
        row(6, BASE + timedelta(hours=1)),                                     # re-stamped, not changed
        row(12, BASE + timedelta(hours=1), is_deleted=1),                      # delete of a key never published
        row(X_CHECK, BASE + timedelta(hours=1), id_number=person_id(X_CHECK).lower()),  # new, lowercase x
    ])
    write(source_db, [row(5, BASE + timedelta(hours=4), name="第二次")])        # ... and again before the sync
    assert main(["sync", "population"]) == 0
    assert latest_version(home) == 2

    changes = feed(tmp_path, 1)
    assert set(changes) == {person_id(n) for n in (1, 2, 3, 4, 5, X_CHECK)}
    assert changes[person_id(1)]["name"] == "改名一"
    assert changes[person_id(2)]["household_address"] == "晚到的地址"
    assert changes[person_id(3)]["person_status"] == "3"
    assert changes[person_id(4)]["_change_type"] == "delete"
    assert changes[person_id(5)]["name"] == "第二次"
    assert {r["_change_type"] for k, r in changes.items() if k != person_id(4)} == {"upsert"}
    assert {r["_commit_version"] for r in changes.values()} == {2}

    # Nothing changed since: the lookback re-reads rows but publishes nothing.
    assert main(["sync", "population"]) == 0
    assert latest_version(home) == 2

    # A re-insert after the delete is an upsert again, and the feed collapses to the latest.
    write(source_db, [row(4, BASE + timedelta(hours=5), name="回来了")])
    assert main(["sync", "population"]) == 0
    since_one = feed(tmp_path, 1)
    assert since_one[person_id(4)]["_change_type"] == "upsert" and since_one[person_id(4)]["name"] == "回来了"
    assert since_one[person_id(4)]["_commit_version"] == 3
    assert feed(tmp_path, 3) == {}


def test_full_sync_is_a_snapshot_of_everything(home, source_db, tmp_path):
    write(source_db, [row(n, BASE) for n in range(1, 6)])
    assert main(["sync", "population"]) == 0
    with source_db.begin() as conn:
        conn.execute(sa.text("DELETE FROM population_person WHERE id_number = :k"), {"k": person_id(2)})
    assert main(["sync", "population", "--full"]) == 0
    changes = feed(tmp_path, 1)
    assert changes[person_id(2)]["_change_type"] == "delete"
    assert {k for k, r in changes.items() if r["_change_type"] == "upsert"} == {person_id(n) for n in (1, 3, 4, 5)}


def test_broken_chain_between_since_and_latest_is_exit_3(home, source_db, tmp_path):
    write(source_db, [row(n, BASE) for n in range(1, 4)])
    assert main(["sync", "population"]) == 0
    write(source_db, [row(1, BASE + timedelta(hours=2), name="新")])
    assert main(["sync", "population"]) == 0
    manifest = home.store / "population" / "versions" / "00000001" / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"upserts":3', b'"upserts":4'))
    out = tmp_path / "x.parquet"
    assert main(["pull", "population", "--subscriber", "approval-household", "--purpose", "核验",
                 "--out", str(out), "--since", "1"]) == 3
    assert not out.exists()


def test_large_full_read_is_split_into_key_ranges_and_published_as_one_version(home, source_db, tmp_path, monkeypatch):
    import shutil

    from common.catalog import PROJECT_ROOT, load_catalog
    from common.run import Extracted
    from govshare import pipeline

    catalogs = tmp_path / "catalogs"
    shutil.copytree(PROJECT_ROOT / "catalogs", catalogs)
    pop = catalogs / "population.yaml"
    pop.write_text(pop.read_text(encoding="utf-8").replace("  lookback: 1h", "  lookback: 1h\n  part_rows: 1000"), encoding="utf-8")
    monkeypatch.setenv("GOVSHARE_CATALOG", str(catalogs))
    people = [row(1, BASE + timedelta(seconds=n % 7), id_number=f"110105{1950 + n // 500}0101{n % 500:03d}") for n in range(2500)]
    for p in people:
        p["id_number"] += id_check_char(p["id_number"])
        p["birth_date"] = f"{p['id_number'][6:10]}-01-01"
        p["sex_code"] = "1" if int(p["id_number"][16]) % 2 else "2"
    write(source_db, people)

    run = pipeline.start("population", catalog=load_catalog())
    parts = pipeline.plan(run)
    assert len(parts) == 3
    for part in parts:
        pipeline.ingest(run, part)
    assert sum(run.require(Extracted, p).rows for p in parts) == 2500
    pipeline.protect(run)
    result = pipeline.publish(run)
    assert (result.version, result.upserts, result.quarantined) == (1, 2500, 0)
    assert set(feed(tmp_path, 0)) == {p["id_number"] for p in people}


def test_first_load_with_a_key_twice_publishes_its_later_row_once(home, source_db, tmp_path):
    """Two source rows that normalise to one key (x and X): the version holds the later one only,
    so the staged candidates are filtered, not taken whole."""
    write(source_db, [row(n, BASE) for n in range(1, 4)] + [
        row(X_CHECK, BASE, name="旧名"),
        row(X_CHECK, BASE + timedelta(minutes=5), id_number=person_id(X_CHECK).lower(), name="新名"),
    ])
    assert main(["sync", "population"]) == 0
    (record,) = [RunRecord.from_json(json.loads(p.read_text(encoding="utf-8")))
                 for p in runs_dir(home, "population").glob("*.json")]
    assert (record.protect.upserts, record.protect.superseded_in_run) == (4, 1)
    first = feed(tmp_path, 0)
    assert set(first) == {person_id(n) for n in (1, 2, 3, X_CHECK)}
    assert first[person_id(X_CHECK)]["name"] == "新名"
    manifest = (home.store / "population" / "versions" / "00000001" / "manifest.json").read_text(encoding="utf-8")
    assert '"upserts":4' in manifest
