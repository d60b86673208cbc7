"""What the sync DAGs' tasks call: one pipeline stage, with govshare's errors mapped to Airflow's.

Retriable errors (a source down or timing out, a publish race) are re-raised so Airflow retries
with backoff. Every other govshare error fails the task at once: retrying bad configuration, a
broken signature or a gate decision cannot help.
"""

from __future__ import annotations

from typing import Any


def run_stage(stage: str, dataset_id: str, airflow_run_id: str, *, part: int | None = None, full: bool = False) -> Any:
    from airflow.sdk.exceptions import AirflowFailException

    from common.errors import GovshareError
    from govshare import pipeline
    from govshare.cli import quiet_libraries

    quiet_libraries()
    try:
        run = pipeline.start(dataset_id, airflow_run_id, full=full)
        function = getattr(pipeline, stage)
        return function(run) if part is None else function(run, part)
    except GovshareError as exc:
        if exc.retriable:
            raise
        raise AirflowFailException(" | ".join(exc.lines())) from exc
