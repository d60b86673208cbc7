"""The Validator: one per dataset and run, judging Arrow record batches.

Per batch: normalise keys and identifier fields, compute one failure mask per rule with the
vectorised checks, split the batch into ``good`` and ``rejected`` (with the ids of every rule a
row broke), and run the dataset's Great Expectations suite for the report. The quarantine masks
come from validation.rules; GX counts the same rows with the same functions and its counts are
kept beside ours in the summary. Nothing here holds or reports a row value.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from govshare.catalog import Dataset
from govshare.errors import ConfigError
from govshare.schema import source_schema
from validation.rules import Rule, dataset_rules, failures, live_rows, normalise

RULES_COLUMN = "_rules"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchVerdict:
    good: pa.RecordBatch  # normalised, the input schema
    rejected: pa.RecordBatch  # normalised, the input schema plus _rules: list<string>
    counts: dict[str, int]  # failing rows per rule id in this batch


@dataclass(frozen=True)
class RuleSummary:
    rule_id: str
    fields: tuple[str, ...]
    check: str
    description: str
    rows_checked: int
    rows_failed: int
    expectation_type: str
    gx_success: bool | None  # None when GX did not run
    gx_unexpected: int | None


@dataclass(frozen=True)
class ValidationSummary:
    """Counts per rule across every batch of a run. Contains no row values at all."""

    dataset: str
    today: date
    batches: int
    rows: int
    good: int
    rejected: int
    rules: tuple[RuleSummary, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["today"] = self.today.isoformat()
        out["rules"] = [{**asdict(r), "fields": list(r.fields)} for r in self.rules]
        return out


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary (as to_dict() gives it) from the summaries of a run's parts."""
    if not summaries:
        return {}
    merged = {**summaries[0], "rules": [dict(r) for r in summaries[0]["rules"]]}
    for key in ("batches", "rows", "good", "rejected"):
        merged[key] = sum(s[key] for s in summaries)
    by_id = {r["rule_id"]: r for r in merged["rules"]}
    for summary in summaries[1:]:
        for rule in summary["rules"]:
            into = by_id[rule["rule_id"]]
            into["rows_checked"] += rule["rows_checked"]
            into["rows_failed"] += rule["rows_failed"]
            if into["gx_unexpected"] is not None and rule["gx_unexpected"] is not None:
                into["gx_unexpected"] += rule["gx_unexpected"]
            if into["gx_success"] is not None and rule["gx_success"] is not None:
                into["gx_success"] = into["gx_success"] and rule["gx_success"]
    return merged


class Validator:
    """Created once per run with the dataset and the run's date (no clock reads in checks)."""

    def __init__(self, dataset: Dataset, today: date, *, gx: bool = True) -> None:
        self.dataset = dataset
        self.today = today
        self.rules: tuple[Rule, ...] = dataset_rules(dataset)
        self.schema = source_schema(dataset)
        self.gx_seconds = 0.0
        self._runner = None
        if gx:
            from validation.gx_suite import SuiteRunner

            self._runner = SuiteRunner(dataset, self.rules, today)
        self._checked = dict.fromkeys((r.id for r in self.rules), 0)
        self._failed = dict.fromkeys((r.id for r in self.rules), 0)
        self._gx_unexpected: dict[str, int] = dict.fromkeys((r.id for r in self.rules), 0)
        self._gx_success: dict[str, bool] = dict.fromkeys((r.id for r in self.rules), True)
        self._batches = self._rows = self._good = 0

    def check(self, batch: pa.RecordBatch) -> BatchVerdict:
        self._require_schema(batch)
        batch = normalise(self.dataset, batch)
        live = live_rows(batch)
        masks = {r.id: failures(r, batch, self.today, live) for r in self.rules}
        broken = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(batch.num_rows, dtype=bool)
        counts = {rule_id: int(mask.sum()) for rule_id, mask in masks.items()}
        self._tally(batch.num_rows, int(live.sum()), counts, int((~broken).sum()))
        if self._runner is not None:
            self._run_gx(batch, live, counts)
        good = batch.filter(pa.array(~broken))
        rejected = _with_rules(batch.filter(pa.array(broken)), masks, broken)
        return BatchVerdict(good=good, rejected=rejected, counts=counts)

    def _require_schema(self, batch: pa.RecordBatch) -> None:
        if [(f.name, f.type) for f in batch.schema] != [(f.name, f.type) for f in self.schema]:
            missing = [n for n in self.schema.names if n not in batch.schema.names]
            extra = [n for n in batch.schema.names if n not in self.schema.names]
            raise ConfigError(
                f"a batch of dataset {self.dataset.id} does not have its canonical columns",
                problems=[
                    f"missing: {', '.join(missing) or 'none'}",
                    f"unexpected: {', '.join(extra) or 'none'}",
                    "columns must be the catalog's fields in order and types, then updated_at, is_deleted",
                ],
            )

    def _tally(self, rows: int, live: int, counts: dict[str, int], good: int) -> None:
        self._batches += 1
        self._rows += rows
        self._good += good
        for rule in self.rules:
            self._checked[rule.id] += rows if rule.key else live
            self._failed[rule.id] += counts[rule.id]

    def _run_gx(self, batch: pa.RecordBatch, live: np.ndarray, counts: dict[str, int]) -> None:
        started = time.perf_counter()
        for outcome in self._runner.run(batch, live):
            self._gx_unexpected[outcome.rule_id] += outcome.unexpected_count
            self._gx_success[outcome.rule_id] &= outcome.success
            if outcome.unexpected_count != counts[outcome.rule_id]:
                log.warning("dataset %s rule %s: GX counted %d failures, quarantine %d",
                            self.dataset.id, outcome.rule_id, outcome.unexpected_count, counts[outcome.rule_id])
        self.gx_seconds += time.perf_counter() - started

    def summary(self) -> ValidationSummary:
        from validation.gx_suite import expectation_type

        ran = self._runner is not None and self._batches > 0
        return ValidationSummary(
            dataset=self.dataset.id,
            today=self.today,
            batches=self._batches,
            rows=self._rows,
            good=self._good,
            rejected=self._rows - self._good,
            rules=tuple(
                RuleSummary(
                    rule_id=r.id,
                    fields=r.fields,
                    check=r.check,
                    description=r.description,
                    rows_checked=self._checked[r.id],
                    rows_failed=self._failed[r.id],
                    expectation_type=expectation_type(r, self.dataset),
                    gx_success=self._gx_success[r.id] if ran else None,
                    gx_unexpected=self._gx_unexpected[r.id] if ran else None,
                )
                for r in self.rules
            ),
        )


def _with_rules(rejected: pa.RecordBatch, masks: dict[str, np.ndarray], broken: np.ndarray) -> pa.RecordBatch:
    """Append ``_rules``: the ids of every rule each rejected row broke, in rule order."""
    ids = np.array(list(masks), dtype=object)
    matrix = np.stack([m[broken] for m in masks.values()], axis=1) if masks else np.zeros((0, 0), dtype=bool)
    offsets = np.zeros(rejected.num_rows + 1, dtype=np.int32)
    np.cumsum(matrix.sum(axis=1), out=offsets[1:])
    values = pa.array(ids[np.nonzero(matrix)[1]] if matrix.size else [], pa.string())
    rules = pa.ListArray.from_arrays(pa.array(offsets), values, type=pa.list_(pa.string()))
    schema = rejected.schema.append(pa.field(RULES_COLUMN, pa.list_(pa.string()), nullable=False))
    return pa.RecordBatch.from_arrays([*rejected.columns, rules], schema=schema)
