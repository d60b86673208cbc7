"""The Source contract, run against every implementation.

``make_source`` builds a database from the contract DDL, loads rows (tests/cases.py) and returns
a Source over it: SQLite through both paths, PostgreSQL through both paths and MariaDB, the
servers being the ones ``make test`` starts (skipped, with the reason, when they are absent).
A new engine adds a parameter to ``ENGINES`` and a branch in ``_database``; the tests stay.

On the servers, rows that cannot be stored as they stand (NUL bytes, text longer than its
column) are left out. On MariaDB the DDL's TIMESTAMP is DATETIME(6) and TEXT is MEDIUMTEXT:
MariaDB's TIMESTAMP keeps whole seconds only and its TEXT 64 KB
(``test_the_contract_ddl_loads_unchanged_on_mariadb`` shows what the DDL itself gives).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors import Source, open_source
from connectors.connections import parse_connection, to_url
from connectors.ddl import TABLES, create_table_sql
from common.catalog import Dataset, load_catalog
from common.errors import ConfigError, SourceUnavailable
from common.schema import source_schema
from tests.integration.conftest import ScratchDatabase

pytestmark = pytest.mark.integration


def _load_cases() -> Any:
    if "govshare_test_cases" not in sys.modules:
        spec = importlib.util.spec_from_file_location("govshare_test_cases", Path(__file__).parents[1] / "cases.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["govshare_test_cases"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules["govshare_test_cases"]


cases = _load_cases()
ENGINES = ["sqlite-adbc", "sqlite-sqlalchemy", "postgresql-adbc", "postgresql-sqlalchemy", "mariadb"]
SERVERS = [e for e in ENGINES if not e.startswith("sqlite")]
FAR_FUTURE = datetime(2100, 1, 1)



def storable(engine_name: str, table: str, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as this engine can hold them. PostgreSQL and MariaDB refuse NUL bytes in text and
    text longer than its column (cases.SQLITE_ONLY and two keys with surrounding spaces): on
    them such values lose their NULs and are cut to the column's length, so that every row, with
    its place on the watermark edge, is still there."""
    if engine_name.startswith("sqlite") or table not in TABLES:
        return list(rows)
    lengths = {m[0]: int(m[1]) for m in re.findall(r"(?m)^\s*(\w+)\s+(?:VAR)?CHAR\((\d+)\)", create_table_sql(table))}

    def fit(column: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.replace("\x00", "")
        return value[: lengths[column]] if column in lengths else value

    return [{c: fit(c, v) for c, v in row.items()} for row in rows]


@dataclasses.dataclass
class SourceMaker:
    """Builds a database of one engine from the contract DDL, loads rows, returns a Source."""

    engine: str
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    scratch_database: ScratchDatabase
    databases: dict[str, sa.URL] = dataclasses.field(default_factory=dict)

    def __call__(
        self,
        dataset: Dataset,
        rows: Iterable[dict[str, Any]] | None = None,
        *,
        renames: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        column_types: dict[str, str] | None = None,
        create: bool = True,
        **options: Any,
    ) -> Source:
        rows = self.rows(dataset.source_table) if rows is None else list(rows)
        url = self.database(dataset.id)
        if create:
            _create(url, dataset.source_table, rows, renames or {}, drop, column_types or {})
        self.monkeypatch.setenv(f"AIRFLOW_CONN_{dataset.connection_id.upper()}", url.render_as_string(hide_password=False))
        driver = "adbc" if self.engine.endswith("-adbc") else "sqlalchemy" if self.engine.endswith("-sqlalchemy") else "auto"
        return open_source(dataset, driver=driver, **options)

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The nasty rows of a table that this engine can store."""
        return storable(self.engine, table, cases.SOURCES.get(table, []))

    def database(self, name: str) -> sa.URL:
        if name not in self.databases:
            self.databases[name] = _database(self.engine, self.tmp_path / f"{name}.db", self.scratch_database)
        return self.databases[name]

    @property
    def server(self) -> bool:
        return not self.engine.startswith("sqlite")


MakeSource = SourceMaker


@pytest.fixture(scope="module")
def catalog() -> Any:
    return load_catalog()


@pytest.fixture(params=ENGINES)
def make_source(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_database: ScratchDatabase
) -> SourceMaker:
    return SourceMaker(request.param, tmp_path, monkeypatch, scratch_database)


def _database(engine_name: str, path: Path, scratch_database: ScratchDatabase) -> sa.URL:
    if engine_name.startswith("sqlite"):
        return sa.URL.create("sqlite", database=str(path))
    server = "postgresql" if engine_name.startswith("postgresql") else "mariadb"
    uri = scratch_database(server)
    return to_url("test", parse_connection("test", uri))


def _ddl(url: sa.URL, table: str, column_types: dict[str, str]) -> str:
    sql = create_table_sql(table)
    for column, type_ in column_types.items():
        sql = re.sub(rf"(?m)^(\s*{re.escape(column)}\s+)[A-Z]+(\(\d+(,\d+)?\))?", rf"\g<1>{type_}", sql)
    if url.get_backend_name() in ("mysql", "mariadb"):
        sql = re.sub(r"\bTIMESTAMP\b", "DATETIME(6)", sql)
        sql = re.sub(r"\bTEXT\b", "MEDIUMTEXT", sql)
    return sql


def _create(
    url: sa.URL,
    table: str,
    rows: list[dict[str, Any]],
    renames: dict[str, str],
    drop: tuple[str, ...],
    column_types: dict[str, str] | None = None,
) -> None:
    engine = sa.create_engine(url)
    prep = engine.dialect.identifier_preparer
    adapt = cases.sqlite_value if url.get_backend_name() == "sqlite" else (lambda v: v)
    with engine.begin() as conn:
        conn.execute(sa.text(_ddl(url, table, column_types or {})))
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
    want = {r[dataset.key]: _expected(dataset, r) for r in make_source.rows(dataset.source_table)}
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
    source = make_source(dataset, [row], column_types={"registered_capital": "VARCHAR(40)"})
    with pytest.raises(ConfigError, match="registered_capital"):
        _read(source)


def test_after_is_exclusive_and_upto_inclusive_on_shared_timestamps(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("population")
    source = make_source(dataset)
    wm, us = cases.WATERMARK, cases.US
    at_watermark = {r["id_number"] for r in make_source.rows("population_person") if r["updated_at"] == wm}
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


def test_every_row_comes_exactly_once_in_no_required_order(make_source: MakeSource, catalog: Any) -> None:
    """Order is not part of the contract (the pipeline keeps a key's latest change by updated_at):
    sources stream in their cheapest order, with no sort on the server."""
    for dataset_id in ("population", "legal_entity", "e_license"):
        dataset = catalog.dataset(dataset_id)
        rows = _read(make_source(dataset)).to_pylist()
        keys = [r[dataset.key] for r in rows]
        assert len(keys) == len(set(keys))


def test_small_batches_stream(make_source: MakeSource, catalog: Any) -> None:
    source = make_source(catalog.dataset("population"))
    batches = list(source.read_batches(None, FAR_FUTURE, batch_rows=3))
    assert len(batches) >= 3
    assert all(1 <= b.num_rows <= 3 for b in batches)
    assert sum(b.num_rows for b in batches) == len(make_source.rows("population_person"))


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
    assert make_source(dataset).high_watermark() == max(r["updated_at"] for r in make_source.rows("population_person"))


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
    stored = make_source.rows("e_license")
    source.check()
    table = _read(source)
    assert table.schema == source_schema(dataset)
    assert table.schema.names[0] == "license_id"
    got = {r["license_id"]: r for r in table.to_pylist()}
    for row in stored:
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
    if make_source.server:
        pytest.skip("a file check: SQLite sources only")
    source = make_source(catalog.dataset("population"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    _read(source)
    source.high_watermark()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


# -- counts and key ranges (big full loads as mapped tasks) ---------------------------------------

NASTY_KEYS = ["000123", "00123", "0123", "123", " 12", "O'Brien", "back\\slash", "%_like", "张三", "李😀",
              "Ｊｏｈｎ", "a", "A", "z", "~"]


def _keyed_rows(dataset: Dataset, n: int) -> list[dict[str, Any]]:
    """n rows whose keys mix leading zeros, quotes, backslashes, CJK and emoji, on a few instants."""
    base = cases.POPULATION[0]
    rows = []
    for i in range(n):
        key = f"{NASTY_KEYS[i % len(NASTY_KEYS)]}{i:04d}" if i >= len(NASTY_KEYS) else NASTY_KEYS[i]
        stamp = cases.WATERMARK + cases.US * (i % 3 - 1)  # one microsecond either side of the edge
        rows.append({**base, "id_number": key, "updated_at": stamp})
    return rows


def test_count_is_the_number_of_rows_read(make_source: MakeSource, catalog: Any) -> None:
    source = make_source(catalog.dataset("population"))
    wm, us = cases.WATERMARK, cases.US
    for after, upto in [(None, FAR_FUTURE), (None, wm), (wm - us, wm), (wm, wm + us), (cases.EARLY, wm), (wm, wm)]:
        assert source.count(after, upto) == _read(source, after, upto).num_rows, (after, upto)
    assert source.count(None, FAR_FUTURE) == len(make_source.rows("population_person"))


def test_key_ranges_split_the_rows_exactly_once(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("population")
    rows = _keyed_rows(dataset, 60)
    source = make_source(dataset, rows)
    whole = _read(source)
    ranges = source.key_ranges(4, None, FAR_FUTURE)
    assert 2 <= len(ranges) <= 4
    assert ranges[0][0] is None and ranges[-1][1] is None
    assert all(ranges[i][1] == ranges[i + 1][0] is not None for i in range(len(ranges) - 1))
    parts = [_read_range(source, None, FAR_FUTURE, r) for r in ranges]
    keys = [k for part in parts for k in part.column("id_number").to_pylist()]
    assert sorted(keys) == sorted(whole.column("id_number").to_pylist())  # every row exactly once
    assert len(keys) == len(set(keys)) == 60
    assert all(0 < p.num_rows <= 15 for p in parts)  # about rows/parts each


def test_key_ranges_of_a_window_and_of_few_rows(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("population")
    source = make_source(dataset, _keyed_rows(dataset, 30))
    wm, us = cases.WATERMARK, cases.US
    window = (wm - us, wm + us)  # 20 of the 30 rows
    ranges = source.key_ranges(3, *window)
    got = [k for r in ranges for k in _read_range(source, *window, r).column("id_number").to_pylist()]
    assert sorted(got) == sorted(_read(source, *window).column("id_number").to_pylist())
    assert len(got) == source.count(*window) == 20
    assert source.key_ranges(1, None, FAR_FUTURE) == [(None, None)]
    assert source.key_ranges(5, wm + us, FAR_FUTURE) == [(None, None)]  # no rows: one open range
    assert len(source.key_ranges(100, None, FAR_FUTURE)) <= 30
    with pytest.raises(ConfigError):
        source.key_ranges(0, None, FAR_FUTURE)


def test_a_key_range_from_xcom_is_a_list(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("population")
    source = make_source(dataset, _keyed_rows(dataset, 20))
    lo, hi = source.key_ranges(2, None, FAR_FUTURE)[1]
    as_list = list(source.read_batches(None, FAR_FUTURE, key_range=[lo, hi]))  # type: ignore[arg-type]
    assert sum(b.num_rows for b in as_list) == _read_range(source, None, FAR_FUTURE, (lo, hi)).num_rows > 0
    with pytest.raises(ConfigError, match="key range"):
        list(source.read_batches(None, FAR_FUTURE, key_range=("a",)))  # type: ignore[arg-type]


def test_key_range_bounds_with_quotes_backslashes_and_percent(make_source: MakeSource, catalog: Any) -> None:
    """Bounds are source text. The test servers order text by code point, as Python does."""
    dataset = catalog.dataset("population")
    rows = _keyed_rows(dataset, 45)
    source = make_source(dataset, rows)
    keys = [r["id_number"] for r in rows]
    for lo, hi in [("%_like", "O'Brien"), ("O'Brien", "back\\slash"), ("back\\slash", "李"), ("%", "%_like0020")]:
        got = _read_range(source, None, FAR_FUTURE, (lo, hi)).column("id_number").to_pylist()
        assert sorted(got) == sorted(k for k in keys if lo <= k < hi), (lo, hi)


def _read_range(source: Source, after: datetime | None, upto: datetime, key_range: Any) -> pa.Table:
    batches = list(source.read_batches(after, upto, 7, key_range=key_range))
    assert all(b.num_rows <= 7 for b in batches)
    return pa.Table.from_batches(batches, schema=source_schema(source.dataset))


# -- types that must survive ---------------------------------------------------------------------


def test_decimals_at_full_precision(make_source: MakeSource, catalog: Any) -> None:
    if not make_source.server:
        pytest.skip("SQLite keeps DECIMAL as REAL: 15 significant digits (test_decimals_are_exact covers it)")
    dataset = catalog.dataset("legal_entity")
    values = ["12345678901234.5678", "-99999999999999.9999", "0.0001", "10000000000000.0000"]
    rows = [{**cases.LEGAL_ENTITY[1], "uscc": f"{i:018d}", "registered_capital": Decimal(v)} for i, v in enumerate(values)]
    table = _read(make_source(dataset, rows))
    assert table.schema.field("registered_capital").type == pa.decimal128(18, 4)
    assert sorted(table.column("registered_capital").to_pylist()) == sorted(Decimal(v) for v in values)


def test_timestamps_keep_microseconds_and_text_keeps_its_characters(make_source: MakeSource, catalog: Any) -> None:
    dataset = catalog.dataset("population")
    stamps = [datetime(2026, 11, 20, 23, 59, 59, 999999), datetime(2026, 11, 21, 0, 0, 0, 1), datetime(2026, 1, 1)]
    names = ["张三丰", "😀🇨🇳👨‍👩‍👧", "Ｊｏｈｎ　史密斯"]
    rows = [{**cases.POPULATION[0], "id_number": f"0{i}", "name": n, "ethnicity_code": "01",
             "household_division_code": "010101", "updated_at": t} for i, (n, t) in enumerate(zip(names, stamps))]
    source = make_source(dataset, rows)
    table = _read(source)
    assert sorted(table.column("updated_at").to_pylist()) == sorted(stamps)
    got = {r["id_number"]: r for r in table.to_pylist()}
    assert {k: r["name"] for k, r in got.items()} == {f"0{i}": n for i, n in enumerate(names)}
    assert {r["household_division_code"] for r in got.values()} == {"010101"}
    assert _read(source, after=stamps[0], upto=stamps[1]).column("id_number").to_pylist() == ["01"]


def test_the_contract_ddl_loads_unchanged_on_mariadb(catalog: Any, scratch_database: ScratchDatabase,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The DDL as written: MariaDB's TIMESTAMP keeps whole seconds, so a source that uses it has
    seconds; the read still gives the contract's types."""
    uri = scratch_database("mariadb")
    url = to_url("test", parse_connection("test", uri))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(create_table_sql(table)))
        conn.execute(sa.table("population_person", sa.column("id_number"), sa.column("name"), sa.column("updated_at"),
                              sa.column("is_deleted")).insert(),
                     [{"id_number": "0101", "name": "李😀", "updated_at": datetime(2026, 11, 20, 12), "is_deleted": 0}])
    engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", uri)
    table = _read(open_source(catalog.dataset("population")))
    assert table.schema == source_schema(catalog.dataset("population"))
    assert table.to_pylist()[0]["name"] == "李😀"
    assert table.column("updated_at").to_pylist() == [datetime(2026, 11, 20, 12)]


@pytest.mark.parametrize("engine_name", SERVERS)
def test_a_statement_that_runs_too_long_is_unavailable(
    engine_name: str, catalog: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_database: ScratchDatabase
) -> None:
    import time

    make = SourceMaker(engine_name, tmp_path, monkeypatch, scratch_database)
    dataset = catalog.dataset("population")
    make(dataset, renames={})
    url = make.database(dataset.id)
    slow = "(SELECT 1 FROM pg_sleep(30)) = 1" if engine_name.startswith("postgresql") else "SLEEP(30) = 0"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE population_person RENAME TO population_rows"))
        conn.execute(sa.text(f"CREATE VIEW population_person AS SELECT * FROM population_rows WHERE {slow}"))
    engine.dispose()
    source = make(dataset, create=False, statement_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="population_db") as raised:
        _read(source)
    assert time.monotonic() - started < 10
    assert raised.value.retriable and url.password not in str(raised.value)
