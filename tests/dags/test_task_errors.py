"""How the DAGs' tasks fail: a source that is down is retried by Airflow, bad configuration is not."""

from __future__ import annotations

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


def test_cli_names_the_connection_of_a_missing_source_and_keeps_the_watermark(home, tmp_path, monkeypatch, capsys):
    from govshare.cli import main

    monkeypatch.setenv("AIRFLOW_CONN_POPULATION_DB", f"sqlite:///{tmp_path / 'missing.db'}")
    assert main(["sync", "population"]) == 75  # EX_TEMPFAIL: a source down is worth a retry
    assert "population_db" in capsys.readouterr().err
    assert not (home.state / "population.json").exists()
