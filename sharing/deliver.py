"""Delivery into a subscriber's database: a pull's changes applied to a table named after the dataset.

The table is created if missing (the granted fields plus ``_commit_version``, primary key = the
dataset's key) and the changes are applied in one transaction: upserts insert or update by key,
deletes delete. Every change is guarded by its ``_commit_version``: a row is only overwritten by a
change at least as new as the one it holds, and only deleted by a delete at least as new. So the
same changes applied twice leave the table as it was, and replaying an older feed never rolls
back a newer row.

What the guard cannot see: a row that a newer delete removed is gone, so replaying an *older
full pull* inserts it again (no tombstones are kept: they would keep the identifiers of deleted
records in the subscriber's database). Pull with --since to catch up instead.

Statements are SQLAlchemy Core (dialect-specific upserts for SQLite, PostgreSQL and
MySQL/MariaDB); identifiers are always quoted by SQLAlchemy, values are bound parameters.
Database error texts can quote row values, so after connecting only the error's class and code
are reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

from common.catalog import Dataset, Field
from common.errors import ConfigError, TargetUnavailable
from common.files import private_file
from common.schema import CHANGE_TYPE, COMMIT_VERSION, DISPUTED
from sharing.feed import DELETE, UPSERT

CHUNK_ROWS = 10_000
KEY_VARCHAR = 128  # MySQL/MariaDB cannot index TEXT: a string key is VARCHAR(128) there
CONNECT_TIMEOUT_S = 30
_MYSQL = ("mysql", "mariadb")
_SUPPORTED = ("sqlite", "postgresql", *_MYSQL)


@dataclass(frozen=True)
class DeliveryResult:
    table: str
    upserts: int  # upsert rows delivered (stale ones are skipped by the version guard)
    deletes: int  # delete rows delivered
    target: str  # the database URL with the password masked


def deliver(table: pa.Table, dataset: Dataset, fields: tuple[str, ...], url: str,
            before_commit: Callable[[DeliveryResult], None] | None = None,
            masked: tuple[str, ...] = ()) -> DeliveryResult:
    """Apply ``table`` (``fields`` + _change_type + _commit_version) to the database at ``url``.

    ``before_commit`` (the access log's completion record of the delivery) is called with the
    result once every change is applied, inside the transaction: when it raises, the transaction
    is rolled back and nothing is applied."""
    target_url, target = check_target(dataset, fields, url, masked)
    engine = _engine(target_url, target)
    target_table = target_table_for(dataset, fields)
    change = table.column(CHANGE_TYPE)
    upserts = table.filter(pc.equal(change, UPSERT))
    if DISPUTED not in upserts.schema.names:
        upserts = upserts.append_column(DISPUTED, pa.repeat(pa.scalar(False), upserts.num_rows))
    upserts = upserts.select([*fields, COMMIT_VERSION, DISPUTED])
    deletes = table.filter(pc.equal(change, DELETE)).select([dataset.key, COMMIT_VERSION])
    result = DeliveryResult(target_table.name, upserts.num_rows, deletes.num_rows, target)
    try:
        with _failures(target_url, target, dataset.id):
            with engine.begin() as conn:
                _prepare(conn, target_table, dataset.key)
                _apply_upserts(conn, target_table, dataset.key, upserts)
                _apply_deletes(conn, target_table, dataset.key, deletes)
                if before_commit is not None:
                    before_commit(result)
    finally:
        engine.dispose()
    return result


def check_target(dataset: Dataset, fields: tuple[str, ...], url: str, masked: tuple[str, ...] = ()) -> tuple[URL, str]:
    """What can be refused before connecting (ConfigError): a grant without the key field (or
    with the key masked), a URL that is not one, a dialect govshare does not deliver into. The
    URL, and its text with the password masked."""
    if dataset.key in masked:
        raise ConfigError(
            f"dataset {dataset.id}: the grant receives the key field {dataset.key} masked, and masked values are "
            f"not unique, so its rows cannot be delivered into a table keyed on {dataset.key}; pull to a Parquet "
            "file instead")
    if dataset.key not in fields:
        raise ConfigError(
            f"dataset {dataset.id}: the grant does not include the key field {dataset.key}, so its rows cannot be "
            f"delivered into a table keyed on {dataset.key}; pull to a Parquet file instead, or extend the grant"
        )
    target_url = _parse_url(url)
    target = target_url.render_as_string(hide_password=True)
    if target_url.get_backend_name() == "sqlite" and not target_url.database:
        raise ConfigError(f"--out {target}: a SQLite target needs a file path, e.g. sqlite:////abs/path.db")
    try:
        dialect = target_url.get_dialect().name
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--out {target}: the database driver {exc.name!r} is not installed") from None
    except sa.exc.NoSuchModuleError:
        raise ConfigError(f"--out {target}: SQLAlchemy has no dialect or driver for {target_url.drivername!r}") from None
    if dialect not in _SUPPORTED:
        raise ConfigError(f"--out {target}: delivery into {dialect} is not supported (use one of: {', '.join(_SUPPORTED)})")
    return target_url, target


def target_table_for(dataset: Dataset, fields: tuple[str, ...]) -> sa.Table:
    """The delivered fields in catalog order, typed from the catalog, plus _commit_version."""
    wanted = set(fields)
    columns = [
        sa.Column(f.name, column_type(f, is_key=f.name == dataset.key), primary_key=f.name == dataset.key,
                  nullable=f.name != dataset.key, autoincrement=False)
        for f in dataset.fields if f.name in wanted
    ]
    columns.append(sa.Column(COMMIT_VERSION, sa.BigInteger(), nullable=False))
    columns.append(sa.Column(DISPUTED, sa.Boolean(), nullable=False))
    return sa.Table(dataset.id, sa.MetaData(), *columns, mysql_charset="utf8mb4")


class _DecimalText(sa.types.TypeDecorator[Decimal]):
    """SQLite has no exact decimal: its NUMERIC is a binary float. Keep the digits as text."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else format(Decimal(value), "f")

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


def column_type(field: Field, is_key: bool) -> sa.types.TypeEngine[Any]:
    """The database type of a catalog field, chosen per type rather than left to inference."""
    if field.type == "string":
        if is_key:
            return sa.Text().with_variant(sa.String(KEY_VARCHAR), *_MYSQL)
        return sa.Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)
    if field.type == "date":
        return sa.Date()
    if field.type == "timestamp":  # naive local time, microseconds (MySQL drops them unless fsp=6)
        return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), *_MYSQL)
    if field.type == "int":
        return sa.BigInteger()
    precision, scale = field.decimal or (38, 10)
    return sa.Numeric(precision, scale, asdecimal=True).with_variant(_DecimalText(), "sqlite")


