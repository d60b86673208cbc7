"""The rules a dataset's catalog entry implies, and their row masks.

A rule is one check applied to one field (``"{field}.{check}"``), a required field
(``"{field}.required"``) or one record check (``"{check}"``, ``"{check}#2"`` when repeated), and on
every dataset ``updated_at.watermark``: the row's change time is a usable watermark (the
connector yields updated_at NULL where it is unreadable or beyond the run's cap, see
connectors.base.WATERMARK_FLOOR). Rule ids are stable: they go into quarantine rows and reports.

Every mask function returns *passes* (True = the row keeps the rule) as a numpy bool array and
is shared with the Great Expectations conditions in validation.gx_expectations, so both count
the same rows. Nulls pass a check; presence is the job of ``required`` / ``not_blank``, except on
the key, where a missing value fails its check too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.catalog import Dataset, Field
from common.checks import CHECKS, WATERMARK_CHECK, Check
from common.errors import ConfigError
from common.schema import IS_DELETED, UPDATED_AT
from validation import codes, identifiers

REQUIRED = "required"
WATERMARK = WATERMARK_CHECK.name
WATERMARK_RULE = f"{UPDATED_AT}.{WATERMARK}"
ID_TYPE_PERSON = "111"  # 公民身份号码
ID_TYPE_ORGANISATION = "001"  # 统一社会信用代码


@dataclass(frozen=True)
class Rule:
    id: str
    check: str  # a name from common.checks.CHECKS, or "required"
    fields: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()
    key: bool = False  # the dataset's key: checked on delete rows too, nulls fail
    description: str = ""

    def param(self, name: str) -> str | None:
        return dict(self.params).get(name)


def dataset_rules(dataset: Dataset) -> tuple[Rule, ...]:
    """Rules in catalog order: per field required then its checks, then record checks, then the
    watermark (judged on deletes too: a delete of no usable change time cannot be ordered either)."""
    rules: list[Rule] = []
    for f in dataset.fields:
        key = f.name == dataset.key
        if f.required:
            presence = Rule(f"{f.name}.{REQUIRED}", REQUIRED, (f.name,), key=key, description="present and not blank")
            rules.append(presence)
        for c in f.checks:
            rules.append(Rule(f"{f.name}.{c.name}", c.name, (f.name,), c.params, key, _doc(c)))
    seen: dict[str, int] = {}
    for c in dataset.checks:
        seen[c.name] = seen.get(c.name, 0) + 1
        rule_id = c.name if seen[c.name] == 1 else f"{c.name}#{seen[c.name]}"
        fields = tuple(c.param(p) or "" for p in RECORD_COLUMNS.get(c.name, ()))
        rules.append(Rule(rule_id, c.name, fields, c.params, description=_doc(c)))
    rules.append(Rule(WATERMARK_RULE, WATERMARK, (UPDATED_AT,), key=True, description=WATERMARK_CHECK.doc))
    _refuse_duplicates(dataset, rules)
    return tuple(rules)


def _doc(check: Check) -> str:
    spec = CHECKS.get(check.name)
    return spec.doc if spec else ""


def _refuse_duplicates(dataset: Dataset, rules: list[Rule]) -> None:
    ids = [r.id for r in rules]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ConfigError(f"dataset {dataset.id} declares the same field check twice: {', '.join(twice)}")


# -- normalisation --------------------------------------------------------------------------------

_ID_CHECKS = frozenset({"id_number"})
_CODE_CHECKS = frozenset({"uscc", "license_id", "issuer_code"})


def normalise(dataset: Dataset, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Keys and identifier fields as they will be published: trimmed, uppercased, IDs upgraded."""
    columns = {name: batch.column(name) for name in batch.schema.names}
    for f in dataset.fields:
        normaliser = _field_normaliser(dataset, f)
        if normaliser is not None:
            columns[f.name] = normaliser(columns[f.name])
    for c in dataset.checks:
        if c.name == "id_by_type":
            columns[c.param("id")] = normalise_by_type(columns[c.param("type")], columns[c.param("id")])
    return pa.RecordBatch.from_arrays([columns[n] for n in batch.schema.names], schema=batch.schema)


