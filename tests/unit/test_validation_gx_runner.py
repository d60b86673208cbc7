"""The GX suite runner: one engine per run, frames without deleted rows, nothing kept between batches.

The consistency and no-leak tests of the Validator with GX are in test_validation_engine.py, GX on
chunks and in a worker process in test_validation_gx_worker.py; these cover how the runner hands
batches to GX.
"""

from __future__ import annotations

import gc
from datetime import date

import pandas as pd
import pyarrow as pa
import pytest

from common.catalog import load_catalog
from common.errors import GovshareError
from validation import identifiers, rules
from validation.engine import Validator
from validation.gx_suite import ALL_ROWS, LIVE_ROWS, SuiteRunner, build_suite, outcomes
from validation.gx_worker import InlineGx
from validation.rules import dataset_rules, normalise

from tests.unit.test_validation_engine import ROWS, TODAY, make_batch
from tests.unit.test_validation_gx_worker import _count_runs


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def population_runner(catalog) -> SuiteRunner:
    ds = catalog.dataset("population")
    return SuiteRunner(ds, dataset_rules(ds), TODAY)


def _counts(raw: dict) -> dict[str, int]:
    return {rule_id: int(r["result"]["unexpected_count"]) for r in raw["results"]
            for rule_id in r["expectation_config"]["meta"]["rule_ids"]}


def test_suite_has_no_row_conditions_and_says_which_rows_it_judges(catalog, population_runner) -> None:
    ds = catalog.dataset("population")
    suite = build_suite(ds, dataset_rules(ds), TODAY)  # GX needs a context: the runner made one
    assert len(suite.expectations) == len(population_runner.suite.expectations)
    for expectation in suite.expectations:
        assert not expectation.configuration.kwargs.get("row_condition")
        key = any(r.key for r in dataset_rules(ds) if r.id in expectation.meta["rule_ids"])
        assert expectation.meta["rows"] == (ALL_ROWS if key else LIVE_ROWS)


def test_frames_are_the_read_columns_and_live_rows_only(catalog, population_runner) -> None:
    ds = catalog.dataset("population")
    batch = normalise(ds, make_batch(ds, ROWS["population"]()))
    frames = population_runner.frames(batch)
    assert frames[ALL_ROWS].column_names == [ds.key, "updated_at"]  # the key and the watermark rule read every row
    assert frames[ALL_ROWS].num_rows == batch.num_rows
    deleted = batch.column("is_deleted").to_pylist().count(1)
    assert deleted == 2
    assert frames[LIVE_ROWS].num_rows == batch.num_rows - deleted
    assert "is_deleted" not in frames[LIVE_ROWS].column_names
    assert "phone" not in frames[LIVE_ROWS].column_names  # no rule reads it


def test_several_batches_at_once_count_as_their_sum(catalog, population_runner) -> None:
    """Frames of several batches become one chunked table: the conditions must see all of it."""
    ds = catalog.dataset("population")
    batch = normalise(ds, make_batch(ds, ROWS["population"]()))
    one = _counts(population_runner.run_raw(batch))
    both = _counts(population_runner.run_frames([population_runner.frames(batch), population_runner.frames(batch)]))
    assert sum(one.values()) >= 4
    assert both == {rule_id: 2 * n for rule_id, n in one.items()}


def test_engine_keeps_no_frame_and_no_metric_between_batches(catalog, population_runner) -> None:
    ds = catalog.dataset("population")
    population_runner.run(normalise(ds, make_batch(ds, ROWS["population"]())))
    data = population_runner.engine.batch_manager.batch_data_cache
    assert set(data) == {f"govshare.population.{ALL_ROWS}", f"govshare.population.{LIVE_ROWS}"}
    assert all(len(d.dataframe) == 0 for d in data.values())
    assert population_runner.engine._caching is False  # no condition series, no unexpected-value lists kept


