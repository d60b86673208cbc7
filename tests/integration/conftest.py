"""Database servers for the integration tests: scratch databases on PostgreSQL and MariaDB.

``make test`` (and ``.ci/run``) start both servers with ``scripts/test-servers.sh`` and export
their URLs. Without them (a developer who runs pytest alone) the tests that need a server are
skipped, saying how to start them; everything else still runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from connectors.connections import parse_connection, to_url

SERVER_ENV = {"postgresql": "GOVSHARE_TEST_POSTGRES_URL", "mariadb": "GOVSHARE_TEST_MARIADB_URL"}

ScratchDatabase = Callable[[str], str]


def server_uri(server: str) -> str:
    """The Airflow URI of a running test server's base database, or skip the test."""
    name = SERVER_ENV[server]
    uri = os.environ.get(name, "").strip()
    if not uri:
        pytest.skip(f'{name} is not set: start the servers with eval "$(scripts/test-servers.sh start)" (make test does)')
    return uri


def _admin_engine(uri: str) -> sa.Engine:
    url = to_url("test_server", parse_connection("test_server", uri))
    return sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")


@pytest.fixture
def scratch_database() -> Iterator[ScratchDatabase]:
    """Factory: server name -> Airflow URI of a new empty database there, dropped after the test."""
    made: list[tuple[sa.Engine, str]] = []

    def make(server: str) -> str:
        uri = server_uri(server)
        engine = _admin_engine(uri)
        name = f"gs_{uuid.uuid4().hex[:12]}"
        with engine.connect() as conn:
            if server == "mariadb":
                conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin")
            else:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        made.append((engine, name))
        base, _, query = uri.partition("?")
        return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")

    yield make
    for engine, name in made:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        engine.dispose()
