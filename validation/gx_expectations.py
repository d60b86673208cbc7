"""Custom Great Expectations expectations for the national identifiers and govshare's record rules.

Imported only by validation.gx_suite, after the GX environment has been quietened: importing
this module imports great_expectations and registers the expectations and their metrics.

Every condition calls the same vectorised function the Validator uses for quarantine
(validation.rules, validation.identifiers), so GX's unexpected counts equal the quarantine counts.
The metrics see nulls (``filter_column_isnull = False``) and decide about them themselves, as the
Validator does: nulls pass a check, except on the key (``null_fails``) and for not-blank.
"""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar, Literal

import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation, ColumnPairMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    ColumnPairMapMetricProvider,
    column_condition_partial,
    column_pair_condition_partial,
)

from validation import rules

# -- column checks ----------------------------------------------------------------------------------


def _column(check: str, column: pd.Series, kwargs: dict[str, Any]) -> pd.Series:
    today = date.fromisoformat(kwargs.get("today") or "1970-01-01")
    params = {"variant": kwargs["variant"]} if kwargs.get("variant") else {}
    if check == "code_list":
        params = {"list": kwargs["code_list"]}
    judge = rules.key_passes if kwargs.get("null_fails") else rules.field_passes
    return pd.Series(judge(check, params, column, today), index=column.index)


class _GovshareColumnMetric(ColumnMapMetricProvider):
    filter_column_isnull = False
    condition_value_keys: ClassVar[tuple[str, ...]] = ("null_fails",)


class ColumnValuesNotBlank(_GovshareColumnMetric):
    condition_metric_name = "column_values.govshare_not_blank"
    condition_value_keys = ()

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("not_blank", column, kwargs)


class ColumnValuesGb11643IdNumber(_GovshareColumnMetric):
    condition_metric_name = "column_values.govshare_gb11643_id_number"
    condition_value_keys = ("null_fails", "today")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("id_number", column, kwargs)


class ColumnValuesGb32100Uscc(_GovshareColumnMetric):
    condition_metric_name = "column_values.govshare_gb32100_uscc"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("uscc", column, kwargs)


class ColumnValuesGb36904LicenseId(_GovshareColumnMetric):
    condition_metric_name = "column_values.govshare_gb36904_license_id"
    condition_value_keys = ("null_fails", "variant")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("license_id", column, kwargs)


class ColumnValuesIssuerCode(_GovshareColumnMetric):
    condition_metric_name = "column_values.govshare_issuer_code"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("issuer_code", column, kwargs)


class ColumnValuesGb2260Division(_GovshareColumnMetric):
    condition_metric_name = "column_values.govshare_gb2260_division"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("division", column, kwargs)


class ColumnValuesNotInFuture(_GovshareColumnMetric):
    condition_metric_name = "column_values.govshare_not_in_future"
    condition_value_keys = ("null_fails", "today")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("not_future", column, kwargs)


class ColumnValuesInGovshareCodeList(_GovshareColumnMetric):
    """Only used for a key with a code list (nulls fail); other code lists use GX's in_set."""

    condition_metric_name = "column_values.govshare_in_code_list"
    condition_value_keys = ("null_fails", "code_list")

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column: pd.Series, **kwargs: Any) -> pd.Series:
        return _column("code_list", column, kwargs)


class _GovshareColumnExpectation(ColumnMapExpectation):
    null_fails: bool = False
    success_keys = ("mostly", "null_fails")


class ExpectColumnValuesToNotBeBlank(_GovshareColumnExpectation):
    """Present and not only white space (nulls fail)."""

    map_metric = "column_values.govshare_not_blank"
    success_keys = ("mostly",)


class ExpectColumnValuesToBeValidGb11643IdNumber(_GovshareColumnExpectation):
    """GB 11643 公民身份号码: 18 chars, real birth date not after ``today``, MOD 11-2 check."""

    today: str
    map_metric = "column_values.govshare_gb11643_id_number"
    success_keys = ("mostly", "null_fails", "today")


class ExpectColumnValuesToBeValidGb32100Uscc(_GovshareColumnExpectation):
    """GB 32100 统一社会信用代码: alphabet, authority, GB 11714 check, check character."""

    map_metric = "column_values.govshare_gb32100_uscc"


class ExpectColumnValuesToBeValidGb36904LicenseId(_GovshareColumnExpectation):
    """GB/T 36904 证照标识: prefix, five parts, ISO 7064 MOD 37,36 check character."""

    variant: str = ""
    map_metric = "column_values.govshare_gb36904_license_id"
    success_keys = ("mostly", "null_fails", "variant")


class ExpectColumnValuesToBeValidIssuerCode(_GovshareColumnExpectation):
    """颁发机构代码: a valid USCC, or a 6-digit division code."""

    map_metric = "column_values.govshare_issuer_code"


class ExpectColumnValuesToBeValidGb2260Division(_GovshareColumnExpectation):
    """GB/T 2260 行政区划代码 listed at some time (python-stdnum's history)."""

    map_metric = "column_values.govshare_gb2260_division"


class ExpectColumnValuesToNotBeInFuture(_GovshareColumnExpectation):
    """A date not after ``today`` (the run's date, never the clock)."""

    today: str
    map_metric = "column_values.govshare_not_in_future"
    success_keys = ("mostly", "null_fails", "today")


class ExpectColumnValuesToBeInGovshareCodeList(_GovshareColumnExpectation):
    """A value from a named govshare code list."""

    code_list: str
    map_metric = "column_values.govshare_in_code_list"
    success_keys = ("mostly", "null_fails", "code_list")


# -- record checks over two columns -----------------------------------------------------------------


def _pair(check: str, first: pd.Series, second: pd.Series, kwargs: dict[str, Any]) -> pd.Series:
    today = date.fromisoformat(kwargs.get("today") or "1970-01-01")
    return pd.Series(rules.record_passes(check, first, second, today), index=first.index)


class ColumnPairIdBirthDate(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.govshare_birth_date_matches_id"

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A: pd.Series, column_B: pd.Series, **kwargs: Any) -> pd.Series:
        return _pair("birth_date_matches_id", column_A, column_B, kwargs)


class ColumnPairIdSex(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.govshare_sex_matches_id"

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A: pd.Series, column_B: pd.Series, **kwargs: Any) -> pd.Series:
        return _pair("sex_matches_id", column_A, column_B, kwargs)


class ColumnPairIdByType(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.govshare_id_by_type"
    condition_value_keys = ("today",)

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A: pd.Series, column_B: pd.Series, **kwargs: Any) -> pd.Series:
        return _pair("id_by_type", column_A, column_B, kwargs)


class _GovsharePairExpectation(ColumnPairMapExpectation):
    # The conditions decide about missing values themselves, as the Validator does.
    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = "neither"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly")


class ExpectColumnPairValuesBirthDateToMatchGb11643Id(_GovsharePairExpectation):
    """column_B (birth date) equals the date inside column_A (a GB 11643 ID number)."""

    map_metric = "column_pair_values.govshare_birth_date_matches_id"


class ExpectColumnPairValuesSexCodeToMatchGb11643Id(_GovsharePairExpectation):
    """column_B (GB/T 2261.1 sex code 1/2) agrees with the sex digit of column_A (an ID number)."""

    map_metric = "column_pair_values.govshare_sex_matches_id"


class ExpectColumnPairValuesIdToFollowIdType(_GovsharePairExpectation):
    """column_B follows the rules of its type in column_A: 111 GB 11643, 001 GB 32100."""

    today: str
    map_metric = "column_pair_values.govshare_id_by_type"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly", "today")
