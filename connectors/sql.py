"""SQL sources: one class for every SQLAlchemy database, with ADBC fast paths for SQLite and PostgreSQL.

Paths per engine (``driver="auto"``):

- SQLite: ADBC (``adbc-driver-sqlite``), bound parameters, batches of ``batch_rows`` rows.
- PostgreSQL: ADBC (``adbc-driver-postgresql``), which streams with COPY in batches of about
  16 MiB. It streams only statements without bound parameters (with parameters it buffers the
  whole result: 1.1 GB for a million rows), so this path renders values as literals with
  SQLAlchemy's PostgreSQL dialect as initialised by the live server (it knows the server's
  string-escaping rules). ``driver="sqlalchemy"`` (psycopg, server-side cursor) is the fallback.
- MariaDB/MySQL and anything else: SQLAlchemy with a server-side cursor (``stream_results``;
  pymysql's SSCursor). connectorx streams MySQL too, but takes no bound parameters, and the
  key-range boundaries are source data.

Identifiers come from the catalog and are only ever used through SQLAlchemy constructs
(``table``/``column``/``select``), which quote them; values are bound parameters. Column names are
matched against the live database (case-insensitively, as SQL does for unquoted names) and used as
the database spells them.

Types are made canonical here, deliberately, batch by batch. PostgreSQL's NUMERIC arrives from ADBC as
text (an opaque extension type) and is parsed exactly; CHAR(n) is selected as TEXT, which drops
PostgreSQL's blank padding as MariaDB does. SQLite has no column types worth
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

import importlib.util
import math
import re
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

from connectors.base import DEFAULT_BATCH_ROWS, KeyRange
from connectors.connections import resolve_url
from common.errors import ConfigError, GovshareError, SourceUnavailable
from common.schema import IS_DELETED, UPDATED_AT, arrow_type, source_schema

if TYPE_CHECKING:
    from common.catalog import Dataset

Driver = Literal["auto", "adbc", "sqlalchemy"]

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
_TS_TEXT = "%Y-%m-%d %H:%M:%S"
_MIDNIGHT_SUFFIX = r"^(\d{4}-\d{2}-\d{2})[ T]00:00(:00(\.0*)?)?$"
_ADBC_BATCH_ROWS = "adbc.sqlite.query.batch_rows"
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024  # windowed (incremental) SQLite reads; address space only
_ADBC_PG_BATCH_BYTES = "adbc.postgresql.batch_size_hint_bytes"
_PG_BATCH_BYTES = 16 * 1024 * 1024
# MariaDB gives up writing to a client that pauses longer than net_write_timeout (60 s by default)
# while it processes a streamed batch; a full load must survive slow consumers.
_MYSQL_NET_WRITE_TIMEOUT_S = 3600


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


@dataclass(frozen=True)
class _Window:
    """What one statement reads: after < updated_at <= upto, key in [lo, hi)."""

    after: datetime | None
    upto: datetime
    key_range: KeyRange = (None, None)


class SqlSource:
    """A dataset's source view in a SQL database: SQLite, PostgreSQL, MariaDB/MySQL (by URL).

    ``timeout_s`` bounds connecting (a ``connect_timeout`` in the connection's extras wins);
    ``statement_timeout_s`` bounds each statement on the server (None: no limit). Either
    running out is SourceUnavailable, which Airflow retries.
    """

    def __init__(
        self,
        dataset: Dataset,
        url: URL,
        *,
        connection_id: str | None = None,
        driver: Driver = "auto",
        timeout_s: float = 30.0,
        statement_timeout_s: float | None = None,
    ) -> None:
        self.dataset = dataset
        self.url = url
        self.connection_id = connection_id or dataset.connection_id
        self.timeout_s = _connect_timeout(url, timeout_s, self.connection_id)
        self.statement_timeout_s = statement_timeout_s
        self.schema = source_schema(dataset)
        self.backend = _backend(url)
        self._sqlite = self.backend == "sqlite"
        adbc_backends = ("sqlite", "postgresql")
        if driver == "adbc" and self.backend not in adbc_backends:
            raise ConfigError(
                f"connection {self.connection_id}: the ADBC path is for SQLite and PostgreSQL, not {self.backend}"
            )
        if driver == "auto":
            has_adbc = self._sqlite or (self.backend == "postgresql" and _installed("adbc_driver_postgresql"))
            driver = "adbc" if has_adbc else "sqlalchemy"
        self.driver: Driver = driver
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
        self,
        after: datetime | None,
        upto: datetime,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        key_range: KeyRange | None = None,
    ) -> Iterator[pa.RecordBatch]:
        if batch_rows < 1:
            raise ConfigError(f"batch_rows must be at least 1, not {batch_rows}")
        key_range = _key_range(key_range)
        layout = self.layout()  # before any row is read
        after = _naive_local(after) if after is not None else None
        upto = _naive_local(upto)
        if after is not None and after >= upto:
            return iter(())
        window = _Window(after, upto, key_range)
        if self.driver == "adbc" and self._sqlite:
            raw = self._adbc_sqlite_batches(layout, window, batch_rows)
        elif self.driver == "adbc":
            raw = self._adbc_postgres_batches(layout, window, batch_rows)
        else:
            raw = self._sqlalchemy_batches(layout, window, batch_rows)
        return self._canonical(layout, raw, after, upto)

    def count(self, after: datetime | None, upto: datetime, *, exact: bool = True) -> int:
        """The number of rows with after < updated_at <= upto: exactly, or (exact=False, enough to
        size key-range parts) an upper bound that costs one COUNT(*) on every engine."""
        layout = self.layout()
        after = _naive_local(after) if after is not None else None
        upto = _naive_local(upto)
        if after is not None and after >= upto:
            return 0
        window = _Window(after, upto, (None, None))
        if self._sqlite and exact:
            return self._count_sqlite(layout, window)
        stmt = sa.select(sa.func.count()).select_from(sa.table(layout.table)).where(*self._where(layout, window))
        with self._unavailable("counting rows"), self.engine().connect() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def key_ranges(self, parts: int, after: datetime | None, upto: datetime) -> list[KeyRange]:
        """Split the rows with after < updated_at <= upto into about ``parts`` key ranges.

        The ranges are contiguous and cover every key: the first is open below, the last open
        above, each is lo inclusive / hi exclusive in the database's own order of the key column.
        So every row, even one written after this call, falls in exactly one range. Boundaries
        are every n/parts-th key of the window, found in one ordered pass (ROW_NUMBER).
        """
        if parts < 1:
            raise ConfigError(f"parts must be at least 1, not {parts}")
        rows = self.count(after, upto)
        if parts == 1 or rows < 2:
            return [(None, None)]
        layout = self.layout()
        after = _naive_local(after) if after is not None else None
        window = _Window(after, _naive_local(upto), (None, None))
        size = math.ceil(rows / parts)
        key = sa.column(layout.key)
        numbered = (
            sa.select(key.label("k"), sa.func.row_number().over(order_by=key).label("rn"))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
            .subquery("numbered")
        )
        stmt = (
            sa.select(numbered.c.k)
            .where(numbered.c.rn > 1, (numbered.c.rn - 1) % size == 0)
            .order_by(numbered.c.rn)
        )
        with self._unavailable("finding key ranges"), self.engine().connect() as conn:
            found = [value for (value,) in conn.execute(stmt)]
        bounds: list[str] = []
        for value in found:
            text = value if isinstance(value, str) else str(value)
            if not bounds or bounds[-1] != text:
                bounds.append(text)
        edges: list[str | None] = [None, *bounds, None]
        return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]

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
                    self._engine = sa.create_engine(self.url, poolclass=NullPool, connect_args=self._connect_args())
                except ModuleNotFoundError as exc:
                    raise ConfigError(
                        f"connection {self.connection_id}: the database driver {exc.name!r} is not installed"
                    ) from None
                sa.event.listen(self._engine, "connect", self._prepare_session)
        return self._engine

    def _connect_args(self) -> dict[str, Any]:
        if self.backend == "postgresql":
            return {"connect_timeout": _libpq_timeout(self.timeout_s)}
        if self.backend == "mysql":
            # pymysql's connect_timeout covers the TCP connect only: a server that accepts and then
            # stays silent is caught by read/write timeouts, relaxed in _prepare_session.
            seconds = max(1, math.ceil(self.timeout_s))
            args: dict[str, Any] = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
            if "charset" not in self.url.query:
                args["charset"] = "utf8mb4"  # utf8 (utf8mb3) cannot carry emoji
            return args
        return {}

    def _prepare_session(self, dbapi_connection: Any, _record: Any) -> None:
        """Per-connection settings: the statement timeout, and MySQL's patience with a slow reader."""
        statements: list[str] = []
        limit = self.statement_timeout_s
        if self.backend == "postgresql" and limit is not None:
            statements.append(f"SET statement_timeout = {max(1, round(limit * 1000))}")
        elif self.backend == "mysql":
            statements.append(f"SET SESSION net_write_timeout = {_MYSQL_NET_WRITE_TIMEOUT_S}")
            # Connected: a long sort before the first row is no longer a silent server. Waiting
            # for rows is bounded by the statement timeout (plus a grace), else not at all.
            waiting = None if limit is None else math.ceil(limit) + 30
            for name in ("_read_timeout", "_write_timeout"):
                if hasattr(dbapi_connection, name):
                    setattr(dbapi_connection, name, waiting)
            if limit is not None:
                server = str(getattr(dbapi_connection, "get_server_info", lambda: "")())
                if "mariadb" in server.lower():
                    statements.append(f"SET SESSION max_statement_time = {float(limit)!r}")
                else:
                    statements.append(f"SET SESSION max_execution_time = {max(1, round(limit * 1000))}")
        if not statements:
            return
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
        if self.backend == "postgresql":
            dbapi_connection.commit()  # outside the first read's transaction

    def _sqlite_uri(self) -> str:
        """Read-only URI of the SQLite file. sqlite3 would create a missing file: refuse first."""
        path = Path(self.url.database or "").expanduser()
        if not path.is_file():
            raise SourceUnavailable(
                f"source {self.connection_id} of dataset {self.dataset.id} is unavailable: "
                f"SQLite file {path} does not exist"
            )
        return f"{path.resolve().as_uri()}?mode=ro"

    def _postgres_uri(self) -> str:
        """libpq URI for ADBC: the connection's own parameters plus the connect timeout."""
        query = {**self.url.query, "connect_timeout": str(_libpq_timeout(self.timeout_s))}
        return self.url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)

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
        except (adbc_driver_manager.Error, OSError) as exc:
            # ADBC reports SQLSTATE on its own errors; a failure mid-stream comes through the Arrow
            # stream as an OSError carrying only libpq's text.
            unavailable = getattr(exc, "sqlstate", None) in _PG_UNAVAILABLE_STATES or (
                isinstance(exc, OSError) and _LIBPQ_UNAVAILABLE.search(str(exc)) is not None
            )
            if not unavailable:
                raise
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
            if self.backend == "postgresql" and pa.types.is_string(col.type):
                expr: sa.ColumnElement[Any] = sa.cast(c, sa.Text)  # CHAR(n) without its blank padding
            elif not self._sqlite:
                expr = c
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

    def _where(self, layout: Layout, window: _Window) -> list[sa.ColumnElement[bool]]:
        updated = sa.column(layout.updated_at)
        key = sa.column(layout.key)
        lo, hi = window.key_range
        clauses: list[sa.ColumnElement[bool]] = []
        if lo is not None:
            clauses.append(key >= sa.bindparam("key_lo", lo, type_=sa.String))
        if hi is not None:
            clauses.append(key < sa.bindparam("key_hi", hi, type_=sa.String))
        if not self._sqlite:
            clauses.append(updated <= sa.bindparam("upto", window.upto, type_=sa.DateTime))
            if window.after is not None:
                clauses.append(updated > sa.bindparam("after", window.after, type_=sa.DateTime))
            return clauses
        # Text comparison: a superset, made exact on the parsed values (module docstring).
        day_after_upto = (window.upto + timedelta(days=1)).strftime("%Y-%m-%d")
        if window.after is None:
            # A full read: keep SQLite off an index on updated_at (an expression is not
            # indexable); a table scan beats a million index lookups.
            updated = updated.concat("")
        clauses.append(updated < sa.bindparam("upto_day", day_after_upto))
        if window.after is not None:
            clauses.append(updated >= sa.bindparam("after_second", window.after.strftime(_TS_TEXT)))
        return clauses

    def _rows_statement(self, layout: Layout, window: _Window) -> sa.Select[Any]:
        return (
            sa.select(*self._select_list(layout))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
        )

    def _count_sqlite(self, layout: Layout, window: _Window) -> int:
        """SQLite's timestamps are text in several spellings: count on the parsed values."""
        updated = layout.columns[-2]
        stmt = (
            sa.select(sa.cast(sa.column(updated.source), sa.Text))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
        )
        upto = pa.scalar(window.upto, pa.timestamp("us"))
        after = pa.scalar(window.after, pa.timestamp("us")) if window.after is not None else None
        total = 0
        with self._unavailable("counting rows"), self.engine().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=DEFAULT_BATCH_ROWS).execute(stmt)
            for part in result.partitions(DEFAULT_BATCH_ROWS):
                values = self._conform(updated, pa.array([v for (v,) in part], pa.string()))
                keep = pc.less_equal(values, upto)
                if after is not None:
                    keep = pc.and_(keep, pc.greater(values, after))
                total += pc.sum(keep.cast(pa.int64())).as_py() or 0
        return total

    # -- reading paths ---------------------------------------------------------------------

    def _sqlalchemy_batches(self, layout: Layout, window: _Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        stmt = self._rows_statement(layout, window)
        with self._unavailable("reading rows"), self.engine().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
            for part in result.partitions(batch_rows):
                yield [_py_array(values) for values in zip(*part)]

    def _adbc_postgres_batches(self, layout: Layout, window: _Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        import adbc_driver_postgresql.dbapi as adbc

        # Literals, not parameters: ADBC streams (COPY) only a statement without parameters.
        # The engine's dialect was initialised by the live server (layout() connected through it),
        # so it escapes strings as that server reads them.
        dialect = self.engine().dialect
        sql = str(self._rows_statement(layout, window).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if dialect.paramstyle in ("pyformat", "format"):
            sql = sql.replace("%%", "%")  # escaped for psycopg's placeholders, which ADBC does not have
        with self._unavailable("reading rows"):
            conn = adbc.connect(self._postgres_uri())
            try:
                cursor = conn.cursor()
                if self.statement_timeout_s is not None:
                    cursor.execute(f"SET statement_timeout = {max(1, round(self.statement_timeout_s * 1000))}")
                cursor.adbc_statement.set_options(**{_ADBC_PG_BATCH_BYTES: str(_PG_BATCH_BYTES)})
                cursor.execute(sql)
                for batch in cursor.fetch_record_batch():
                    columns = [_storage(column) for column in batch.columns]
                    for offset in range(0, batch.num_rows, batch_rows):
                        yield [column.slice(offset, batch_rows) for column in columns]
            finally:
                conn.close()

    def _adbc_sqlite_batches(self, layout: Layout, window: _Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        import adbc_driver_sqlite.dbapi as adbc

        # The probe row (_row 0, all text) fixes every column's Arrow type to string for the
        # whole stream; without it a column NULL in the first batch is inferred as int64 and a
        # later text value fails the read.
        rows = (
            sa.select(sa.literal(1).label("_row"), *self._select_list(layout))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
        )
        probe = sa.select(sa.literal(0).label("_row"), *[sa.literal("").label(f"c{i}") for i in range(len(layout.columns))])
        union = sa.union_all(probe, rows).subquery("u")
        # SQLite returns a UNION ALL's arms in order, so the probe comes first without a sort
        # (checked below on every read).
        stmt = sa.select(union.c["_row"], *[union.c[f"c{i}"] for i in range(len(layout.columns))])
        compiled = stmt.compile(dialect=self.engine().dialect)
        params = [compiled.params[name] for name in compiled.positiontup or ()]
        uri = self._sqlite_uri()
        with self._unavailable("reading rows"):
            conn = adbc.connect(uri)
            try:
                cursor = conn.cursor()
                cursor.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
                if window.after is not None:
                    # A window is read through the updated_at index, a page here and a page there:
                    # memory-mapped pages make that a third faster (a full scan gains nothing).
                    cursor.execute(f"PRAGMA mmap_size = {_SQLITE_MMAP_BYTES}")
                cursor.adbc_statement.set_options(**{_ADBC_BATCH_ROWS: str(batch_rows)})
                cursor.execute(str(compiled), params)
                first = True
                for batch in cursor.fetch_record_batch():
                    if first:
                        if batch.num_rows == 0 or batch.column(0)[0].as_py() != 0:
                            raise GovshareError(f"{self.connection_id}: SQLite did not return the type probe first; "
                                                    "this SQLite build orders compound selects differently")
                        batch, first = batch.slice(1), False
                    if batch.num_rows:
                        yield list(batch.columns[1:])
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


def open_source(
    dataset: Dataset, *, driver: Driver = "auto", timeout_s: float = 30.0, statement_timeout_s: float | None = None
) -> SqlSource:
    """The source of a dataset, found through its connection id."""
    return SqlSource(
        dataset,
        resolve_url(dataset.connection_id),
        connection_id=dataset.connection_id,
        driver=driver,
        timeout_s=timeout_s,
        statement_timeout_s=statement_timeout_s,
    )


def to_canonical(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Convert one column, as a driver returned it, to its canonical type.

    Raises ArrowInvalid when a value cannot be represented (never rounds a decimal silently).
    """
    arr = _storage(arr)
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


def _storage(arr: pa.Array) -> pa.Array:
    """An extension array's storage: ADBC hands PostgreSQL NUMERIC over as opaque text."""
    return arr.storage if isinstance(arr, pa.ExtensionArray) else arr


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


# SQLSTATEs that mean "try again later": cancelled (statement_timeout), connection failures,
# too many connections, server shutting down.
_LIBPQ_UNAVAILABLE = re.compile(
    r"\[libpq\].*(statement timeout|canceling statement|server closed the connection|terminating connection"
    r"|could not receive data|connection to server|no connection to the server|SSL SYSCALL)",
    re.IGNORECASE,
)
_PG_UNAVAILABLE_STATES = frozenset({"57014", "08000", "08001", "08003", "08004", "08006", "53300", "57P01", "57P03"})


def _backend(url: URL) -> str:
    name = url.get_backend_name()
    return "mysql" if name in ("mysql", "mariadb") else name


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _connect_timeout(url: URL, default: float, connection_id: str) -> float:
    """The connection's own ``connect_timeout`` extra, else the default."""
    raw = url.query.get("connect_timeout")
    if raw is None:
        return default
    try:
        value = float(raw if isinstance(raw, str) else raw[0])
    except ValueError:
        raise ConfigError(f"connection {connection_id}: connect_timeout must be a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"connection {connection_id}: connect_timeout must be more than 0 seconds")
    return value


def _libpq_timeout(seconds: float) -> int:
    return max(2, math.ceil(seconds))  # libpq treats 1 as 2 and 0 as "wait forever"


def _key_range(key_range: Sequence[str | None] | None) -> KeyRange:
    """A key range as read from XCom or JSON (a list) made a tuple; None is the whole key space."""
    if key_range is None:
        return (None, None)
    if len(key_range) != 2 or not all(v is None or isinstance(v, str) for v in key_range):
        raise ConfigError(f"a key range is a pair [lo, hi] of text or null, not {key_range!r}")
    lo, hi = key_range
    return (lo, hi)
