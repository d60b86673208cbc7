"""Read sources: connections by id, and sources that stream canonical Arrow batches.

    from connectors import open_source
    source = open_source(dataset)          # resolves dataset.connection_id the Airflow way
    source.check()                         # ConfigError naming every missing table/column
    for batch in source.read_batches(after=watermark, upto=source.high_watermark()): ...
"""

from __future__ import annotations

from connectors.base import Source
from connectors.connections import describe, resolve_url
from connectors.sql import SqlSource, open_source

__all__ = ["Source", "SqlSource", "describe", "open_source", "resolve_url"]
