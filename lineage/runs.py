"""Run records: what each sync did, stage by stage (common.run.RunRecord), kept for lineage reports."""

from __future__ import annotations

import json
from pathlib import Path

from common.files import write_json
from common.home import Home
from common.run import RunRecord


def runs_dir(home: Home, dataset_id: str) -> Path:
    return home.lineage / "runs" / dataset_id


def save_run_record(home: Home, record: RunRecord) -> Path:
    folder = runs_dir(home, record.dataset)
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(folder / f"{record.run_id}.json", record.to_json())


def load_run_record(home: Home, dataset_id: str, run_id: str) -> RunRecord | None:
    path = runs_dir(home, dataset_id) / f"{run_id}.json"
    return RunRecord.from_json(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def blocked_runs(home: Home, dataset_id: str) -> list[RunRecord]:
    """Runs the gate stopped: they published nothing but belong in the auditor's picture."""
    folder = runs_dir(home, dataset_id)
    if not folder.is_dir():
        return []
    records = (RunRecord.from_json(json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.json")))
    return [r for r in records if r.blocked]
