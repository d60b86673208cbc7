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
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from common.errors import InternalError, SourceUnavailable
from connectors.base import DEFAULT_BATCH_ROWS
from connectors.sql import Column, Driver, Layout, SqlSource, Window

_TS_TEXT = "%Y-%m-%d %H:%M:%S"
_ADBC_BATCH_ROWS = "adbc.sqlite.query.batch_rows"
_SQLITE_MMAP_BYTES = 256 * 1024 * 1024  # windowed (incremental) SQLite reads; address space only


class SqliteSource(SqlSource):
    """A dataset's source view in a SQLite file."""

    name: ClassVar[str] = "SQLite"
    drivers: ClassVar[tuple[Driver, ...]] = ("adbc", "sqlalchemy")

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
        if not path.is_file():
            raise SourceUnavailable(
                f"source {self.connection_id} of dataset {self.dataset.id} is unavailable: "
                f"SQLite file {path} does not exist"
            )
        return f"{path.resolve().as_uri()}?mode=ro"

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        import adbc_driver_manager

        return (*super()._transient_errors(), sqlite3.OperationalError,
                adbc_driver_manager.OperationalError, adbc_driver_manager.InterfaceError)

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
        day_after_upto = (window.upto + timedelta(days=1)).strftime("%Y-%m-%d")
        column: sa.ColumnElement[Any] = updated
        if window.after is None:
            # A full read: keep SQLite off an index on updated_at (an expression is not
            # indexable); a table scan beats a million index lookups.
            column = updated.concat("")
        clauses = [column < sa.bindparam("upto_day", day_after_upto)]
        if window.after is not None:
            clauses.append(column >= sa.bindparam("after_second", window.after.strftime(_TS_TEXT)))
        return clauses

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
                cursor.execute(str(compiled), params)
                first = True
                for batch in cursor.fetch_record_batch():
                    if first:
                        if batch.num_rows == 0 or batch.column(0)[0].as_py() != 0:
                            raise InternalError(f"{self.connection_id}: SQLite did not return the type probe first; "
                                                "this SQLite build orders compound selects differently")
                        batch, first = batch.slice(1), False
                    if batch.num_rows:
                        yield list(batch.columns[1:])
                cursor.close()
            finally:
                conn.close()

    def _probed_statement(self, layout: Layout, window: Window) -> sa.Select[Any]:
        """The rows after a probe row (_row 0, all text) that fixes every column's Arrow type to
        string for the whole stream; without it a column NULL in the first batch is inferred as
        int64 and a later text value fails the read."""
        rows = (
            sa.select(sa.literal(1).label("_row"), *self._select_list(layout))
            .select_from(sa.table(layout.table))
            .where(*self._where(layout, window))
        )
        probe = sa.select(sa.literal(0).label("_row"), *[sa.literal("").label(f"c{i}") for i in range(len(layout.columns))])
        union = sa.union_all(probe, rows).subquery("u")
        # SQLite returns a UNION ALL's arms in order, so the probe comes first without a sort
        # (checked on every read).
        return sa.select(union.c["_row"], *[union.c[f"c{i}"] for i in range(len(layout.columns))])
