"""Schema changes between the catalog and the published versions, and the rule that governs them.

Every version's manifest records the schema it was published with: per published field its
name, Arrow type and sharing class (不予共享 fields are listed as withheld). The rule:

- **Sync.** A sync whose catalog differs from the latest version's manifest in the key, or in a
  published field's type or sharing class, or that adds a field to or removes one from the
  published set, is refused (exit 2, naming each field and its change) unless it is a ``--full``
  sync: a full snapshot republishes every row under the new schema, and from then on it is the
  base of full pulls. The key itself never changes (a new key is a new dataset).
- **Pull.** Each version is read under its own manifest's schema, never the catalog's. The
  versions a pull reads, and for ``--since N`` version N itself (the subscriber's copy), must
  share one schema: a pull across a change is refused, naming the version that made it.
- **Catalog against the versions read.** Every field the subscriber's grant covers (resolved
  against the current catalog) must be published in the versions read, with the catalog's type,
  at the catalog's sharing class or a more open one; otherwise the pull is refused until a full
  sync publishes the catalog's schema. So a field made less shared is delivered, from any
  version, only to a grant that covers it at its new class (a 不予共享 field to nobody), and a
  field made more shared reaches its new subscribers only through the full snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from common.catalog import MASKED_SUFFIX, Dataset, Mask, SharingClass, masked_column
from common.errors import ConfigError, IntegrityError
from common.schema import arrow_type
from sharing.store import Manifest, SharingStore

if TYPE_CHECKING:
    import pyarrow as pa

ChangeKind = Literal["type", "sharing", "mask", "added", "removed"]
_OPENNESS: Mapping[str, int] = {"none": 0, "conditional": 1, "unconditional": 2}
_DECIMAL = re.compile(r"decimal128\((\d+), (\d+)\)")


@dataclass(frozen=True)
class PublishedField:
    name: str
    type: str  # the Arrow type as a manifest writes it: "string", "int64", "decimal128(18, 4)", ...
    sharing: SharingClass
    mask: str = ""  # of a masked column (<field>__masked): its mask, as "first=3,last=4"


def mask_text(first: int, last: int) -> str:
    return f"first={first},last={last}"


@dataclass(frozen=True)
class Schema:
    """What a version publishes (or what the catalog would publish now)."""

    key: str
    fields: Mapping[str, PublishedField]  # the published fields, by name
    withheld: frozenset[str]  # 不予共享 fields

    def sharing_of(self, name: str) -> str:
        if name in self.fields:
            return self.fields[name].sharing
        return "none" if name in self.withheld else "absent"


@dataclass(frozen=True)
class FieldChange:
    field: str
    kind: ChangeKind
    before: str
    after: str

    def describe(self) -> str:
        if self.kind == "type":
            return f"field {self.field} changed type from {self.before} to {self.after}"
        if self.kind == "sharing":
            return f"field {self.field} changed sharing from {self.before} to {self.after}"
        if self.kind == "mask":
            return f"masked column {self.field} changed its mask from {self.before} to {self.after}"
        if self.kind == "added":
            return f"field {self.field} was added ({self.after})"
        return f"field {self.field} was removed (it was {self.before})"


def manifest_schema(manifest: Manifest) -> Schema:
    doc = manifest.doc
    try:
        fields = {f["name"]: PublishedField(f["name"], f["type"], f["sharing"], _mask_of(f.get("mask")))
                  for f in doc["schema"]}
        return Schema(doc["key"], fields, frozenset(doc.get("withheld_fields", ())))
    except (KeyError, TypeError):
        raise IntegrityError(f"{doc.get('dataset')} version {manifest.version}: the manifest's schema is unreadable") from None


def _mask_of(entry: object) -> str:
    if entry is None:
        return ""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int) for k in ("first", "last")):
        raise TypeError("a manifest's mask is first and last")
    return mask_text(entry["first"], entry["last"])


def catalog_schema(dataset: Dataset) -> Schema:
    """What the catalog would publish now: the published fields, and a masked column (string, at
    its field's sharing class) per field that declares a mask."""
    fields = {f.name: PublishedField(f.name, str(arrow_type(f)), f.sharing) for f in dataset.published_fields}
    for f in dataset.masked_fields:
        mask: Mask = f.mask  # type: ignore[assignment]
        name = masked_column(f.name)
        fields[name] = PublishedField(name, "string", f.sharing, mask_text(mask.first, mask.last))
    return Schema(dataset.key, fields, frozenset(f.name for f in dataset.fields_of("none")))


def schema_changes(before: Schema, after: Schema) -> list[FieldChange]:
    """Each published field whose type or sharing class differs, and each one added or removed
    (a field that stays 不予共享 is no change: it is never published)."""
    changes: list[FieldChange] = []
    for name, old in before.fields.items():
        new = after.fields.get(name)
        if new is None:
            gone = after.sharing_of(name)
            changes.append(FieldChange(name, "sharing", old.sharing, "none") if gone == "none"
                           else FieldChange(name, "removed", old.sharing, ""))
        elif new.type != old.type:
            changes.append(FieldChange(name, "type", old.type, new.type))
        elif new.sharing != old.sharing:
            changes.append(FieldChange(name, "sharing", old.sharing, new.sharing))
        elif new.mask != old.mask:
            changes.append(FieldChange(name, "mask", old.mask, new.mask))
    for name, new in after.fields.items():
        if name not in before.fields:
            changes.append(FieldChange(name, "sharing", "none", new.sharing) if name in before.withheld
                           else FieldChange(name, "added", "", new.sharing))
    return changes


def check_sync(store: SharingStore, dataset: Dataset, full: bool) -> None:
    """Refuse (exit 2) a sync whose catalog changes the published schema, unless it is --full."""
    latest = store.latest()
    if latest is None:
        return
    published = manifest_schema(store.read_manifest(latest))
    current = catalog_schema(dataset)
    if published.key != current.key:
        raise ConfigError(f"{dataset.id}: the catalog's key is {current.key}, version {latest} was published keyed on "
                          f"{published.key}; the key of a dataset never changes: publish a new dataset instead")
    changes = schema_changes(published, current)
    if changes and not full:
        listed = "; ".join(c.describe() for c in changes)
        raise ConfigError(f"{dataset.id}: the catalog changed the published schema since version {latest}: {listed}. "
                          f"Publish a full snapshot under the new schema with 'govshare sync {dataset.id} --full' "
                          "(README: Changing the catalog)")


def check_span(dataset_id: str, manifests: Sequence[Manifest], base: int, last: int,
               names: Sequence[str] | None = None) -> Schema:
    """The one schema of versions base..last (of the fields ``names``, or of every field); a
    version in between that changed it is refused (exit 2), saying what to pull instead."""
    schema = manifest_schema(manifests[base - 1])
    for v in range(base + 1, last + 1):
        changes = [c for c in schema_changes(schema, manifest_schema(manifests[v - 1])) if names is None or c.field in names]
        if changes:
            listed = "; ".join(c.describe() for c in changes)
            raise ConfigError(f"{dataset_id}: version {v} changed the schema ({listed}), so no pull can span it: "
                              f"pull --since {v} or a full pull")
    return schema


def check_catalog(dataset: Dataset, schema: Schema, fields: Sequence[str], version: int) -> None:
    """Refuse (exit 2) a view whose granted ``fields`` (resolved against the current catalog) are
    not published in ``schema`` with the catalog's type, at its sharing class or a more open one."""
    current = catalog_schema(dataset)
    wrong: list[str] = []
    for name in fields:
        now, then = current.fields[name], schema.fields.get(name)
        if then is None and name.endswith(MASKED_SUFFIX):
            wrong.append(f"masked column {name} is not published there (the field's mask was declared later)")
        elif then is None:
            wrong.append(f"field {name} is not published there ({schema.sharing_of(name)}), the catalog shares it {now.sharing}")
        elif then.type != now.type:
            wrong.append(f"field {name} is published as {then.type}, the catalog has {now.type}")
        elif _OPENNESS[then.sharing] < _OPENNESS[now.sharing]:
            wrong.append(f"field {name} is published {then.sharing}, the catalog shares it {now.sharing}")
        elif then.mask != now.mask:
            wrong.append(f"masked column {name} is published with mask {then.mask}, the catalog's is {now.mask}")
    if wrong:
        raise ConfigError(f"{dataset.id}: version {version} was published under another schema than the catalog's: "
                          f"{'; '.join(wrong)}. Pull a version published since the catalog changed, or, if there is "
                          f"none yet, have the provider publish one with 'govshare sync {dataset.id} --full'")


def arrow_schema(schema: Schema, names: Sequence[str]) -> pa.Schema:
    """The Arrow schema of ``names`` as ``schema`` published them, in the given order."""
    import pyarrow as pa

    missing = [n for n in names if n not in schema.fields]
    if missing:
        raise ConfigError(f"fields {', '.join(missing)} are not published in the versions read")
    return pa.schema([pa.field(n, _parse_type(schema.fields[n].type), nullable=n != schema.key) for n in names])


def _parse_type(text: str) -> pa.DataType:
    import pyarrow as pa

    simple = {"string": pa.string(), "int64": pa.int64(), "date32[day]": pa.date32(), "timestamp[us]": pa.timestamp("us")}
    if text in simple:
        return simple[text]
    decimal = _DECIMAL.fullmatch(text)
    if decimal:
        return pa.decimal128(int(decimal[1]), int(decimal[2]))
    raise IntegrityError(f"a manifest names the Arrow type {text!r}, which no catalog type produces")
