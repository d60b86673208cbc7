"""The Validator: one per dataset and run, judging Arrow record batches.

Per batch: normalise keys and identifier fields, compute one failure mask per rule with the
vectorised checks, split the batch into ``good`` and ``rejected`` (with the ids of every rule a
row broke), and hand the columns the rules read to the dataset's Great Expectations suite for the
report. The quarantine masks come from validation.rules; GX counts the same rows with the same
functions, on chunks of many batches (validation.gx_worker), in this process (``gx="inline"``) or
in a child process beside it (``gx="worker"``). Its totals are compared with ours once, in
summary(), and kept beside ours. Nothing here holds or reports a row value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Self

import numpy as np
import pyarrow as pa

from common.catalog import Dataset
from common.errors import ConfigError
from common.run import RuleSummary, ValidationSummary
from common.schema import IS_DELETED, source_schema
from validation.rules import Rule, dataset_rules, failures, live_rows, normalise

if TYPE_CHECKING:
    from validation.gx_worker import GxWorker, InlineGx, Totals

RULES_COLUMN = "_rules"
GX_MODES = {True: "inline", "inline": "inline", "worker": "worker", False: None}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchVerdict:
    good: pa.RecordBatch  # normalised, the input schema
    rejected: pa.RecordBatch  # normalised, the input schema plus _rules: list<string>
    counts: dict[str, int]  # failing rows per rule id in this batch


class Validator:
    """Created once per run with the dataset and the run's date (no clock reads in checks).

    ``gx``: ``True`` or ``"inline"`` runs Great Expectations in this process, ``"worker"`` in a child
    process: a warm one an earlier Validator of this process left idle, or one started now (it
    imports GX while the first batches are read); ``False`` not at all. Call close() when done (a
    context manager does): it stops a worker that summary() did not; after summary() the worker's
    child goes back to the pool for the next Validator.
    """

    def __init__(self, dataset: Dataset, today: date, *, gx: bool | str = True) -> None:
        if gx not in GX_MODES:
            raise ConfigError(f"GX mode {gx!r} for dataset {dataset.id} is not one of True, False, 'inline', 'worker'")
        self.dataset = dataset
        self.today = today
        self.rules: tuple[Rule, ...] = dataset_rules(dataset)
        self.schema = source_schema(dataset)
        self.gx_columns = gx_columns(self.schema, self.rules)
        self._gx: InlineGx | GxWorker | None = None
        self._gx_totals: Totals | None = None
        if GX_MODES[gx] == "worker":
            from validation.gx_worker import GxWorker

            self._gx = GxWorker(dataset, self.rules, today)
        elif GX_MODES[gx] == "inline":
            from validation.gx_worker import InlineGx

            self._gx = InlineGx(dataset, self.rules, today)
        self._checked = dict.fromkeys((r.id for r in self.rules), 0)
        self._failed = dict.fromkeys((r.id for r in self.rules), 0)
        self._batches = self._rows = self._good = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def gx_seconds(self) -> float:
        """Time GX took: in this process inline, the worker's own figure (known after summary()) otherwise."""
        return self._gx.seconds if self._gx is not None else 0.0

    @property
    def gx_where(self) -> str:
        """Where GX runs: 'worker', 'inline' or 'off'."""
        from validation.gx_worker import GxWorker

        return "off" if self._gx is None else "worker" if isinstance(self._gx, GxWorker) else "inline"

    @property
    def gx_worker_peak_kib(self) -> int | None:
        """The GX worker's peak RSS (KiB), known after summary(); None inline or before."""
        return getattr(self._gx, "peak_rss_kib", None)

    def check(self, batch: pa.RecordBatch) -> BatchVerdict:
        self._require_schema(batch)
        batch = normalise(self.dataset, batch)
        live = live_rows(batch)
        masks = {r.id: failures(r, batch, self.today, live) for r in self.rules}
        broken = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(batch.num_rows, dtype=bool)
        counts = {rule_id: int(mask.sum()) for rule_id, mask in masks.items()}
        self._tally(batch.num_rows, int(live.sum()), counts, int((~broken).sum()))
        if self._gx is not None and batch.num_rows:
            self._gx.feed(batch.select(self.gx_columns))
        good = batch.filter(pa.array(~broken))
        rejected = _with_rules(batch.filter(pa.array(broken)), masks, broken)
        return BatchVerdict(good=good, rejected=rejected, counts=counts)

    def end_input(self) -> None:
        """No more batches will be checked: a GX worker starts on what it holds now."""
        if self._gx is not None:
            self._gx.end_input()

    def close(self) -> None:
        """Stop GX (kills a worker still running). Safe to call twice, and after summary()."""
        if self._gx is not None:
            self._gx.close()

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

    def _gx_result(self) -> Totals | None:
        """GX's totals, waited for once; a mismatch with the quarantine's counts is logged (ids and counts only)."""
        if self._gx is None:
            return None
        if self._batches == 0:
            self._gx.cancel()  # GX saw nothing: no waiting for a cold worker's import; a warm one is kept
            return None
        if self._gx_totals is None:
            self._gx_totals = self._gx.finish()
            for rule in self.rules:
                unexpected = self._gx_totals[rule.id][0]
                if unexpected != self._failed[rule.id]:
                    log.warning("dataset %s rule %s: GX counted %d failures, quarantine %d",
                                self.dataset.id, rule.id, unexpected, self._failed[rule.id])
        return self._gx_totals

    def summary(self) -> ValidationSummary:
        """Counts per rule; with GX, waits (once) for its totals. Raises GovshareError if a GX worker failed."""
        from validation.gx_suite import expectation_type

        totals = self._gx_result()
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
                    gx_success=totals[r.id][1] if totals is not None else None,
                    gx_unexpected=totals[r.id][0] if totals is not None else None,
                )
                for r in self.rules
            ),
        )


def gx_columns(schema: pa.Schema, rules: tuple[Rule, ...]) -> list[str]:
    """The columns GX reads (every rule's fields, record checks' both) and ``is_deleted``, in schema order."""
    read = {name for rule in rules for name in rule.fields} | {IS_DELETED}
    return [name for name in schema.names if name in read]


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
