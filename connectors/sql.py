"""SQL sources: one class for every SQLAlchemy database, with an ADBC fast path for SQLite.

Identifiers come from the catalog and are only ever used through SQLAlchemy constructs
(``table``/``column``/``select``), which quote them; values are bound parameters. Column names are
matched against the live database (case-insensitively, as SQL does for unquoted names) and used as
the database spells them.

Types are made canonical here, deliberately, batch by batch: SQLite has no column types worth
the name (CHAR is TEXT, DECIMAL is mostly REAL, DATE and TIMESTAMP are TEXT) and ADBC's SQLite
driver infers a stream's Arrow types from its first batch. So on SQLite every column is selected
as text (decimals stored as REAL are printed at the declared scale: no binary float error), a first
all-text probe row pins every column to string for the whole stream, and Arrow parses the text
into the canonical types. Codes stay text: leading zeros survive.

Timestamps on SQLite are text too, compared as text. The SQL filter is therefore a superset
(from the second of ``after`` up to the end of the day of ``upto``) and the exact bounds
``after < updated_at <= upto`` are applied on the parsed values, so '2026-01-01 10:00:00',
'2026-01-01 10:00:00.000000' and '2026-01-01T10:00:00' all compare as the same instant.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from connectors.base import DEFAULT_BATCH_ROWS
from connectors.connections import resolve_url
from govshare.errors import ConfigError, SourceUnavailable
from govshare.schema import IS_DELETED, UPDATED_AT, arrow_type, source_schema

if TYPE_CHECKING:
    from govshare.catalog import Dataset, Field

Driver = Literal["auto", "adbc", "sqlalchemy"]

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
_TS_TEXT = "%Y-%m-%d %H:%M:%S"
_MIDNIGHT_SUFFIX = r"^(\d{4}-\d{2}-\d{2})[ T]00:00(:00(\.0*)?)?$"
_ADBC_BATCH_ROWS = "adbc.sqlite.query.batch_rows"


@dataclass(frozen=True)
class Column:
    """One canonical column and the source column that feeds it."""

    name: str  # canonical name
    source: str  # the column as the database spells it
    type: pa.DataType
    decimal_scale: int | None = None


@dataclass(frozen=True)
class Layout:
    """The dataset's source view as found in the live database."""

    table: str
    columns: tuple[Column, ...]  # fields, then updated_at, then is_deleted
    key: str  # source column of the key

    @property
    def updated_at(self) -> str:
        return self.columns[-2].source


