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

# A range of the source key column: lo inclusive, hi exclusive, None an open end. Plain text so
# that it travels through XCom to a mapped Airflow task as it is.
KeyRange = tuple[str | None, str | None]


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
        self,
        after: datetime | None,
        upto: datetime,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        key_range: KeyRange | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Rows with after < updated_at <= upto (after None: all up to upto), in no particular
        order (no server-side sort), streamed in batches of at most batch_rows rows. With a
        key_range, only the rows whose source key is in it."""
        ...

    def count(self, after: datetime | None, upto: datetime, *, exact: bool = True) -> int:
        """How many rows read_batches(after, upto) yields (exact=False: a cheap upper bound)."""
        ...

    def key_ranges(self, parts: int, after: datetime | None, upto: datetime) -> list[KeyRange]:
        """About ``parts`` contiguous key ranges, each holding about count/parts of the rows
        with after < updated_at <= upto. Together they cover every key exactly once."""
        ...
