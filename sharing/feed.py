"""Folding versions into a state or a change feed (Delta Sharing's CDF shape).

Each version holds upserts and deletes. Folding versions a..b keeps, per key, the last change:
a full view drops the deletes, a change feed keeps them. Vectorised over Arrow: a sort and a
neighbour comparison, never a Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from govshare.schema import CHANGE_TYPE, COMMIT_VERSION

UPSERT = "upsert"
DELETE = "delete"


@dataclass(frozen=True)
class VersionChanges:
    version: int
    upserts: pa.Table  # the projected columns, including the key
    deletes: pa.Table  # the key column only


def latest_per_key(keys: pa.Array | pa.ChunkedArray, order: Sequence[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    """Row indices of the last row per key, where 'last' is the greatest (order..., row position)."""
    n = len(keys)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    position = pa.array(np.arange(n, dtype=np.int64))
    table = pa.table({"k": keys, **{f"o{i}": col for i, col in enumerate(order)}, "p": position})
    sort_keys = [("k", "ascending")] + [(f"o{i}", "descending") for i in range(len(order))] + [("p", "descending")]
    idx = pc.sort_indices(table, sort_keys=sort_keys)
    sorted_keys = pc.take(table.column("k"), idx)
    first = np.ones(n, dtype=bool)
    if n > 1:
        differs = pc.not_equal(sorted_keys.slice(1), sorted_keys.slice(0, n - 1))
        first[1:] = np.asarray(differs.to_numpy(zero_copy_only=False), dtype=bool)
    return np.sort(idx.to_numpy()[first])


def fold(changes: Sequence[VersionChanges], key: str, schema: pa.Schema, keep_deletes: bool) -> pa.Table:
    """The last change per key over the given versions, oldest first in ``changes``.

    The result has ``schema``'s columns plus _change_type and _commit_version. Delete rows carry
    only the key (other columns null).
    """
    parts: list[pa.Table] = []
    for c in changes:
        parts.append(_tag(c.upserts.select(schema.names).cast(schema), UPSERT, c.version))
        deletes = c.deletes.select([key])
        filler = {
            name: pa.nulls(deletes.num_rows, schema.field(name).type) if name != key else deletes.column(key)
            for name in schema.names
        }
        parts.append(_tag(pa.table(filler, schema=schema), DELETE, c.version))
    out_schema = schema.append(pa.field(CHANGE_TYPE, pa.string())).append(pa.field(COMMIT_VERSION, pa.int64()))
    if not parts:
        return out_schema.empty_table()
    combined = pa.concat_tables(parts)
    if len(changes) > 1:
        # Within one version keys are unique; across versions the later version wins.
        winners = latest_per_key(combined.column(key), [combined.column(COMMIT_VERSION)])
        combined = combined.take(pa.array(winners))
    if not keep_deletes:
        combined = combined.filter(pc.equal(combined.column(CHANGE_TYPE), UPSERT))
    return combined


def _tag(table: pa.Table, change: str, version: int) -> pa.Table:
    n = table.num_rows
    table = table.append_column(CHANGE_TYPE, pa.repeat(pa.scalar(change, pa.string()), n))
    return table.append_column(COMMIT_VERSION, pa.repeat(pa.scalar(version, pa.int64()), n))
