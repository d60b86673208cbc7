"""SQL sources without I/O: the engine class and driver choice per URL, timeouts from the connection, key ranges as
they arrive from XCom, and PostgreSQL's NUMERIC (opaque text from ADBC) made exact decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy.engine import make_url

from connectors.factory import source_for
from connectors.mysql import MySqlSource
from connectors.postgresql import PostgresSource
from connectors.sql import SqlSource, _key_range, to_canonical
from connectors.sqlite import SqliteSource
from common.catalog import load_catalog
from common.errors import ConfigError


@pytest.fixture(scope="module")
def dataset() -> Any:
    return load_catalog().dataset("legal_entity")


@pytest.mark.parametrize(
    ("url", "engine", "driver"),
    [
        ("sqlite:////tmp/x.db", SqliteSource, "adbc"),
        ("postgresql+psycopg://u:p@127.0.0.1:5432/db", PostgresSource, "adbc"),
        ("mysql+pymysql://u:p@127.0.0.1:3306/db", MySqlSource, "sqlalchemy"),
        ("mariadb+pymysql://u:p@127.0.0.1:3306/db", MySqlSource, "sqlalchemy"),
        ("mssql+pyodbc://u:p@127.0.0.1:1433/db", SqlSource, "sqlalchemy"),
    ],
)
def test_auto_picks_the_fastest_streaming_path(dataset: Any, url: str, engine: type[SqlSource], driver: str) -> None:
    source = source_for(dataset, make_url(url))
    assert type(source) is engine
    assert source.driver == driver


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:////tmp/x.db", "sqlalchemy"),
        ("postgresql+psycopg://u@h/db", "sqlalchemy"),
        ("mysql+pymysql://u@h/db", "sqlalchemy"),
    ],
)
def test_an_explicit_driver_is_kept(dataset: Any, url: str, driver: str) -> None:
    assert source_for(dataset, make_url(url), driver=driver).driver == driver  # type: ignore[arg-type]


def test_adbc_is_refused_where_there_is_no_streaming_adbc_driver(dataset: Any) -> None:
    with pytest.raises(ConfigError, match="legal_entity_db"):
        source_for(dataset, make_url("mysql+pymysql://u:p@h/db"), driver="adbc")


def test_connect_timeout_from_the_connection_extras_wins(dataset: Any) -> None:
    assert source_for(dataset, make_url("postgresql+psycopg://u@h/db?connect_timeout=3")).timeout_s == 3
    assert source_for(dataset, make_url("postgresql+psycopg://u@h/db"), timeout_s=7).timeout_s == 7
    with pytest.raises(ConfigError, match="connect_timeout"):
        source_for(dataset, make_url("postgresql+psycopg://u@h/db?connect_timeout=soon"))


def test_key_range_as_json_list_or_tuple() -> None:
    assert _key_range(None) == (None, None)
    assert _key_range(["0100", None]) == ("0100", None)
    assert _key_range((None, "9")) == (None, "9")
    for bad in (["a"], ["a", "b", "c"], [1, 2]):
        with pytest.raises(ConfigError, match="key range"):
            _key_range(bad)  # type: ignore[arg-type]


def test_postgres_numeric_from_adbc_is_an_exact_decimal() -> None:
    storage = pa.array(["12345678901234.5678", None, "-0.0001"], pa.string())
    numeric = pa.ExtensionArray.from_storage(pa.opaque(pa.string(), "numeric", "PostgreSQL"), storage)
    out = to_canonical(numeric, pa.decimal128(18, 4))
    assert out.type == pa.decimal128(18, 4)
    assert out.to_pylist() == [Decimal("12345678901234.5678"), None, Decimal("-0.0001")]


def test_postgres_numeric_that_would_round_is_refused() -> None:
    storage = pa.array(["1.23456"], pa.string())
    numeric = pa.ExtensionArray.from_storage(pa.opaque(pa.string(), "numeric", "PostgreSQL"), storage)
    with pytest.raises(pa.ArrowInvalid):
        to_canonical(numeric, pa.decimal128(18, 4))
