"""One Great Expectations suite per dataset, built from the catalog, and a quiet runner for it.

GX is imported lazily (it takes seconds) and silenced before import: no analytics, no progress
bars, no INFO flood. Results are requested with counts only (BASIC, no partial unexpected list),
and only counts leave this module: GX would otherwise carry raw values into its results.

Deletes are judged on their key alone. Rather than a ``row_condition`` on every other
expectation (GX would filter, i.e. copy, the frame once per expectation), each expectation says
in ``meta["rows"]`` which rows it judges: ``all`` (the key's) or ``live`` (every other one), and
the runner hands GX one frame per kind and batch: the key column of every row, and the columns
the other expectations read, without the deleted rows (one filter per batch).

The runner drives GX's validator directly on a PandasExecutionEngine of its own, built once per
run, instead of going through a dataframe asset per batch: the asset path hashes every batch's
frame twice just to name it (``hash_pandas_dataframe``), builds a new validator per batch, and
left garbage in reference cycles that held Arrow memory until the cyclic collector ran (Arrow
memory grew with the batches). The engine does not cache metrics (its cache would keep the last
batch's condition series and unexpected-value lists) and drops each frame after its run.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from common.catalog import Dataset
from common.errors import InternalError
from common.schema import source_schema
from validation.rules import REQUIRED, Rule, live_rows, record_fields

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import Expectation

# Counts only: no unexpected values, no index lists, no rows.
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}

# Which rows of a batch an expectation judges (its ``meta["rows"]``).
ALL_ROWS = "all"  # the key's expectations: deletes are judged on their key
LIVE_ROWS = "live"  # every other expectation: rows with is_deleted != 1

# Expectation type per check, for reports (built-ins where GX has one).
EXPECTATION_TYPES: dict[str, str] = {
    "not_blank": "expect_column_values_to_not_be_blank",
    "id_number": "expect_column_values_to_be_valid_gb11643_id_number",
    "uscc": "expect_column_values_to_be_valid_gb32100_uscc",
    "license_id": "expect_column_values_to_be_valid_gb36904_license_id",
    "issuer_code": "expect_column_values_to_be_valid_issuer_code",
    "code_list": "expect_column_values_to_be_in_set",
    "division": "expect_column_values_to_be_valid_gb2260_division",
    "not_future": "expect_column_values_to_not_be_in_future",
    "not_negative": "expect_column_values_to_be_between",
    "birth_date_matches_id": "expect_column_pair_values_birth_date_to_match_gb11643_id",
    "sex_matches_id": "expect_column_pair_values_sex_code_to_match_gb11643_id",
    "id_by_type": "expect_column_pair_values_id_to_follow_id_type",
    "valid_range": "expect_column_pair_values_a_to_be_greater_than_b",
    "watermark": "expect_column_values_to_not_be_null",  # NULL: the connector found no usable change time
}


def quiet_gx() -> None:
    """Before GX is imported: no usage statistics, no tqdm bars. Warnings only in GX's logs."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def _quiet_gx_loggers() -> None:
    """After import: some GX modules set their own logger to INFO; lift them to WARNING."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(logger, logging.Logger):
            if logger.level and logger.level < logging.WARNING:
                logger.setLevel(logging.WARNING)


def expectation_type(rule: Rule, dataset: Dataset) -> str:
    if rule.check == REQUIRED:
        string = dataset.field(rule.fields[0]).type == "string"
        return EXPECTATION_TYPES["not_blank"] if string else "expect_column_values_to_not_be_null"
    if rule.check == "code_list" and rule.key:
        return "expect_column_values_to_be_in_govshare_code_list"
    return EXPECTATION_TYPES[rule.check]


def build_suite(dataset: Dataset, rules: tuple[Rule, ...], today: date) -> ExpectationSuite:
    """The dataset's suite: one expectation per rule (or per group of rules asking the same), rule ids in ``meta``."""
    quiet_gx()
    import great_expectations as gx

    # Rules that ask GX the same question (``required`` and ``not_blank`` on one text field) share
    # one expectation: GX keeps only one of two equal expectations in a suite.
    shared: dict[str, Expectation] = {}
    for rule in rules:
        expectation = _expectation(rule, dataset, today)
        same = json.dumps([expectation.expectation_type, expectation.configuration.kwargs, expectation.meta["rows"]],
                          sort_keys=True, default=str)
        if same in shared:
            shared[same].meta["rule_ids"].append(rule.id)
        else:
            shared[same] = expectation
    suite = gx.ExpectationSuite(name=f"govshare.{dataset.id}")
    for expectation in shared.values():
        suite.add_expectation(expectation)
    return suite