def normalise_keys(dataset: Dataset, keys: Any) -> pa.Array:
    """Keys as they are published (what a bureau or subscriber types is normalised the same way)."""
    normaliser = _field_normaliser(dataset, dataset.field(dataset.key))
    return normaliser(keys) if normaliser is not None else identifiers.as_strings(keys)


def _field_normaliser(dataset: Dataset, f: Field) -> Callable[[Any], pa.Array] | None:
    names = {c.name for c in f.checks}
    if names & _ID_CHECKS:
        return identifiers.normalise_id_numbers
    if names & _CODE_CHECKS or f.name == dataset.key:
        return identifiers.normalise_codes
    return None


def normalise_by_type(id_types: Any, ids: Any) -> pa.Array:
    """ID normalisation where the type is 111, code normalisation where it is 001."""
    id_types, ids = identifiers.as_strings(id_types), identifiers.as_strings(ids)
    person = pc.fill_null(pc.equal(id_types, ID_TYPE_PERSON), False)
    organisation = pc.fill_null(pc.equal(id_types, ID_TYPE_ORGANISATION), False)
    as_code = pc.if_else(organisation, identifiers.normalise_codes(ids), ids)
    return pc.if_else(person, identifiers.normalise_id_numbers(ids), as_code)


# -- masks ------------------------------------------------------------------------------------------


def _bools(arr: pa.Array | pa.ChunkedArray, null_as: bool) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, null_as).to_numpy(zero_copy_only=False), dtype=bool)


def _valid(values: Any) -> np.ndarray:
    return np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def as_arrow(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    arr = pa.Array.from_pandas(values) if hasattr(values, "dtype") else pa.array(values, from_pandas=True)
    # A pandas column backed by several Arrow chunks converts to a ChunkedArray.
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _as_dates(values: Any) -> pa.Array:
    arr = as_arrow(values)
    if pa.types.is_date32(arr.type):
        return arr
    if pa.types.is_null(arr.type):
        return arr.cast(pa.date32())
    return pc.cast(arr, pa.date32(), safe=False)


def present(values: Any) -> np.ndarray:
    """Not null and, for text, not only white space."""
    arr = as_arrow(values)
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), dtype=bool)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return _valid(arr)
    return _bools(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0), False)


def not_future(values: Any, today: date) -> np.ndarray:
    return _bools(pc.less_equal(_as_dates(values), pa.scalar(today, pa.date32())), True)


def not_negative(values: Any) -> np.ndarray:
    arr = as_arrow(values)
    if pa.types.is_null(arr.type):
        return np.ones(len(arr), dtype=bool)
    return _bools(pc.greater_equal(arr, 0), True)


def field_passes(check: str, params: Mapping[str, str], values: Any, today: date) -> np.ndarray:
    """One field check over one column; nulls pass (except for ``not_blank`` and ``required``)."""
    if check in (REQUIRED, "not_blank"):
        return present(values)
    if check == WATERMARK:
        return _valid(as_arrow(values))
    if check == "id_number":
        return identifiers.id_number_valid(values, today)
    if check == "uscc":
        return identifiers.uscc_valid(values)
    if check == "license_id":
        return identifiers.license_id_valid(values, params.get("variant"))
    if check == "issuer_code":
        return identifiers.issuer_code_valid(values)
    if check == "code_list":
        return codes.in_code_list(values, params["list"])
    if check == "division":
        return codes.division_valid(values)
    if check == "not_future":
        return not_future(values, today)
    if check == "not_negative":
        return not_negative(values)
    raise ConfigError(f"check {check!r} is not a field check validation knows")


def key_passes(check: str, params: Mapping[str, str], values: Any, today: date) -> np.ndarray:
    """A key must be present, so its check fails on nulls too."""
    return field_passes(check, params, values, today) & _valid(as_arrow(values))


