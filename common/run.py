"""One sync of one dataset, and what each stage hands to the next: typed, defined once.

A run lives in a work folder (GOVSHARE_HOME/work/<dataset>/<run>); each stage, and each part of
a split stage, writes its result as one JSON file there, so that parallel mapped Airflow tasks
never write the same file and a retried task redoes only its own stage. Results are frozen
dataclasses with ``to_json``/``from_json``; nobody outside this module reads their JSON by key.
``RunRecord`` is the whole run as lineage keeps it: the per-part results added up.

The JSON shapes are those the run records kept under GOVSHARE_HOME/lineage/runs have always had,
so records written before the types existed still load.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, TypeVar

from common.catalog import Dataset
from common.errors import InternalError
from common.files import write_json
from common.home import Home

KeyRange = tuple[str | None, str | None]  # a part of a large full read: keys in [lo, hi)
Kind = Literal["snapshot", "delta"]
R = TypeVar("R", bound="StageResult")
_RUN_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@cache
def _adapter(cls: type) -> Any:  # noqa: ANN401 - a pydantic TypeAdapter
    from pydantic import TypeAdapter  # converts dataclasses to and from JSON, types checked

    return TypeAdapter(cls)


class Record:
    """JSON in and out for a frozen dataclass: its fields by name, dates as ISO text."""

    def to_json(self) -> dict[str, Any]:
        return _adapter(type(self)).dump_python(self, mode="json")

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Self:
        return _adapter(cls).validate_python(doc)


class StageResult(Record):
    """A stage's result, stored as ``<STAGE>.json`` (or ``<STAGE>.<part>.json``) in the run's folder."""

    STAGE: ClassVar[str]


# -- validation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSummary(Record):
    rule_id: str
    fields: tuple[str, ...]
    check: str
    description: str
    rows_checked: int
    rows_failed: int
    expectation_type: str
    gx_success: bool | None  # None when GX did not run
    gx_unexpected: int | None

    def plus(self, other: RuleSummary) -> RuleSummary:
        both = self.gx_success is not None and other.gx_success is not None
        return replace(
            self, rows_checked=self.rows_checked + other.rows_checked, rows_failed=self.rows_failed + other.rows_failed,
            gx_success=(self.gx_success and other.gx_success) if both else self.gx_success,
            gx_unexpected=(self.gx_unexpected + other.gx_unexpected
                           if self.gx_unexpected is not None and other.gx_unexpected is not None else self.gx_unexpected))


@dataclass(frozen=True)
class ValidationSummary(Record):
    """Counts per rule across every batch of a run (or part). Contains no row values at all."""

    dataset: str
    today: date
    batches: int
    rows: int
    good: int
    rejected: int
    rules: tuple[RuleSummary, ...]

    @staticmethod
    def merge(summaries: Sequence[ValidationSummary]) -> ValidationSummary | None:
        """One summary from those of a run's parts (None for none)."""
        if not summaries:
            return None
        first, rest = summaries[0], summaries[1:]
        by_id = {r.rule_id: r for r in first.rules}
        for summary in rest:
            for rule in summary.rules:
                by_id[rule.rule_id] = by_id[rule.rule_id].plus(rule)
        return replace(first, rules=tuple(by_id.values()),
                       **{k: sum(getattr(s, k) for s in summaries) for k in ("batches", "rows", "good", "rejected")})

    def failed(self, check: str) -> int:
        """The most rows any rule of this check failed (0 when none has the check)."""
        return max((r.rows_failed for r in self.rules if r.check == check), default=0)

    def failed_by_rule(self) -> dict[str, int]:
        return {r.rule_id: r.rows_failed for r in self.rules if r.rows_failed}


# -- cross-dataset checks --------------------------------------------------------------------


@dataclass(frozen=True)
class CrossrefFinding(Record):
    """One reference checked over a run's good rows. Counts and masked keys of the row's own key only."""

    check: str
    description: str
    rows_checked: int  # live rows with the reference's type code and a value to look up
    not_found: int
    masked_keys: tuple[str, ...]  # the referring rows' own keys, masked, at most validation.crossref.MAX_MASKED_KEYS
    target: str = ""
    checked: bool = True  # False when the target had no published state to check against
    masked_keys_omitted: int = 0  # not_found rows beyond the list (or without a key)
    note: str = ""


