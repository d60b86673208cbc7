"""The source extension point: something that yields Arrow record batches since a watermark.

Every implementation passes the same contract tests (tests/integration/test_connectors_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from govshare.catalog import Dataset

DEFAULT_BATCH_ROWS = 100_000


@runtime_checkable
class Source(Protocol):
    """One dataset's source view, read in canonical form.

    Batches carry ``govshare.schema.source_schema(dataset)`` exactly: the dataset's fields under
    their canonical names (whatever the source calls its columns), then ``updated_at``
    (timestamp[us], naive local time) and ``is_deleted`` (int8).
    """

    dataset: Dataset

    def check(self) -> None:
        """Fail with ConfigError naming every missing table or column, before any row is read."""
        ...

    def high_watermark(self) -> datetime | None:
        """The greatest updated_at at the source, None when the view is empty."""
        ...

    def read_batches(
        self, after: datetime | None, upto: datetime, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Rows with after < updated_at <= upto (after None: all up to upto), ordered by
        updated_at then key, streamed in batches of at most batch_rows rows."""
        ...
