"""Cross-dataset checks: does a record's reference to another dataset point at a published key?

A license whose holder is not in the population / legal-entity data is flagged for follow-up,
never rejected: the holder may be registered elsewhere (identifiers.md, record rules). So these
checks run on the *good* rows of a run and only produce findings for the quality report.

Lookups never compare plaintext across datasets: each referring value is normalised the way the
referred dataset normalises its key, turned into its pseudonymous key ref
(``keys.pseudonyms.RowHasher.key_refs``, the state index's own hash and secret) and tested for membership
in the referred dataset's current published state, which the caller hands in as a lookup
(``PublishedRefs``: the pipeline passes ``sharing.index.published_refs``).

The checks stream: ``CrossrefCheck`` takes a part's good rows batch by batch while the pipeline
ingests them, and ``merge_crossref`` adds the parts of a run up. ``crossref`` and ``consistency``
run the same checks over good rows kept in files (tests, tooling).

Which field of which dataset refers to which other dataset is data: ``REFERENCES`` below.
Adding a reference is one entry there plus a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.catalog import Dataset
from common.errors import ConfigError
from common.run import CrossrefFinding, CrossrefResult
from common.schema import IS_DELETED
from keys.masking import mask_keys
from validation import identifiers

if TYPE_CHECKING:
    from keys.keystore import Keystore
    from keys.pseudonyms import RowHasher

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
# target dataset id -> the key refs of its current published state (None: nothing published yet)
PublishedRefs = Callable[[str], "pa.Array | None"]


def references(dataset: Dataset) -> tuple[Reference, ...]:
    """The dataset's references, after making sure the catalog still has the fields they name."""
    refs = REFERENCES.get(dataset.id, ())
    missing = [f"{r.check}: field {name!r}" for r in refs for name in (r.type_field, r.id_field)
               if name not in dataset.field_names]
    if missing:
        raise ConfigError(f"cross-dataset references of {dataset.id} name fields its catalog entry lacks",
                          problems=missing)
    return refs


class CrossrefCheck:
    """The cross-dataset checks of good rows, batch by batch as a part of a run streams past
    (the pipeline's ingest): every reference of the dataset (``REFERENCES``), then the
    consistency checks. One per part; ``merge_crossref`` adds the parts' results up.

    Each target's state index is read, and sorted for lookups, once, here. A dataset with nothing
    to check (population) costs nothing per batch. ``states=None`` leaves the references out,
    ``today=None`` the consistency checks: the file-based ``crossref`` and ``consistency`` run one
    kind each.
    """

    def __init__(self, dataset: Dataset, secret: bytes, states: PublishedRefs | None, today: date | None,
                 algorithm: str = "HMAC-SHA256") -> None:
        self.dataset = dataset
        refs = references(dataset) if states is not None else ()
        published: dict[str, _Published | None] = {}
        for ref in refs:  # once per target, however many references point at it
            if ref.target not in published:
                known = states(ref.target)
                published[ref.target] = _Published(known) if known is not None else None
        self._tallies = [_Tally(ref, published[ref.target]) for ref in refs]
        self._active = [t for t in self._tallies if t.known is not None]
        self._expiry = (_Expiry(today) if today is not None and set(_EXPIRY_FIELDS) <= set(dataset.field_names)
                        else None)
        self._secret = secret
        self._algorithm = algorithm  # the HMAC key's (keys.pseudonyms.RowHasher)
        self._hasher: RowHasher | None = None  # opened by the first lookup, closed by result()

    @property
    def columns(self) -> list[str]:
        """The columns ``add`` reads; empty when there is nothing to check."""
        names = [n for t in self._active for n in (t.ref.type_field, t.ref.id_field)]
        if self._expiry is not None:
            names += _EXPIRY_FIELDS
        return list(dict.fromkeys([self.dataset.key, IS_DELETED, *names])) if names else []

    def add(self, batch: pa.RecordBatch) -> None:
        """Check a batch of good, normalised rows (deleted rows included: they are skipped)."""
        for tally in self._active:
            tally.add(batch, self.dataset.key, self._key_refs)
        if self._expiry is not None:
            self._expiry.add(batch, self.dataset.key)

    def result(self) -> CrossrefResult:
        """The findings of the batches so far: the references in ``REFERENCES`` order (a target
        without published state: ``checked=False``), then the consistency checks."""
        if self._hasher is not None:
            self._hasher.close()
            self._hasher = None
        findings = [t.finding() for t in self._tallies]
        if self._expiry is not None:
            findings.append(self._expiry.finding(self.dataset.id))
        return CrossrefResult(tuple(findings), self.dataset.id)

    def _key_refs(self, keys: pa.Array) -> pa.Array:
        from keys.pseudonyms import RowHasher

        if self._hasher is None:
            self._hasher = RowHasher(self._secret, algorithm=self._algorithm)
        return self._hasher.key_refs(keys)


