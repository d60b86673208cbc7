"""Connection ids resolve the Airflow way into SQLAlchemy URLs (no I/O, no Airflow import)."""

from __future__ import annotations

import json

import pytest

from connectors.connections import describe, resolve_url
from common.errors import ConfigError


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch):
    def set_conn(value: str, conn_id: str = "population_db") -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return conn_id

    return set_conn


def test_sqlite_four_slashes_is_an_absolute_path(conn) -> None:
    url = resolve_url(conn("sqlite:////abs/dir/population.db"))
    assert url.drivername == "sqlite"
    assert url.database == "/abs/dir/population.db"
    assert url.render_as_string() == "sqlite:////abs/dir/population.db"


def test_sqlite_three_slashes_is_a_relative_path(conn) -> None:
    assert resolve_url(conn("sqlite:///var/population.db")).database == "var/population.db"


def test_sqlite_percent_encoded_path(conn) -> None:
    assert resolve_url(conn("sqlite:////abs/my%20dir/p.db")).database == "/abs/my dir/p.db"


def test_sqlite_json_form_has_the_path_in_host(conn) -> None:
    url = resolve_url(conn(json.dumps({"conn_type": "sqlite", "host": "/abs/legal_entity.db"})))
    assert (url.drivername, url.database) == ("sqlite", "/abs/legal_entity.db")


def test_sqlite_without_a_path_is_a_config_error(conn) -> None:
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_POPULATION_DB"):
        resolve_url(conn(json.dumps({"conn_type": "sqlite"})))


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_uses_psycopg(conn, scheme: str) -> None:
    url = resolve_url(conn(f"{scheme}://gov%40user:p%2Fw%3Ard@db.example:5433/exchange?sslmode=require&cursor=x"))
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "gov@user", "p/w:rd", "db.example", 5433, "exchange"
    )
    assert dict(url.query) == {"sslmode": "require"}  # hook-only extras are not driver parameters


def test_mysql_uses_pymysql(conn) -> None:
    url = resolve_url(conn("mysql://u:secret@mariadb.local/qzk"))
    assert (url.drivername, url.host, url.port, url.database) == ("mysql+pymysql", "mariadb.local", None, "qzk")


def test_json_form_for_postgres(conn) -> None:
    value = json.dumps({"conn_type": "postgres", "host": "h", "schema": "db", "login": "u", "password": "s3cret!",
                        "port": 5432, "extra": {"sslmode": "verify-full"}})
    url = resolve_url(conn(value, "legal_entity_db"))
    assert (url.drivername, url.host, url.port, url.database, url.password) == (
        "postgresql+psycopg", "h", 5432, "db", "s3cret!"
    )
    assert url.query["sslmode"] == "verify-full"


def test_describe_never_shows_the_password(conn) -> None:
    text = describe(conn("postgresql://reader:Very-Secret-42@db:5432/exchange"))
    assert "Very-Secret-42" not in text
    assert "population_db" in text and "db:5432/exchange" in text and "***" in text


def test_unsupported_conn_type_is_a_config_error(conn) -> None:
    with pytest.raises(ConfigError, match="oracle"):
        resolve_url(conn("oracle://u:p@h/db"))


@pytest.mark.parametrize("value", ["not a uri", "{not json", json.dumps({"host": "h"})])
def test_malformed_values_are_config_errors_naming_the_variable(conn, value: str) -> None:
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_POPULATION_DB"):
        resolve_url(conn(value))


# An unknown id goes through Airflow's real lookup: tests/integration/test_connectors_airflow.py.