# -- connecting and failing ----------------------------------------------------------------


def _parse_url(url: str) -> URL:
    scheme = url.split("://", 1)[0]
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(
            f"--out {scheme}://...: not a valid SQLAlchemy database URL "
            "(e.g. sqlite:////abs/path.db, postgresql://user:pw@host:5432/db, mysql+pymysql://user:pw@host/db)"
        ) from None


def _engine(url: URL, target: str) -> Engine:
    backend = url.get_backend_name()
    if backend == "sqlite" and not url.database:
        raise ConfigError(f"--out {target}: a SQLite target needs a file path, e.g. sqlite:////abs/path.db")
    if backend == "sqlite" and url.database != ":memory:":
        _private_sqlite_file(Path(url.database), target)
    connect_args = {} if backend == "sqlite" else {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--out {target}: the database driver {exc.name!r} is not installed") from None
    except sa.exc.ArgumentError:
        raise ConfigError(f"--out {target}: SQLAlchemy has no dialect or driver for {url.drivername!r}") from None


def _private_sqlite_file(path: Path, target: str) -> None:
    """A new SQLite target holds personal data: created 0600 before SQLite opens it (a missing
    folder is left to SQLite: the target is unavailable, not made up)."""
    if path.exists() or not path.parent.is_dir():
        return
    try:
        private_file(path)
    except OSError as exc:
        raise ConfigError(f"--out {target}: cannot create {path} ({exc.strerror}); nothing was delivered") from None


@contextmanager
def _failures(url: URL, target: str, dataset_id: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as exc:
        code = _error_code(exc)
        what = f"{exc.__class__.__name__}{f' {code}' if code else ''}"
        if exc.connection_invalidated or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            raise TargetUnavailable(
                f"delivery of {dataset_id} into {target} failed, nothing was applied: the database is unavailable "
                f"({what}{': ' + _first_line(exc, url) if _is_connect_error(exc) else ''}); try again"
            ) from None
        raise ConfigError(
            f"delivery of {dataset_id} into {target} was rejected by the database ({what}), nothing was applied; "
            f"check that table {dataset_id} has the column types govshare creates"
        ) from None


def _is_connect_error(exc: sa.exc.DBAPIError) -> bool:
    """Connection failures name hosts and files, never row values: their text may be shown."""
    return exc.statement is None


def _error_code(exc: sa.exc.DBAPIError) -> str:
    orig = exc.orig
    for attr in ("pgcode", "sqlstate", "sqlite_errorname"):
        value = getattr(orig, attr, None)
        if value:
            return str(value)
    args = getattr(orig, "args", ())
    return str(args[0]) if args and isinstance(args[0], int) else ""


def _first_line(exc: sa.exc.DBAPIError, url: URL) -> str:
    lines = str(exc.orig).strip().splitlines()
    text = lines[0] if lines else exc.__class__.__name__
    return text.replace(url.password, "***") if url.password else text


# -- the table -------------------------------------------------------------------------------


def _prepare(conn: Connection, table: sa.Table, key: str) -> None:
    """Create the table, or check that the existing one can take the delivery."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name):
        table.create(conn)
        return
    present = {c["name"].lower() for c in inspector.get_columns(table.name)}
    missing = [c.name for c in table.columns if c.name.lower() not in present]
    primary = [name.lower() for name in inspector.get_pk_constraint(table.name).get("constrained_columns") or []]
    problems = [f"missing column {name}" for name in missing]
    if primary != [key.lower()]:
        shown = ", ".join(primary) if primary else "none"
        problems.append(f"its primary key must be exactly ({key}), found: {shown}")
    if problems:
        raise ConfigError(
            f"table {table.name} already exists in the target database but cannot take this delivery; "
            "alter or drop it (govshare creates it when missing)",
            problems=problems,
        )


def _apply_upserts(conn: Connection, table: sa.Table, key: str, upserts: pa.Table) -> None:
    if upserts.num_rows == 0:
        return
    statement = _upsert_statement(conn.dialect.name, table, key)
    for offset in range(0, upserts.num_rows, CHUNK_ROWS):
        conn.execute(statement, upserts.slice(offset, CHUNK_ROWS).to_pylist())


def _upsert_statement(dialect: str, table: sa.Table, key: str) -> sa.Executable:
    """Insert, or update by key when the incoming change is at least as new as the stored row."""
    version = table.c[COMMIT_VERSION]
    others = [c for c in table.columns if c.name not in (key, COMMIT_VERSION)]
    if dialect in _MYSQL:
        stmt = mysql.insert(table)
        newer = stmt.inserted[COMMIT_VERSION] >= version
        # MySQL assigns left to right and later terms see earlier assignments: the version goes last.
        assignments = [(c.name, sa.case((newer, stmt.inserted[c.name]), else_=c)) for c in [*others, version]]
        return stmt.on_duplicate_key_update(assignments)
    dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    stmt = dialect_insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[key]],
        set_={c.name: stmt.excluded[c.name] for c in [*others, version]},
        where=version <= stmt.excluded[COMMIT_VERSION],
    )


def _apply_deletes(conn: Connection, table: sa.Table, key: str, deletes: pa.Table) -> None:
    """DELETE ... WHERE key IN (chunk) AND _commit_version <= the delete's version, per version."""
    if deletes.num_rows == 0:
        return
    versions = deletes.column(COMMIT_VERSION)
    for v in pc.unique(versions).to_pylist():
        keys = deletes.filter(pc.equal(versions, v)).column(key)
        for offset in range(0, len(keys), CHUNK_ROWS):
            chunk = keys.slice(offset, CHUNK_ROWS).to_pylist()
            conn.execute(
                sa.delete(table).where(table.c[key].in_(chunk), table.c[COMMIT_VERSION] <= v)
            )