class SqlSource:
    """A dataset's source view in a SQL database (SQLite now; PostgreSQL/MariaDB by URL)."""

    def __init__(
        self,
        dataset: Dataset,
        url: URL,
        *,
        connection_id: str | None = None,
        driver: Driver = "auto",
        timeout_s: float = 30.0,
    ) -> None:
        self.dataset = dataset
        self.url = url
        self.connection_id = connection_id or dataset.connection_id
        self.timeout_s = timeout_s
        self.schema = source_schema(dataset)
        self._sqlite = url.get_backend_name() == "sqlite"
        if driver == "adbc" and not self._sqlite:
            raise ConfigError(f"connection {self.connection_id}: the ADBC fast path is for SQLite only")
        self.driver: Driver = ("adbc" if self._sqlite else "sqlalchemy") if driver == "auto" else driver
        self._engine: Engine | None = None
        self._layout: Layout | None = None

    def __repr__(self) -> str:
        return f"SqlSource({self.dataset.id}, {self.connection_id}, driver={self.driver})"

    # -- the Source protocol -------------------------------------------------------------

    def check(self) -> None:
        self._layout = None
        self.layout()

    def high_watermark(self) -> datetime | None:
        layout = self.layout()
        stmt = sa.select(sa.func.max(sa.column(layout.updated_at))).select_from(sa.table(layout.table))
        with self._unavailable("reading the high watermark"), self.engine().connect() as conn:
            value = conn.execute(stmt).scalar()
        if value is None:
            return None
        if isinstance(value, datetime):
            return _naive_local(value)
        try:
            return _naive_local(datetime.fromisoformat(str(value).strip()))
        except ValueError:
            raise self._type_error(layout.columns[-2], "timestamp") from None

    def read_batches(
        self, after: datetime | None, upto: datetime, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        if batch_rows < 1:
            raise ConfigError(f"batch_rows must be at least 1, not {batch_rows}")
        layout = self.layout()  # before any row is read
        after = _naive_local(after) if after is not None else None
        upto = _naive_local(upto)
        if after is not None and after >= upto:
            return iter(())
        if self.driver == "adbc":
            raw = self._adbc_batches(layout, after, upto, batch_rows)
        else:
            raw = self._sqlalchemy_batches(layout, after, upto, batch_rows)
        return self._canonical(layout, raw, after, upto)

    # -- layout: the table and columns as the database has them ----------------------------

    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = self._find_layout()
        return self._layout

    def _find_layout(self) -> Layout:
        ds = self.dataset
        with self._unavailable("inspecting the source"), self.engine().connect() as conn:
            inspector = sa.inspect(conn)
            tables = inspector.get_table_names() + inspector.get_view_names()
            table = _match(ds.source_table, tables)
            if table is None:
                raise ConfigError(
                    f"dataset {ds.id}: source {self.connection_id} has no table or view {ds.source_table!r}",
                    problems=[f"missing table {ds.source_table!r}"],
                )
            present = [c["name"] for c in inspector.get_columns(table)]
        wanted: list[tuple[str, str, pa.DataType, int | None]] = [
            (f.name, f.column, arrow_type(f), f.decimal[1] if f.decimal else None) for f in ds.fields
        ]
        wanted += [(UPDATED_AT, ds.watermark_column, pa.timestamp("us"), None), (IS_DELETED, ds.deleted_column, pa.int8(), None)]
        columns: list[Column] = []
        problems: list[str] = []
        for name, source_column, type_, scale in wanted:
            found = _match(source_column, present)
            if found is None:
                mapped = "" if name == source_column else f" (field {name})"
                problems.append(f"missing column {source_column!r}{mapped} in table {table!r}")
                continue
            columns.append(Column(name, found, type_, scale))
        if problems:
            raise ConfigError(
                f"dataset {ds.id}: source {self.connection_id} lacks {len(problems)} column(s) the catalog maps",
                problems=problems,
            )
        key_source = next(c.source for c in columns if c.name == ds.key)
        return Layout(table=table, columns=tuple(columns), key=key_source)

    # -- engines and errors --------------------------------------------------------------

    def engine(self) -> Engine:
        if self._engine is None:
            if self._sqlite:
                uri = self._sqlite_uri()
                timeout = self.timeout_s
                self._engine = sa.create_engine(
                    "sqlite+pysqlite://",
                    creator=lambda: sqlite3.connect(uri, uri=True, timeout=timeout),
                    poolclass=NullPool,
                )
            else:
                try:
                    self._engine = sa.create_engine(
                        self.url, poolclass=NullPool, connect_args={"connect_timeout": int(self.timeout_s)}
                    )
                except ModuleNotFoundError as exc:
                    raise ConfigError(
                        f"connection {self.connection_id}: the database driver {exc.name!r} is not installed"
                    ) from None
        return self._engine

    def _sqlite_uri(self) -> str:
        """Read-only URI of the SQLite file. sqlite3 would create a missing file: refuse first."""
        path = Path(self.url.database or "").expanduser()
        if not path.is_file():
            raise SourceUnavailable(
                f"source {self.connection_id} of dataset {self.dataset.id} is unavailable: "
                f"SQLite file {path} does not exist"
            )
        return f"{path.resolve().as_uri()}?mode=ro"

    @contextmanager
    def _unavailable(self, doing: str) -> Iterator[None]:
        import adbc_driver_manager

        try:
            yield
        except (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            sa.exc.TimeoutError,
            sqlite3.OperationalError,
            adbc_driver_manager.OperationalError,
            adbc_driver_manager.InterfaceError,
        ) as exc:
            raise SourceUnavailable(
                f"source {self.connection_id} of dataset {self.dataset.id} is unavailable while {doing}: "
                f"{self._scrub(exc)}"
            ) from None

    def _scrub(self, exc: BaseException) -> str:
        text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        if self.url.password:
            text = text.replace(str(self.url.password), "***")
        return text

    def _type_error(self, column: Column, expected: str) -> ConfigError:
        return ConfigError(
            f"dataset {self.dataset.id}: column {column.source!r} of table {self.layout().table!r} in source "
            f"{self.connection_id} holds values that cannot be read as {expected} (field {column.name}); "
            f"fix the source or the field's type in the catalog"
        )

    # -- statements ------------------------------------------------------------------------

    def _select_list(self, layout: Layout) -> list[sa.ColumnElement[Any]]:
        exprs: list[sa.ColumnElement[Any]] = []
        for i, col in enumerate(layout.columns):
            c = sa.column(col.source)
            if not self._sqlite:
                expr: sa.ColumnElement[Any] = c
            elif col.decimal_scale is not None:
                # REAL holds a binary approximation: print it at the declared scale; text stays exact.
                expr = sa.case(
                    (sa.func.typeof(c) == "real", sa.func.printf(f"%.{col.decimal_scale}f", c)),
                    else_=sa.cast(c, sa.Text),
                )
            else:
                expr = sa.cast(c, sa.Text)
            exprs.append(expr.label(f"c{i}"))
        return exprs

    def _where(self, layout: Layout, after: datetime | None, upto: datetime) -> list[sa.ColumnElement[bool]]:
        updated = sa.column(layout.updated_at)
        if not self._sqlite:
            clauses = [updated <= sa.bindparam("upto", upto)]
            if after is not None:
                clauses.append(updated > sa.bindparam("after", after))
            return clauses
        # Text comparison: a superset, made exact on the parsed values (module docstring).
        day_after_upto = (upto + timedelta(days=1)).strftime("%Y-%m-%d")
        clauses = [updated < sa.bindparam("upto_day", day_after_upto)]
        if after is not None:
            clauses.append(updated >= sa.bindparam("after_second", after.strftime(_TS_TEXT)))
        return clauses

    def _sqlalchemy_batches(
        self, layout: Layout, after: datetime | None, upto: datetime, batch_rows: int
    ) -> Iterator[list[pa.Array]]:
        stmt = (
            sa.select(*self._select_list(layout))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, after, upto))
            .order_by(sa.column(layout.updated_at), sa.column(layout.key))
        )
        with self._unavailable("reading rows"), self.engine().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
            for part in result.partitions(batch_rows):
                yield [_py_array(values) for values in zip(*part)]

    def _adbc_batches(
        self, layout: Layout, after: datetime | None, upto: datetime, batch_rows: int
    ) -> Iterator[list[pa.Array]]:
        import adbc_driver_sqlite.dbapi as adbc

        # The probe row (_row 0, all text) fixes every column's Arrow type to string for the
        # whole stream; without it a column NULL in the first batch is inferred as int64 and a
        # later text value fails the read.
        rows = (
            sa.select(sa.literal(1).label("_row"), *self._select_list(layout))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, after, upto))
        )
        probe = sa.select(sa.literal(0).label("_row"), *[sa.literal("").label(f"c{i}") for i in range(len(layout.columns))])
        union = sa.union_all(probe, rows).subquery("u")
        key_pos = next(i for i, c in enumerate(layout.columns) if c.source == layout.key)
        upd_pos = len(layout.columns) - 2
        stmt = sa.select(*[union.c[f"c{i}"] for i in range(len(layout.columns))]).order_by(
            union.c["_row"], union.c[f"c{upd_pos}"], union.c[f"c{key_pos}"]
        )
        compiled = stmt.compile(dialect=self.engine().dialect)
        params = [compiled.params[name] for name in compiled.positiontup or ()]
        uri = self._sqlite_uri()
        with self._unavailable("reading rows"):
            conn = adbc.connect(uri)
            try:
                cursor = conn.cursor()
                cursor.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
                cursor.adbc_statement.set_options(**{_ADBC_BATCH_ROWS: str(batch_rows)})
                cursor.execute(str(compiled), params)
                first = True
                for batch in cursor.fetch_record_batch():
                    if first:
                        batch, first = batch.slice(1), False
                    if batch.num_rows:
                        yield list(batch.columns)
                cursor.close()
            finally:
                conn.close()

    # -- canonical batches -----------------------------------------------------------------

    def _canonical(
        self, layout: Layout, raw: Iterator[list[pa.Array]], after: datetime | None, upto: datetime
    ) -> Iterator[pa.RecordBatch]:
        upto_s = pa.scalar(upto, pa.timestamp("us"))
        after_s = pa.scalar(after, pa.timestamp("us")) if after is not None else None
        for arrays in raw:
            columns = [self._conform(col, arr) for col, arr in zip(layout.columns, arrays)]
            batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
            updated = batch.column(len(columns) - 2)
            keep = pc.less_equal(updated, upto_s)
            if after_s is not None:
                keep = pc.and_(keep, pc.greater(updated, after_s))
            if not pc.all(keep).as_py():
                batch = batch.filter(keep)
            if batch.num_rows:
                yield batch

    def _conform(self, column: Column, arr: pa.Array) -> pa.Array:
        try:
            out = to_canonical(arr, column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise self._type_error(column, str(column.type)) from None
        if column.name == IS_DELETED:
            out = out.fill_null(0)  # the contract says NOT NULL DEFAULT 0
        return out


def open_source(dataset: Dataset, *, driver: Driver = "auto") -> SqlSource:
    """The source of a dataset, found through its connection id."""
    return SqlSource(dataset, resolve_url(dataset.connection_id), connection_id=dataset.connection_id, driver=driver)


def to_canonical(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Convert one column, as a driver returned it, to its canonical type.

    Raises ArrowInvalid when a value cannot be represented (never rounds a decimal silently).
    """
    if arr.type == target:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    if pa.types.is_string(target):
        return arr.cast(pa.string())
    is_text = pa.types.is_string(arr.type)
    if pa.types.is_date32(target):
        if is_text:
            arr = pc.replace_substring_regex(pc.utf8_trim_whitespace(arr), _MIDNIGHT_SUFFIX, r"\1")
        return arr.cast(target)
    if pa.types.is_timestamp(target):
        if pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
            arr = pc.local_timestamp(arr.cast(pa.timestamp(arr.type.unit, str(LOCAL_TZ))))
        elif is_text:
            arr = pc.utf8_trim_whitespace(arr)
        return arr.cast(target)
    if pa.types.is_decimal(target):
        if is_text:
            arr = pc.utf8_trim_whitespace(arr)
        elif pa.types.is_floating(arr.type):
            arr = arr.cast(pa.string())  # shortest round-trip text, then exact
        return arr.cast(target)
    if pa.types.is_integer(target):
        if is_text:
            arr = pc.utf8_trim_whitespace(arr)
            try:
                return arr.cast(pa.int64()).cast(target)
            except pa.ArrowInvalid:
                return arr.cast(pa.float64()).cast(target)  # '1.0' is 1; '1.5' still fails
        return arr.cast(target)
    return arr.cast(target)


def _py_array(values: Sequence[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _match(name: str, present: Sequence[str]) -> str | None:
    """The database's spelling of an identifier: exact, else the one case-insensitive match."""
    if name in present:
        return name
    folded = [p for p in present if p.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def _naive_local(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(LOCAL_TZ).replace(tzinfo=None)