def _expectation(rule: Rule, dataset: Dataset, today: date) -> Expectation:
    import great_expectations.expectations as gxe

    from validation import codes
    from validation import gx_expectations as custom

    # Deletes are judged on their key alone: the runner gives "live" expectations no deleted rows.
    common: dict[str, Any] = {"meta": {"rule_ids": [rule.id], "rows": ALL_ROWS if rule.key else LIVE_ROWS}}
    column = rule.fields[0]
    kind = expectation_type(rule, dataset)
    if kind == "expect_column_values_to_not_be_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=column, **common)
    if rule.check in ("not_blank", REQUIRED):
        return custom.ExpectColumnValuesToNotBeBlank(column=column, **common)
    if rule.check == "code_list" and not rule.key:
        allowed = list(codes.code_list(rule.param("list") or ""))
        return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=allowed, **common)
    if rule.check == "not_negative" and not rule.key:
        return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, **common)
    if rule.check == "valid_range":
        start, end = record_fields(rule)
        return gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=end, column_B=start, or_equal=True, ignore_row_if="either_value_is_missing", **common
        )
    return _custom(rule, kind, today, common)


def _custom(rule: Rule, kind: str, today: date, common: dict[str, Any]) -> Expectation:
    from great_expectations.expectations.registry import get_expectation_impl

    from validation import gx_expectations  # noqa: F401  (registers the custom expectations)

    cls = get_expectation_impl(kind)
    if rule.check in ("birth_date_matches_id", "sex_matches_id", "id_by_type"):
        first, second = record_fields(rule)
        extra = {"today": today.isoformat()} if rule.check == "id_by_type" else {}
        return cls(column_A=first, column_B=second, **extra, **common)
    extra: dict[str, Any] = {"column": rule.fields[0], "null_fails": rule.key}
    if rule.check in ("id_number", "not_future"):
        extra["today"] = today.isoformat()
    if rule.check == "license_id":
        extra["variant"] = rule.param("variant") or ""
    if rule.check == "code_list":
        extra["code_list"] = rule.param("list")
    return cls(**extra, **common)


@dataclass(frozen=True)
class ExpectationOutcome:
    """What the Validator keeps of one GX expectation result: counts, never values."""

    rule_id: str
    expectation_type: str
    success: bool
    unexpected_count: int


