"""Killed syncs: each row SIGKILLs `govshare sync` at a named point (common.faults) during the
first or the second of two syncs, then syncs again as usual. The home must end as a clean run on
the same source leaves it: the same versions 1..N with the same row counts, the same keys in the
pulled view, the watermark at the last visible version, `govshare verify` passing, and nothing
half-made left behind."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.faults import FAULT_ENV, POINTS
from tests.integration.syncing import DATASET, Place, change_source, new_place

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    point: str
    killed_sync: int  # 1: the first sync (no version yet), 2: the second (a delta)


CASES = [Case(point, 2) for point in POINTS] + [Case("staged", 1), Case("manifest", 1), Case("visible", 1)]


def counts(place: Place) -> list[tuple[int, str, int, int]]:
    return [(v["version"], v["kind"], v["upserts"], v["deletes"]) for v in place.versions()]


def two_syncs(place: Place, case: Case | None) -> None:
    for sync in (1, 2):
        if sync == 2:
            change_source(place.source)
        if case is not None and case.killed_sync == sync:
            killed = place.run("sync", DATASET, **{FAULT_ENV: case.point})
            assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
        place.ok("sync", DATASET)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> tuple[list, list[str]]:
    """What two clean syncs publish: row counts per version and the pulled keys."""
    place = new_place(tmp_path_factory.mktemp("clean"), demo_sources)
    two_syncs(place, None)
    return counts(place), place.pulled_keys(place.home.parent / "clean.parquet")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.point}-in-sync-{c.killed_sync}" for c in CASES])
def test_a_killed_sync_is_finished_by_the_next(case: Case, clean, tmp_path: Path, demo_sources) -> None:
    place = new_place(tmp_path, demo_sources)
    two_syncs(place, case)
    expected_counts, expected_keys = clean
    assert counts(place) == expected_counts  # versions 1..N, no gap, no change published twice
    assert place.pulled_keys(tmp_path / "pulled.parquet") == expected_keys
    state, head = place.state(), place.versions()[-1]
    assert (state["version"], state["manifest_sha256"]) == (head["version"], head["manifest_sha256"])
    assert state["watermark"].replace("T", " ")[:19] == head["watermark_to"].replace("T", " ")[:19]
    assert "verified" in place.ok("verify", DATASET)
    assert place.stray_files() == []
    assert not (place.home / "work" / f"{DATASET}.lease").exists()
