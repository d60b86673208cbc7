"""The state index as a base plus per-version deltas: what it answers equals the fold of the changes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sharing import index as state_index
from keys.pseudonyms import FINGERPRINT, KEY_REF
from sharing.index import StateIndex


def ref(n: int) -> bytes:
    return n.to_bytes(16, "big")


def fp(n: int, generation: int) -> bytes:
    return (n * 1000 + generation).to_bytes(16, "big")


def delta(path: Path, changes: list[tuple[int, str, int]]) -> Path:
    """A version's index delta: (key number, 'upsert'|'delete', fingerprint generation)."""
    pq.write_table(pa.table({
        KEY_REF: pa.array([ref(n) for n, _, _ in changes], pa.binary(16)),
        FINGERPRINT: pa.array([fp(n, g) for n, _, g in changes], pa.binary(16)),
        "change": [c for _, c, _ in changes],
    }), path)
    return path


def expected(history: list[list[tuple[int, str, int]]]) -> dict[bytes, tuple[bytes, int]]:
    state: dict[bytes, tuple[bytes, int]] = {}
    for version, changes in enumerate(history, start=1):
        if version == 1:
            state = {}
        for n, change, generation in changes:
            if change == "upsert":
                state[ref(n)] = (fp(n, generation), version)
            else:
                state.pop(ref(n), None)
    return state


HISTORY = [
    [(n, "upsert", 0) for n in range(100)],  # v1, a snapshot
    [(1, "upsert", 1), (2, "delete", 0), (100, "upsert", 0), (101, "delete", 0)],  # 101: never published
    [(2, "upsert", 2), (3, "delete", 0), (1, "upsert", 3)],  # 2 back after its delete
    [(100, "delete", 0), (4, "upsert", 4)],
]


def growth(history: list[list[tuple[int, str, int]]], version: int) -> int:
    """New keys minus deleted keys of a version, as the publish decision counts them."""
    return len(expected(history[:version])) - len(expected(history[:version - 1]))


def build(tmp_path: Path, history: list[list[tuple[int, str, int]]]) -> StateIndex:
    index = StateIndex(tmp_path / "state", "population")
    for version, changes in enumerate(history, start=1):
        index.add(delta(tmp_path / f"d{version}.parquet", changes), version, replace=version == 1,
                  growth=growth(history, version))
    return index


def answers(index: StateIndex) -> dict[bytes, tuple[bytes, int]]:
    return {r: index.lookup(r) for r in index.refs().to_pylist()}


def test_deltas_answer_like_the_fold_of_every_change(tmp_path: Path) -> None:
    index = build(tmp_path, HISTORY)
    assert [v for v, _ in index.deltas()] == [2, 3, 4]  # 6 delta rows < 10% of 100: not compacted
    want = expected(HISTORY)
    assert answers(index) == want
    assert index.rows() == len(want) == 100 - 1 + 1 + 1 - 1 - 1  # -2 +100 (v2), +2 -3 (v3), -100 (v4)
    assert index.lookup(ref(3)) is None and index.lookup(ref(101)) is None and index.lookup(ref(2)) == (fp(2, 2), 3)


def test_compaction_folds_the_deltas_into_the_base_without_changing_an_answer(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_index, "MAX_DELTAS", 3)
    index = build(tmp_path, HISTORY)
    assert index.deltas() == [] and not list((index.folder / state_index.DELTAS).glob("*.parquet"))
    assert pq.ParquetFile(index.base).metadata.num_rows == index.rows() == len(expected(HISTORY))
    assert answers(index) == expected(HISTORY)


def test_a_snapshot_replaces_base_and_deltas(tmp_path: Path) -> None:
    history = [*HISTORY, [(n, "upsert", 9) for n in range(50, 60)]]
    index = StateIndex(tmp_path / "state", "population")
    for version, changes in enumerate(history, start=1):
        index.add(delta(tmp_path / f"d{version}.parquet", changes), version, replace=version in (1, 5),
                  growth=growth(history, version))
    assert index.deltas() == [] and index.rows() == 10
    assert answers(index) == {ref(n): (fp(n, 9), 5) for n in range(50, 60)}


def test_no_state_before_the_first_version(tmp_path: Path) -> None:
    index = StateIndex(tmp_path / "state", "population")
    assert not index.exists() and index.rows() == 0 and len(index.refs()) == 0 and index.lookup(ref(1)) is None


def test_a_decision_in_several_passes_decides_like_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision's passes split the keys by hash: every key is decided once, whatever the split."""
    from datetime import datetime, timedelta

    from sharing import decide as decide_module
    from sharing.decide import MARKERS_SCHEMA, decide

    keys = [ref(n % 700) for n in range(1000)]  # 300 keys twice: the later row wins
    markers = tmp_path / "markers-0.parquet"
    pq.write_table(pa.table({
        KEY_REF: pa.array(keys, pa.binary(16)), FINGERPRINT: pa.array([fp(n, 0) for n in range(1000)], pa.binary(16)),
        "updated_at": pa.array([datetime(2026, 11, 1) + timedelta(seconds=n) for n in range(1000)], pa.timestamp("us")),
        "is_deleted": pa.array([1 if n % 97 == 0 else 0 for n in range(1000)], pa.int8()),
    }, schema=MARKERS_SCHEMA), markers)
    index = build(tmp_path, HISTORY)
    results = []
    for pass_rows in (10_000, 150):
        monkeypatch.setattr(decide_module, "PASS_ROWS", pass_rows)
        delta = tmp_path / f"delta-{pass_rows}.parquet"
        decision = decide([markers], False, index, delta)
        changes = pq.read_table(delta).sort_by(KEY_REF).to_pylist()
        results.append((decision.publish.tolist(), decision.upserts, decision.deletes, decision.new_keys,
                        decision.superseded, decision.unchanged, changes))
    assert results[0] == results[1]
    assert results[0][4] == 300 and sum(results[0][0]) == results[0][1] + results[0][2]