def merge_crossref(parts: Sequence[CrossrefResult], dataset_id: str) -> CrossrefResult:
    """The results of the parts of one run as one: per check, counts summed and masked keys
    listed in part order up to ``MAX_MASKED_KEYS``.

    A check counts as checked only if every part checked it (a target can publish its first
    version while the parts run); its note is then the first part's note that says why not.
    """
    merged: dict[str, CrossrefFinding] = {}
    for part in parts:
        for f in part.findings:
            into = merged.get(f.check)
            if into is None:
                merged[f.check] = replace(f, masked_keys=f.masked_keys[:MAX_MASKED_KEYS])
                continue
            unchecked = into.checked and not f.checked
            merged[f.check] = replace(
                into, rows_checked=into.rows_checked + f.rows_checked, not_found=into.not_found + f.not_found,
                masked_keys=into.masked_keys + f.masked_keys[: MAX_MASKED_KEYS - len(into.masked_keys)],
                checked=False if unchecked else into.checked, note=f.note if unchecked else into.note)
    findings = tuple(replace(f, masked_keys_omitted=f.not_found - len(f.masked_keys)) for f in merged.values())
    return CrossrefResult(findings, dataset_id)


def crossref(dataset: Dataset, good_files: list[Path], keystore: Keystore, states: PublishedRefs) -> CrossrefResult:
    """Check every reference of ``dataset`` over its good rows (Parquet files encrypted with
    ``keystore``): ``CrossrefCheck`` over the files, references only.

    Deleted rows and rows without a value to look up are not checked. A target dataset with no
    published state yet gives a finding with ``checked=False`` and a note instead of flagging
    every row.
    """
    return _over_files(CrossrefCheck(dataset, keystore.hmac_key(), states, None, keystore.hmac_algorithm()), good_files, keystore)


def consistency(dataset: Dataset, good_files: list[Path], keystore: Keystore, today: date) -> tuple[CrossrefFinding, ...]:
    """Inconsistencies to report, not to reject: a license with status 10 (有效) whose valid_until
    lies in the past. Only for datasets that have both fields. ``CrossrefCheck`` over the files,
    consistency only."""
    return _over_files(CrossrefCheck(dataset, b"", None, today), good_files, keystore).findings  # no key refs


def _over_files(check: CrossrefCheck, files: list[Path], keystore: Keystore) -> CrossrefResult:
    if check.columns:
        for batch in _batches(files, keystore, check.columns):
            check.add(batch)
    return check.result()


class _Counts:
    """Rows checked and rows flagged over the batches of a run, with the flagged rows' own keys,
    masked, up to MAX_MASKED_KEYS (the rest, and rows without a key, only counted)."""

    def __init__(self) -> None:
        self.rows_checked = 0
        self.not_found = 0
        self.masked: list[str] = []

    def count(self, checked: int, flagged_keys: pa.Array) -> None:
        self.rows_checked += checked
        self.not_found += len(flagged_keys)
        room = MAX_MASKED_KEYS - len(self.masked)
        if room > 0 and len(flagged_keys):
            self.masked += mask_keys(flagged_keys.drop_null().slice(0, room)).to_pylist()


