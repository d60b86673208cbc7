"""Read sources: connections by id, and sources that stream canonical Arrow batches.

    from connectors import open_source
    source = open_source(dataset)          # resolves dataset.connection_id the Airflow way
    source.check()                         # ConfigError naming every missing table/column
    for batch in source.read_batches(after=watermark, upto=source.high_watermark()): ...

    # a big full load, one mapped task per part, each with bounded memory:
    for key_range in source.key_ranges(parts, None, upto):
        source.read_batches(None, upto, key_range=key_range)

The layout: one engine class per database, all behind the ``Source`` protocol.

- ``base``: the ``Source`` protocol, ``KeyRange``, and ``prefetch`` (batches read ahead by a thread).
- ``connections``: connection ids resolved the Airflow way into SQLAlchemy URLs.
- ``sql``: ``SqlSource``, what every SQL engine shares (column mapping, identifier matching and
  quoting, watermark windows, key ranges, batches shaped to the canonical schema) and the
  generic SQLAlchemy reading path; each engine overrides a few small hooks.
- ``sqlite``, ``postgresql``, ``mysql``: ``SqliteSource``, ``PostgresSource``, ``MySqlSource``,
  each with its own SQL dialect, driver and streaming.
- ``factory``: ``open_source``, the only place that asks which database a URL names.
- ``ddl``: the contract DDL of the source views (for the demo and the tests).
"""

from __future__ import annotations

from connectors.base import KeyRange, Source
from connectors.connections import describe, resolve_url
from connectors.factory import open_source, source_for
from connectors.mysql import MySqlSource
from connectors.postgresql import PostgresSource
from connectors.sql import SqlSource
from connectors.sqlite import SqliteSource

__all__ = [
    "KeyRange", "MySqlSource", "PostgresSource", "Source", "SqlSource", "SqliteSource", "describe", "open_source",
    "resolve_url", "source_for",
]
