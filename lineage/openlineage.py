"""OpenLineage events for each sync, through openlineage-python's file transport.

Airflow's OpenLineage provider records the task-level events of the DAG runs (configured in
airflow.cfg, file transport). These events describe the dataset-level sync the same way when it
runs outside Airflow too: source view in, sharing set out, with data-quality assertions
(counts only, never values) and output statistics. The file is GOVSHARE_HOME/lineage/openlineage.jsonl.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from govshare.pipeline import Run

NAMESPACE = "govshare"
EVENTS_FILE = "openlineage.jsonl"
AIRFLOW_EVENTS_FILE = "airflow-openlineage.jsonl"


def events_path(lineage_dir: Path) -> Path:
    return lineage_dir / EVENTS_FILE


def run_uuid(dataset_id: str, run_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"govshare:{dataset_id}:{run_id}"))


def emit_start(run: Run) -> None:
    _emit(run, "START", inputs=[_source(run, {})], outputs=[])


def emit_complete(run: Run, record: dict[str, Any]) -> None:
    _emit(run, "COMPLETE", inputs=[_source(run, record)], outputs=[_sharing_set(run, record)])


def emit_fail(run: Run, why: str) -> None:
    from openlineage.client.generated.error_message_run import ErrorMessageRunFacet

    facets = {"errorMessage": ErrorMessageRunFacet(message=why, programmingLanguage="python")}
    _emit(run, "FAIL", inputs=[_source(run, run.record())], outputs=[], run_facets=facets)


def read_events(lineage_dir: Path, dataset_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Events of this dataset's sync job (and, with run_id, of that run) from both files."""
    wanted_run = run_uuid(dataset_id, run_id) if run_id else None
    found: list[dict[str, Any]] = []
    for path in (lineage_dir / EVENTS_FILE, lineage_dir / AIRFLOW_EVENTS_FILE):
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            job = event.get("job", {}).get("name", "")
            if path.name == EVENTS_FILE:
                if job == f"sync.{dataset_id}" and (wanted_run is None or event.get("run", {}).get("runId") == wanted_run):
                    found.append(event)
            elif job.startswith(f"sync_{dataset_id}.") or job == f"sync_{dataset_id}":
                airflow_run = _airflow_run_id(event)
                if run_id is None or airflow_run is None or _safe(airflow_run) == run_id:
                    found.append(event)
    return found


def _emit(run: Run, state: str, inputs: list[Any], outputs: list[Any], run_facets: dict[str, Any] | None = None) -> None:
    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import Job, Run as OLRun, RunEvent, RunState
    from openlineage.client.transport.file import FileConfig, FileTransport

    run.home.lineage.mkdir(parents=True, exist_ok=True)
    transport = FileTransport(FileConfig(log_file_path=str(events_path(run.home.lineage)), append=True))
    client = OpenLineageClient(transport=transport)
    event = RunEvent(
        eventType=getattr(RunState, state),
        eventTime=datetime.now(timezone.utc).isoformat(),
        run=OLRun(runId=run_uuid(run.dataset.id, run.run_id), facets=run_facets or {}),
        job=Job(namespace=NAMESPACE, name=f"sync.{run.dataset.id}"),
        producer="https://github.com/govshare/govshare",
        inputs=inputs,
        outputs=outputs,
    )
    client.emit(event)


def _source(run: Run, record: dict[str, Any]) -> Any:
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.generated.data_quality_assertions_dataset import (
        Assertion,
        DataQualityAssertionsDatasetFacet,
    )

    ds = run.dataset
    facets: dict[str, Any] = {}
    rules = record.get("validate", {}).get("summary", {}).get("rules", [])
    if rules:
        facets["dataQualityAssertions"] = DataQualityAssertionsDatasetFacet(assertions=[
            Assertion(assertion=r["rule_id"], success=r["rows_failed"] == 0, column=",".join(r["fields"]),
                      actual=str(r["rows_failed"]), expected="0", description=r["description"])
            for r in rules
        ])
    return InputDataset(namespace=f"govshare-source://{ds.connection_id}", name=ds.source_table, inputFacets=facets)


def _sharing_set(run: Run, record: dict[str, Any]) -> Any:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.generated.output_statistics_output_dataset import OutputStatisticsOutputDatasetFacet
    from openlineage.client.generated.schema_dataset import SchemaDatasetFacet, SchemaDatasetFacetFields

    ds = run.dataset
    protect = record.get("protect", {})
    schema = SchemaDatasetFacet(fields=[
        SchemaDatasetFacetFields(name=f.name, type=f.type, description=f"{f.sharing}; {protect.get('protection', {}).get('fields', {}).get(f.name, '')}")
        for f in ds.published_fields
    ])
    stats = OutputStatisticsOutputDatasetFacet(rowCount=int(protect.get("upserts", 0)) + int(protect.get("deletes", 0)))
    return OutputDataset(namespace=NAMESPACE, name=ds.asset_uri, facets={"schema": schema},
                         outputFacets={"outputStatistics": stats})


def _airflow_run_id(event: dict[str, Any]) -> str | None:
    facets = event.get("run", {}).get("facets", {})
    for name in ("airflow", "airflowDagRun"):
        dag_run = facets.get(name, {}).get("dagRun") or {}
        if dag_run.get("run_id"):
            return dag_run["run_id"]
    return None


def _safe(run_id: str) -> str:
    from govshare.pipeline import new_run_id

    return new_run_id(run_id)
