"""The factory: the one place that asks which database a connection names.

``open_source(dataset)`` resolves the dataset's connection id the Airflow way and returns the
engine class of that database (``ENGINES``, by SQLAlchemy backend name); a database without an
engine class of its own is read by ``SqlSource``, the generic SQLAlchemy source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from connectors.connections import resolve_url
from connectors.mysql import MySqlSource
from connectors.postgresql import PostgresSource
from connectors.sql import Driver, SqlSource
from connectors.sqlite import SqliteSource

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from common.catalog import Dataset

ENGINES: Mapping[str, type[SqlSource]] = {
    "sqlite": SqliteSource,
    "postgresql": PostgresSource,
    "mysql": MySqlSource,
    "mariadb": MySqlSource,
}


def open_source(
    dataset: Dataset, *, driver: Driver = "auto", timeout_s: float = 30.0, statement_timeout_s: float | None = None
) -> SqlSource:
    """The source of a dataset, found through its connection id."""
    return source_for(
        dataset,
        resolve_url(dataset.connection_id),
        connection_id=dataset.connection_id,
        driver=driver,
        timeout_s=timeout_s,
        statement_timeout_s=statement_timeout_s,
    )


def source_for(
    dataset: Dataset,
    url: URL,
    *,
    connection_id: str | None = None,
    driver: Driver = "auto",
    timeout_s: float = 30.0,
    statement_timeout_s: float | None = None,
) -> SqlSource:
    """The source of a dataset in the database at ``url``, as its engine class reads it."""
    engine = ENGINES.get(url.get_backend_name(), SqlSource)
    return engine(dataset, url, connection_id=connection_id, driver=driver, timeout_s=timeout_s,
                  statement_timeout_s=statement_timeout_s)
