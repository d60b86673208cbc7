"""OpenLineage events for each sync, through openlineage-python's file transport.

Airflow's OpenLineage provider records the task-level events of the DAG runs (configured in
airflow.cfg, file transport). These events describe the dataset-level sync the same way when it
runs outside Airflow too: source view in, sharing set out, with data-quality assertions
(counts only, never values) and output statistics, and govshare's own run facet on COMPLETE
(``govshare_sync``: the version and manifest digest, the watermark range read, row counts at each
stage, the data key ids per column group; never keys or values). The file is
GOVSHARE_HOME/lineage/openlineage.jsonl.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.catalog import Dataset
from common.run import RunRecord, new_run_id

NAMESPACE = "govshare"
EVENTS_FILE = "openlineage.jsonl"
AIRFLOW_EVENTS_FILE = "airflow-openlineage.jsonl"


def events_path(lineage_dir: Path) -> Path:
    return lineage_dir / EVENTS_FILE


def run_uuid(dataset_id: str, run_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"govshare:{dataset_id}:{run_id}"))


def emit_start(lineage_dir: Path, dataset: Dataset, record: RunRecord) -> None:
    _emit(lineage_dir, dataset, record.run_id, "START", inputs=[_source(dataset, None)], outputs=[])


def emit_complete(lineage_dir: Path, dataset: Dataset, record: RunRecord) -> None:
    _emit(lineage_dir, dataset, record.run_id, "COMPLETE", inputs=[_source(dataset, record)],
          outputs=[_sharing_set(dataset, record)], run_facets={SYNC_FACET: sync_facet(record)})


SYNC_FACET = "govshare_sync"
SYNC_FACET_SCHEMA = "https://github.com/govshare/govshare/blob/main/lineage/openlineage.py#GovshareSyncRunFacet"


def sync_facet_doc(record: RunRecord) -> dict[str, Any]:
    """What govshare's own run facet says of a finished sync: the version made, the watermark
    range read, row counts at each stage and the data key ids per column group (never keys)."""
    plan, extract, validate, protect, published = record.plan, record.extract, record.validate, record.protect, record.publish
    data_keys = dict(protect.protection.upserts.get("data_keys") or {}) if protect else {}
    return {
        "version": published.version if published else None,
        "manifestSha256": published.manifest_sha256 if published else None,
        "kind": protect.kind if protect else None,
        "watermark": {"from": _iso(plan.watermark_from) if plan else None, "to": _iso(plan.watermark_to) if plan else None},
        "rows": {"read": extract.rows if extract else None, "checked": validate.rows if validate else None,
                 "passed": validate.good if validate else None, "quarantined": validate.rejected if validate else None,
                 "upserts": protect.upserts if protect else None, "deletes": protect.deletes if protect else None},
        "keyIds": {str(group): str(key_id) for group, key_id in sorted(data_keys.items())},
    }


def sync_facet(record: RunRecord) -> Any:  # noqa: ANN401 - an attrs RunFacet
    return _facet_class()(**sync_facet_doc(record))


@functools.cache
def _facet_class() -> type:
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class GovshareSyncRunFacet(RunFacet):
        version: int | None = None
        manifestSha256: str | None = None  # noqa: N815 - OpenLineage's camelCase
        kind: str | None = None
        watermark: dict[str, Any] = attr.field(factory=dict)
        rows: dict[str, Any] = attr.field(factory=dict)
        keyIds: dict[str, str] = attr.field(factory=dict)  # noqa: N815

        @staticmethod
        def _get_schema() -> str:
            return SYNC_FACET_SCHEMA

    return GovshareSyncRunFacet


def _iso(value: Any) -> str | None:  # noqa: ANN401 - datetime or None
    return value.isoformat() if value is not None else None


def emit_fail(lineage_dir: Path, dataset: Dataset, record: RunRecord, why: str) -> None:
    from openlineage.client.generated.error_message_run import ErrorMessageRunFacet

    facets = {"errorMessage": ErrorMessageRunFacet(message=why, programmingLanguage="python")}
    _emit(lineage_dir, dataset, record.run_id, "FAIL", inputs=[_source(dataset, record)], outputs=[], run_facets=facets)


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


def _emit(lineage_dir: Path, dataset: Dataset, run_id: str, state: str, inputs: list[Any], outputs: list[Any],
          run_facets: dict[str, Any] | None = None) -> None:
    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import Job, RunEvent, RunState
    from openlineage.client.event_v2 import Run as OLRun
    from openlineage.client.transport.file import FileConfig, FileTransport

    lineage_dir.mkdir(parents=True, exist_ok=True)
    transport = FileTransport(FileConfig(log_file_path=str(events_path(lineage_dir)), append=True))
    client = OpenLineageClient(transport=transport)
    event = RunEvent(
        eventType=getattr(RunState, state),
        eventTime=datetime.now(timezone.utc).isoformat(),
        run=OLRun(runId=run_uuid(dataset.id, run_id), facets=run_facets or {}),
        job=Job(namespace=NAMESPACE, name=f"sync.{dataset.id}"),
        producer="https://github.com/govshare/govshare",
        inputs=inputs,
        outputs=outputs,
    )
    client.emit(event)


def _source(ds: Dataset, record: RunRecord | None) -> Any:
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.generated.data_quality_assertions_dataset import (
        Assertion,
        DataQualityAssertionsDatasetFacet,
    )

    facets: dict[str, Any] = {}
    rules = record.rules if record else ()
    if rules:
        facets["dataQualityAssertions"] = DataQualityAssertionsDatasetFacet(assertions=[
            Assertion(assertion=r.rule_id, success=r.rows_failed == 0, column=",".join(r.fields),
                      actual=str(r.rows_failed), expected="0", description=r.description)
            for r in rules
        ])
    return InputDataset(namespace=f"govshare-source://{ds.connection_id}", name=ds.source_table, inputFacets=facets)


def _sharing_set(ds: Dataset, record: RunRecord) -> Any:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.generated.output_statistics_output_dataset import OutputStatisticsOutputDatasetFacet
    from openlineage.client.generated.schema_dataset import SchemaDatasetFacet, SchemaDatasetFacetFields

    protect = record.protect
    fields = protect.protection.fields if protect else {}
    schema = SchemaDatasetFacet(fields=[
        SchemaDatasetFacetFields(name=f.name, type=f.type, description=f"{f.sharing}; {fields.get(f.name, '')}")
        for f in ds.published_fields
    ])
    stats = OutputStatisticsOutputDatasetFacet(rowCount=protect.changes if protect else 0)
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
    return new_run_id(run_id)
