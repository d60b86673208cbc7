"""One Great Expectations suite per dataset, built from the catalog, and a quiet runner for it.

GX is imported lazily (it takes seconds) and silenced before import: no analytics, no progress
bars, no INFO flood. Results are requested with counts only (BASIC, no partial unexpected list),
and only counts leave this module: GX would otherwise carry raw values into its results.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from govshare.catalog import Dataset
from govshare.errors import GovshareError
from govshare.schema import IS_DELETED
from validation.rules import REQUIRED, Rule, record_fields

if TYPE_CHECKING:
    import pyarrow as pa
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import Expectation

# Counts only: no unexpected values, no index lists, no rows.
RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}

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
        same = json.dumps([expectation.expectation_type, expectation.configuration.kwargs], sort_keys=True, default=str)
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
    from great_expectations.expectations.row_conditions import Column

    from validation import codes, gx_expectations as custom

    common: dict[str, Any] = {"meta": {"rule_ids": [rule.id]}}
    if not rule.key:
        common["row_condition"] = Column(IS_DELETED) != 1  # deletes are judged on their key alone
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
    """An ephemeral GX context with a pandas dataframe asset, created once, run per batch."""

    def __init__(self, dataset: Dataset, rules: tuple[Rule, ...], today: date) -> None:
        quiet_gx()
        import great_expectations as gx

        _quiet_gx_loggers()
        self.dataset = dataset
        self.context = gx.get_context(mode="ephemeral")
        self.context.enable_analytics(False)
        self.context.variables.progress_bars = {"globally": False, "metric_calculations": False}
        self.suite = self.context.suites.add(build_suite(dataset, rules, today))
        source = self.context.data_sources.add_pandas(name=f"govshare_{dataset.id}")
        asset = source.add_dataframe_asset(name=dataset.id)
        self.batch_definition = asset.add_batch_definition_whole_dataframe(name="batch")

    def run_raw(self, batch: pa.RecordBatch) -> dict[str, Any]:
        """GX's own result as a JSON-ready dict (for tests and audits of what GX would carry)."""
        gx_batch = self.batch_definition.get_batch(batch_parameters={"dataframe": batch.to_pandas()})
        return gx_batch.validate(self.suite, result_format=RESULT_FORMAT).to_json_dict()

    def run(self, batch: pa.RecordBatch) -> tuple[ExpectationOutcome, ...]:
        return outcomes(self.dataset, self.run_raw(batch))


def outcomes(dataset: Dataset, raw: dict[str, Any]) -> tuple[ExpectationOutcome, ...]:
    """Counts per rule from a GX result; an expectation that raised is an error, not a pass."""
    found: list[ExpectationOutcome] = []
    for result in raw["results"]:
        config = result["expectation_config"]
        rule_ids = config["meta"]["rule_ids"]
        if result.get("exception_info", {}).get("raised_exception"):
            # The exception text may quote row values: name the rule only.
            raise GovshareError(
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
