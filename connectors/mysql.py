"""MariaDB/MySQL sources: PyMySQL through SQLAlchemy, streamed with a server-side cursor (SSCursor).

connectorx streams MySQL too, but takes no bound parameters, and the key-range boundaries are
source data. Connections are utf8mb4 unless the connection says otherwise (utf8, that is
utf8mb3, cannot carry emoji).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from connectors.sql import Driver, SqlSource

# MariaDB gives up writing to a client that pauses longer than net_write_timeout (60 s by default)
# while it processes a streamed batch; a full load must survive slow consumers.
_MYSQL_NET_WRITE_TIMEOUT_S = 3600


class MySqlSource(SqlSource):
    """A dataset's source view in a MariaDB or MySQL database."""

    name: ClassVar[str] = "MariaDB/MySQL"
    drivers: ClassVar[tuple[Driver, ...]] = ("sqlalchemy",)

    def _connect_args(self) -> dict[str, Any]:
        # pymysql's connect_timeout covers the TCP connect only: a server that accepts and then
        # stays silent is caught by read/write timeouts, relaxed in _prepare_session.
        seconds = max(1, math.ceil(self.timeout_s))
        args: dict[str, Any] = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
        if "charset" not in self.url.query:
            args["charset"] = "utf8mb4"
        return args

    def _prepare_session(self, dbapi_connection: Any, _record: Any) -> None:
        """Patience with a slow reader, and the statement timeout in the server's own terms."""
        statements = [f"SET SESSION net_write_timeout = {_MYSQL_NET_WRITE_TIMEOUT_S}"]
        limit = self.statement_timeout_s
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
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()
