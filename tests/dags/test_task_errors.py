"""How the DAGs' tasks fail: a source that is down is retried by Airflow, bad configuration is not."""

from __future__ import annotations

import os

import pytest

from common.errors import SourceUnavailable

pytestmark = pytest.mark.dags


def test_unreachable_source_is_retriable_and_names_the_connection(home, tmp_path, monkeypatch):
    from govshare.airflow_tasks import run_stage

    monkeypatch.setenv("AIRFLOW_CONN_LEGAL_ENTITY_DB", "postgresql://govshare:s3cret-pw@127.0.0.1:9/nowhere")
    with pytest.raises(SourceUnavailable) as info:
        run_stage("plan", "legal_entity", "manual__2026-11-28T00:00:00")
    assert "legal_entity_db" in info.value.message and "s3cret-pw" not in info.value.message
    assert not (home.state / "legal_entity.json").exists()
    assert not (home.store / "legal_entity").exists()


def test_configuration_errors_fail_the_task_without_retries(home, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from govshare.airflow_tasks import run_stage

    with pytest.raises(AirflowFailException, match="AIRFLOW_CONN_LEGAL_ENTITY_DB"):
        run_stage("plan", "legal_entity", "manual__2026-11-28T00:00:00")


def test_a_run_that_failed_for_good_gives_the_dataset_back(home, sources, monkeypatch):
    """A task that fails without retries releases the run's sync lease, so the next run of the
    dataset need not wait for the lease to expire; a retriable failure keeps it."""
    from airflow.sdk.exceptions import AirflowFailException

    from govshare.airflow_tasks import run_stage
    from sharing.store import SyncLease

    lease = SyncLease(home.leases, "population")
    real = dict(os.environ)["AIRFLOW_CONN_POPULATION_DB"]
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", "nosuchdriver://x/y")  # refused in plan, after the run started
    with pytest.raises(AirflowFailException, match="population_db"):
        run_stage("plan", "population", "manual__2026-12-01T00:00:00")
    assert lease.lease() is None
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", real)
    run_stage("plan", "population", "manual__2026-12-01T01:00:00")
    assert lease.lease() is not None and lease.lease().run_id == "manual__2026-12-01T01_00_00"
    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", "postgresql://govshare:pw@127.0.0.1:9/nowhere")
    with pytest.raises(SourceUnavailable):
        run_stage("plan", "population", "manual__2026-12-01T01:00:00")  # Airflow retries: the run keeps the dataset
    assert lease.lease().run_id == "manual__2026-12-01T01_00_00"


def test_cli_names_the_connection_of_a_missing_source_and_keeps_the_watermark(home, tmp_path, monkeypatch, capsys):
    from govshare.cli import main

    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", f"sqlite:///{tmp_path / 'missing.db'}")
    assert main(["sync", "population"]) == 75  # EX_TEMPFAIL: a source down is worth a retry
    assert "population_db" in capsys.readouterr().err
    assert not (home.state / "population.json").exists()
