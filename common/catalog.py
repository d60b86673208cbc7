"""The catalog: what is shared, with whom, under which class, as data (catalogs/*.yaml).

Loaded once into frozen objects. A broken catalog raises one ConfigError that lists every
problem found, so a bureau fixes its YAML in one round instead of one error at a time.

Strict on purpose: a repeated key, an unknown (misspelt) key anywhere, an alias or an oversize
file is an error, never a silent default. A misspelt ``checks``, ``required``, ``gate`` or
``expires_on`` would otherwise switch a control off without a word (common.yaml_strict reads the
files; the shapes below name every key a catalog may use).

Sharing classes follow 政务数据共享条例: every item is 无条件共享 (``unconditional``),
有条件共享 (``conditional``: only under a recorded approval and a stated purpose) or
不予共享 (``none``: never leaves the bureau).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

from common.checks import CHECKS, Check, check_problems
from common.columns import IS_DELETED, UPDATED_AT
from common.errors import ConfigError
from common.yaml_strict import KeyLines, read_yaml, show

SharingClass = Literal["unconditional", "conditional", "none"]
Sensitivity = Literal["public", "internal", "personal", "sensitive_personal"]
FieldType = Literal["string", "date", "timestamp", "decimal", "int"]
KeySource = Literal["local", "external"]
BadWatermark = Literal["quarantine", "fail"]  # a source row whose updated_at is no usable watermark
Status = Literal["active", "suspended", "revoked"]  # of a subscriber and of an approval
MASKED_SUFFIX = "__masked"  # a masked field's column in a version: <field>__masked (its data key group too)
MAX_MASK_KEEP = 32

SHARING_LABELS: dict[str, str] = {
    "unconditional": "无条件共享",
    "conditional": "有条件共享",
    "none": "不予共享",
}

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SUBSCRIBER_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_KEY_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_DECIMAL = re.compile(r"^decimal\((\d{1,2}),(\d{1,2})\)$")
_SOURCE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DURATION = re.compile(r"^(\d{1,6})\s*(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
DEFAULT_LOOKBACK = timedelta(hours=1)
DEFAULT_PART_ROWS = 2_000_000
# How far past now (at the sources' zone) an updated_at may lie, for clocks that run ahead; a run
# reads up to now + this at most, so the watermark never passes it.
DEFAULT_FUTURE_TOLERANCE = timedelta(days=1)
MAX_FUTURE_TOLERANCE = timedelta(days=366)
MAX_LISTED_PROBLEMS = 30  # a hostile catalog cannot flood the terminal; the count is always given
MAX_PROBLEM_CHARS = 300

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mask:
    """How a field is shown to a grant that receives it masked (脱敏): its first ``first`` and last
    ``last`` characters kept, every other one '*'; a value of ``first + last`` characters or fewer
    is all '*'. E.g. id_number {first: 3, last: 4} -> 110***********1234, name {first: 1} -> 张*."""

    first: int
    last: int


def masked_column(field_name: str) -> str:
    """The column (and data key group) of a version that holds ``field_name``'s masked values."""
    return field_name + MASKED_SUFFIX


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    sharing: SharingClass
    sensitivity: Sensitivity
    column: str  # the source's own column name (defaults to name)
    required: bool = False
    label: str = ""
    decimal: tuple[int, int] | None = None  # (precision, scale) when type is decimal
    checks: tuple[Check, ...] = ()
    mask: Mask | None = None  # declared: versions carry masked values of the field (masked_column)


@dataclass(frozen=True)
class Gate:
    """Thresholds past which nothing is published (the validation gate)."""

    max_rejected_share: float = 0.5  # rejected rows / rows read
    max_missing_required_share: float = 0.1  # rows lacking a required field / rows read
    min_snapshot_ratio: float = 0.5  # rows of a full snapshot / rows of the current state
    max_delete_share: float = 0.2  # deletes in one run / rows of the current state


