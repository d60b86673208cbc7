"""Folding versions into a state or a change feed (Delta Sharing's CDF shape).

Each version holds upserts and deletes. Folding versions a..b keeps, per key, the last change:
a full view drops the deletes, a change feed keeps them. Vectorised over Arrow: a sort and a
neighbour comparison, never a Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from common.errors import InternalError
from common.schema import CHANGE_TYPE, COMMIT_VERSION

UPSERT = "upsert"
DELETE = "delete"


@dataclass(frozen=True)
class VersionChanges:
    version: int
    upserts: pa.Table  # the projected columns, including the column folded by
    deletes: pa.Table  # the column folded by, and those of the projected columns a deletes file holds


def fold(changes: Sequence[VersionChanges], key: str, schema: pa.Schema, keep_deletes: bool) -> pa.Table:
    """The last change per key over the given versions, oldest first in ``changes``.

    ``key`` names the column that identifies a record: the dataset's key, or its pseudonym
    ``_key_ref`` (so that a view without the key field folds alike). The result has ``schema``'s
    columns plus _change_type and _commit_version. Delete rows carry what the deletes hold of
    ``schema``'s columns (the key, its ref), the other columns null. Keys are unique within a version, so a row survives when no
    newer version touches its key: walking from the newest version back, each older version is
    filtered against the keys seen so far (a hash lookup into the newer versions' keys, which are
    few next to a snapshot) instead of sorting everything.

    Every version must already hold ``schema``'s types: a value is never converted to another
    type here (sharing.schema_change decides which versions may be folded together).
    """
    out_schema = schema.append(pa.field(CHANGE_TYPE, pa.string())).append(pa.field(COMMIT_VERSION, pa.int64()))
    parts: list[pa.Table] = []
    seen: list[pa.Array] = []
    for c in reversed(changes):
        upserts = _tag(_conform(c, schema), UPSERT, c.version)
        deletes = c.deletes
        filler = {
            name: deletes.column(name) if name in deletes.column_names else pa.nulls(deletes.num_rows, schema.field(name).type)
            for name in schema.names
        }
        removed = _tag(pa.table(filler, schema=schema), DELETE, c.version)
        if seen:
            newer = pa.concat_arrays(seen)
            upserts = upserts.filter(pc.invert(pc.is_in(upserts.column(key), value_set=newer)))
            removed = removed.filter(pc.invert(pc.is_in(removed.column(key), value_set=newer)))
        if keep_deletes:
            parts.append(removed)
        parts.append(upserts)
        if c is not changes[0]:
            seen += [a for a in (c.upserts.column(key).combine_chunks(), deletes.column(key).combine_chunks()) if len(a)]
    if not parts:
        return out_schema.empty_table()
    return pa.concat_tables(list(reversed(parts))) if len(parts) > 1 else parts[0]


def _conform(c: VersionChanges, schema: pa.Schema) -> pa.Table:
    """The version's upserts in ``schema``'s column order, with its nullability; types must match."""
    upserts = c.upserts.select(schema.names)
    for field in schema:
        found = upserts.schema.field(field.name).type
        if found != field.type:
            raise InternalError(f"version {c.version} holds {field.name} as {found}, the view reads it as {field.type}: "
                                "versions of different schemas were folded together")
    return upserts.cast(schema)


def _tag(table: pa.Table, change: str, version: int) -> pa.Table:
    n = table.num_rows
    table = table.append_column(CHANGE_TYPE, pa.repeat(pa.scalar(change, pa.string()), n))
    return table.append_column(COMMIT_VERSION, pa.repeat(pa.scalar(version, pa.int64()), n))