def test_no_frame_outlives_its_chunk(catalog) -> None:
    """Even with the cyclic garbage collector off, GX keeps no frame of an earlier chunk alive."""
    ds = catalog.dataset("population")
    batch = normalise(ds, make_batch(ds, ROWS["population"]() * 500))
    gx = InlineGx(ds, dataset_rules(ds), TODAY, chunk_rows=batch.num_rows)  # one GX run per batch
    calls = _count_runs(gx)
    gx.feed(batch)
    gc.disable()
    try:
        before = sum(1 for o in gc.get_objects() if isinstance(o, pd.DataFrame))
        for _ in range(5):
            gx.feed(batch)
        after = sum(1 for o in gc.get_objects() if isinstance(o, pd.DataFrame))
    finally:
        gc.enable()
    assert after <= before
    assert len(calls) == 6 and gx.rows == 6 * batch.num_rows


def test_exception_inside_a_metric_is_an_error_not_zero(catalog) -> None:
    """GX files a metric's exception under the metric's id and leaves the count out."""
    ds = catalog.dataset("population")
    raw = {"results": [{
        "success": False,
        "expectation_config": {"type": "expect_column_values_to_be_valid_gb11643_id_number",
                               "meta": {"rule_ids": ["id_number.id_number"]}},
        "result": {},
        "exception_info": {"MetricConfigurationID(...)": {"raised_exception": True, "exception_message": "x"}},
    }]}
    with pytest.raises(GovshareError) as caught:
        outcomes(ds, raw)
    assert "id_number.id_number" in str(caught.value)
    raw["results"][0]["exception_info"] = {"raised_exception": False}
    with pytest.raises(GovshareError):
        outcomes(ds, raw)  # no count at all is not a pass either


def test_checks_take_pandas_columns_backed_by_several_chunks() -> None:
    chunked = pa.chunked_array([["11010519491231002X", None], ["110105194912310021"]])
    column = pa.table({"a": chunked}).to_pandas()["a"]
    assert identifiers.as_strings(column).to_pylist() == chunked.to_pylist()
    assert list(identifiers.id_number_valid(column, TODAY)) == [True, True, False]
    assert rules.as_arrow(column).to_pylist() == chunked.to_pylist()
    assert list(rules.present(column)) == [True, False, True]


def test_gx_counts_equal_masks_over_many_batches(catalog) -> None:
    ds = catalog.dataset("e_license")
    validator = Validator(ds, TODAY)
    batch = make_batch(ds, ROWS["e_license"]())
    for _ in range(3):
        validator.check(batch)
    for rule in validator.summary().rules:
        assert rule.gx_unexpected == rule.rows_failed, rule.rule_id


def test_run_date_reaches_gx(catalog) -> None:
    """An ID born after the run's date fails in GX as in the masks (today is a kwarg, not the clock)."""
    ds = catalog.dataset("population")
    row = {"id_number": "110105202603020015", "name": "x", "sex_code": "1", "person_status": "1"}
    early = Validator(ds, date(2026, 3, 1))
    early.check(make_batch(ds, [row]))
    by_id = {r.rule_id: r for r in early.summary().rules}
    assert by_id["id_number.id_number"].gx_unexpected == by_id["id_number.id_number"].rows_failed == 1


def test_the_graph_built_once_validates_like_graph_validate(catalog) -> None:
    """SuiteRunner reuses its validation graph from the second chunk on: GX's own graph_validate on
    the same frames gives the same results, chunk after chunk, defective rows and deletes included."""
    ds = catalog.dataset("population")
    runner = SuiteRunner(ds, dataset_rules(ds), TODAY)
    rows = ROWS["population"]()
    for chunk in (rows, rows[: len(rows) // 2], rows * 3):
        frames = runner.frames(normalise(ds, make_batch(ds, chunk)))
        ours = runner.run_frames([frames])
        graph_validate = runner._graph_validate
        runner._graph_validate = lambda: runner.validator.graph_validate(  # GX's own path, this once
            configurations=runner._configurations, runtime_configuration={"result_format": {"result_format": "BASIC", "partial_unexpected_count": 0}})
        theirs = runner.run_frames([frames])
        runner._graph_validate = graph_validate
        assert outcomes(ds, ours) == outcomes(ds, theirs)
        assert [r["result"] for r in ours["results"]] == [r["result"] for r in theirs["results"]]
    assert runner._graph is not None