@dataclass(frozen=True)
class Dataset:
    id: str
    title: str
    provider: str  # the source department (提供部门)
    connection_id: str
    source_table: str
    key: str
    watermark_column: str
    deleted_column: str
    schedule: str | None
    fields: tuple[Field, ...]
    checks: tuple[Check, ...]  # record-level checks across fields
    footer_key: str
    conditional_key: str
    gate: Gate = Gate()
    lookback: timedelta = DEFAULT_LOOKBACK  # re-read window before the watermark for late commits
    part_rows: int = DEFAULT_PART_ROWS  # a full read larger than this is split into key-range parts
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE  # updated_at after now + this: no usable watermark
    bad_watermark: BadWatermark = "quarantine"  # such rows quarantined, or the run stopped (exit 2)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def fields_of(self, sharing: SharingClass) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.sharing == sharing)

    @property
    def published_fields(self) -> tuple[Field, ...]:
        """Fields that may ever leave the bureau (everything but 不予共享)."""
        return tuple(f for f in self.fields if f.sharing != "none")

    @property
    def masked_fields(self) -> tuple[Field, ...]:
        """Published fields that declare a mask: each version carries their masked values too."""
        return tuple(f for f in self.published_fields if f.mask is not None)

    @property
    def asset_uri(self) -> str:
        return f"govshare://sharing-set/{self.id}"


@dataclass(frozen=True)
class Approval:
    """The recorded approval (审批) behind a conditional grant."""

    id: str
    purpose: str
    approved_by: str
    approved_on: date  # valid from this day on (may lie in the future: not yet in force)
    expires_on: date | None = None  # valid through this day
    status: Status = "active"

    def in_force(self, today: date) -> str | None:
        """None when the approval is in force on ``today``, else why not (one line)."""
        if self.status != "active":
            return f"approval {self.id} is {self.status}"
        if today < self.approved_on:
            return f"approval {self.id} is not in force before {self.approved_on}"
        if self.expires_on is not None and self.expires_on < today:
            return f"approval {self.id} expired on {self.expires_on}"
        return None


@dataclass(frozen=True)
class Grant:
    dataset: str
    fields: tuple[str, ...]  # resolved field names, in the dataset's order (masked ones among them)
    approval: Approval | None = None
    masked: tuple[str, ...] = ()  # of ``fields``, those received masked (from their masked column)

    def column(self, name: str) -> str:
        """The version's column that delivers field ``name`` to this grant."""
        return masked_column(name) if name in self.masked else name

    @property
    def columns(self) -> tuple[str, ...]:
        """The version's columns that deliver ``fields`` (in their order): masked ones from their
        masked column; a masked grant never reads the plain column of the field."""
        return tuple(self.column(f) for f in self.fields)


@dataclass(frozen=True)
class Subscriber:
    id: str
    name: str
    keys: KeySource
    grants: Mapping[str, Grant] = field(default_factory=dict)
    status: Status = "active"

    @property
    def active(self) -> bool:
        """False for a suspended or revoked subscriber: it may receive nothing."""
        return self.status == "active"

    def grant_for(self, dataset: str) -> Grant | None:
        return self.grants.get(dataset)


@dataclass(frozen=True)
class Catalog:
    datasets: Mapping[str, Dataset]
    subscribers: Mapping[str, Subscriber]
    directory: Path

    def dataset(self, dataset_id: str) -> Dataset:
        try:
            return self.datasets[dataset_id]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise ConfigError(f"unknown dataset {show(dataset_id)} (catalog {self.directory} has: {known})") from None

    def subscriber(self, subscriber_id: str) -> Subscriber | None:
        return self.subscribers.get(subscriber_id)

    def revoking(self, revoked: Iterable[str]) -> Catalog:
        """This catalog with the given subscribers revoked (by 'govshare subscriber revoke')."""
        ids = set(revoked) & set(self.subscribers)
        if not ids:
            return self
        subscribers = {k: replace(s, status="revoked") if k in ids else s for k, s in self.subscribers.items()}
        return replace(self, subscribers=subscribers)

    def key_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for d in self.datasets.values():
            names += [d.footer_key, d.conditional_key]
        return tuple(dict.fromkeys(names))


# -- the keys a catalog file may use ------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """A mapping with these keys only; a key's shape is None when its value is checked elsewhere."""

    known: Mapping[str, Shape | None]


@dataclass(frozen=True)
class EachValue:
    """A mapping whose keys are names of the catalog's choosing (fields), each value one shape."""

    shape: Shape


@dataclass(frozen=True)
class EachItem:
    """A list, each item one shape."""

    shape: Shape


