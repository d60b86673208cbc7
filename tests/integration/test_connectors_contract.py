"""The Source contract, run against every implementation.

``make_source`` builds a database from the contract DDL, loads rows (tests/cases.py) and returns
a Source over it. A new engine (PostgreSQL, MariaDB) adds a parameter to ``ENGINES`` and a
branch in ``_database``; the tests stay as they are.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors import Source, open_source
from connectors.ddl import create_table_sql
from govshare.catalog import Dataset, load_catalog
from govshare.errors import ConfigError, SourceUnavailable
from govshare.schema import source_schema

pytestmark = pytest.mark.integration


def _load_cases() -> Any:
    if "govshare_test_cases" not in sys.modules:
        spec = importlib.util.spec_from_file_location("govshare_test_cases", Path(__file__).parents[1] / "cases.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["govshare_test_cases"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules["govshare_test_cases"]


cases = _load_cases()
ENGINES = ["sqlite-adbc", "sqlite-sqlalchemy"]
FAR_FUTURE = datetime(2100, 1, 1)

MakeSource = Callable[..., Source]


@pytest.fixture(scope="module")
def catalog() -> Any:
    return load_catalog()


@pytest.fixture(params=ENGINES)
def make_source(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeSource:
    engine_name: str = request.param

    def make(
        dataset: Dataset,
        rows: Iterable[dict[str, Any]] | None = None,
        *,
        renames: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        create: bool = True,
    ) -> Source:
        rows = list(cases.SOURCES.get(dataset.source_table, []) if rows is None else rows)
        url = _database(engine_name, tmp_path / f"{dataset.id}.db")
        if create:
            _create(url, dataset.source_table, rows, renames or {}, drop)
        monkeypatch.setenv(f"AIRFLOW_CONN_{dataset.connection_id.upper()}", url.render_as_string(hide_password=False))
        return open_source(dataset, driver="adbc" if engine_name == "sqlite-adbc" else "sqlalchemy")

    return make


def _database(engine_name: str, path: Path) -> sa.URL:
    if engine_name.startswith("sqlite"):
        return sa.URL.create("sqlite", database=str(path))
    raise NotImplementedError(engine_name)


def _create(url: sa.URL, table: str, rows: list[dict[str, Any]], renames: dict[str, str], drop: tuple[str, ...]) -> None:
    engine = sa.create_engine(url)
    prep = engine.dialect.identifier_preparer
    adapt = cases.sqlite_value if url.get_backend_name() == "sqlite" else (lambda v: v)
    with engine.begin() as conn:
        conn.execute(sa.text(create_table_sql(table)))
        if rows:
            columns = list(rows[0])
            insert = sa.table(table, *[sa.column(c) for c in columns]).insert()
            conn.execute(insert, [{c: adapt(r[c]) for c in columns} for r in rows])
        for old, new in renames.items():
            conn.execute(sa.text(f"ALTER TABLE {prep.quote(table)} RENAME COLUMN {prep.quote(old)} TO {prep.quote(new)}"))
        for column in drop:
            conn.execute(sa.text(f"ALTER TABLE {prep.quote(table)} DROP COLUMN {prep.quote(column)}"))
    engine.dispose()


def _read(source: Source, after: datetime | None = None, upto: datetime = FAR_FUTURE, batch_rows: int = 100_000) -> pa.Table:
    batches = list(source.read_batches(after, upto, batch_rows))
    return pa.Table.from_batches(batches, schema=source_schema(source.dataset))


def _expected(dataset: Dataset, row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataset.fields:
        value = row[f.column] if f.column in row else row[f.name]
        if f.type == "decimal" and value is not None:
            value = Decimal(value).quantize(Decimal(1).scaleb(-f.decimal[1]))  # type: ignore[index]
        out[f.name] = value
    out["updated_at"] = row[dataset.watermark_column]
    out["is_deleted"] = row[dataset.deleted_column]
    return out


@pytest.mark.parametrize("dataset_id", ["population", "legal_entity", "e_license"])
def test_every_row_round_trips_in_the_canonical_schema(make_source: MakeSource, catalog: Any, dataset_id: str) -> None:
    dataset = catalog.dataset(dataset_id)
    source = make_source(dataset)
    batches = list(source.read_batches(None, FAR_FUTURE))
    assert batches
    assert all(b.schema == source_schema(dataset) for b in batches)
    got = {r[dataset.key]: r for b in batches for r in b.to_pylist()}
    want = {r[dataset.key]: _expected(dataset, r) for r in cases.SOURCES[dataset.source_table]}
    assert set(got) == set(want)
    differing = sorted(k for k in want if got[k] != want[k])
    assert not differing, f"{len(differing)} row(s) changed on the way"


def test_codes_stay_text_with_leading_zeros_and_dates_are_dates(make_source: MakeSource, catalog: Any) -> None:
    table = _read(make_source(catalog.dataset("population")))
    assert table.schema.field("ethnicity_code").type == pa.string()
    assert table.schema.field("birth_date").type == pa.date32()
    assert table.schema.field("updated_at").type == pa.timestamp("us")
    assert table.schema.field("is_deleted").type == pa.int8()
    codes = set(table.column("household_division_code").to_pylist())
    assert "010101" in codes
    assert {"01", "02"} <= set(table.column("ethnicity_code").to_pylist())
    assert date(2000, 2, 29) in table.column("birth_date").to_pylist()


def test_decimals_are_exact(make_source: MakeSource, catalog: Any) -> None:
    table = _read(make_source(catalog.dataset("legal_entity")))
    assert table.schema.field("registered_capital").type == pa.decimal128(18, 4)
    capital = set(table.column("registered_capital").to_pylist())
    for value in ("12345678901.2345", "0.0001", "-1.5000", "100.0000", "99999999999.9999"):
        assert Decimal(value) in capital


def test_decimal_that_does_not_fit_is_a_config_error(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("legal_entity")
    row = {**cases.LEGAL_ENTITY[1], "registered_capital": "not a number"}
    source = make_source(dataset, [row])
    with pytest.raises(ConfigError, match="registered_capital"):
        _read(source)


def test_after_is_exclusive_and_upto_inclusive_on_shared_timestamps(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("population")
    source = make_source(dataset)
    wm, us = cases.WATERMARK, cases.US
    at_watermark = {r["id_number"] for r in cases.POPULATION if r["updated_at"] == wm}
    assert len(at_watermark) == 3

    upto = _read(source, after=cases.EARLY, upto=wm)
    assert set(upto.column("updated_at").to_pylist()) == {wm - us, wm}
    assert at_watermark <= set(upto.column("id_number").to_pylist())

    after = _read(source, after=wm, upto=wm + us)
    assert after.column("updated_at").to_pylist() == [wm + us]

    before = _read(source, after=wm - us, upto=wm)
    assert set(before.column("id_number").to_pylist()) == at_watermark

    everything = _read(source, after=None, upto=wm)
    assert min(everything.column("updated_at").to_pylist()) == cases.EARLY
    assert _read(source, after=wm, upto=wm).num_rows == 0


def test_rows_come_ordered_by_updated_at_then_key(make_source: MakeSource, catalog: Any) -> None:
    for dataset_id in ("population", "legal_entity", "e_license"):
        dataset = catalog.dataset(dataset_id)
        rows = _read(make_source(dataset)).to_pylist()
        order = [(r["updated_at"], r[dataset.key]) for r in rows]
        assert order == sorted(order)


def test_small_batches_stream(make_source: MakeSource, catalog: Any) -> None:
    source = make_source(catalog.dataset("population"))
    batches = list(source.read_batches(None, FAR_FUTURE, batch_rows=3))
    assert len(batches) >= 3
    assert all(1 <= b.num_rows <= 3 for b in batches)
    assert sum(b.num_rows for b in batches) == len(cases.POPULATION)


def test_a_column_null_in_the_first_batch_keeps_its_type(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("e_license")
    rows = [
        {**cases.E_LICENSE[0], "license_id": f"L{i:04d}", "valid_until": None, "license_status": None,
         "updated_at": datetime(2026, 1, 1, 0, 0, i % 60)}
        for i in range(50)
    ]
    rows.append({**cases.E_LICENSE[0], "license_id": "L9999", "valid_until": date(2030, 1, 1), "license_status": "01",
                 "updated_at": datetime(2026, 2, 1)})
    table = _read(make_source(dataset, rows), batch_rows=5)
    assert table.num_rows == 51
    assert table.column("valid_until").to_pylist()[-1] == date(2030, 1, 1)
    assert table.column("license_status").to_pylist()[-1] == "01"


def test_high_watermark(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("population")
    assert make_source(dataset).high_watermark() == max(r["updated_at"] for r in cases.POPULATION)


def test_high_watermark_of_an_empty_view_is_none(make_source: MakeSource, catalog: Any) -> None:
    source = make_source(catalog.dataset("legal_entity"), [])
    assert source.high_watermark() is None
    assert list(source.read_batches(None, FAR_FUTURE)) == []


def test_mapped_source_column_names(make_source: MakeSource, catalog: Any) -> None:
    base = catalog.dataset("e_license")
    mapping = {"license_id": "ZZBS", "license_type_code": "ZZLXDM", "holder_name": "CZZT",
               "holder_id_type": "CZZTDMLXDM", "holder_id": "CZZTDM", "issuer_code": "ZZBFJGDM"}
    dataset = dataclasses.replace(
        base,
        fields=tuple(dataclasses.replace(f, column=mapping.get(f.name, f.column)) for f in base.fields),
        watermark_column="GXSJ",
        deleted_column="SCBZ",
    )
    renames = {**mapping, "updated_at": "GXSJ", "is_deleted": "SCBZ"}
    source = make_source(dataset, renames=renames)
    source.check()
    table = _read(source)
    assert table.schema == source_schema(dataset)
    assert table.schema.names[0] == "license_id"
    got = {r["license_id"]: r for r in table.to_pylist()}
    for row in cases.E_LICENSE:
        assert got[row["license_id"]]["holder_id"] == row["holder_id"]
        assert got[row["license_id"]]["updated_at"] == row["updated_at"]


def test_missing_table_is_a_config_error_naming_it(make_source: MakeSource, catalog: Any) -> None:
    dataset = dataclasses.replace(catalog.dataset("population"), source_table="rkjbxx")
    make_source(catalog.dataset("population"))  # the database exists, with the contract's table
    source = make_source(dataset, create=False)
    with pytest.raises(ConfigError, match="rkjbxx"):
        source.check()
    with pytest.raises(ConfigError, match="rkjbxx"):
        next(iter(source.read_batches(None, FAR_FUTURE)))


def test_missing_columns_are_named_all_at_once(make_source: MakeSource, catalog: Any) -> None:
    source = make_source(catalog.dataset("population"), drop=("phone", "person_status"))
    with pytest.raises(ConfigError) as raised:
        source.check()
    text = "\n".join(raised.value.lines())
    assert "phone" in text and "person_status" in text
    with pytest.raises(ConfigError):
        next(iter(source.read_batches(None, FAR_FUTURE)))


def test_mapped_column_missing_names_the_source_column_and_field(make_source: MakeSource, catalog: Any) -> None:
    base = catalog.dataset("e_license")
    dataset = dataclasses.replace(
        base, fields=tuple(dataclasses.replace(f, column="CZZTDM") if f.name == "holder_id" else f for f in base.fields)
    )
    source = make_source(dataset)
    with pytest.raises(ConfigError) as raised:
        source.check()
    text = "\n".join(raised.value.lines())
    assert "CZZTDM" in text and "holder_id" in text


def test_missing_sqlite_file_is_unavailable_and_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: Any
) -> None:
    missing = tmp_path / "nowhere" / "population.db"
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", f"sqlite:///{missing}")
    for driver in ("adbc", "sqlalchemy"):
        source = open_source(catalog.dataset("population"), driver=driver)  # type: ignore[arg-type]
        with pytest.raises(SourceUnavailable, match="population_db") as raised:
            source.check()
        assert raised.value.retriable
        with pytest.raises(SourceUnavailable, match="population_db"):
            source.high_watermark()
    assert not missing.exists()


def test_source_is_read_only(make_source: MakeSource, catalog: Any, tmp_path: Path) -> None:
    source = make_source(catalog.dataset("population"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    _read(source)
    source.high_watermark()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
