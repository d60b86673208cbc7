"""The source extension point: something that yields Arrow record batches since a watermark.

Each database is one implementation of ``Source``, one engine class per database:
``connectors.sqlite.SqliteSource``, ``connectors.postgresql.PostgresSource`` and
``connectors.mysql.MySqlSource``, on the shared base ``connectors.sql.SqlSource``.
``connectors.factory.open_source`` is the only code that asks which database a connection names
and picks the class; nothing else branches on the engine. Every implementation passes the same
contract tests (tests/integration/test_connectors_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa

    from common.catalog import Dataset

DEFAULT_BATCH_ROWS = 100_000
# The earliest updated_at taken as a change time. Earlier values (0000-00-00, years BC, 1899)
# are no usable watermark, like NULL, unreadable text and times after a run's cap (now plus the
# catalog's source.future_tolerance): such rows never move the watermark (see read_batches).
WATERMARK_FLOOR = datetime(1900, 1, 1)

# A range of the source key column: lo inclusive, hi exclusive, None an open end. Plain text so
# that it travels through XCom to a mapped Airflow task as it is.
KeyRange = tuple[str | None, str | None]


@runtime_checkable
class Source(Protocol):
    """One dataset's source view, read in canonical form.

    Batches carry ``common.schema.source_schema(dataset)`` exactly: the dataset's fields under
    their canonical names (whatever the source calls its columns), then ``updated_at``
    (timestamp[us], naive local time) and ``is_deleted`` (int8).
    """

    dataset: Dataset

    def check(self) -> None:
        """Fail with ConfigError naming every missing table or column, before any row is read."""
        ...

    def high_watermark(self, cap: datetime | None = None) -> datetime | None:
        """The greatest usable updated_at at the source (from WATERMARK_FLOOR, not after ``cap``),
        None when there is none."""
        ...

    def count_unusable(self, cap: datetime) -> int:
        """How many rows have no usable updated_at: NULL, unreadable, before WATERMARK_FLOOR or after cap."""
        ...

    def read_batches(
        self,
        after: datetime | None,
        upto: datetime | None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        key_range: KeyRange | None = None,
        cap: datetime | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Rows with after < updated_at <= upto (after None: all from WATERMARK_FLOOR; upto None:
        none), in no particular order (no server-side sort), streamed in batches of at most
        batch_rows rows. With a key_range, only the rows whose source key is in it.

        Without a cap an unreadable updated_at in the window is a ConfigError. With a cap (upto
        must not pass it), every row of no usable updated_at (count_unusable) is yielded as
        well, after the window's rows, with updated_at NULL: validation quarantines it."""
        ...

    def count(self, after: datetime | None, upto: datetime, *, exact: bool = True) -> int:
        """How many rows read_batches(after, upto) yields (exact=False: a cheap upper bound)."""
        ...

    def key_ranges(self, parts: int, after: datetime | None, upto: datetime) -> list[KeyRange]:
        """About ``parts`` contiguous key ranges, each holding about count/parts of the rows
        with after < updated_at <= upto. Together they cover every key exactly once."""
        ...


class prefetch:  # noqa: N801 - used like a function: ``with prefetch(source.read_batches(...)) as batches:``
    """The same batches, read ahead by a thread: the source's driver (C code, or the network) works
    on the next batches while the caller processes this one. At most ``depth`` batches wait.

    The thread starts at once, and the whole source iterator runs in it (drivers keep their
    connection in the thread that opened it). Its exceptions reach the caller at the batch where
    they happened. close() (or leaving the ``with`` block, or dropping the object) tells the
    thread to stop, waits for it and so closes the source, also when the caller stops early or
    never iterated.
    """

    def __init__(self, batches: Iterator[pa.RecordBatch], depth: int = 2) -> None:
        import queue
        import threading
        import weakref

        self._ahead: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        # The thread holds the queue and the event, not this object: dropping it stops the thread.
        thread = threading.Thread(target=_read_ahead, args=(batches, self._ahead, self._stop),
                                  name="govshare-source-prefetch", daemon=True)
        thread.start()
        self._closer = weakref.finalize(self, _stop_reading, self._stop, thread)

    def __enter__(self) -> prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> prefetch:
        return self

    def __next__(self) -> pa.RecordBatch:
        if self._done:
            raise StopIteration
        kind, item = self._ahead.get()
        if kind == "batch":
            return item  # type: ignore[return-value]
        self.close()
        if kind == "error":
            raise item  # type: ignore[misc]
        raise StopIteration

    def close(self) -> None:
        self._done = True
        self._closer()


def _stop_reading(stop, thread) -> None:  # noqa: ANN001 - a threading.Event and Thread
    stop.set()
    thread.join()


def _read_ahead(source: Iterator[pa.RecordBatch], ahead, stop) -> None:  # noqa: ANN001 - a queue and an event
    import queue

    def put(item: tuple[str, object]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for batch in source:
            if not put(("batch", batch)):
                break
        else:
            put(("end", None))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
        put(("error", exc))
    finally:
        _close_quietly(source, put)


def _close_quietly(source: Iterator[pa.RecordBatch], put) -> None:  # noqa: ANN001 - the thread's put
    """Close the source in its thread; a failure to close reaches the caller, never the thread's
    own excepthook (which would print a traceback)."""
    close = getattr(source, "close", None)
    if close is None:
        return
    try:
        close()
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
        put(("error", exc))
