"""Run records: what each sync did, stage by stage, kept for lineage reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.home import Home


def runs_dir(home: Home, dataset_id: str) -> Path:
    return home.lineage / "runs" / dataset_id


def save_run_record(home: Home, dataset_id: str, run_id: str, record: dict[str, Any]) -> Path:
    folder = runs_dir(home, dataset_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def load_run_record(home: Home, dataset_id: str, run_id: str) -> dict[str, Any] | None:
    path = runs_dir(home, dataset_id) / f"{run_id}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def blocked_runs(home: Home, dataset_id: str) -> list[dict[str, Any]]:
    """Runs the gate stopped: they published nothing but belong in the auditor's picture."""
    folder = runs_dir(home, dataset_id)
    if not folder.is_dir():
        return []
    records = (json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json")))
    return [r for r in records if r.get("gate", {}).get("blocked")]