@dataclass(frozen=True)
class CrossrefResult(StageResult):
    STAGE: ClassVar[str] = "crossref"

    findings: tuple[CrossrefFinding, ...] = ()
    dataset: str = ""

    @property
    def not_found(self) -> int:
        return sum(f.not_found for f in self.findings)


# -- the stages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan(StageResult):
    """What the run reads: the watermark range and, for a large full read, key-range parts."""

    STAGE: ClassVar[str] = "plan"

    at: str
    full: bool
    connection_id: str
    source_table: str
    watermark_from: datetime | None  # exclusive; None: from the beginning
    watermark_to: datetime | None  # inclusive; None: the source is empty
    nothing_new: bool
    parts: tuple[KeyRange, ...]
    rows_estimate: int = 0

    @property
    def rows_per_part(self) -> int:
        return self.rows_estimate // max(len(self.parts), 1)


@dataclass(frozen=True)
class Extracted(StageResult):
    """What one part read from the source."""

    STAGE: ClassVar[str] = "extract"

    at: str
    part: int
    key_range: KeyRange
    rows: int
    deletes: int
    batches: int


@dataclass(frozen=True)
class GxUse(Record):
    """Where Great Expectations ran for a part, and what it cost."""

    where: str | None
    seconds: float
    worker_peak_rss_kib: int | None = None


@dataclass(frozen=True)
class Validated(StageResult):
    """How one part's rows were judged."""

    STAGE: ClassVar[str] = "validate"

    at: str
    part: int
    rows: int
    good: int
    good_deletes: int
    rejected: int
    summary: ValidationSummary
    gx: GxUse


@dataclass(frozen=True)
class Staged(StageResult):
    """One part's good rows as staged for the version (sharing.publish.PartFiles)."""

    STAGE: ClassVar[str] = "staged"

    candidates: int
    markers: int
    deletes: int
    protection: dict[str, Any]  # the candidates file's encryption, key ids only (keys.protection)


@dataclass(frozen=True)
class VersionProtection(Record):
    fields: dict[str, str]  # field -> plain | encrypted | withheld
    upserts: dict[str, Any]  # key ids only (keys.protection)
    deletes: dict[str, Any]


@dataclass(frozen=True)
class Protected(StageResult):
    """The version's files, decided against the published state and protected per field."""

    STAGE: ClassVar[str] = "protect"

    at: str
    kind: Kind
    upserts: int
    deletes: int
    superseded_in_run: int
    unchanged: int
    deletes_of_unpublished: int
    new_keys: int
    protection: VersionProtection

    @property
    def changes(self) -> int:
        return self.upserts + self.deletes


@dataclass(frozen=True)
class GateThresholds(Record):
    max_rejected_share: float
    max_missing_required_share: float
    min_snapshot_ratio: float
    max_delete_share: float


@dataclass(frozen=True)
class Gate(StageResult):
    """The validation gate's measures and decision (validation.gate)."""

    STAGE: ClassVar[str] = "gate"

    at: str
    rows: int
    rejected_share: float
    missing_required_share: float
    state_rows: int
    snapshot_ratio: float | None
    delete_share: float
    thresholds: GateThresholds
    passed: bool
    blocked: bool
    why: str | None = None
    current_version: int | None = None


@dataclass(frozen=True)
class QuarantineUpdate(StageResult):
    """Quarantine cases the run opened, refreshed and closed (validation.quarantine)."""

    STAGE: ClassVar[str] = "quarantine"

    opened: int
    still_open: int
    corrected: int


@dataclass(frozen=True)
class QualityFiles(StageResult):
    """The run's quality feedback (数据质量反馈) files for the provider: format -> path."""

    STAGE: ClassVar[str] = "quality"

    files: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return dict(self.files)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> QualityFiles:
        return cls(files={str(k): str(v) for k, v in doc.items()})


@dataclass(frozen=True)
class Published(StageResult):
    STAGE: ClassVar[str] = "publish"

    at: str
    version: int | None  # None: nothing changed, nothing published
    manifest_sha256: str | None


# -- the whole run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractTotals(Record):
    connection_id: str
    source_table: str
    watermark_from: datetime | None
    watermark_to: datetime | None
    parts: int
    nothing_new: bool
    rows: int
    deletes: int
    batches: int


@dataclass(frozen=True)
class ValidateTotals(Record):
    rows: int
    good: int
    good_deletes: int
    rejected: int
    summary: ValidationSummary | None
    gate: Gate | None = None


