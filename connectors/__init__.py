"""Read sources: connections by id, and sources that stream canonical Arrow batches.

    from connectors import open_source
    source = open_source(dataset)          # resolves dataset.connection_id the Airflow way
    source.check()                         # ConfigError naming every missing table/column
    for batch in source.read_batches(after=watermark, upto=source.high_watermark()): ...

    # a big full load, one mapped task per part, each with bounded memory:
    for key_range in source.key_ranges(parts, None, upto):
        source.read_batches(None, upto, key_range=key_range)
"""

from __future__ import annotations

from connectors.base import KeyRange, Source
from connectors.connections import describe, resolve_url
from connectors.sql import SqlSource, open_source

__all__ = ["KeyRange", "Source", "SqlSource", "describe", "open_source", "resolve_url"]
