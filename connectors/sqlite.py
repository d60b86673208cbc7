"""SQLite sources: ADBC (``adbc-driver-sqlite``) by default, SQLAlchemy's pysqlite as the other path.

The file is opened read-only (``mode=ro``): sqlite3 would create a missing file. ADBC reads with
bound parameters in batches of ``batch_rows`` rows.

SQLite has no column types worth the name (CHAR is TEXT, DECIMAL is mostly REAL, DATE and
TIMESTAMP are TEXT) and ADBC's SQLite driver infers a stream's Arrow types from its first batch.
So every column is selected as text (decimals stored as REAL are printed at the declared scale:
no binary float error), a first all-text probe row pins every column to string for the whole
stream, and Arrow parses the text into the canonical types (``connectors.sql.to_canonical``).

Timestamps are text too, compared as text. The SQL filter is therefore a superset (from the
second of ``after`` up to the end of the day of ``upto``) and the exact bounds
``after < updated_at <= upto`` are applied on the parsed values, so '2026-01-01 10:00:00',
'2026-01-01 10:00:00.000000' and '2026-01-01T10:00:00' all compare as the same instant; an exact
count parses them the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from common.errors import ConfigError, InternalError, SourceUnavailable
from connectors.base import DEFAULT_BATCH_ROWS, WATERMARK_FLOOR
from connectors.sql import Column, Driver, Layout, SqlSource, Window, readable_times

_TS_TEXT = "%Y-%m-%d %H:%M:%S"
# Text shaped like a time: anything else in updated_at is no usable watermark, wherever it sorts.
_TIME_GLOB = "[0-9][0-9][0-9][0-9]-[0-1][0-9]-[0-3][0-9]*"
_HIGH_WATERMARK_TRIES = 1000  # distinct unreadable values tried from the top before giving up
_SQLITE_HEADER = b"SQLite format 3\x00"
_ADBC_BATCH_ROWS = "adbc.sqlite.query.batch_rows"
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024  # windowed (incremental) SQLite reads; address space only


class SqliteSource(SqlSource):
    """A dataset's source view in a SQLite file."""

    name: ClassVar[str] = "SQLite"
    drivers: ClassVar[tuple[Driver, ...]] = ("adbc", "sqlalchemy")
    _exact_watermarks: ClassVar[bool] = False

    # -- connecting ------------------------------------------------------------------------

    def _create_engine(self) -> Engine:
        uri = self._sqlite_uri()
        timeout = self.timeout_s
        return sa.create_engine(
            "sqlite+pysqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=timeout),
            poolclass=NullPool,
        )

    def _sqlite_uri(self) -> str:
        """Read-only URI of the SQLite file. sqlite3 would create a missing file: refuse first."""
        path = Path(self.url.database or "").expanduser()
        if path.is_dir():
            raise ConfigError(f"source {self.connection_id} of dataset {self.dataset.id}: {path} is a folder, "
                              "not a SQLite database file")
        if not path.is_file():
            raise SourceUnavailable(
                f"source {self.connection_id} of dataset {self.dataset.id} is unavailable: "
                f"SQLite file {path} does not exist"
            )
        _require_sqlite_file(path, self.connection_id, self.dataset.id)
        return f"{path.resolve().as_uri()}?mode=ro"

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        import adbc_driver_manager

        return (*super()._transient_errors(), sqlite3.OperationalError,
                adbc_driver_manager.OperationalError, adbc_driver_manager.InterfaceError)

    # -- watermarks ------------------------------------------------------------------------

    def high_watermark(self, cap: datetime | None = None) -> datetime | None:
        """The greatest text MAX that parses as a usable time; unreadable values at the top are
        stepped over one distinct value at a time (each an index seek)."""
        layout = self.layout()
        updated = sa.column(layout.updated_at)
        clauses = [updated >= WATERMARK_FLOOR.strftime(_TS_TEXT), updated.op("GLOB")(_TIME_GLOB)]
        if cap is not None:
            clauses.append(updated < (cap + timedelta(days=1)).strftime("%Y-%m-%d"))
        below: str | None = None
        with self._unavailable("reading the high watermark"), self.engine().connect() as conn:
            for _ in range(_HIGH_WATERMARK_TRIES):
                where = clauses if below is None else [*clauses, updated < below]
                # ORDER BY ... LIMIT 1, not MAX(): a backward walk of the index that stops at once
                top = conn.execute(sa.select(updated).select_from(sa.table(layout.table)).where(*where)
                                   .order_by(updated.desc()).limit(1)).scalar()
                if top is None:
                    return None
                value = self._usable_time(str(top), cap)
                if value is not None:
                    return value
                below = top
        raise ConfigError(f"dataset {self.dataset.id}: the {_HIGH_WATERMARK_TRIES} greatest values of column "
                          f"{layout.updated_at!r} in source {self.connection_id} are no readable time; fix the source")

    def _usable_time(self, text: str, cap: datetime | None) -> datetime | None:
        parsed = readable_times(pa.array([text], pa.string()))
        if parsed.null_count:
            return None
        value = parsed.cast(pa.timestamp("us"))[0].as_py()
        return value if WATERMARK_FLOOR <= value and (cap is None or value <= cap) else None

    def _count_unusable(self, layout: Layout, window: Window) -> int:
        """Candidates by text, judged on the parsed values as read_batches judges them."""
        updated = layout.columns[-2]
        stmt = (sa.select(sa.cast(sa.column(updated.source), sa.Text))
                .select_from(sa.table(layout.table)).where(*self._where(layout, window)))
        floor = pa.scalar(WATERMARK_FLOOR, pa.timestamp("us"))
        cap = pa.scalar(window.cap, pa.timestamp("us"))
        total = 0
        with self._unavailable("counting rows"), self.engine().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=DEFAULT_BATCH_ROWS).execute(stmt)
            for part in result.partitions(DEFAULT_BATCH_ROWS):
                values = self._conform(updated, pa.array([v for (v,) in part], pa.string()))
                usable = pc.and_(pc.greater_equal(values, floor), pc.less_equal(values, cap))
                total += len(values) - (pc.sum(pc.fill_null(usable, False).cast(pa.int64())).as_py() or 0)
        return total

    # -- statements ------------------------------------------------------------------------

    def _select_expr(self, column: Column) -> sa.ColumnElement[Any]:
        c = sa.column(column.source)
        if column.decimal_scale is not None:
            # REAL holds a binary approximation: print it at the declared scale; text stays exact.
            return sa.case(
                (sa.func.typeof(c) == "real", sa.func.printf(f"%.{column.decimal_scale}f", c)),
                else_=sa.cast(c, sa.Text),
            )
        return sa.cast(c, sa.Text)

    def _watermark_clauses(self, updated: sa.ColumnClause[Any], window: Window) -> list[sa.ColumnElement[bool]]:
        """Text comparison: a superset, made exact on the parsed values (module docstring)."""
        if window.unusable:
            return [self._unusable_clause(updated, window)]
        return [self._window_clause(updated, window)]

    def _window_clause(self, updated: sa.ColumnClause[Any], window: Window) -> sa.ColumnElement[bool]:
        assert window.upto is not None
        day_after_upto = (window.upto + timedelta(days=1)).strftime("%Y-%m-%d")
        column: sa.ColumnElement[Any] = updated
        if window.after is None:
            # A full read: keep SQLite off an index on updated_at (an expression is not
            # indexable); a table scan beats a million index lookups.
            column = updated.concat("")
        clauses = [column < sa.bindparam("upto_day", day_after_upto)]
        if window.after is not None:
            clauses.append(column >= sa.bindparam("after_second", window.after.strftime(_TS_TEXT)))
        return sa.and_(*clauses)

    def _unusable_clause(self, updated: sa.ColumnClause[Any], window: Window) -> sa.ColumnElement[bool]:
        """Rows the window's text filter leaves out whose text may be no usable time: NULL, not
        shaped like one, before the floor, from the cap's second on (judged when parsed)."""
        assert window.cap is not None
        # On the column itself, not a cast: the index on updated_at answers it (a number sorts
        # before any text in SQLite, so it is a candidate by the floor).
        # Text of another shape sorts outside [floor, cap) too ('yesterday', '', '2026/11/20'),
        # except the odd one inside it ('2026-1-5'): that one is judged when a window meets it
        # (every full read does).
        candidate = sa.or_(
            updated.is_(None),
            updated < sa.bindparam("floor_text", WATERMARK_FLOOR.strftime(_TS_TEXT)),
            updated >= sa.bindparam("cap_second", window.cap.strftime(_TS_TEXT)),
        )
        if window.empty:
            return candidate
        return sa.and_(sa.not_(sa.func.coalesce(self._window_clause(updated, window), False)), candidate)

    def _count_exact(self, layout: Layout, window: Window) -> int:
        """SQLite's timestamps are text in several spellings: count on the parsed values."""
        updated = layout.columns[-2]
        stmt = (
            sa.select(sa.cast(sa.column(updated.source), sa.Text))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
        )
        upto = pa.scalar(window.upto, pa.timestamp("us"))
        after = pa.scalar(window.after, pa.timestamp("us")) if window.after is not None else None
        floor = pa.scalar(WATERMARK_FLOOR, pa.timestamp("us"))
        total = 0
        with self._unavailable("counting rows"), self.engine().connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=DEFAULT_BATCH_ROWS).execute(stmt)
            for part in result.partitions(DEFAULT_BATCH_ROWS):
                values = self._conform(updated, pa.array([v for (v,) in part], pa.string()))
                keep = pc.and_(pc.less_equal(values, upto), pc.greater_equal(values, floor))
                if after is not None:
                    keep = pc.and_(keep, pc.greater(values, after))
                total += pc.sum(pc.fill_null(keep, False).cast(pa.int64())).as_py() or 0
        return total

    # -- reading ---------------------------------------------------------------------------

    def _raw_batches(self, layout: Layout, window: Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        if self.driver == "adbc":
            return self._adbc_batches(layout, window, batch_rows)
        return self._sqlalchemy_batches(layout, window, batch_rows)

    def _adbc_batches(self, layout: Layout, window: Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        import adbc_driver_sqlite.dbapi as adbc

        compiled = self._probed_statement(layout, window).compile(dialect=self.engine().dialect)
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
                try:
                    cursor.execute(str(compiled), params)
                    yield from _unprobed(cursor.fetch_record_batch(), self.connection_id)
                finally:
                    cursor.close()
            finally:
                conn.close()

    def _probed_statement(self, layout: Layout, window: Window) -> sa.Select[Any]:
        """The rows after a probe row (_row 0, all text) that fixes every column's Arrow type to
        string for the whole stream; without it a column NULL in the first batch is inferred as
        int64 and a later text value fails the read."""
        rows = (
            sa.select(sa.literal(1).label("_row"), *self._select_list(layout, window))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
        )
        probe = sa.select(sa.literal(0).label("_row"), *[sa.literal("").label(f"c{i}") for i in range(len(layout.columns))])
        union = sa.union_all(probe, rows).subquery("u")
        # SQLite returns a UNION ALL's arms in order, so the probe comes first without a sort
        # (checked on every read).
        return sa.select(union.c["_row"], *[union.c[f"c{i}"] for i in range(len(layout.columns))])


def _unprobed(batches: Iterator[pa.RecordBatch], connection_id: str) -> Iterator[list[pa.Array]]:
    """The rows after the type probe (the first row of the stream)."""
    first = True
    for batch in batches:
        if first:
            if batch.num_rows == 0 or batch.column(0)[0].as_py() != 0:
                raise InternalError(f"{connection_id}: SQLite did not return the type probe first; "
                                    "this SQLite build orders compound selects differently")
            batch, first = batch.slice(1), False
        if batch.num_rows:
            yield list(batch.columns[1:])


def _require_sqlite_file(path: Path, connection_id: str, dataset_id: str) -> None:
    """A file that is not a SQLite database (sqlite:////etc/passwd) is a configuration error; an
    empty file is an empty database (it has no tables)."""
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(f"source {connection_id} of dataset {dataset_id}: {path} cannot be read "
                          f"({exc.strerror or exc.__class__.__name__})") from None
    if header and header != _SQLITE_HEADER:
        raise ConfigError(f"source {connection_id} of dataset {dataset_id}: {path} is not a SQLite database file")
