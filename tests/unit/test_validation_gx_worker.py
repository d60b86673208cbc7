"""GX on chunks of many batches: in this process (InlineGx) and in a child process (GxWorker).

A child that lives long enough imports GX (~3 s), once: later workers of this process reuse it
from the pool. The worker tests run in an order that keeps one warm child for the next; only the
first, the failing child's and the parent-exit test pay the import (any test alone pays at most one).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from common.catalog import load_catalog
from common.errors import GovshareError
from common.schema import IS_DELETED
from tests.unit.test_validation_engine import (
    RAW_VALUES,
    ROWS,
    TODAY,
    legal_entity_rows,
    make_batch,
    population_rows,
)
from validation.engine import Validator, gx_columns
from validation.gx_suite import ALL_ROWS, LIVE_ROWS, SuiteRunner
from validation import gx_worker
from validation.gx_worker import GxWorker, InlineGx, prestart, stop_idle_workers, warm_worker_available
from validation.rules import dataset_rules, normalise


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def population(catalog):
    return catalog.dataset("population")


def _batches(ds) -> list[pa.RecordBatch]:
    """Dirty batches with deletes, of several sizes."""
    rows = population_rows()
    return [make_batch(ds, rows), make_batch(ds, rows[:4]), make_batch(ds, rows * 3), make_batch(ds, rows[9:])]


def _gx_batch(ds, batch: pa.RecordBatch) -> pa.RecordBatch:
    """What the Validator feeds GX: the normalised batch, the columns rules read and is_deleted."""
    return normalise(ds, batch).select(gx_columns(batch.schema, dataset_rules(ds)))


def _quarantine_totals(ds, batches: list[pa.RecordBatch]) -> dict[str, tuple[int, bool]]:
    validator = Validator(ds, TODAY, gx=False)
    for batch in batches:
        validator.check(batch)
    return {r.rule_id: (r.rows_failed, r.rows_failed == 0) for r in validator.summary().rules}


def _count_runs(gx: InlineGx) -> list[int]:
    """Wrap the runner's run_frames: the rows of every call (the key's frame has them all)."""
    calls: list[int] = []
    run_frames = gx.runner.run_frames

    def counted(frames):
        calls.append(sum(f[ALL_ROWS].num_rows for f in frames))
        return run_frames(frames)

    gx.runner.run_frames = counted
    return calls


def _no_feeder_left() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("gx-feeder-")]


def _gone(pid: int) -> bool:
    """No such process, not even a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _warm_child(ds) -> int:
    """The pid of a warm idle child, after a session of 12 rows if this process had none (~3 s)."""
    if not warm_worker_available():
        with GxWorker(ds, dataset_rules(ds), TODAY) as worker:
            worker.feed(_gx_batch(ds, make_batch(ds, population_rows())))
            worker.finish()
    assert warm_worker_available()
    with GxWorker(ds, dataset_rules(ds), TODAY) as worker:  # taken out of the pool and given back
        assert worker.warm
        worker.finish()
        return worker._proc.pid


# -- in this process ---------------------------------------------------------------------------------


def test_inline_totals_equal_the_quarantine_over_batches_with_deletes_and_defects(population) -> None:
    batches = _batches(population)
    assert sum(b.column(IS_DELETED).to_pylist().count(1) for b in batches) >= 4
    expected = _quarantine_totals(population, batches)
    assert sum(n for n, _ in expected.values()) >= 20
    gx = InlineGx(population, dataset_rules(population), TODAY)
    calls = _count_runs(gx)
    for batch in batches:
        gx.feed(_gx_batch(population, batch))
    assert calls == []  # fewer rows than a chunk: nothing runs before finish()
    assert gx.finish() == expected
    assert calls == [sum(b.num_rows for b in batches)]


