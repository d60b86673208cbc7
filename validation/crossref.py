"""Cross-dataset checks: does a record's reference to another dataset point at a published key?

A license whose holder is not in the population / legal-entity data is flagged for follow-up,
never rejected: the holder may be registered elsewhere (identifiers.md, record rules). So these
checks run on the *good* rows of a run and only produce findings for the quality report.

Lookups never compare plaintext across datasets: each referring value is normalised the way the
referred dataset normalises its key, turned into its pseudonymous key ref
(``sharing.changes.key_refs``, the state index's own hash and secret) and tested for membership
in the referred dataset's current published state (``sharing.changes.index_refs``).

Which field of which dataset refers to which other dataset is data: ``REFERENCES`` below.
Adding a reference is one entry there plus a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from govshare.catalog import Dataset
from govshare.errors import ConfigError
from govshare.schema import IS_DELETED
from validation import identifiers
from validation.quality import mask_keys

if TYPE_CHECKING:
    from keys.keystore import Keystore

KeyForm = Literal["id_number", "code"]  # how the referred dataset normalises its key

MAX_MASKED_KEYS = 1000  # masked keys listed per finding; the rest are counted
_BATCH_ROWS = 262_144


@dataclass(frozen=True)
class Reference:
    """Rows of a dataset whose ``type_field`` equals ``type_code`` name, in ``id_field``, a key of ``target``."""

    check: str  # stable id of the finding, e.g. "holder_id.in_population"
    type_field: str
    type_code: str
    id_field: str
    target: str  # the referred dataset's id
    form: KeyForm
    description: str


# dataset id -> its references to other datasets (持证主体代码类型: 111 公民身份号码, 001 统一社会信用代码).
REFERENCES: Mapping[str, tuple[Reference, ...]] = {
    "e_license": (
        Reference("holder_id.in_population", "holder_id_type", "111", "holder_id", "population", "id_number",
                  "持证主体(公民身份号码)不在已发布的人口基础信息中 (holder ID number not in the published population data)"),
        Reference("holder_id.in_legal_entity", "holder_id_type", "001", "holder_id", "legal_entity", "code",
                  "持证主体(统一社会信用代码)不在已发布的法人单位基础信息中 (holder credit code not in the published legal-entity data)"),
    ),
    "legal_entity": (
        Reference("legal_rep_id_number.in_population", "legal_rep_id_type", "111", "legal_rep_id_number", "population",
                  "id_number",
                  "法定代表人公民身份号码不在已发布的人口基础信息中 (legal representative's ID number not in the published population data)"),
    ),
}

NOT_CHECKED_NOTE = "not checked: {target} has no published state yet"


@dataclass(frozen=True)
class CrossrefFinding:
    """One reference checked over a run's good rows. Counts and masked keys of the row's own key only."""

    check: str
    description: str
    rows_checked: int  # live rows with the reference's type code and a value to look up
    not_found: int
    masked_keys: tuple[str, ...]  # the referring rows' own keys, masked, at most MAX_MASKED_KEYS
    target: str = ""
    checked: bool = True  # False when the target had no published state to check against
    masked_keys_omitted: int = 0  # not_found rows beyond the list (or without a key)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["masked_keys"] = list(self.masked_keys)
        return out


@dataclass(frozen=True)
class CrossrefResult:
    findings: tuple[CrossrefFinding, ...] = ()
    dataset: str = ""

    @property
    def not_found(self) -> int:
        return sum(f.not_found for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "findings": [f.to_dict() for f in self.findings]}


def references(dataset: Dataset) -> tuple[Reference, ...]:
    """The dataset's references, after making sure the catalog still has the fields they name."""
    refs = REFERENCES.get(dataset.id, ())
    missing = [f"{r.check}: field {name!r}" for r in refs for name in (r.type_field, r.id_field)
               if name not in dataset.field_names]
    if missing:
        raise ConfigError(f"cross-dataset references of {dataset.id} name fields its catalog entry lacks",
                          problems=missing)
    return refs


