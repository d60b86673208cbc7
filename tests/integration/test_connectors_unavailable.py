"""An unreachable or silent source server is SourceUnavailable (retriable), quickly, naming the
connection id and never its password. No server needed: a closed port on loopback, and a port
that accepts connections but never answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from connectors import open_source
from common.catalog import load_catalog
from common.errors import SourceUnavailable

pytestmark = pytest.mark.integration

PASSWORD = "Secret-pw-4711"
# (scheme, driver): ADBC and SQLAlchemy/psycopg for PostgreSQL, SQLAlchemy/pymysql for MariaDB.
PATHS = [("postgresql", "adbc"), ("postgresql", "sqlalchemy"), ("mysql", "sqlalchemy")]


@pytest.fixture(scope="module")
def dataset() -> Any:
    return load_catalog().dataset("population")


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts TCP connections (the kernel completes them) but never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _attempts(source: Any) -> list[Any]:
    return [source.check, source.high_watermark, lambda: next(iter(source.read_batches(None, datetime(2100, 1, 1))))]


@pytest.mark.parametrize(("scheme", "driver"), PATHS)
def test_closed_port_is_unavailable_within_seconds(
    scheme: str, driver: str, closed_port: int, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", f"{scheme}://govshare:{PASSWORD}@127.0.0.1:{closed_port}/db")
    source = open_source(dataset, driver=driver)  # type: ignore[arg-type]
    for attempt in _attempts(source):
        started = time.monotonic()
        with pytest.raises(SourceUnavailable) as raised:
            attempt()
        assert time.monotonic() - started < 5
        text = "\n".join(raised.value.lines())
        assert raised.value.retriable and "population_db" in text and PASSWORD not in text


@pytest.mark.parametrize(("scheme", "driver"), PATHS)
def test_a_server_that_never_answers_times_out(
    scheme: str, driver: str, silent_port: int, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"{scheme}://govshare:{PASSWORD}@127.0.0.1:{silent_port}/db?connect_timeout=2"
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", uri)
    source = open_source(dataset, driver=driver)  # type: ignore[arg-type]
    assert source.timeout_s == 2
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as raised:
        source.check()
    assert time.monotonic() - started < 8
    text = "\n".join(raised.value.lines())
    assert "population_db" in text and PASSWORD not in text