Shape = Keys | EachValue | EachItem

_FIELD = Keys({**dict.fromkeys(("label", "type", "sharing", "sensitivity", "required", "column", "checks")),
               "mask": Keys(dict.fromkeys(("first", "last")))})
DATASET_SHAPE = Keys({
    "kind": None, "id": None, "title": None, "provider": None, "key": None, "schedule": None,
    "checks": None,  # each check's parameters are checked against the check vocabulary
    "source": Keys(dict.fromkeys(
        ("connection", "table", "watermark_column", "deleted_column", "lookback", "part_rows",
         "future_tolerance", "bad_watermark"))),
    "protection": Keys(dict.fromkeys(("footer_key", "conditional_key"))),
    "gate": Keys(dict.fromkeys(
        ("max_rejected_share", "max_missing_required_share", "min_snapshot_ratio", "max_delete_share"))),
    "fields": EachValue(_FIELD),
})
_APPROVAL = Keys(dict.fromkeys(("id", "purpose", "approved_by", "approved_on", "expires_on", "status")))
_GRANT = Keys({"dataset": None, "fields": None, "masked": None, "approval": _APPROVAL})
SUBSCRIBERS_SHAPE = Keys({
    "kind": None,
    "subscribers": EachItem(Keys({"id": None, "name": None, "keys": None, "status": None, "grants": EachItem(_GRANT)})),
})
SHAPES: dict[str, Keys] = {"dataset": DATASET_SHAPE, "subscribers": SUBSCRIBERS_SHAPE}


def unknown_keys(value: Any, shape: Shape, path: str = "") -> Iterator[str]:
    """Every key of ``value`` that ``shape`` does not know, as 'path: unknown key ...; did you mean ...?'."""
    if isinstance(shape, Keys) and isinstance(value, dict):
        for key, sub in value.items():
            if not isinstance(key, str) or key not in shape.known:
                yield f"{_join(path, key)}: unknown key{_line_note(value, key)}; {_nearest(key, shape.known)}"
            elif (inner := shape.known[key]) is not None:
                yield from unknown_keys(sub, inner, _join(path, key))
    elif isinstance(shape, EachValue) and isinstance(value, dict):
        for i, sub in enumerate(value.values()):
            yield from unknown_keys(sub, shape.shape, f"{path}[{i}]")
    elif isinstance(shape, EachItem) and isinstance(value, list):
        for i, sub in enumerate(value):
            yield from unknown_keys(sub, shape.shape, f"{path}[{i}]")


def _join(path: str, key: Any) -> str:
    name = key if isinstance(key, str) and _PLAIN_KEY.match(key) else show(key, 40)
    return f"{path}.{name}" if path else name


def _line_note(mapping: dict[Any, Any], key: Any) -> str:
    line = mapping.line_of(key) if isinstance(mapping, KeyLines) else None
    return f" (line {line})" if line else ""