def crossref(dataset: Dataset, good_files: list[Path], keystore: Keystore, state_dir: Path) -> CrossrefResult:
    """Check every reference of ``dataset`` over its good rows (Parquet files encrypted with ``keystore``).

    Deleted rows and rows without a value to look up are not checked. A target dataset with no
    published state yet gives a finding with ``checked=False`` and a note instead of flagging
    every row.
    """
    from sharing.changes import index_path, index_refs

    refs = references(dataset)
    if not refs:
        return CrossrefResult((), dataset.id)
    secret = keystore.hmac_key()
    tallies = [_Tally(r, index_refs(state_dir, r.target) if index_path(state_dir, r.target).is_file() else None)
               for r in refs]
    active = [t for t in tallies if t.known is not None]
    if active:
        wanted = [dataset.key, IS_DELETED, *(n for t in active for n in (t.ref.type_field, t.ref.id_field))]
        for batch in _batches(good_files, keystore, list(dict.fromkeys(wanted))):
            for tally in active:
                tally.add(batch, dataset.key, secret)
    return CrossrefResult(tuple(t.finding() for t in tallies), dataset.id)


def consistency(dataset: Dataset, good_files: list[Path], keystore: Keystore, today: date) -> tuple[CrossrefFinding, ...]:
    """Inconsistencies to report, not to reject: a license with status 10 (有效) whose valid_until
    lies in the past. Only for datasets that have both fields."""
    if not {"license_status", "valid_until"} <= set(dataset.field_names):
        return ()
    checked = flagged = 0
    keys: list[str] = []
    for batch in _batches(good_files, keystore, [dataset.key, IS_DELETED, "license_status", "valid_until"]):
        live_valid = pc.and_(pc.equal(batch.column(IS_DELETED), 0), pc.equal(batch.column("license_status"), "10"))
        expired = pc.fill_null(pc.and_(live_valid, pc.less(batch.column("valid_until"), pa.scalar(today, pa.date32()))), False)
        checked += pc.sum(pc.fill_null(live_valid, False).cast(pa.int64())).as_py() or 0
        hits = batch.filter(expired)
        flagged += hits.num_rows
        if len(keys) < MAX_MASKED_KEYS:
            keys += mask_keys(hits.column(dataset.key)).to_pylist()[: MAX_MASKED_KEYS - len(keys)]
    return (CrossrefFinding(
        check="license_status.expired_but_valid",
        description="证照状态为有效(10)但有效期截止日期已过 (status 10 with valid_until in the past)",
        rows_checked=checked, not_found=flagged, masked_keys=tuple(keys), target=dataset.id,
        masked_keys_omitted=flagged - len(keys), note="an inconsistency to report to the issuer, not a rejection"),)


class _Tally:
    """Running counts of one reference over the batches of a run."""

    def __init__(self, ref: Reference, known: pa.Array | None) -> None:
        self.ref = ref
        self.known = known  # key refs of the target's published state; None: nothing published
        self.rows_checked = 0
        self.not_found = 0
        self.masked: list[str] = []

    def add(self, batch: pa.RecordBatch, key: str, secret: bytes) -> None:
        from sharing.changes import key_refs

        ids = batch.column(self.ref.id_field)
        live = pc.fill_null(pc.not_equal(batch.column(IS_DELETED), 1), True)
        typed = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(batch.column(self.ref.type_field)), self.ref.type_code), False)
        wanted = pc.and_(pc.and_(live, typed), ids.is_valid())
        rows = batch.filter(wanted)
        if rows.num_rows == 0:
            return
        normalised = _NORMALISERS[self.ref.form](rows.column(self.ref.id_field))
        found = pc.is_in(key_refs(normalised, secret), value_set=self.known)
        missing = rows.column(key).filter(pc.invert(found))
        self.rows_checked += rows.num_rows
        self.not_found += len(missing)
        room = MAX_MASKED_KEYS - len(self.masked)
        if room > 0 and len(missing):
            listed = mask_keys(missing.drop_null().slice(0, room))
            self.masked += listed.to_pylist()

    def finding(self) -> CrossrefFinding:
        ref = self.ref
        if self.known is None:
            return CrossrefFinding(ref.check, ref.description, 0, 0, (), target=ref.target, checked=False,
                                   note=NOT_CHECKED_NOTE.format(target=ref.target))
        return CrossrefFinding(ref.check, ref.description, self.rows_checked, self.not_found, tuple(self.masked),
                               target=ref.target, masked_keys_omitted=self.not_found - len(self.masked))


_NORMALISERS: Mapping[KeyForm, Callable[[pa.Array], pa.Array]] = {
    "id_number": identifiers.normalise_id_numbers, "code": identifiers.normalise_codes,
}


def _batches(files: list[Path], keystore: Keystore, columns: list[str]) -> Iterator[pa.RecordBatch]:
    from keys.protection import encrypted_batches

    return encrypted_batches(files, keystore, columns, _BATCH_ROWS)