def test_chunks_hold_at_most_chunk_rows_and_sum_to_the_whole(population) -> None:
    batches = _batches(population)
    rows = sum(b.num_rows for b in batches)  # 12 + 4 + 36 + 3
    gx = InlineGx(population, dataset_rules(population), TODAY, chunk_rows=5)
    calls = _count_runs(gx)
    for batch in batches:
        gx.feed(_gx_batch(population, batch))
    totals = gx.finish()
    assert calls == [5] * (rows // 5) + ([rows % 5] if rows % 5 else [])
    assert totals == _quarantine_totals(population, batches)
    assert gx.finish() == totals and len(calls) == -(-rows // 5)  # finish() again runs nothing
    with pytest.raises(GovshareError):
        gx.feed(_gx_batch(population, batches[0]))


@pytest.mark.parametrize("dataset_id", sorted(ROWS))
def test_the_validator_hands_gx_the_columns_its_suite_reads(catalog, dataset_id: str) -> None:
    ds = catalog.dataset(dataset_id)
    runner = SuiteRunner(ds, dataset_rules(ds), TODAY)
    read = {name for rows in (ALL_ROWS, LIVE_ROWS) for name in runner._columns.get(rows, [])}
    columns = Validator(ds, TODAY, gx=False).gx_columns
    assert set(columns) == read | {IS_DELETED}
    assert runner.frames(normalise(ds, make_batch(ds, ROWS[dataset_id]())).select(columns))  # enough for GX


def test_a_mismatch_is_logged_once_with_rule_ids_and_counts_only(population, caplog, monkeypatch) -> None:
    validator = Validator(population, TODAY)
    validator.check(make_batch(population, population_rows()))
    finish = validator._gx.finish

    def off_by_one():
        totals = finish()
        unexpected, success = totals["sex_matches_id"]
        return {**totals, "sex_matches_id": (unexpected + 1, success)}

    monkeypatch.setattr(validator._gx, "finish", off_by_one)
    with caplog.at_level(logging.WARNING, logger="validation.engine"):
        first, second = validator.summary(), validator.summary()
    assert [r.getMessage() for r in caplog.records] == [
        "dataset population rule sex_matches_id: GX counted 2 failures, quarantine 1"
    ]
    assert first == second
    assert {r.rule_id: r.gx_unexpected for r in first.rules}["sex_matches_id"] == 2


# -- in a worker process -----------------------------------------------------------------------------


def test_worker_counts_like_inline_from_another_cwd_and_says_only_counts(
    population, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop_idle_workers()  # a cold child: this test pays the import
    monkeypatch.chdir(tmp_path)  # the child must find the project whatever the parent's cwd
    batches = _batches(population)
    with Validator(population, TODAY, gx="worker") as worker, Validator(population, TODAY, gx="inline") as inline:
        for batch in batches:
            assert worker.check(batch) == inline.check(batch)
        assert worker.summary() == inline.summary()
        assert worker.summary().to_json() == inline.summary().to_json()
        gx = worker._gx
    assert isinstance(gx, GxWorker)
    assert {r.rule_id: (r.gx_unexpected, r.gx_success) for r in worker.summary().rules} == _quarantine_totals(
        population, batches)
    assert gx.rows == sum(b.num_rows for b in batches)
    assert not gx.warm and worker.gx_seconds > 0 and gx.import_seconds > 0.5
    assert gx._proc.poll() is None and warm_worker_available() and _no_feeder_left()  # idle in the pool
    text = gx.output.decode()
    assert text.count("\n") == 1 and set(json.loads(text)) == {"ok", "outcomes", "rows", "seconds", "import_seconds", "peak_rss_kib"}
    assert gx.peak_rss_kib and gx.peak_rss_kib > 0
    present = [v for v in RAW_VALUES if any(v in str(value) for row in population_rows() for value in row.values())]
    assert present
    for value in present:
        assert value not in text


def test_sessions_in_a_row_run_on_one_warm_child(catalog, population) -> None:
    entity = catalog.dataset("legal_entity")
    runs = [(population, _batches(population)), (entity, [make_batch(entity, legal_entity_rows())] * 3)]
    workers = []
    for ds, batches in runs:
        with Validator(ds, TODAY, gx="worker") as validator:
            for batch in batches:
                validator.check(batch)
            summary = validator.summary()
        assert {r.rule_id: (r.gx_unexpected, r.gx_success) for r in summary.rules} == _quarantine_totals(ds, batches)
        assert validator._gx.rows == sum(b.num_rows for b in batches)
        workers.append(validator._gx)
    first, second = workers
    assert first.warm or first.import_seconds > 0.5  # warm when an earlier test left a child idle
    assert second.warm and second.import_seconds == 0 and second._proc.pid == first._proc.pid
    assert json.loads(second.output)["rows"] == 3 * len(legal_entity_rows())  # its own line only
    assert second.output.count(b"\n") == 1
    assert second._proc.poll() is None and warm_worker_available() and _no_feeder_left()


def test_without_batches_a_warm_child_goes_back_and_a_cold_one_is_stopped(population) -> None:
    pid = _warm_child(population)
    with Validator(population, TODAY, gx="worker") as warm, Validator(population, TODAY, gx="worker") as cold:
        assert warm._gx.warm and warm._gx._proc.pid == pid
        assert not cold._gx.warm  # the pool held one child: this one was started now
        assert {r.gx_unexpected for r in cold.summary().rules} == {None}
        assert cold._gx._proc.returncode is not None  # its import was not waited for
        summary = warm.summary()
    assert summary.batches == 0 and {r.gx_unexpected for r in summary.rules} == {None}
    assert warm._gx._proc.poll() is None and warm_worker_available() and _no_feeder_left()


def test_a_failing_child_names_the_dataset_and_stage_but_no_value_and_is_not_reused(population) -> None:
    """birth_date as text: the cast fails in GX with a message quoting an ID number."""
    batch = _gx_batch(population, make_batch(population, population_rows()))
    at = batch.schema.get_field_index("birth_date")
    bad = batch.set_column(at, pa.field("birth_date", pa.string()), batch.column("id_number"))
    runner = SuiteRunner(population, dataset_rules(population), TODAY)
    raw = json.dumps(runner.run_frames([runner.frames(bad)]), default=str)
    ids = [v for v in bad.column("id_number").to_pylist() if v]
    assert any(v in raw for v in ids), "GX's own result must quote a value here, or this test proves nothing"
    pid = _warm_child(population)
    worker = GxWorker(population, dataset_rules(population), TODAY)
    try:
        assert worker.warm and worker._proc.pid == pid
        worker.feed(bad)
        with pytest.raises(GovshareError) as caught:
            worker.finish()
    finally:
        worker.close()
    said = " ".join(caught.value.lines()) + worker.output.decode()
    assert "population" in said and "InternalError in gx run" in said and "exit code 1" in said
    for value in [*ids, *RAW_VALUES]:
        assert value not in said
    with pytest.raises(GovshareError):
        worker.finish()  # the same failure again, not a hang
    assert worker._proc.returncode == 1 and _gone(pid) and not warm_worker_available() and _no_feeder_left()
    with GxWorker(population, dataset_rules(population), TODAY) as fresh:  # a new child, which works
        assert not fresh.warm and fresh._proc.pid != pid
        fresh.feed(batch)
        assert fresh.finish() == _quarantine_totals(population, [make_batch(population, population_rows())])
    assert warm_worker_available()


def test_a_worker_closed_before_finish_is_never_reused(population) -> None:
    pid = _warm_child(population)
    worker = GxWorker(population, dataset_rules(population), TODAY)
    assert worker._proc.pid == pid
    worker.feed(_gx_batch(population, make_batch(population, population_rows())))
    worker.close()
    worker.close()
    assert worker._proc.returncode is not None and _gone(pid) and not warm_worker_available()
    with pytest.raises(GovshareError, match="closed before its counts were read"):
        worker.feed(_gx_batch(population, make_batch(population, population_rows())))
    with GxWorker(population, dataset_rules(population), TODAY) as fresh:
        assert not fresh.warm and fresh._proc.pid != pid
    assert fresh._proc.returncode is not None and not warm_worker_available()  # closed unfinished: killed


def test_a_killed_child_is_an_error_at_the_latest_at_finish_not_a_hang(population) -> None:
    big = _gx_batch(population, make_batch(population, population_rows() * 2000))  # fills pipe and queue
    worker = GxWorker(population, dataset_rules(population), TODAY, queue_batches=2)
    try:
        worker._proc.kill()
        with pytest.raises(GovshareError) as caught:
            for _ in range(20):
                worker.feed(big)
            worker.finish()
    finally:
        worker.close()
    message = " ".join(caught.value.lines())
    assert "population" in message and "killed by signal 9" in message
    assert "11010519491231002X" not in message
    assert worker._proc.returncode == -9 and _no_feeder_left() and not warm_worker_available()


def test_close_stops_a_running_worker(population) -> None:
    validator = Validator(population, TODAY, gx="worker")
    validator.check(make_batch(population, population_rows()))
    proc = validator._gx._proc
    assert proc.poll() is None  # importing GX, or running it
    validator.close()
    validator.close()
    assert proc.returncode is not None and proc.stdin.closed and proc.stdout.closed  # reaped: no zombie
    assert _no_feeder_left() and not warm_worker_available()
    with pytest.raises(GovshareError) as caught:
        validator.summary()
    assert "closed before its counts were read" in str(caught.value)


def test_an_idle_child_exits_with_the_interpreter_that_started_it() -> None:
    parent = """
from common.catalog import load_catalog
from validation.engine import Validator
from validation.gx_worker import warm_worker_available
from tests.unit.test_validation_engine import TODAY, make_batch, population_rows
ds = load_catalog().dataset("population")
with Validator(ds, TODAY, gx="worker") as validator:
    validator.check(make_batch(ds, population_rows()))
    validator.summary()
print(validator._gx._proc.pid, warm_worker_available(), flush=True)
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", parent], check=False, cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr[-2000:]
    pid, warm = done.stdout.split()
    assert warm == "True"  # idle in its parent's pool when the parent exited
    deadline = time.monotonic() + 5
    while not _gone(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(int(pid))  # exited and reaped: neither an orphan nor a zombie


def test_a_prestarted_child_imports_before_its_first_session_and_serves_it(population) -> None:
    stop_idle_workers()
    assert prestart() and warm_worker_available()
    time.sleep(0.5)  # the child imports GX now, with no header yet
    batches = _batches(population)
    with Validator(population, TODAY, gx="worker") as worker:
        gx = worker._gx
        assert gx.warm  # taken from the pool
        for batch in batches:
            worker.check(batch)
        summary = worker.summary()
    assert {r.rule_id: (r.gx_unexpected, r.gx_success) for r in summary.rules} == _quarantine_totals(population, batches)
    assert gx.import_seconds > 0.5  # its import, paid before the session, is this session's
    assert prestart() and [p.pid for p in gx_worker._pool.idle] == [gx._proc.pid]  # back, and no second child
