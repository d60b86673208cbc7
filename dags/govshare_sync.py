"""Sync DAGs, one per dataset declared in catalogs/: plan -> ingest[part] -> protect -> publish.

Each task calls one stage of ``govshare.pipeline``; stages hand over through the run's work folder
under GOVSHARE_HOME. Ingest reads, validates and stages one part in a single streaming pass. A
large full read is split by ``plan`` into key ranges, ingested as mapped tasks (dynamic task
mapping), and committed together as one version.
Trigger with conf ``{"full": true}`` for a full re-read published as a snapshot. The publish task emits the dataset's Asset
(``govshare://sharing-set/<dataset>``) with the published version in the event's extra; when the
source had nothing new it is skipped and no asset event is emitted.

Only the catalog (YAML) is read at parse time; pandas, pyarrow and Great Expectations are
imported inside the tasks.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from common.catalog import Dataset, load_catalog
from common.times import SOURCE_ZONE_NAME

DEFAULT_ARGS = {
    "owner": "data-resource-bureau",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(hours=1),
}


def build_sync_dag(ds: Dataset):  # noqa: ANN201 - an Airflow DAG
    asset = Asset(f"govshare.{ds.id}", uri=ds.asset_uri)

    @dag(
        dag_id=f"sync_{ds.id}",
        description=f"Sync {ds.title} ({ds.id}) from {ds.connection_id} into a signed, encrypted sharing set",
        schedule=ds.schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz=SOURCE_ZONE_NAME),
        catchup=False,
        max_active_runs=1,
        tags=["govshare", "sync", ds.id],
        default_args=DEFAULT_ARGS,
        doc_md=__doc__,
    )
    def sync() -> None:
        def stage(name: str, part: int | None = None):  # noqa: ANN202
            from govshare.airflow_tasks import run_stage

            context = get_current_context()
            full = bool((context["dag_run"].conf or {}).get("full", False))
            return run_stage(name, ds.id, context["run_id"], part=part, full=full)

        @task(task_id="plan")
        def plan() -> list[int]:
            """Watermark range, and key-range parts when a full read is large."""
            return stage("plan")

        @task(task_id="ingest", max_active_tis_per_dagrun=2)
        def ingest(part: int) -> int:
            """Read, validate (GX in a child process) and stage one part."""
            stage("ingest", part)
            return part

        @task(task_id="protect", trigger_rule="none_failed")
        def protect(parts: list[int]) -> dict:
            protected = stage("protect")  # None: nothing new
            return protected.to_json() if protected else {}

        @task(task_id="publish", outlets=[asset], trigger_rule="none_failed")
        def publish() -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            result = stage("publish")
            if result.version is None:
                raise AirflowSkipException(f"{ds.id}: {result.reason}")
            get_current_context()["outlet_events"][asset].extra = {
                "dataset": ds.id, "version": result.version, "upserts": result.upserts, "deletes": result.deletes,
            }
            return {"version": result.version, "upserts": result.upserts, "deletes": result.deletes,
                    "quarantined": result.quarantined}

        protect(ingest.expand(part=plan())) >> publish()

    return sync()


for _dataset in load_catalog().datasets.values():
    globals()[f"sync_{_dataset.id}"] = build_sync_dag(_dataset)