def birth_date_matches_id(ids: Any, birth_dates: Any) -> np.ndarray:
    """Where both are readable, birth_date equals the ID's YYYYMMDD."""
    born, readable = identifiers.id_birth_dates(identifiers.as_strings(as_arrow(ids)))
    dates = _as_dates(birth_dates)
    stated = pc.add(pc.multiply(pc.year(dates), 10000), pc.add(pc.multiply(pc.month(dates), 100), pc.day(dates)))
    stated_np = np.asarray(pc.fill_null(stated, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return ~(readable & (stated_np >= 0) & (stated_np != born))


def sex_matches_id(ids: Any, sex_codes: Any) -> np.ndarray:
    """Sex code 1 (male) wants an odd sequence digit, 2 (female) an even one; 0 and 9 agree with anything."""
    digit = identifiers.id_sex_digits(identifiers.as_strings(as_arrow(ids)))
    sex = identifiers.as_strings(as_arrow(sex_codes))
    male, female = _bools(pc.equal(sex, "1"), False), _bools(pc.equal(sex, "2"), False)
    readable = digit >= 0
    return ~(readable & ((male & (digit % 2 == 0)) | (female & (digit % 2 == 1))))


def id_by_type(id_types: Any, ids: Any, today: date) -> np.ndarray:
    """111 -> GB 11643 ID number rules, 001 -> GB 32100 USCC rules, other types unchecked."""
    id_types, ids = identifiers.as_strings(as_arrow(id_types)), identifiers.as_strings(as_arrow(ids))
    person = _bools(pc.equal(id_types, ID_TYPE_PERSON), False)
    organisation = _bools(pc.equal(id_types, ID_TYPE_ORGANISATION), False)
    return ~((person & ~identifiers.id_number_valid(ids, today)) | (organisation & ~identifiers.uscc_valid(ids)))


def valid_range(starts: Any, ends: Any) -> np.ndarray:
    """The end is missing (long-term) or not before the start."""
    return _bools(pc.greater_equal(_as_dates(ends), _as_dates(starts)), True)


def record_passes(check: str, first: Any, second: Any, today: date) -> np.ndarray:
    """A record check over its two columns, in the order the check declares them."""
    if check == "birth_date_matches_id":
        return birth_date_matches_id(first, second)
    if check == "sex_matches_id":
        return sex_matches_id(first, second)
    if check == "id_by_type":
        return id_by_type(first, second, today)
    if check == "valid_range":
        return valid_range(first, second)
    raise ConfigError(f"check {check!r} is not a record check validation knows")


# Parameter order of each record check's two columns (first, second).
RECORD_COLUMNS: dict[str, tuple[str, str]] = {
    "birth_date_matches_id": ("id", "birth_date"),
    "sex_matches_id": ("id", "sex"),
    "id_by_type": ("type", "id"),
    "valid_range": ("from", "until"),
}


def record_fields(rule: Rule) -> tuple[str, str]:
    first, second = RECORD_COLUMNS[rule.check]
    return rule.param(first), rule.param(second)  # type: ignore[return-value]


def live_rows(batch: pa.RecordBatch) -> np.ndarray:
    """Rows that are not deletes (is_deleted != 1)."""
    return ~_bools(pc.equal(batch.column(IS_DELETED), 1), False)


def failures(rule: Rule, batch: pa.RecordBatch, today: date, live: np.ndarray) -> np.ndarray:
    """Rows of a normalised batch that break the rule. Deletes are judged on their key alone."""
    if rule.key:
        return ~key_passes(rule.check, dict(rule.params), batch.column(rule.fields[0]), today)
    if rule.check in RECORD_COLUMNS:
        first, second = record_fields(rule)
        passes = record_passes(rule.check, batch.column(first), batch.column(second), today)
    else:
        passes = field_passes(rule.check, dict(rule.params), batch.column(rule.fields[0]), today)
    return ~passes & live
