"""connectors.base.prefetch: a source's batches read ahead by a thread, handed out unchanged.

The sources here are plain generators that record what happened to them (how far they got, in
which thread, whether their ``finally`` ran), so each promise of prefetch is checked from the
source's side as well as the caller's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from connectors.base import prefetch

THREAD_NAME = "govshare-source-prefetch"
WAIT = 10.0  # seconds to wait for a condition that must come true (never asserted as a duration)


class Probe:
    """What a recording source went through."""

    def __init__(self) -> None:
        self.produced = 0  # items the source has started handing out (counted before each yield)
        self.closed = threading.Event()
        self.threads: set[str] = set()
        self.closed_in: str | None = None


def recording_source(probe: Probe, items: int | None = None, fail_at: int | None = None,
                     error: BaseException | None = None) -> Iterator[int]:
    """Yields 0, 1, 2, ... (``items`` of them, or without end); raises ``error`` instead of item ``fail_at``."""
    try:
        i = 0
        while items is None or i < items:
            probe.threads.add(threading.current_thread().name)
            if i == fail_at:
                raise error  # type: ignore[misc]
            probe.produced += 1
            yield i
            i += 1
    finally:
        probe.closed_in = threading.current_thread().name
        probe.closed.set()


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting: {what}")
        time.sleep(0.005)


def within(action, what: str):
    """Run ``action`` in a helper thread: a prefetch that fails to stop its reader then fails the
    test instead of hanging it."""
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    helper = threading.Thread(target=call, daemon=True)
    helper.start()
    helper.join(WAIT)
    if helper.is_alive():
        pytest.fail(f"did not return: {what}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture(autouse=True)
def _no_prefetch_thread_before_or_after():
    wait_for(lambda: not prefetch_threads(), "a prefetch thread of an earlier test to end")
    yield
    wait_for(lambda: not prefetch_threads(), "this test's prefetch thread to end")


# -- what the caller sees ------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("items", [0, 1, 2, 3, 17])
def test_yields_the_same_items_in_order(items, depth):
    probe = Probe()
    assert list(prefetch(recording_source(probe, items), depth=depth)) == list(range(items))
    assert probe.produced == items
    assert probe.closed.is_set()


def test_yields_the_very_objects_of_the_source():
    objects = [object() for _ in range(7)]
    received = list(prefetch(iter(objects)))  # a plain iterator without close() is fine too
    assert len(received) == len(objects)
    assert all(got is sent for got, sent in zip(received, objects))


def test_the_source_runs_entirely_in_the_prefetch_thread():
    """Drivers keep their connection in the thread that opened it: every step of the source,
    its finally included, runs in one thread, not the caller's."""
    probe = Probe()
    assert list(prefetch(recording_source(probe, 5))) == [0, 1, 2, 3, 4]
    assert probe.threads == {THREAD_NAME}
    assert probe.closed_in == THREAD_NAME
    assert threading.current_thread().name != THREAD_NAME


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("fail_at", [0, 1, 4, 9])
def test_a_source_error_reaches_the_caller_after_the_items_before_it(fail_at, depth):
    probe = Probe()
    error = LookupError(f"the driver failed at row batch {fail_at}")
    received = []
    with pytest.raises(LookupError) as raised:
        for item in prefetch(recording_source(probe, items=20, fail_at=fail_at, error=error), depth=depth):
            received.append(item)  # noqa: PERF402 - the items before the error
    assert raised.value is error
    assert received == list(range(fail_at))
    assert probe.closed.is_set()


def test_a_source_error_is_raised_only_when_the_caller_reaches_it():
    """The thread meets the error early (the items before it wait in the queue); the caller
    still gets every item before it first, one next() at a time."""
    probe = Probe()
    error = ValueError("bad batch")
    batches = prefetch(recording_source(probe, items=10, fail_at=2, error=error), depth=4)
    assert next(batches) == 0
    wait_for(probe.closed.is_set, "the source to fail in the thread")
    assert next(batches) == 1
    with pytest.raises(ValueError) as raised:
        next(batches)
    assert raised.value is error
    assert within(lambda: list(batches), "iterating after the error") == []  # ended, not waiting


# -- stopping early --------------------------------------------------------------------------


def _take_until(batches: prefetch, stop_at: int) -> list[int]:
    """A caller that breaks out of its loop, inside ``with`` (how ingest uses prefetch)."""
    taken = []
    with batches:
        for item in batches:
            taken.append(item)
            if item == stop_at:
                break
    return taken


def _fail_at(batches: prefetch, stop_at: int) -> None:
    """A caller whose own processing fails in the middle of the loop, inside ``with``."""
    with batches:
        for item in batches:
            if item == stop_at:
                raise RuntimeError("the caller's own error")


