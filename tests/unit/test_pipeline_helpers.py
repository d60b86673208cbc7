"""Small pieces of the sync: govshare.pipeline._with_last (the last-batch flag of ingest) and
validation.gx_mode (where Great Expectations runs, from GOVSHARE_GX and the part's size)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from common.errors import ConfigError, GovshareError
from govshare.pipeline import _with_last
from validation import gx_mode as gx_settings
from validation import gx_worker
from validation.gx_mode import GX_WORKER_ROWS, gx_mode

# -- _with_last ------------------------------------------------------------------------------


def test_with_last_of_nothing_is_nothing():
    assert list(_with_last(iter([]))) == []
    assert list(_with_last([])) == []  # any iterable


def test_with_last_of_one_item_flags_it_last():
    assert list(_with_last(iter(["only"]))) == [("only", True)]


@pytest.mark.parametrize("n", [2, 3, 10])
def test_with_last_flags_only_the_last_item(n):
    assert list(_with_last(iter(range(n)))) == [(i, i == n - 1) for i in range(n)]


def test_with_last_hands_out_the_same_objects():
    items = [object(), object(), object()]
    pairs = list(_with_last(items))
    assert [item for item, _ in pairs] == items
    assert all(got is sent for (got, _), sent in zip(pairs, items))


def test_with_last_reads_one_item_ahead_and_no_more():
    """Whether an item is the last is known only once the next one is read: the source is one
    item ahead of the caller, never more (ingest streams the source)."""
    read: list[int] = []

    def source() -> Iterator[int]:
        for i in range(5):
            read.append(i)
            yield i

    pairs = _with_last(source())
    assert next(pairs) == (0, False)
    assert read == [0, 1]
    assert next(pairs) == (1, False)
    assert read == [0, 1, 2]
    assert list(pairs) == [(2, False), (3, False), (4, True)]


def test_with_last_passes_a_source_error_on_after_the_items_before_it():
    def source() -> Iterator[int]:
        yield 0
        yield 1
        raise OSError("connection lost")

    pairs = _with_last(source())
    assert next(pairs) == (0, False)
    with pytest.raises(OSError, match="connection lost"):
        next(pairs)  # 1 cannot be handed out before it is known whether it is the last


# -- gx_mode ---------------------------------------------------------------------------------


@pytest.fixture
def cores(monkeypatch: pytest.MonkeyPatch):
    """Set how many cores os.cpu_count() reports (None: unknown)."""

    def set_cores(n: int | None) -> None:
        monkeypatch.setattr(os, "cpu_count", lambda: n)

    set_cores(2)
    return set_cores


@pytest.fixture
def warm(monkeypatch: pytest.MonkeyPatch):
    """Set whether this process holds a warm GX worker (no real worker is started)."""

    def set_warm(value: bool) -> None:
        monkeypatch.setattr(gx_worker, "warm_worker_available", lambda: value)

    set_warm(False)
    return set_warm


@pytest.fixture(params=["unset", "auto"])
def auto(request, monkeypatch: pytest.MonkeyPatch) -> None:
    """GOVSHARE_GX unset (the default, auto) or auto itself."""
    if request.param == "unset":
        monkeypatch.delenv(gx_settings.GX_ENV, raising=False)
    else:
        monkeypatch.setenv(gx_settings.GX_ENV, "auto")


def test_the_environment_variable_is_govshare_gx():
    assert gx_settings.GX_ENV == "GOVSHARE_GX"


@pytest.mark.parametrize("rows", [GX_WORKER_ROWS, GX_WORKER_ROWS + 1, 10 * GX_WORKER_ROWS])
@pytest.mark.parametrize("n_cores", [2, 16])
def test_auto_runs_a_large_part_in_a_worker_on_several_cores(auto, cores, warm, rows, n_cores):
    cores(n_cores)
    assert gx_mode(rows) == "worker"


@pytest.mark.parametrize("rows", [0, 1, GX_WORKER_ROWS - 1])
def test_auto_runs_a_small_part_inline_without_a_warm_worker(auto, cores, warm, rows):
    cores(16)
    assert gx_mode(rows) == "inline"


@pytest.mark.parametrize("rows", [0, 1, GX_WORKER_ROWS - 1, GX_WORKER_ROWS])
def test_auto_uses_a_warm_worker_whatever_the_size(auto, cores, warm, rows):
    warm(True)
    assert gx_mode(rows) == "worker"


@pytest.mark.parametrize("n_cores", [1, None])
def test_auto_keeps_a_large_part_inline_on_one_core(auto, cores, warm, n_cores):
    cores(n_cores)
    assert gx_mode(10 * GX_WORKER_ROWS) == "inline"


def test_auto_asks_for_a_warm_worker_at_call_time(auto, cores, warm):
    """The pool changes during a process's life: the answer follows it, call by call."""
    assert gx_mode(0) == "inline"
    warm(True)
    assert gx_mode(0) == "worker"
    warm(False)
    assert gx_mode(0) == "inline"


@pytest.mark.parametrize("rows", [0, GX_WORKER_ROWS - 1, GX_WORKER_ROWS, 10 * GX_WORKER_ROWS])
@pytest.mark.parametrize("is_warm", [False, True])
@pytest.mark.parametrize("n_cores", [1, 8])
@pytest.mark.parametrize("mode", ["worker", "inline"])
def test_an_explicit_mode_is_honoured(monkeypatch, cores, warm, mode, n_cores, is_warm, rows):
    monkeypatch.setenv("GOVSHARE_GX", mode)
    cores(n_cores)
    warm(is_warm)
    assert gx_mode(rows) == mode


@pytest.mark.parametrize("value", ["", "Worker", "INLINE", "auto ", "process", "0", "true"])
def test_any_other_value_is_a_config_error_naming_the_variable(monkeypatch, cores, warm, value):
    monkeypatch.setenv("GOVSHARE_GX", value)
    with pytest.raises(ConfigError) as raised:
        gx_mode(0)
    error = raised.value
    assert isinstance(error, GovshareError)
    assert error.exit_code == 2
    assert "GOVSHARE_GX" in error.message
    assert repr(value) in error.message
    assert any("inline" in p and "worker" in p and "auto" in p for p in error.problems)


def test_a_bad_value_is_refused_whatever_the_size(monkeypatch, cores, warm):
    monkeypatch.setenv("GOVSHARE_GX", "sometimes")
    warm(True)
    for rows in (0, GX_WORKER_ROWS, 10 * GX_WORKER_ROWS):
        with pytest.raises(ConfigError, match="GOVSHARE_GX"):
            gx_mode(rows)