class SuiteRunner:
    """The dataset's suite on a GX validator and pandas execution engine, created once, run per batch."""

    def __init__(self, dataset: Dataset, rules: tuple[Rule, ...], today: date) -> None:
        quiet_gx()
        import great_expectations as gx
        from great_expectations.execution_engine import PandasExecutionEngine
        from great_expectations.validator.validator import Validator as GxValidator

        _quiet_gx_loggers()
        self.dataset = dataset
        self.context = gx.get_context(mode="ephemeral")
        self.context.enable_analytics(False)
        self.context.variables.progress_bars = {"globally": False, "metric_calculations": False}
        self.suite = self.context.suites.add(build_suite(dataset, rules, today))
        self.engine = PandasExecutionEngine(caching=False)
        self.validator = GxValidator(execution_engine=self.engine, data_context=self.context)
        configurations = self.validator.process_expectations_for_validation(self.suite.expectation_configurations)
        # One validation graph per run of the whole suite; each expectation names the frame it
        # judges by its batch id. The suite itself is left as the catalog made it.
        self._configurations: list[Any] = []
        self._graph: tuple[Any, Any, list[Any]] | None = None  # built at the first run (_graph_validate)
        self._columns: dict[str, list[str]] = {}
        for configuration in configurations:
            configuration = copy.deepcopy(configuration)
            configuration.kwargs["batch_id"] = self._batch_id(configuration.meta["rows"])
            self._configurations.append(configuration)
        for rows in (ALL_ROWS, LIVE_ROWS):
            read = {c.kwargs[k] for c in self._configurations if c.meta["rows"] == rows
                    for k in ("column", "column_A", "column_B") if k in c.kwargs}
            if read:
                self._columns[rows] = [n for n in source_schema(dataset).names if n in read]

    def _batch_id(self, rows: str) -> str:
        return f"govshare.{self.dataset.id}.{rows}"

    def frames(self, batch: pa.RecordBatch, live: np.ndarray | None = None) -> dict[str, pa.Table]:
        """What GX judges of a normalised batch: the columns each kind of expectation reads, of its rows.

        ``live`` (the batch's rows that are not deletes) is computed when not given. The tables
        share the batch's buffers; frames of several batches can be validated at once (run_frames).
        """
        import pyarrow as pa

        if live is None:
            live = live_rows(batch)
        every_row_live = bool(live.all())
        tables: dict[str, pa.Table] = {}
        for rows, columns in self._columns.items():
            table = pa.Table.from_batches([batch.select(columns)])
            tables[rows] = table if rows == ALL_ROWS or every_row_live else table.filter(pa.array(live))
        return tables

    def run_frames(self, frames: list[dict[str, pa.Table]]) -> dict[str, Any]:
        """Validate the suite once over the frames of one or more batches; GX's result as a JSON-ready dict."""
        import pyarrow as pa
        from great_expectations import __version__ as gx_version
        from great_expectations.core import ExpectationSuiteValidationResult
        from great_expectations.execution_engine.pandas_batch_data import PandasBatchData
        from great_expectations.validator.validator import calc_validation_statistics

        try:
            for rows in self._columns:
                table = frames[0][rows] if len(frames) == 1 else pa.concat_tables([f[rows] for f in frames])
                table = table.combine_chunks()  # one Arrow chunk per column: what the conditions expect
                self.engine.load_batch_data(self._batch_id(rows), PandasBatchData(self.engine, table.to_pandas()))
                del table
            results = self._graph_validate()
        finally:
            for rows in self._columns:  # hold no frame between runs
                self.engine.load_batch_data(self._batch_id(rows), PandasBatchData(self.engine, _empty_frame()))
        statistics = calc_validation_statistics(results)
        return ExpectationSuiteValidationResult(
            results=results,
            success=statistics.success,
            suite_name=self.suite.name,
            statistics={
                "evaluated_expectations": statistics.evaluated_expectations,
                "successful_expectations": statistics.successful_expectations,
                "unsuccessful_expectations": statistics.unsuccessful_expectations,
                "success_percent": statistics.success_percent,
            },
            meta={"great_expectations_version": gx_version},
        ).to_json_dict()

    def _graph_validate(self) -> list[Any]:
        """GX's ``Validator.graph_validate`` with the validation graph built once per runner.

        The graph (which metrics each expectation needs, on which batch id) depends on the suite
        only, not on the rows, yet graph_validate rebuilds it on every call: ~0.1 s, most of a
        small chunk's run. This does what graph_validate does, step for step (GX 1.24, pinned in
        constraints.txt), on the graph of the first call. When building it already failed for an
        expectation, every call takes graph_validate itself.
        """
        import traceback

        validator = self.validator
        runtime = {"result_format": dict(RESULT_FORMAT)}
        if self._graph is None:
            graphs, failed, processed = validator._generate_metric_dependency_subgraphs_for_each_expectation_configuration(
                expectation_configurations=self._configurations, processed_configurations=[],
                catch_exceptions=True, runtime_configuration=runtime)
            if failed:
                return validator.graph_validate(configurations=self._configurations, runtime_configuration=runtime)
            suite_graph = validator._generate_suite_level_graph_from_expectation_level_sub_graphs(
                expectation_validation_graphs=graphs)
            self._graph = (graphs, suite_graph, processed)
        graphs, suite_graph, processed = self._graph
        try:
            metrics, results, cleared = validator._resolve_suite_level_graph_and_process_metric_evaluation_errors(
                graph=suite_graph, runtime_configuration=runtime, expectation_validation_graphs=graphs, evrs=[],
                processed_configurations=list(processed), show_progress_bars=False)
        except Exception as err:  # noqa: BLE001 - as graph_validate: every expectation fails with it
            return validator._catch_exceptions_in_failing_expectation_validations(
                exception_traceback=traceback.format_exc(), exception=err,
                failing_expectation_configurations=list(processed), evrs=[])
        for configuration in cleared:
            try:
                results.append(configuration.to_domain_obj().metrics_validate(
                    metrics=metrics, execution_engine=validator._execution_engine,
                    runtime_configuration=copy.deepcopy(runtime)))
            except Exception as err:  # noqa: BLE001 - as graph_validate: this expectation fails with it
                results = validator._catch_exceptions_in_failing_expectation_validations(
                    exception_traceback=traceback.format_exc(), exception=err,
                    failing_expectation_configurations=[configuration], evrs=results)
        return results

    def run_raw(self, batch: pa.RecordBatch, live: np.ndarray | None = None) -> dict[str, Any]:
        """GX's own result for one normalised batch (for tests and audits of what GX would carry)."""
        return self.run_frames([self.frames(batch, live)])

    def run(self, batch: pa.RecordBatch, live: np.ndarray | None = None) -> tuple[ExpectationOutcome, ...]:
        return outcomes(self.dataset, self.run_raw(batch, live))


def _empty_frame() -> Any:
    import pandas as pd

    return pd.DataFrame()


def outcomes(dataset: Dataset, raw: dict[str, Any]) -> tuple[ExpectationOutcome, ...]:
    """Counts per rule from a GX result; an expectation that raised is an error, not a pass."""
    found: list[ExpectationOutcome] = []
    for result in raw["results"]:
        config = result["expectation_config"]
        rule_ids = config["meta"]["rule_ids"]
        if _raised(result.get("exception_info")) or "unexpected_count" not in (result.get("result") or {}):
            # The exception text may quote row values: name the rule only.
            raise InternalError(
                f"Great Expectations could not evaluate rule {', '.join(rule_ids)} on a batch of dataset {dataset.id}",
                problems=["run the validation unit tests; this is a defect in validation, not in the data"],
            )
        found += [
            ExpectationOutcome(
                rule_id=rule_id,
                expectation_type=config["type"],
                success=bool(result["success"]),
                unexpected_count=int(result["result"].get("unexpected_count") or 0),
            )
            for rule_id in rule_ids
        ]
    return tuple(found)


def _raised(info: Any) -> bool:
    """Whether GX recorded an exception: flat, or per metric ({metric id: {"raised_exception": ...}})."""
    if not isinstance(info, dict):
        return False
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())
