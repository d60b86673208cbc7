"""What the sync DAGs' tasks call: one pipeline stage, with govshare's errors mapped to Airflow's.

Retriable errors (a source down or timing out, a publish race, a full disk) are re-raised so
Airflow retries with backoff. Every other govshare error fails the task at once: retrying bad
configuration, a read-only home, a broken signature or a gate decision cannot help. An OS error
of govshare's own writes is turned into the govshare error that names the path
(common.oserrors); a protect that failed so discards the version it was staging.
"""

from __future__ import annotations

from typing import Any

from common.errors import GovshareError


def run_stage(stage: str, dataset_id: str, airflow_run_id: str, *, part: int | None = None, full: bool = False) -> Any:
    from airflow.sdk.exceptions import AirflowFailException

    from common.files import kept_private
    from govshare.cli import quiet_libraries

    quiet_libraries()
    try:
        with kept_private():  # 0600 files, 0700 folders, whatever umask the worker has
            return _run(stage, dataset_id, airflow_run_id, part, full)
    except GovshareError as exc:
        if exc.retriable:
            raise
        _release(dataset_id, airflow_run_id)  # a run failed for good must not hold the dataset for the lease's TTL
        raise AirflowFailException(" | ".join(exc.lines())) from exc


def _release(dataset_id: str, airflow_run_id: str) -> None:
    """Give up the dataset's sync lease if this run holds it (clearing the task later takes it anew)."""
    from common.home import home
    from common.run import new_run_id
    from sharing.store import SyncLease

    try:
        SyncLease(home().leases, dataset_id).release(new_run_id(airflow_run_id))
    except (OSError, GovshareError):
        pass  # the original failure is what the task reports; a lease that cannot be released expires


def _run(stage: str, dataset_id: str, airflow_run_id: str, part: int | None, full: bool) -> Any:
    from common.home import home
    from common.oserrors import storage_error
    from common.run import new_run_id
    from govshare import pipeline
    from sharing.store import SharingStore

    try:
        run = pipeline.start(dataset_id, airflow_run_id, full=full)
        function = getattr(pipeline, stage)
        result = function(run) if part is None else function(run, part)
        pipeline.handover(run).push(part)  # for the next stage, on whichever worker it runs
        return result
    except OSError as exc:
        error = storage_error(exc, home().root)
        if error is None:
            raise
        if stage == "protect":  # the retry stages the version afresh; the half-written one only fills the disk
            SharingStore(home().store, dataset_id).discard(new_run_id(airflow_run_id))
        raise error from exc


def worker_hostname() -> str:
    """The host name a task instance records (Airflow's ``[core] hostname_callable``): the
    machine's, or GOVSHARE_WORKER_NAME where several workers share one machine (scripts/
    scaleout-stack names each worker so the UI and the API show which one ran a task)."""
    import os

    from airflow.utils.net import getfqdn

    name = os.environ.get("GOVSHARE_WORKER_NAME", "").strip()
    return f"{name}@{getfqdn()}" if name else getfqdn()
