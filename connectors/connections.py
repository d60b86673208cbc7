"""Connections by id, resolved the Airflow way, turned deliberately into SQLAlchemy URLs.

Code asks for ``population_db``, never for a URL or a password. The id resolves, in order:

1. the environment variable ``AIRFLOW_CONN_{ID}`` (upper case; common.connections), in Airflow's URI form
   (``sqlite:////abs/path.db``, ``postgresql://user:pw@host:5432/db``) or its JSON form
   (``{"conn_type": "postgres", "host": ..., "schema": ..., "login": ..., ...}``);
2. Airflow's own lookup (secrets backends, metadata database, or the Task SDK inside a task).
   Airflow is imported only on this path: it is slow to import and the CLI rarely needs it.

Airflow's connection fields are mapped to a SQLAlchemy URL field by field, not through
``Connection.get_uri()`` (which is not a SQLAlchemy URL): for ``sqlite`` the file path is in
``host`` (JSON form, the Airflow UI) or in ``schema`` (URI form: ``sqlite:////abs/x.db`` parses
to host '' and schema '/abs/x.db'); ``postgres`` becomes ``postgresql+psycopg`` and ``mysql``
becomes ``mysql+pymysql``.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import URL

from common.connections import ConnectionFields, connection_fields, env_var, parse_connection
from common.errors import ConfigError

__all__ = ["DRIVERS", "ConnectionFields", "connection_fields", "describe", "env_var", "parse_connection",
           "resolve_url", "to_url"]

# Airflow conn_type -> SQLAlchemy drivername. A conn_type that already names a driver
# ("postgresql+psycopg2") is taken as is.
DRIVERS: Mapping[str, str] = {
    "sqlite": "sqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

# Extras that are connection parameters of the driver; other extras belong to Airflow hooks.
_QUERY_EXTRAS: Mapping[str, frozenset[str]] = {
    "postgresql": frozenset(
        {"sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "application_name", "options",
         "target_session_attrs"}
    ),
    "mysql": frozenset({"charset", "ssl_ca", "ssl_cert", "ssl_key", "connect_timeout", "read_timeout"}),
    "mariadb": frozenset({"charset", "ssl_ca", "ssl_cert", "ssl_key", "connect_timeout", "read_timeout"}),
}


def resolve_url(conn_id: str) -> URL:
    """The SQLAlchemy URL of an Airflow connection id."""
    return to_url(conn_id, connection_fields(conn_id))


def describe(conn_id: str) -> str:
    """The connection for logs and messages: id and URL with the password masked."""
    url = resolve_url(conn_id)
    return f"{conn_id} ({url.render_as_string(hide_password=True)})"


def to_url(conn_id: str, conn: ConnectionFields) -> URL:
    """Map Airflow connection fields to a SQLAlchemy URL, field by field."""
    conn_type = conn.conn_type.strip().lower().replace("-", "_")
    if "+" in conn_type:
        drivername = conn_type
    elif conn_type in DRIVERS:
        drivername = DRIVERS[conn_type]
    else:
        known = ", ".join(sorted(DRIVERS))
        raise ConfigError(f"connection {conn_id}: conn_type {conn.conn_type!r} is not supported (use one of: {known})")
    backend = drivername.split("+", 1)[0]
    if backend == "sqlite":
        path = conn.host or conn.schema
        if not path or path == ":memory:":
            raise ConfigError(
                f"connection {conn_id}: a sqlite connection needs a database file path, "
                f"e.g. {env_var(conn_id)}=sqlite:////absolute/path.db"
            )
        return URL.create(drivername, database=path)
    if not conn.host:
        raise ConfigError(f"connection {conn_id}: a {backend} connection needs a host")
    allowed = _QUERY_EXTRAS.get(backend, frozenset())
    query = {k: str(v) for k, v in conn.extra.items() if k in allowed and isinstance(v, (str, int, float, bool))}
    return URL.create(
        drivername,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host,
        port=conn.port,
        database=conn.schema or None,
        query=query,
    )
