"""Airflow connections by id, without importing Airflow unless it is the only way: the fields of
a connection as Airflow stores them, read from, in order,

1. the environment variable ``AIRFLOW_CONN_{ID}`` (upper case), in Airflow's URI form
   (``sqlite:////abs/path.db``, ``postgresql://user:pw@host:5432/db``,
   ``aws://KEY:SECRET@/?endpoint_url=...``) or its JSON form
   (``{"conn_type": "postgres", "host": ..., "schema": ..., "login": ..., ...}``);
2. Airflow's own lookup (secrets backends, metadata database, or the Task SDK inside a task).
   Airflow is imported only on this path: it is slow to import and the CLI rarely needs it.

What a connection is for is decided above: connectors.connections makes SQLAlchemy URLs of the
sources' connections, common.objstore an S3 client of the sharing store's.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from common.errors import ConfigError


@dataclass(frozen=True)
class ConnectionFields:
    """An Airflow connection's fields, as Airflow stores them."""

    conn_type: str
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def connection_fields(conn_id: str) -> ConnectionFields:
    raw = os.environ.get(env_var(conn_id))
    if raw is not None and raw.strip():
        return parse_connection(conn_id, raw.strip())
    return _from_airflow(conn_id)


def parse_connection(conn_id: str, raw: str) -> ConnectionFields:
    """Parse the value of ``AIRFLOW_CONN_*``: Airflow's JSON form or its URI form."""
    if raw.startswith("{"):
        return _parse_json(conn_id, raw)
    return _parse_uri(conn_id, raw)


def _parse_json(conn_id: str, raw: str) -> ConnectionFields:
    where = f"{env_var(conn_id)} (JSON form)"
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(doc, dict) or not doc.get("conn_type"):
        raise ConfigError(f"{where} must be an object with at least 'conn_type'")
    extra = doc.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            raise ConfigError(f"{where}: 'extra' must be a JSON object") from None
    if not isinstance(extra, dict):
        raise ConfigError(f"{where}: 'extra' must be a JSON object")
    port = doc.get("port")
    try:
        port = int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: 'port' must be a number") from None
    return ConnectionFields(
        conn_type=str(doc["conn_type"]),
        host=_opt_str(doc.get("host")),
        schema=_opt_str(doc.get("schema")),
        login=_opt_str(doc.get("login")),
        password=_opt_str(doc.get("password")),
        port=port,
        extra=extra,
    )


def _parse_uri(conn_id: str, raw: str) -> ConnectionFields:
    """Airflow's URI parsing (airflow.models.Connection._parse_from_uri), without importing Airflow."""
    where = env_var(conn_id)
    if "://" not in raw or raw.count("://") > 1:
        raise ConfigError(f"{where} is not a connection URI like sqlite:////abs/path.db or postgresql://user@host/db")
    scheme = urlsplit(raw).scheme
    if not scheme:
        raise ConfigError(f"{where} has no scheme (e.g. sqlite://, postgresql://)")
    rest = urlsplit(raw.replace(f"{scheme}://", "//", 1))
    try:
        port = rest.port
    except ValueError:
        raise ConfigError(f"{where} has an invalid port") from None
    hostname = unquote(rest.hostname or "")
    if "/" in hostname:  # a path-like host keeps its case, as Airflow does
        hostname = rest.netloc.rsplit("@", 1)[-1].split(":", 1)[0]
    extra: dict[str, Any] = {}
    if rest.query:
        query = dict(parse_qsl(rest.query, keep_blank_values=True))
        if "__extra__" in query:
            try:
                extra = json.loads(query["__extra__"])
            except json.JSONDecodeError:
                raise ConfigError(f"{where}: __extra__ must be a JSON object") from None
        else:
            extra = query
    schema = unquote(rest.path[1:]) if rest.path else ""
    return ConnectionFields(
        conn_type="postgres" if scheme == "postgresql" else scheme,
        host=hostname or None,
        schema=schema or None,
        login=unquote(rest.username) if rest.username else None,
        password=unquote(rest.password) if rest.password else None,
        port=port,
        extra=extra if isinstance(extra, dict) else {},
    )


def _from_airflow(conn_id: str) -> ConnectionFields:
    """Airflow's own lookup: the Task SDK inside a task, the secrets backends elsewhere."""
    missing = ConfigError(
        f"connection {conn_id!r} is not defined: set {env_var(conn_id)} "
        f"(e.g. {env_var(conn_id)}=sqlite:////absolute/path.db) or add it to Airflow's connections"
    )
    try:
        from airflow.exceptions import AirflowNotFoundException
    except ImportError:
        raise missing from None
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    try:
        if hasattr(runner, "SUPERVISOR_COMMS"):
            from airflow.sdk import Connection as TaskConnection

            conn: Any = TaskConnection.get(conn_id)
        else:
            from airflow.models.connection import Connection

            conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        raise missing from None
    except Exception as exc:  # the SDK reports a missing id as AirflowRuntimeError(CONNECTION_NOT_FOUND)
        if "CONNECTION_NOT_FOUND" in repr(getattr(exc, "error", "")) or "isn't defined" in str(exc):
            raise missing from None
        raise
    extra = conn.extra_dejson if getattr(conn, "extra", None) else {}
    return ConnectionFields(
        conn_type=conn.conn_type or "",
        host=conn.host or None,
        schema=conn.schema or None,
        login=conn.login or None,
        password=conn.password or None,
        port=conn.port,
        extra=extra,
    )


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
