"""How the DAGs' tasks fail on a full or read-only home: a full disk is retried by Airflow (the
half-staged version dropped), a read-only home fails the task at once; both name the path."""

from __future__ import annotations

import errno

import pytest

from common.errors import TemporaryFailure

pytestmark = pytest.mark.dags

RUN = "manual__2026-11-28T00:00:00"


def _failing_protect(code: int):  # noqa: ANN202 - a stand-in for pipeline.protect
    def protect(run) -> None:  # noqa: ANN001 - a Run
        from sharing.store import SharingStore

        staged = SharingStore(run.home.store, run.dataset.id).stage(run.run_id)
        (staged / "upserts.parquet").write_bytes(b"half")
        raise OSError(code, "Error writing bytes to file. Detail: [errno %d]" % code)

    return protect


def test_a_full_disk_is_retriable_names_the_home_and_drops_the_staged_version(home, sources, monkeypatch) -> None:
    from govshare import pipeline
    from govshare.airflow_tasks import run_stage

    monkeypatch.setattr(pipeline, "protect", _failing_protect(errno.ENOSPC))
    with pytest.raises(TemporaryFailure, match="no space left on the device holding") as info:
        run_stage("protect", "population", RUN)
    assert str(home.root) in info.value.message
    assert not list((home.store / "population" / ".staging").glob("*"))


def test_a_read_only_home_fails_the_task_without_retries(home, sources, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from govshare import pipeline
    from govshare.airflow_tasks import run_stage

    monkeypatch.setattr(pipeline, "protect", _failing_protect(errno.EROFS))
    with pytest.raises(AirflowFailException, match="read-only; GOVSHARE_HOME .* must be writable"):
        run_stage("protect", "population", RUN)