def _nearest(key: Any, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(str(key)[:100], list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"


def catalog_dir() -> Path:
    """GOVSHARE_CATALOG (a folder) overrides the project's own catalogs/."""
    override = os.environ.get("GOVSHARE_CATALOG")
    return Path(override).resolve() if override else PROJECT_ROOT / "catalogs"


def load_catalog(directory: Path | None = None) -> Catalog:
    directory = Path(directory) if directory else catalog_dir()
    loader = _Loader(directory)
    return loader.load()


class _Loader:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        line = f"{where}: {what}"
        self.problems.append(line if len(line) <= MAX_PROBLEM_CHARS else line[: MAX_PROBLEM_CHARS - 1] + "…")

    def load(self) -> Catalog:
        if not self.directory.is_dir():
            raise ConfigError(f"catalog folder {self.directory} does not exist")
        raw_datasets: list[tuple[str, dict[str, Any]]] = []
        raw_subscribers: list[tuple[str, dict[str, Any]]] = []
        files = sorted(self.directory.glob("*.yaml"))
        if not files:
            self.problem(str(self.directory), "no *.yaml catalog files")
        for path in files:
            doc = self._read(path)
            if doc is None:
                continue
            kind = doc.get("kind")
            if kind == "dataset":
                raw_datasets.append((path.name, doc))
            elif kind == "subscribers":
                raw_subscribers.append((path.name, doc))
            else:
                self.problem(path.name, f"'kind' must be 'dataset' or 'subscribers', not {show(kind)}")

        datasets: dict[str, Dataset] = {}
        for where, doc in raw_datasets:
            ds = self._dataset(where, doc)
            if ds is None:
                continue
            if ds.id in datasets:
                self.problem(where, f"dataset {show(ds.id)} is declared twice")
            datasets[ds.id] = ds

        subscribers: dict[str, Subscriber] = {}
        for where, doc in raw_subscribers:
            for i, raw in enumerate(_as_list(doc.get("subscribers"))):
                sub = self._subscriber(f"{where}: subscribers[{i}]", raw, datasets)
                if sub is None:
                    continue
                if sub.id in subscribers:
                    self.problem(where, f"subscriber {show(sub.id)} is declared twice")
                subscribers[sub.id] = sub

        if self.problems:
            listed = self.problems[:MAX_LISTED_PROBLEMS]
            if len(self.problems) > len(listed):
                listed.append(f"... and {len(self.problems) - len(listed)} more problem(s) not listed")
            raise ConfigError(f"the catalog in {self.directory} has {len(self.problems)} problem(s)", problems=listed)
        return Catalog(datasets=datasets, subscribers=subscribers, directory=self.directory)

    def _read(self, path: Path) -> dict[str, Any] | None:
        read = read_yaml(path)
        for p in read.problems:
            self.problem(path.name, p)
        if not read.readable:
            return None
        doc = read.data
        if not isinstance(doc, dict):
            self.problem(path.name, "must be a mapping at the top level")
            return None
        kind = doc.get("kind")
        shape = SHAPES.get(kind) if isinstance(kind, str) else None
        if shape is not None:
            for p in unknown_keys(doc, shape):
                self.problem(path.name, p)
        return doc

    # -- datasets ------------------------------------------------------------------------

    def _dataset(self, where: str, doc: dict[str, Any]) -> Dataset | None:
        before = len(self.problems)
        ds_id = self._name(where, doc, "id", _NAME)
        where = f"{where} ({ds_id or '?'})"
        source = self._section(where, doc, "source")
        connection_id = self._name(where, source, "connection", _NAME, "source.connection")
        table = self._name(where, source, "table", _SOURCE_IDENT, "source.table")
        watermark = str(source.get("watermark_column", UPDATED_AT))
        deleted = str(source.get("deleted_column", IS_DELETED))
        for label, value in (("source.watermark_column", watermark), ("source.deleted_column", deleted)):
            if not _SOURCE_IDENT.match(value):
                self.problem(where, f"{label} {show(value)} is not a plain SQL identifier")

        fields = self._fields(where, doc.get("fields"))
        names = {f.name for f in fields}
        key = doc.get("key")
        if not _among(key, names):
            self.problem(where, f"key {show(key)} is not one of its fields")
        elif fields and next(f for f in fields if f.name == key).sharing == "none":
            self.problem(where, f"key {show(key)} cannot be 不予共享 (none)")
        checks = tuple(self._check(f"{where}: checks[{i}]", c, "record") for i, c in enumerate(_as_list(doc.get("checks"))))

        protection = self._section(where, doc, "protection")
        footer_key = str(protection.get("footer_key", ""))
        conditional_key = str(protection.get("conditional_key", ""))
        for label, value in (("protection.footer_key", footer_key), ("protection.conditional_key", conditional_key)):
            if not _KEY_NAME.match(value):
                self.problem(where, f"{label} {show(value)} must be a key name like 'population.footer'")

        gate_raw = self._section(where, doc, "gate")
        gate_values: dict[str, float] = {}
        for name in ("max_rejected_share", "max_missing_required_share", "min_snapshot_ratio", "max_delete_share"):
            value = gate_raw.get(name, getattr(Gate, name))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                self.problem(where, f"gate.{name} must be a number from 0 to 1, not {show(value)}")
                value = getattr(Gate, name)
            gate_values[name] = float(value)

        lookback = DEFAULT_LOOKBACK
        raw_lookback = source.get("lookback")
        if raw_lookback is not None:
            m = _DURATION.match(str(raw_lookback).strip())
            if m:
                lookback = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
            else:
                self.problem(where, f"source.lookback {show(raw_lookback)} must be a duration like '1h', '30m', '3600s'")

        future_tolerance = self._future_tolerance(where, source)
        bad_watermark = source.get("bad_watermark", "quarantine")
        if not _among(bad_watermark, get_args(BadWatermark)):
            self.problem(where, f"source.bad_watermark {show(bad_watermark)} must be one of: {', '.join(get_args(BadWatermark))}")
            bad_watermark = "quarantine"

        part_rows = source.get("part_rows", DEFAULT_PART_ROWS)
        if not isinstance(part_rows, int) or isinstance(part_rows, bool) or part_rows < 1000:
            self.problem(where, f"source.part_rows must be a whole number of at least 1000, not {show(part_rows)}")
            part_rows = DEFAULT_PART_ROWS

        schedule = doc.get("schedule")
        if schedule is not None and not isinstance(schedule, str):
            self.problem(where, "schedule must be a cron expression or preset like '@daily'")
        if len(self.problems) > before:
            return None
        return Dataset(
            id=ds_id,
            title=str(doc.get("title", ds_id)),
            provider=str(doc.get("provider", "")),
            connection_id=connection_id,
            source_table=table,
            key=key,
            watermark_column=watermark,
            deleted_column=deleted,
            schedule=schedule,
            fields=fields,
            checks=checks,
            footer_key=footer_key,
            conditional_key=conditional_key,
            gate=Gate(**gate_values),
            lookback=lookback,
            part_rows=part_rows,
            future_tolerance=future_tolerance,
            bad_watermark=bad_watermark,
        )

    def _future_tolerance(self, where: str, source: dict[str, Any]) -> timedelta:
        raw = source.get("future_tolerance")
        if raw is None:
            return DEFAULT_FUTURE_TOLERANCE
        m = _DURATION.match(str(raw).strip()) if not isinstance(raw, bool) else None
        value = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}) if m else None
        if value is None or value > MAX_FUTURE_TOLERANCE:
            self.problem(where, f"source.future_tolerance {show(raw)} must be a duration like '1d', '6h', '0s', "
                                f"at most {MAX_FUTURE_TOLERANCE.days}d")
            return DEFAULT_FUTURE_TOLERANCE
        return value

    def _fields(self, where: str, raw: Any) -> tuple[Field, ...]:
        if not isinstance(raw, dict) or not raw:
            self.problem(where, "'fields' must be a non-empty mapping of field name to its declaration")
            return ()
        out: list[Field] = []
        columns: set[str] = set()
        for name, spec in raw.items():
            fw = f"{where}: field {show(name)}"
            if not isinstance(name, str) or not _NAME.match(name):
                self.problem(fw, "field names are lower_snake_case identifiers")
                continue
            if name.endswith(MASKED_SUFFIX):
                self.problem(fw, f"field names ending in {MASKED_SUFFIX} are reserved for masked values")
                continue
            if not isinstance(spec, dict):
                self.problem(fw, "must be a mapping (type, sharing, sensitivity, ...)")
                continue
            type_ = str(spec.get("type", ""))
            decimal = None
            if m := _DECIMAL.match(type_):
                decimal = (int(m.group(1)), int(m.group(2)))
                type_ = "decimal"
            if type_ not in get_args(FieldType):
                self.problem(fw, f"type {show(spec.get('type'))} is not one of string, date, timestamp, int, decimal(p,s)")
            sharing = spec.get("sharing")
            if not _among(sharing, SHARING_LABELS):
                self.problem(fw, f"sharing {show(sharing)} must be unconditional (无条件共享), conditional (有条件共享) or none (不予共享)")
            sensitivity = spec.get("sensitivity")
            if sensitivity not in get_args(Sensitivity):
                self.problem(fw, f"sensitivity {show(sensitivity)} must be one of {', '.join(get_args(Sensitivity))}")
            column = str(spec.get("column", name))
            if not _SOURCE_IDENT.match(column):
                self.problem(fw, f"source column {show(column)} is not a plain SQL identifier")
            elif column.lower() in columns:
                self.problem(fw, f"source column {show(column)} is mapped twice")
            columns.add(column.lower())
            checks = tuple(self._check(f"{fw}: checks[{i}]", c, "field") for i, c in enumerate(_as_list(spec.get("checks"))))
            for check in checks:
                kinds = CHECKS[check.name].field_types if check.name in CHECKS else ()
                if kinds and type_ not in kinds:
                    self.problem(fw, f"check {show(check.name)} applies to {' or '.join(kinds)} fields, not to a {show(type_)} field")
            out.append(
                Field(
                    name=name,
                    type=type_,  # type: ignore[arg-type]
                    sharing=sharing,  # type: ignore[arg-type]
                    sensitivity=sensitivity,  # type: ignore[arg-type]
                    column=column,
                    required=self._flag(fw, spec, "required"),
                    label=str(spec.get("label", "")),
                    decimal=decimal,
                    checks=checks,
                    mask=self._mask(fw, spec.get("mask"), type_, sharing),
                )
            )
        return tuple(out)

    def _mask(self, where: str, raw: Any, type_: str, sharing: Any) -> Mask | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.problem(where, "mask must be a mapping like {first: 3, last: 4}")
            return None
        if type_ != "string":
            self.problem(where, f"mask applies to string fields, not to a {show(type_)} field")
        if sharing == "none":
            self.problem(where, "a 不予共享 (none) field is never published, masked or not: it cannot declare a mask")
        keep: dict[str, int] = {}
        for part in ("first", "last"):
            value = raw.get(part, 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MASK_KEEP:
                self.problem(where, f"mask.{part} must be a whole number of characters from 0 to {MAX_MASK_KEEP}, "
                                    f"not {show(value)}")
                value = 0
            keep[part] = value
        if not raw:
            self.problem(where, "mask needs first and/or last (the characters kept at each end)")
        return Mask(keep["first"], keep["last"])

    def _check(self, where: str, raw: Any, scope: str) -> Check:
        if isinstance(raw, str):
            check = Check(raw)
        elif isinstance(raw, dict) and len(raw) == 1:
            name, params = next(iter(raw.items()))
            if params is None:
                params = {}
            if not isinstance(params, dict):
                self.problem(where, f"parameters of check {show(name)} must be a mapping")
                params = {}
            check = Check(str(name), tuple(sorted((str(k), str(v)) for k, v in params.items())))
        else:
            self.problem(where, f"a check is a name or a one-key mapping of name to parameters, not {show(raw)}")
            return Check("invalid")
        for p in check_problems(check):
            self.problem(where, p)
        spec = CHECKS.get(check.name)
        if spec is not None and spec.scope != scope:
            self.problem(where, f"check {show(check.name)} is a {spec.scope} check and cannot be declared as a {scope} check")
        return check

    # -- subscribers ---------------------------------------------------------------------

    def _subscriber(self, where: str, raw: Any, datasets: dict[str, Dataset]) -> Subscriber | None:
        if not isinstance(raw, dict):
            self.problem(where, "must be a mapping")
            return None
        before = len(self.problems)
        sub_id = self._name(where, raw, "id", _SUBSCRIBER_ID)
        where = f"{where} ({sub_id or '?'})"
        keys = raw.get("keys", "external")
        if keys not in get_args(KeySource):
            self.problem(where, f"keys must be 'local' (generated by govshare init) or 'external', not {show(keys)}")
        status = self._status(where, raw)
        grants: dict[str, Grant] = {}
        for i, g in enumerate(_as_list(raw.get("grants"))):
            grant = self._grant(f"{where}: grants[{i}]", g, datasets)
            if grant is None:
                continue
            if grant.dataset in grants:
                self.problem(where, f"two grants for dataset {show(grant.dataset)}")
            grants[grant.dataset] = grant
        if len(self.problems) > before:
            return None
        return Subscriber(id=sub_id, name=str(raw.get("name", sub_id)), keys=keys, grants=grants, status=status)

    def _grant(self, where: str, raw: Any, datasets: dict[str, Dataset]) -> Grant | None:
        if not isinstance(raw, dict):
            self.problem(where, "must be a mapping with dataset and fields")
            return None
        ds = datasets.get(raw["dataset"]) if _among(raw.get("dataset"), datasets) else None
        if ds is None:
            self.problem(where, f"dataset {show(raw.get('dataset'))} is not in the catalog")
            return None
        wanted = raw.get("fields")
        names: list[str] = []
        for item in _as_list(wanted):
            if _among(item, SHARING_LABELS):
                names += [f.name for f in ds.fields_of(item)]
            elif _among(item, ds.field_names):
                names.append(item)
            else:
                self.problem(where, f"{show(item)} is neither a field of {ds.id} nor a sharing class")
        masked: list[str] = []
        for item in _as_list(raw.get("masked")):
            if not _among(item, ds.field_names):
                self.problem(where, f"masked: {show(item)} is not a field of {ds.id}")
            elif ds.field(item).sharing != "none" and ds.field(item).mask is None:
                self.problem(where, f"masked: field {ds.id}.{item} declares no mask in the catalog of {ds.id}")
            elif item in names:
                self.problem(where, f"field {ds.id}.{item} is granted both plain (fields) and masked; grant it one way")
            else:
                masked.append(item)
        names += masked
        if not names:
            self.problem(where, "grants no fields")
        for name in names:
            if name in ds.field_names and ds.field(name).sharing == "none":
                self.problem(where, f"field {ds.id}.{name} is 不予共享 (none) and can be granted to nobody")
        approval = self._approval(where, raw.get("approval"))
        conditional = [n for n in names if n in ds.field_names and ds.field(n).sharing == "conditional"]
        if conditional and approval is None:
            self.problem(where, f"conditional (有条件共享) fields {', '.join(conditional)} need an approval (id, purpose, approved_by, approved_on)")
        ordered = tuple(f.name for f in ds.fields if f.name in set(names))
        return Grant(dataset=ds.id, fields=ordered, approval=approval,
                     masked=tuple(f for f in ordered if f in set(masked)))

    def _approval(self, where: str, raw: Any) -> Approval | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self.problem(where, "approval must be a mapping")
            return None
        missing = [k for k in ("id", "purpose", "approved_by", "approved_on") if not raw.get(k)]
        if missing:
            self.problem(where, f"approval lacks {', '.join(missing)}")
            return None
        status = self._status(f"{where}: approval", raw)
        approved_on, expires_on = raw.get("approved_on"), raw.get("expires_on")
        for label, value in (("approved_on", approved_on), ("expires_on", expires_on)):
            # a datetime is a date too, and would not compare with one
            if value is not None and (not isinstance(value, date) or isinstance(value, datetime)):
                self.problem(where, f"approval.{label} must be a date (YYYY-MM-DD), not {show(value)}")
                return None
        if expires_on is not None and expires_on < approved_on:
            approval_id = show(str(raw["id"]))
            self.problem(where, f"approval {approval_id} expires ({expires_on}) before it was approved ({approved_on})")
            return None
        return Approval(
            id=str(raw["id"]),
            purpose=str(raw["purpose"]),
            approved_by=str(raw["approved_by"]),
            approved_on=approved_on,
            expires_on=expires_on,
            status=status,
        )

    def _section(self, where: str, doc: dict[str, Any], key: str) -> dict[str, Any]:
        """A nested mapping such as source or gate: absent or empty is {}, anything else a problem."""
        value = doc.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(where, f"'{key}' must be a mapping, not {show(value)}")
            return {}
        return value

    def _flag(self, where: str, doc: dict[str, Any], key: str) -> bool:
        value = doc.get(key, False)
        if not isinstance(value, bool):
            self.problem(where, f"{key} must be true or false, not {show(value)}")
            return False
        return value

    def _status(self, where: str, doc: dict[str, Any]) -> Status:
        value = doc.get("status", "active")
        if not _among(value, get_args(Status)):
            self.problem(where, f"status {show(value)} must be one of {', '.join(get_args(Status))}")
            return "active"
        return value  # type: ignore[return-value]

    def _name(self, where: str, doc: dict[str, Any], key: str, pattern: re.Pattern[str], label: str | None = None) -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not pattern.match(value):
            self.problem(where, f"{label or key} {show(value)} is missing or not a valid identifier")
            return ""
        return value


def _among(value: Any, choices: Any) -> bool:
    """Membership that a hostile value (a list, a mapping) cannot turn into a TypeError."""
    return isinstance(value, str) and value in choices


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
