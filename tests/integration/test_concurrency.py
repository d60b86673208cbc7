"""Concurrent syncs of one dataset over one home: each change is published once, and a sync that
finds the dataset's sync lease held says which run holds it. Each row: who holds the lease (two
syncs started together, or a lease written by another process), the wait allowed, and what the
sync must end with."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from sharing.store import SyncLease
from tests.integration.syncing import DATASET, ROOT, Place, new_place

pytestmark = pytest.mark.integration

HOLDER = """
import sys, time
from pathlib import Path
from sharing.store import SyncLease
SyncLease(Path(sys.argv[1]), "population").hold("holder-run", sys.argv[2])
print("held", flush=True)
time.sleep(600)
"""


def published(place: Place) -> list[tuple[int, int, int]]:
    return [(v["version"], v["upserts"], v["deletes"]) for v in place.versions()]


@pytest.fixture(scope="module")
def once(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> list[tuple[int, int, int]]:
    place = new_place(tmp_path_factory.mktemp("once"), demo_sources)
    place.ok("sync", DATASET)
    return published(place)


@dataclass(frozen=True)
class Together:
    name: str
    wait: str  # GOVSHARE_SYNC_WAIT of both syncs
    loser_codes: frozenset[int]  # what the sync that did not publish may end with


TOGETHER = [
    Together("no-wait", "0", frozenset({0, 75})),  # 0 only if the first finished before the second looked
    Together("wait", "300", frozenset({0})),
]


@pytest.mark.parametrize("case", TOGETHER, ids=[c.name for c in TOGETHER])
def test_two_syncs_started_together_publish_each_change_once(case: Together, once, tmp_path: Path, demo_sources) -> None:
    place = new_place(tmp_path, demo_sources)
    procs = [place.start("sync", DATASET, GOVSHARE_SYNC_WAIT=case.wait) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for code, _, err in results:
        assert "Traceback" not in err
    winners = [r for r in results if "published version 1" in r[1]]
    assert len(winners) == 1 and winners[0][0] == 0
    (code, out, err), = [r for r in results if r is not winners[0]]
    assert code in case.loser_codes, err
    holder = place.state()["run_id"]
    if code == 75:
        assert f"another sync holds the dataset: run {holder} (pid " in err and "since" in err
    else:
        assert "nothing new" in out
    if case.wait != "0" and "waiting up to" in err:
        assert f"held by run {holder}" in err
    assert published(place) == once
    assert "verified" in place.ok("verify", DATASET)
    assert place.stray_files() == [] and not (place.home / "work" / f"{DATASET}.lease").exists()


@dataclass(frozen=True)
class Held:
    name: str
    scope: str
    kill_holder: bool  # SIGKILL the holding process before the sync
    renewed_ago: timedelta | None  # rewrite the lease as last renewed this long ago
    exit_code: int
    message: str


HELD = [
    Held("live-process", "process", False, None, 75, "another sync holds the dataset: run holder-run (pid"),
    Held("live-run-task", "run", False, timedelta(days=1), 75, "run holder-run"),  # a stage still running
    Held("killed-process", "process", True, None, 0, "published version 1"),  # released by its death
    Held("run-between-tasks", "run", True, timedelta(minutes=5), 75, "last renewed"),  # within the TTL
    Held("run-lease-expired", "run", True, timedelta(hours=3), 0, "published version 1"),
]


@pytest.mark.parametrize("case", HELD, ids=[c.name for c in HELD])
def test_a_held_lease_is_named_and_a_dead_one_taken_over(case: Held, once, tmp_path: Path, demo_sources) -> None:
    place = new_place(tmp_path, demo_sources)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(place.home / "work"), case.scope],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        store = SyncLease(place.home / "work", DATASET)
        lease = store.lease()
        assert (lease.run_id, lease.pid, lease.host) == ("holder-run", holder.pid, socket.gethostname())
        if case.kill_holder:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
        if case.renewed_ago is not None:
            at = (datetime.now(timezone.utc) - case.renewed_ago).isoformat()
            store.path.write_text(json.dumps(asdict(replace(lease, renewed_at=at))), encoding="utf-8")
        done = place.run("sync", DATASET)
        assert done.returncode == case.exit_code, done.stderr
        assert case.message in done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        assert published(place) == (once if case.exit_code == 0 else [])
        assert not (place.home / "work" / DATASET).exists() or not list((place.home / "work" / DATASET).glob("*"))
    finally:
        holder.kill()
        holder.wait(timeout=30)
