"""PostgreSQL sources: ADBC (``adbc-driver-postgresql``) when installed, psycopg otherwise.

ADBC streams with COPY in batches of about 16 MiB. It streams only statements without bound
parameters (with parameters it buffers the whole result: 1.1 GB for a million rows), so this
path renders values as literals with SQLAlchemy's PostgreSQL dialect as initialised by the live
server (it knows the server's string-escaping rules). ``driver="sqlalchemy"`` (psycopg,
server-side cursor) is the other path.

NUMERIC arrives from ADBC as text (an opaque extension type) and is parsed exactly; CHAR(n) is
selected as TEXT, which drops PostgreSQL's blank padding as MariaDB does.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa
import sqlalchemy as sa

from connectors.sql import Column, Driver, Layout, SqlSource, Window, storage_of

_ADBC_PG_BATCH_BYTES = "adbc.postgresql.batch_size_hint_bytes"
_PG_BATCH_BYTES = 16 * 1024 * 1024

# SQLSTATEs that mean "try again later": cancelled (statement_timeout), connection failures,
# too many connections, server shutting down.
_LIBPQ_UNAVAILABLE = re.compile(
    r"\[libpq\].*(statement timeout|canceling statement|server closed the connection|terminating connection"
    r"|could not receive data|connection to server|no connection to the server|SSL SYSCALL)",
    re.IGNORECASE,
)
_PG_UNAVAILABLE_STATES = frozenset({"57014", "08000", "08001", "08003", "08004", "08006", "53300", "57P01", "57P03"})


class PostgresSource(SqlSource):
    """A dataset's source view in a PostgreSQL database."""

    name: ClassVar[str] = "PostgreSQL"
    drivers: ClassVar[tuple[Driver, ...]] = ("adbc", "sqlalchemy")

    def _auto_driver(self) -> Driver:
        return "adbc" if importlib.util.find_spec("adbc_driver_postgresql") is not None else "sqlalchemy"

    # -- connecting ------------------------------------------------------------------------

    def _connect_args(self) -> dict[str, Any]:
        return {"connect_timeout": _libpq_timeout(self.timeout_s)}

    def _prepare_session(self, dbapi_connection: Any, _record: Any) -> None:
        """The statement timeout, committed outside the first read's transaction."""
        if self.statement_timeout_s is None:
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(_statement_timeout_sql(self.statement_timeout_s))
        finally:
            cursor.close()
        dbapi_connection.commit()

    def _postgres_uri(self) -> str:
        """libpq URI for ADBC: the connection's own parameters plus the connect timeout."""
        query = {**self.url.query, "connect_timeout": str(_libpq_timeout(self.timeout_s))}
        return self.url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)

    def _transient_errors(self) -> tuple[type[BaseException], ...]:
        import adbc_driver_manager

        return (*super()._transient_errors(), adbc_driver_manager.OperationalError, adbc_driver_manager.InterfaceError)

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        import adbc_driver_manager

        return (adbc_driver_manager.Error, OSError)

    def _is_unavailable(self, exc: BaseException) -> bool:
        """ADBC reports SQLSTATE on its own errors; a failure mid-stream comes through the Arrow
        stream as an OSError carrying only libpq's text."""
        return getattr(exc, "sqlstate", None) in _PG_UNAVAILABLE_STATES or (
            isinstance(exc, OSError) and _LIBPQ_UNAVAILABLE.search(str(exc)) is not None
        )

    # -- statements ------------------------------------------------------------------------

    def _select_expr(self, column: Column) -> sa.ColumnElement[Any]:
        c = sa.column(column.source)
        if pa.types.is_string(column.type):
            return sa.cast(c, sa.Text)  # CHAR(n) without its blank padding
        return c

    # -- reading ---------------------------------------------------------------------------

    def _raw_batches(self, layout: Layout, window: Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        if self.driver == "adbc":
            return self._adbc_batches(layout, window, batch_rows)
        return self._sqlalchemy_batches(layout, window, batch_rows)

    def _adbc_batches(self, layout: Layout, window: Window, batch_rows: int) -> Iterator[list[pa.Array]]:
        import adbc_driver_postgresql.dbapi as adbc

        sql = self._literal_sql(layout, window)
        with self._unavailable("reading rows"):
            conn = adbc.connect(self._postgres_uri())
            try:
                cursor = conn.cursor()
                try:
                    if self.statement_timeout_s is not None:
                        cursor.execute(_statement_timeout_sql(self.statement_timeout_s))
                    cursor.adbc_statement.set_options(**{_ADBC_PG_BATCH_BYTES: str(_PG_BATCH_BYTES)})
                    cursor.execute(sql)
                    for batch in cursor.fetch_record_batch():
                        columns = [storage_of(column) for column in batch.columns]
                        for offset in range(0, batch.num_rows, batch_rows):
                            yield [column.slice(offset, batch_rows) for column in columns]
                finally:
                    cursor.close()
            finally:
                conn.close()

    def _literal_sql(self, layout: Layout, window: Window) -> str:
        """The rows statement with literals, not parameters: ADBC streams (COPY) only a statement
        without parameters. The engine's dialect was initialised by the live server (layout()
        connected through it), so it escapes strings as that server reads them."""
        dialect = self.engine().dialect
        sql = str(self._rows_statement(layout, window).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if dialect.paramstyle in ("pyformat", "format"):
            sql = sql.replace("%%", "%")  # escaped for psycopg's placeholders, which ADBC does not have
        return sql


def _statement_timeout_sql(seconds: float) -> str:
    return f"SET statement_timeout = {max(1, round(seconds * 1000))}"


def _libpq_timeout(seconds: float) -> int:
    return max(2, math.ceil(seconds))  # libpq treats 1 as 2 and 0 as "wait forever"