@pytest.mark.parametrize("stop_at", [0, 3])
def test_a_caller_that_breaks_closes_the_source_and_ends_the_thread(stop_at):
    probe = Probe()
    taken = within(lambda: _take_until(prefetch(recording_source(probe)), stop_at), "a loop that breaks")
    assert taken == list(range(stop_at + 1))
    # an endless source: only a close ends it, and leaving the with block waited for it
    assert probe.closed.is_set()
    assert probe.closed_in == THREAD_NAME
    assert not prefetch_threads()


@pytest.mark.parametrize("stop_at", [0, 3])
def test_a_caller_that_raises_closes_the_source_and_ends_the_thread(stop_at):
    probe = Probe()
    with pytest.raises(RuntimeError, match="the caller's own error"):
        within(lambda: _fail_at(prefetch(recording_source(probe)), stop_at), "a loop that raises")
    assert probe.closed.is_set()
    assert probe.closed_in == THREAD_NAME
    assert not prefetch_threads()


def test_close_returns_after_the_source_is_closed_and_the_thread_is_gone():
    probe = Probe()
    batches = prefetch(recording_source(probe), depth=2)
    assert next(batches) == 0
    assert prefetch_threads()  # reading ahead, blocked on the full queue
    within(batches.close, "close()")
    assert probe.closed.is_set()
    assert not prefetch_threads()


def test_close_before_any_item_was_taken_closes_the_source():
    """The reader starts at once; a caller that fails before its loop still closes it."""
    probe = Probe()
    batches = prefetch(recording_source(probe), depth=2)
    wait_for(lambda: probe.produced >= 1, "the thread to start reading")
    within(batches.close, "close()")
    assert probe.closed.is_set()
    assert probe.closed_in == THREAD_NAME
    assert not prefetch_threads()


def test_nothing_more_is_handed_out_after_close():
    probe = Probe()
    batches = prefetch(recording_source(probe), depth=3)
    assert next(batches) == 0
    wait_for(lambda: probe.produced >= 3, "the thread to read ahead")
    within(batches.close, "close()")
    assert within(lambda: list(batches), "iterating after close()") == []  # what was read ahead is not handed out


def test_closing_twice_is_harmless():
    probe = Probe()
    batches = prefetch(recording_source(probe, items=3))
    assert list(batches) == [0, 1, 2]
    within(batches.close, "close() after the end")
    within(batches.close, "a second close()")
    assert probe.closed.is_set()
    assert not prefetch_threads()


def test_closing_while_the_source_is_slow_still_ends_the_thread():
    """The caller stops while the source is inside its next step (not blocked on the queue)."""
    probe = Probe()
    release = threading.Event()
    entered = threading.Event()

    def slow() -> Iterator[int]:
        try:
            yield 0
            entered.set()
            release.wait(WAIT)
            yield 1
            yield 2
        finally:
            probe.closed.set()

    batches = prefetch(slow(), depth=1)
    assert next(batches) == 0
    wait_for(entered.is_set, "the source to start its second step")
    closer = threading.Thread(target=batches.close, daemon=True)
    closer.start()
    release.set()
    closer.join(WAIT)
    assert not closer.is_alive(), "close() did not return"
    assert probe.closed.is_set()
    assert not prefetch_threads()


# -- how far ahead it reads ------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_reads_at_most_depth_items_ahead_of_a_blocked_caller(depth):
    """With the caller holding the items it took (c of them), the queue holds ``depth`` items and
    the thread one more it cannot hand over: the source has produced c + depth + 1 items, no more.
    The reading starts at once, before the caller takes anything (c = 0)."""
    probe = Probe()
    batches = prefetch(recording_source(probe), depth=depth)
    taken = 0
    try:
        for pause_at in (0, 1, 2, 5):
            while taken < pause_at:
                assert next(batches) == taken
                taken += 1
            limit = taken + depth + 1
            wait_for(lambda limit=limit: probe.produced >= limit, f"the thread to read {depth} items ahead")
            time.sleep(0.2)  # room to run further ahead, were the queue unbounded
            assert probe.produced == limit, f"read {probe.produced - taken} items ahead with depth {depth}"
    finally:
        within(batches.close, "close()")
    assert probe.closed.is_set()


def test_the_default_depth_is_two():
    probe = Probe()
    batches = prefetch(recording_source(probe))
    try:
        assert next(batches) == 0
        wait_for(lambda: probe.produced >= 1 + 2 + 1, "the thread to read ahead")
        time.sleep(0.2)
        assert probe.produced == 1 + 2 + 1
    finally:
        within(batches.close, "close()")


def test_a_dropped_prefetch_stops_its_thread_and_closes_the_source() -> None:
    """Without ``with`` or close(): dropping the object is enough (the thread does not hold it)."""
    import gc

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield pa.record_batch({"n": [1]})
        finally:
            closed.set()

    batches = prefetch(endless())
    next(batches)
    del batches
    gc.collect()
    assert closed.wait(10)
    deadline = time.monotonic() + 10
    while any(t.name == THREAD_NAME for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())