class _Tally(_Counts):
    """One reference over the batches of a run."""

    def __init__(self, ref: Reference, known: _Published | None) -> None:
        super().__init__()
        self.ref = ref
        self.known = known  # the target's published state; None: nothing published

    def add(self, batch: pa.RecordBatch, key: str, key_refs: Callable[[pa.Array], pa.Array]) -> None:
        ids = batch.column(self.ref.id_field)
        live = pc.fill_null(pc.not_equal(batch.column(IS_DELETED), 1), True)
        typed = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(batch.column(self.ref.type_field)), self.ref.type_code), False)
        rows = batch.filter(pc.and_(pc.and_(live, typed), ids.is_valid()))
        if rows.num_rows == 0:
            return
        found = self.known.contains(key_refs(_NORMALISERS[self.ref.form](rows.column(self.ref.id_field))))
        self.count(rows.num_rows, rows.column(key).filter(pa.array(~found)))

    def finding(self) -> CrossrefFinding:
        ref = self.ref
        if self.known is None:
            return CrossrefFinding(ref.check, ref.description, 0, 0, (), target=ref.target, checked=False,
                                   note=NOT_CHECKED_NOTE.format(target=ref.target))
        return CrossrefFinding(ref.check, ref.description, self.rows_checked, self.not_found, tuple(self.masked),
                               target=ref.target, masked_keys_omitted=self.not_found - len(self.masked))


_EXPIRY_FIELDS = ["license_status", "valid_until"]


class _Expiry(_Counts):
    """Live rows with license_status 10 (有效) whose valid_until lies before ``today``."""

    def __init__(self, today: date) -> None:
        super().__init__()
        self.today = pa.scalar(today, pa.date32())

    def add(self, batch: pa.RecordBatch, key: str) -> None:
        live_valid = pc.and_(pc.equal(batch.column(IS_DELETED), 0), pc.equal(batch.column("license_status"), "10"))
        expired = pc.fill_null(pc.and_(live_valid, pc.less(batch.column("valid_until"), self.today)), False)
        checked = pc.sum(pc.fill_null(live_valid, False).cast(pa.int64())).as_py() or 0
        self.count(checked, batch.column(key).filter(expired))

    def finding(self, dataset_id: str) -> CrossrefFinding:
        return CrossrefFinding(
            check="license_status.expired_but_valid",
            description="证照状态为有效(10)但有效期截止日期已过 (status 10 with valid_until in the past)",
            rows_checked=self.rows_checked, not_found=self.not_found, masked_keys=tuple(self.masked), target=dataset_id,
            masked_keys_omitted=self.not_found - len(self.masked),
            note="an inconsistency to report to the issuer, not a rejection")


class _Published:
    """The key refs of a target's published state, sorted once for lookups by binary search
    (``pc.is_in`` would hash the whole state again for every batch: 0.4 s a batch at 1M keys).

    A ref is 16 bytes of SHA-256: sorted by its first 8, the next 8 compared at the match. Refs
    sharing their first 8 bytes (a few states in a million, at 10M keys) are looked up one by one.
    """

    def __init__(self, refs: pa.Array) -> None:
        high, low = _halves(refs)
        order = np.argsort(high)
        self.high, self.low = high[order], low[order]

    def contains(self, refs: pa.Array) -> np.ndarray:
        """Per ref, whether the state holds it (null: False)."""
        high, low = _halves(refs)
        if len(self.high) == 0:
            return np.zeros(len(refs), dtype=bool)
        at = np.minimum(np.searchsorted(self.high, high), len(self.high) - 1)
        same_high = self.high[at] == high
        found = same_high & (self.low[at] == low)
        for i in np.flatnonzero(same_high & ~found):  # another ref with the same first 8 bytes
            end = np.searchsorted(self.high, high[i], side="right")
            found[i] = bool((self.low[at[i]:end] == low[i]).any())
        if refs.null_count:
            found &= refs.is_valid().to_numpy(zero_copy_only=False)
        return found


def _halves(refs: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The first and last 8 bytes of each 16-byte ref as unsigned integers (order kept)."""
    refs = refs.cast(pa.binary(16))
    data = np.frombuffer(refs.buffers()[1], dtype=">u8")[refs.offset * 2:(refs.offset + len(refs)) * 2].reshape(-1, 2)
    return data[:, 0].astype(np.uint64), data[:, 1].astype(np.uint64)


_NORMALISERS: Mapping[KeyForm, Callable[[pa.Array], pa.Array]] = {
    "id_number": identifiers.normalise_id_numbers, "code": identifiers.normalise_codes,
}


def _batches(files: list[Path], keystore: Keystore, columns: list[str]) -> Iterator[pa.RecordBatch]:
    from keys.protection import encrypted_batches

    return encrypted_batches(files, keystore, columns, _BATCH_ROWS)


