"""Folding versions into a state or a change feed."""

from __future__ import annotations

import pyarrow as pa
import pytest

from common.errors import InternalError
from sharing.feed import VersionChanges, fold

SCHEMA = pa.schema([("k", pa.string()), ("v", pa.int64())])


def _v(version: int, upserts: dict, deletes: list[str]) -> VersionChanges:
    return VersionChanges(version, pa.table(upserts, schema=SCHEMA), pa.table({"k": pa.array(deletes, pa.string())}))


HISTORY = [
    _v(1, {"k": ["a", "b", "c"], "v": [1, 2, 3]}, []),
    _v(2, {"k": ["b"], "v": [20]}, ["c"]),
    _v(3, {"k": ["d", "b"], "v": [4, 200]}, ["a"]),
]


def _rows(table: pa.Table) -> dict[str, tuple]:
    return {r["k"]: (r["v"], r["_change_type"], r["_commit_version"]) for r in table.to_pylist()}


def test_full_view_keeps_the_last_upsert_per_key_and_drops_deleted_keys():
    assert _rows(fold(HISTORY, "k", SCHEMA, keep_deletes=False)) == {
        "b": (200, "upsert", 3),
        "d": (4, "upsert", 3),
    }


def test_change_feed_collapses_several_changes_to_the_latest():
    assert _rows(fold(HISTORY[1:], "k", SCHEMA, keep_deletes=True)) == {
        "b": (200, "upsert", 3),
        "c": (None, "delete", 2),
        "d": (4, "upsert", 3),
        "a": (None, "delete", 3),
    }


def test_delete_then_reinsert_is_an_upsert():
    history = HISTORY + [_v(4, {"k": ["a"], "v": [10]}, [])]
    assert _rows(fold(history, "k", SCHEMA, keep_deletes=True))["a"] == (10, "upsert", 4)


def test_empty_fold_has_the_change_columns():
    table = fold([], "k", SCHEMA, keep_deletes=True)
    assert table.num_rows == 0
    assert table.schema.names == ["k", "v", "_change_type", "_commit_version"]


def test_a_version_of_another_type_is_refused_not_converted():
    strings = pa.schema([("k", pa.string()), ("v", pa.string())])
    old = VersionChanges(1, pa.table({"k": ["a"], "v": ["1"]}, schema=strings), pa.table({"k": pa.array([], pa.string())}))
    with pytest.raises(InternalError, match="version 1 holds v as string, the view reads it as int64"):
        fold([old, *HISTORY[1:]], "k", SCHEMA, keep_deletes=True)