@dataclass(frozen=True)
class RunRecord(Record):
    """Everything a run recorded, with the parts of extract and validate added up."""

    dataset: str
    run_id: str
    full: bool
    plan: Plan | None = None
    extract: ExtractTotals | None = None
    validate: ValidateTotals | None = None
    crossref: CrossrefResult | None = None
    protect: Protected | None = None
    gate: Gate | None = None
    quarantine: QuarantineUpdate | None = None
    quality: QualityFiles | None = None
    publish: Published | None = None

    @property
    def rules(self) -> tuple[RuleSummary, ...]:
        summary = self.validate.summary if self.validate else None
        return summary.rules if summary else ()

    @property
    def blocked(self) -> bool:
        return self.gate is not None and self.gate.blocked

    def to_json(self) -> dict[str, Any]:
        doc = super().to_json()
        if self.quality is not None:
            doc["quality"] = self.quality.to_json()
        return {k: v for k, v in doc.items() if v is not None}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RunRecord:
        doc = dict(doc)
        quality = doc.pop("quality", None)
        if isinstance(doc.get("protect"), dict) and doc["protect"].get("skipped"):
            doc.pop("protect")  # records of runs that had nothing new
        if isinstance(doc.get("validate"), dict) and doc["validate"].get("gate") == {}:
            doc["validate"] = {**doc["validate"], "gate": None}  # the gate had not judged yet
        record = _adapter(cls).validate_python(doc)
        return replace(record, quality=QualityFiles.from_json(quality)) if quality else record


def new_run_id(hint: str | None = None) -> str:
    """A file-safe run id: Airflow's run id when there is one, else a fresh one."""
    safe = _RUN_ID.sub("_", hint or "").strip("_.")[:120]  # never '..' or a hidden name
    if safe:
        return safe
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"cli_{stamp}_{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Run:
    """One sync of one dataset: its context (dataset, home, id, mode) and its results so far."""

    dataset: Dataset
    home: Home
    run_id: str
    full: bool = False

    @property
    def folder(self) -> Path:
        return self.home.work / self.dataset.id / self.run_id

    def file(self, name: str) -> Path:
        return self.folder / name

    def save(self, result: StageResult, part: int | None = None) -> None:
        write_json(self._path(type(result), part), result.to_json())

    def load(self, cls: type[R], part: int | None = None) -> R | None:
        """The stage's result, or None when the stage has not run (yet)."""
        path = self._path(cls, part)
        if not path.is_file():
            return None
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))

    def require(self, cls: type[R], part: int | None = None) -> R:
        result = self.load(cls, part)
        if result is None:
            raise InternalError(f"{self.dataset.id} run {self.run_id}: the {cls.STAGE} stage has no result yet; "
                                "rerun the sync")
        return result

    @property
    def plan(self) -> Plan | None:
        return self.load(Plan)

    @property
    def parts(self) -> list[int]:
        plan = self.plan
        return list(range(len(plan.parts))) if plan else []

    def per_part(self, cls: type[R]) -> list[R]:
        """The results of a split stage, one per part, in part order (only when every part has one)."""
        found = [self.load(cls, part) for part in self.parts]
        return [r for r in found if r is not None] if found and all(found) else []

    def record(self) -> RunRecord:
        plan = self.plan
        extracts, validates = self.per_part(Extracted), self.per_part(Validated)
        gate = self.load(Gate)
        extract = None
        if plan and extracts:
            extract = ExtractTotals(plan.connection_id, plan.source_table, plan.watermark_from, plan.watermark_to,
                                    len(extracts), plan.nothing_new,
                                    *(sum(getattr(e, k) for e in extracts) for k in ("rows", "deletes", "batches")))
        validate = None
        if validates:
            validate = ValidateTotals(*(sum(getattr(v, k) for v in validates) for k in ("rows", "good", "good_deletes",
                                                                                           "rejected")),
                                      summary=ValidationSummary.merge([v.summary for v in validates]), gate=gate)
        return RunRecord(self.dataset.id, self.run_id, self.full, plan=plan, extract=extract, validate=validate,
                         crossref=self.load(CrossrefResult), protect=self.load(Protected), gate=gate,
                         quarantine=self.load(QuarantineUpdate), quality=self.load(QualityFiles),
                         publish=self.load(Published))

    def _path(self, cls: type[StageResult], part: int | None) -> Path:
        return self.file(f"{cls.STAGE}.json" if part is None else f"{cls.STAGE}.{part}.json")
