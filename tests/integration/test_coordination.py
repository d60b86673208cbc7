"""The sync lease across machines: with GOVSHARE_COORDINATION naming a PostgreSQL database, two
workers with separate work folders (as on two machines) see one lease per dataset."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from common.coordination import COORDINATION_ENV
from common.errors import ConfigError, TemporaryFailure
from sharing.store import SyncLease

pytestmark = pytest.mark.integration


@pytest.fixture
def coordination(monkeypatch: pytest.MonkeyPatch, scratch_database) -> str:  # noqa: ANN001
    uri = scratch_database("postgresql").replace("postgresql+psycopg://", "postgresql://")
    monkeypatch.setenv(COORDINATION_ENV, uri)
    return uri


def test_two_workers_with_their_own_folders_share_one_lease(coordination: str, tmp_path: Path) -> None:
    worker_a, worker_b = SyncLease(tmp_path / "a", "population"), SyncLease(tmp_path / "b", "population")
    worker_a.hold("run-a", "run")
    with pytest.raises(TemporaryFailure, match="another sync holds the dataset: run run-a"):
        worker_b.hold("run-b", "run")
    assert worker_b.lease().run_id == "run-a"
    assert not (tmp_path / "a" / "population.lease").exists(), "the lease is in the database, not a local file"
    SyncLease(tmp_path / "b", "legal_entity").hold("run-b", "run")  # other datasets are not held
    worker_b.release("run-a-not")  # not the holder: nothing changes
    assert worker_a.lease().run_id == "run-a"
    worker_a.release("run-a")
    assert worker_b.hold("run-b", "run").run_id == "run-b"
    with psycopg.connect(coordination) as db:
        rows = dict(db.execute("SELECT dataset, lease FROM govshare_sync_lease").fetchall())
    assert json.loads(rows["population"])["run_id"] == "run-b"


def test_a_lease_of_another_machine_expires_by_its_ttl(coordination: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    lease = SyncLease(tmp_path / "a", "population").hold("run-a", "run")
    old = (datetime.now(timezone.utc) - timedelta(hours=3)).isoformat()
    with psycopg.connect(coordination) as db:
        db.execute("UPDATE govshare_sync_lease SET lease = %s WHERE dataset = 'population'",
                   (json.dumps(asdict(replace(lease, host="worker-on-another-machine", renewed_at=old))),))
    monkeypatch.setenv("GOVSHARE_SYNC_LEASE_TTL", "7200")
    assert SyncLease(tmp_path / "b", "population").hold("run-b", "run").run_id == "run-b"


def test_a_bad_coordination_setting_fails_closed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(COORDINATION_ENV, "mysql://u:secret@127.0.0.1/x")
    with pytest.raises(ConfigError, match=COORDINATION_ENV) as bad:
        SyncLease(tmp_path, "population")
    assert "secret" not in str(bad.value)
    monkeypatch.setenv(COORDINATION_ENV, "postgresql://u:secret@127.0.0.1:1/x")
    with pytest.raises(TemporaryFailure, match="unreachable") as down:
        SyncLease(tmp_path, "population").hold("run-a", "run")
    assert "secret" not in str(down.value)



def test_appends_to_the_access_log_wait_for_the_coordination_lock(coordination: str, home) -> None:  # noqa: ANN001
    """Services and CLIs on several machines append to one access log: under
    GOVSHARE_COORDINATION an append first takes the database's advisory lock, so while another
    machine holds it, the append waits, and the chain it extends is the one left behind."""
    import threading
    import time

    from keys.keystore import Keystore
    from lineage.audit import ACCESS_LOG_LOCK, AccessLog

    log = AccessLog.of(home, Keystore(home.keystore))
    first = log.append({"event": "request", "path": "/probe/1"})
    done: list[dict] = []
    with psycopg.connect(coordination, autocommit=False) as other_machine:
        other_machine.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (ACCESS_LOG_LOCK,))
        writer = threading.Thread(target=lambda: done.append(log.append({"event": "request", "path": "/probe/2"})))
        writer.start()
        time.sleep(1.0)
        assert done == [], "the append went ahead while another machine held the lock"
        other_machine.commit()  # releases it
    writer.join(timeout=30)
    assert done and done[0]["seq"] == first["seq"] + 1
    assert log.head().count == first["seq"] + 1
