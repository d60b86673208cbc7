"""What every SQL source shares: column mapping, identifiers, watermarks, key ranges, canonical batches.

``SqlSource`` is the base of the engine classes (``connectors.sqlite.SqliteSource``,
``connectors.postgresql.PostgresSource``, ``connectors.mysql.MySqlSource``) and, as it stands,
the source of any other database SQLAlchemy knows: bound parameters and a server-side cursor
(``stream_results``). An engine class brings its dialect, driver and streaming by overriding a
few hooks, each a small method here with the generic behaviour:

- ``_create_engine``, ``_connect_args``, ``_prepare_session``: how to connect, and the
  per-connection settings (statement timeout, patience with a slow reader);
- ``_select_expr``: how one column is selected so that it arrives convertible to its canonical
  type (CHAR padding, SQLite's typeless values);
- ``_watermark_clauses``: how ``after < updated_at <= upto`` is written in SQL;
- ``_raw_batches``: the reading path (the SQLAlchemy stream here; ADBC in SQLite and PostgreSQL);
- ``_count_exact``: an exact count where COUNT(*) is not one (SQLite's text timestamps);
- ``_transient_errors``, ``_driver_errors``, ``_is_unavailable``: which driver errors mean
  "source unavailable, try again" (SourceUnavailable, which Airflow retries).

Identifiers come from the catalog and are only ever used through SQLAlchemy constructs
(``table``/``column``/``select``), which quote them; values are bound parameters. Column names are
matched against the live database (case-insensitively, as SQL does for unquoted names) and used as
the database spells them.

Types are made canonical here, deliberately, batch by batch (``to_canonical``), and the exact
watermark bounds are applied again on the parsed values, so an engine whose SQL filter is a
superset (SQLite) yields the same rows as the others. Codes stay text: leading zeros survive.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from common.errors import ConfigError, SourceUnavailable
from common.schema import IS_DELETED, UPDATED_AT, arrow_type, source_schema
from common.times import SOURCE_ZONE, SOURCE_ZONE_NAME
from connectors.base import DEFAULT_BATCH_ROWS, WATERMARK_FLOOR, KeyRange

if TYPE_CHECKING:
    from common.catalog import Dataset

Driver = Literal["auto", "adbc", "sqlalchemy"]

_MIDNIGHT_SUFFIX = r"^(\d{4}-\d{2}-\d{2})[ T]00:00(:00(\.0*)?)?$"
# The spellings of a time the canonical parse accepts (Arrow's ISO 8601 cast), fields in range.
_TIME_TEXT = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([ T]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?)?$"


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
class Window:
    """What one statement reads: after < updated_at <= upto, key in [lo, hi) (upto None: no row).

    With a ``cap``, rows whose updated_at is no usable watermark (unreadable, before
    WATERMARK_FLOOR or after the cap) are yielded too, with updated_at NULL: those the window's
    statement meets, and (``unusable``) the statement of all the others.
    """

    after: datetime | None
    upto: datetime | None
    key_range: KeyRange = (None, None)
    cap: datetime | None = None
    unusable: bool = False

    @property
    def empty(self) -> bool:
        """No row can have a usable updated_at in (after, upto]."""
        return self.upto is None or (self.after is not None and self.after >= self.upto)


class SqlSource:
    """A dataset's source view in a SQL database, read through SQLAlchemy.

    ``timeout_s`` bounds connecting (a ``connect_timeout`` in the connection's extras wins);
    ``statement_timeout_s`` bounds each statement on the server where the engine can (None: no
    limit). Either running out is SourceUnavailable, which Airflow retries.
    """

    name: ClassVar[str] = "SQL"  # the engine, for messages
    drivers: ClassVar[tuple[Driver, ...]] = ("sqlalchemy",)  # the reading paths this engine has

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
        if driver != "auto" and driver not in self.drivers:
            raise ConfigError(
                f"connection {self.connection_id}: a {self.name} source reads through "
                f"{' or '.join(self.drivers)}, not {driver}"
            )
        self.driver: Driver = self._auto_driver() if driver == "auto" else driver
        self._engine: Engine | None = None
        self._layout: Layout | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dataset.id}, {self.connection_id}, driver={self.driver})"

    def _auto_driver(self) -> Driver:
        """The fastest streaming path available for this engine."""
        return self.drivers[0]

    # -- the Source protocol -------------------------------------------------------------

    def check(self) -> None:
        self._layout = None
        self.layout()

    def high_watermark(self, cap: datetime | None = None) -> datetime | None:
        """The greatest usable updated_at: not before WATERMARK_FLOOR and (with a cap) not after it."""
        layout = self.layout()
        updated = sa.column(layout.updated_at)
        clauses = [updated >= sa.bindparam("floor", WATERMARK_FLOOR, type_=sa.DateTime)]
        if cap is not None:
            clauses.append(updated <= sa.bindparam("cap", _naive_local(cap), type_=sa.DateTime))
        stmt = sa.select(sa.func.max(updated)).select_from(sa.table(layout.table)).where(*clauses)
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

    def count_unusable(self, cap: datetime) -> int:
        """How many rows have an updated_at that is no usable watermark: NULL, unreadable, before
        WATERMARK_FLOOR or after ``cap``. read_batches(..., cap=cap) yields them with updated_at NULL."""
        layout = self.layout()
        return self._count_unusable(layout, Window(None, None, cap=_naive_local(cap), unusable=True))

    def read_batches(
        self,
        after: datetime | None,
        upto: datetime | None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        key_range: KeyRange | None = None,
        cap: datetime | None = None,
    ) -> Iterator[pa.RecordBatch]:
        if batch_rows < 1:
            raise ConfigError(f"batch_rows must be at least 1, not {batch_rows}")
        key_range = _key_range(key_range)
        layout = self.layout()  # before any row is read
        after = _naive_local(after) if after is not None else None
        upto = _naive_local(upto) if upto is not None else None
        cap = _naive_local(cap) if cap is not None else None
        if cap is not None and upto is not None and upto > cap:
            raise ConfigError(f"dataset {self.dataset.id}: a read up to {upto} goes past its cap {cap}")
        window = Window(after, upto, key_range, cap)
        if window.empty:
            window = Window(None, None, key_range, cap)
        return self._windows(layout, window, batch_rows)

    def _windows(self, layout: Layout, window: Window, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The window's rows, then (with a cap) the rows of no usable watermark outside it."""
        if not window.empty:
            yield from self._canonical(layout, self._raw_batches(layout, window, batch_rows), window)
        if window.cap is not None:
            unusable = Window(window.after, window.upto, window.key_range, window.cap, unusable=True)
            yield from self._canonical(layout, self._raw_batches(layout, unusable, batch_rows), unusable)

    def count(self, after: datetime | None, upto: datetime, *, exact: bool = True) -> int:
        """The number of rows with after < updated_at <= upto: exactly, or (exact=False, enough to
        size key-range parts) an upper bound that costs one COUNT(*) on every engine."""
        layout = self.layout()
        after = _naive_local(after) if after is not None else None
        upto = _naive_local(upto)
        if after is not None and after >= upto:
            return 0
        window = Window(after, upto)
        return self._count_exact(layout, window) if exact else self._count_star(layout, window)

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
        window = Window(after, _naive_local(upto))
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

    # -- connecting ------------------------------------------------------------------------

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def _create_engine(self) -> Engine:
        try:
            engine = sa.create_engine(self.url, poolclass=NullPool, connect_args=self._connect_args())
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"connection {self.connection_id}: the database driver {exc.name!r} is not installed"
            ) from None
        sa.event.listen(engine, "connect", self._prepare_session)
        return engine

    def _connect_args(self) -> dict[str, Any]:
        """Arguments of the DBAPI driver's connect(): the connect timeout, in its own terms."""
        return {}

    def _prepare_session(self, dbapi_connection: Any, _record: Any) -> None:
        """Per-connection settings, run once on every new connection."""

    # -- errors ----------------------------------------------------------------------------

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        """Errors that always mean the source is unavailable."""
        return (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        """Errors that mean the source is unavailable when ``_is_unavailable`` says so."""
        return ()

    def _is_unavailable(self, exc: BaseException) -> bool:
        return False

    @contextmanager
    def _unavailable(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._transient_errors() as exc:
            raise self._unavailable_error(doing, exc) from None
        except self._driver_errors() as exc:
            if not self._is_unavailable(exc):
                raise
            raise self._unavailable_error(doing, exc) from None

    def _unavailable_error(self, doing: str, exc: BaseException) -> SourceUnavailable:
        return SourceUnavailable(
            f"source {self.connection_id} of dataset {self.dataset.id} is unavailable while {doing}: "
            f"{self._scrub(exc)}"
        )

    def _scrub(self, exc: BaseException) -> str:
        text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        if self.url.password:
            text = text.replace(str(self.url.password), "***")
        return text

    def _type_error(self, column: Column, expected: str, rows: int | None = None) -> ConfigError:
        counted = f"{rows} value(s)" if rows else "values"
        return ConfigError(
            f"dataset {self.dataset.id}: column {column.source!r} of table {self.layout().table!r} in source "
            f"{self.connection_id} holds {counted} that cannot be read as {expected} (field {column.name}); "
            f"fix the source or the field's type in the catalog"
        )

    # -- statements ------------------------------------------------------------------------

    def _select_list(self, layout: Layout, window: Window | None = None) -> list[sa.ColumnElement[Any]]:
        exprs = [self._select_expr(col) for col in layout.columns]
        if window is not None and window.unusable and self._exact_watermarks:
            # Every row here has no usable watermark and gets NULL: its value (0000-00-00,
            # infinity, year 20000) need not survive the driver's conversion.
            exprs[-2] = sa.null()
        return [expr.label(f"c{i}") for i, expr in enumerate(exprs)]

    # The SQL of a window is exact (typed timestamps); SQLite's text comparisons are a superset.
    _exact_watermarks: ClassVar[bool] = True

    def _select_expr(self, column: Column) -> sa.ColumnElement[Any]:
        """How one source column is selected."""
        return sa.column(column.source)

    def _where(self, layout: Layout, window: Window) -> list[sa.ColumnElement[bool]]:
        key = sa.column(layout.key)
        lo, hi = window.key_range
        clauses: list[sa.ColumnElement[bool]] = []
        if lo is not None:
            clauses.append(key >= sa.bindparam("key_lo", lo, type_=sa.String))
        if hi is not None:
            clauses.append(key < sa.bindparam("key_hi", hi, type_=sa.String))
        return clauses + self._watermark_clauses(sa.column(layout.updated_at), window)

    def _watermark_clauses(self, updated: sa.ColumnClause[Any], window: Window) -> list[sa.ColumnElement[bool]]:
        """after < updated_at <= upto (after None: from WATERMARK_FLOOR), compared as timestamps; or
        (unusable) updated_at NULL, before WATERMARK_FLOOR or after the cap."""
        floor = sa.bindparam("floor", WATERMARK_FLOOR, type_=sa.DateTime)
        if window.unusable:
            return [sa.or_(updated.is_(None), updated < floor, updated > sa.bindparam("cap", window.cap, type_=sa.DateTime))]
        clauses = [updated <= sa.bindparam("upto", window.upto, type_=sa.DateTime)]
        if window.after is not None:
            clauses.append(updated > sa.bindparam("after", window.after, type_=sa.DateTime))
        else:
            clauses.append(updated >= floor)
        return clauses

    def _rows_statement(self, layout: Layout, window: Window) -> sa.Select[Any]:
        return (
            sa.select(*self._select_list(layout, window))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
        )

    def _count_star(self, layout: Layout, window: Window) -> int:
        stmt = sa.select(sa.func.count()).select_from(sa.table(layout.table)).where(*self._where(layout, window))
        with self._unavailable("counting rows"), self.engine().connect() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def _count_exact(self, layout: Layout, window: Window) -> int:
        return self._count_star(layout, window)

    def _count_unusable(self, layout: Layout, window: Window) -> int:
        return self._count_star(layout, window)

    # -- reading ---------------------------------------------------------------------------

    def _raw_batches(self, layout: Layout, window: Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        """The window's rows as the driver returns them, one array per layout column."""
        return self._sqlalchemy_batches(layout, window, batch_rows)

    def _sqlalchemy_batches(self, layout: Layout, window: Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        stmt = self._rows_statement(layout, window)
        with self._unavailable("reading rows"), self.engine().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
            for part in result.partitions(batch_rows):
                yield [_py_array(values) for values in zip(*part)]

    # -- canonical batches -----------------------------------------------------------------

    def _canonical(self, layout: Layout, raw: Iterator[list[pa.Array]], window: Window) -> Iterator[pa.RecordBatch]:
        """Canonical batches of the window's rows: exact bounds on the parsed values; rows of no
        usable watermark kept with updated_at NULL when the window has a cap, refused otherwise."""
        try:
            for arrays in raw:
                columns = [self._conform(col, arr) for col, arr in zip(layout.columns, arrays)]
                updated, keep = self._watermark_verdict(layout, columns[-2], window)
                columns[-2] = updated
                batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
                if not pc.all(keep).as_py():
                    batch = batch.filter(keep)
                if batch.num_rows:
                    yield batch
        finally:
            close = getattr(raw, "close", None)
            if close is not None:
                close()  # here, in the reading thread, not in a destructor

    def _watermark_verdict(self, layout: Layout, updated: pa.Array, window: Window) -> tuple[pa.Array, pa.Array]:
        """updated_at as yielded (NULL where it is no usable watermark) and which rows to keep."""
        floor = pa.scalar(WATERMARK_FLOOR, pa.timestamp("us"))
        unusable = pc.fill_null(pc.less(updated, floor), True)
        if window.cap is not None:
            unusable = pc.or_(unusable, pc.fill_null(pc.greater(updated, pa.scalar(window.cap, pa.timestamp("us"))), False))
        if window.empty:
            inside = pa.repeat(pa.scalar(False), len(updated))
        else:
            inside = pc.less_equal(updated, pa.scalar(window.upto, pa.timestamp("us")))
            if window.after is not None:
                inside = pc.and_(inside, pc.greater(updated, pa.scalar(window.after, pa.timestamp("us"))))
            inside = pc.and_(pc.fill_null(inside, False), pc.invert(unusable))
        if window.cap is None:
            unreadable = int(updated.null_count)
            if unreadable:
                raise self._type_error(layout.columns[-2], "timestamp", unreadable)
            return updated, inside
        keep = pc.or_(inside, unusable)
        if pc.any(unusable).as_py():
            updated = pc.if_else(unusable, pa.scalar(None, pa.timestamp("us")), updated)
        return updated, keep

    def _conform(self, column: Column, arr: pa.Array) -> pa.Array:
        if column.name == UPDATED_AT:
            return self._conform_watermark(column, arr)
        try:
            out = to_canonical(arr, column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise self._type_error(column, str(column.type), _unconvertible(arr, column.type)) from None
        if pa.types.is_string(out.type):
            _require_utf8(self, column, out)
        if column.name == IS_DELETED:
            out = out.fill_null(0)  # the contract says NOT NULL DEFAULT 0
            flags = pc.sum(pc.invert(pc.is_in(out, pa.array([0, 1], pa.int8())))).as_py() or 0
            if flags:
                raise self._type_error(column, "a flag 0 or 1", flags)
        return out

    def _conform_watermark(self, column: Column, arr: pa.Array) -> pa.Array:
        """updated_at as timestamps, NULL where the value cannot be read as one (judged later)."""
        try:
            return to_canonical(arr, column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
        readable = readable_times(storage_of(arr))
        try:
            return to_canonical(readable, column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise self._type_error(column, "timestamp") from None


def readable_times(arr: pa.Array) -> pa.Array:
    """Time text with every value the canonical parse would refuse made NULL, vectorised: the
    shape and field ranges by pattern, the day of the month by a round trip through a date."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_binary(arr.type)):
        return arr
    text = arr.cast(pa.string()) if not pa.types.is_binary(arr.type) else _utf8_or_null(arr)
    text = pc.utf8_trim_whitespace(text)
    shaped = pc.fill_null(pc.match_substring_regex(text, _TIME_TEXT), False)
    day = pc.utf8_slice_codeunits(text, 0, 10)
    parsed = pc.strptime(day, format="%Y-%m-%d", unit="s", error_is_null=True)
    real_day = pc.fill_null(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), day), False)
    return pc.if_else(pc.and_(shaped, real_day), text, pa.scalar(None, pa.string()))


def _utf8_or_null(arr: pa.Array) -> pa.Array:
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.nulls(len(arr), pa.string())


def _require_utf8(source: SqlSource, column: Column, out: pa.Array) -> None:
    """Text that is not valid UTF-8 (a blob in a SQLite text column) cannot be published."""
    try:
        out.validate(full=True)
    except pa.ArrowInvalid:
        bad = sum(1 for v in out.cast(pa.binary()).to_pylist() if v is not None and not _is_utf8(v))  # error path only
        raise source._type_error(column, "UTF-8 text", bad) from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _unconvertible(arr: pa.Array, target: pa.DataType) -> int | None:
    """How many values of a column cannot be converted (dates and times; None where unknown)."""
    if not (pa.types.is_date32(target) or pa.types.is_timestamp(target)):
        return None
    try:
        readable = readable_times(storage_of(arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return int(readable.null_count) - int(storage_of(arr).null_count)


def to_canonical(arr: pa.Array, target: pa.DataType) -> pa.Array:
    """Convert one column, as a driver returned it, to its canonical type.

    Raises ArrowInvalid when a value cannot be represented (never rounds a decimal silently).
    """
    arr = storage_of(arr)
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
            arr = pc.local_timestamp(arr.cast(pa.timestamp(arr.type.unit, SOURCE_ZONE_NAME)))
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


def storage_of(arr: pa.Array) -> pa.Array:
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
    return value.astimezone(SOURCE_ZONE).replace(tzinfo=None)


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


def _key_range(key_range: Sequence[str | None] | None) -> KeyRange:
    """A key range as read from XCom or JSON (a list) made a tuple; None is the whole key space."""
    if key_range is None:
        return (None, None)
    if len(key_range) != 2 or not all(v is None or isinstance(v, str) for v in key_range):
        raise ConfigError(f"a key range is a pair [lo, hi] of text or null, not {key_range!r}")
    lo, hi = key_range
    return (lo, hi)
