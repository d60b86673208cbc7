"""Per-dataset sync state: the source watermark, advanced only after a successful publish."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common.files import replacing


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None  # the highest source updated_at covered by a published version
    version: int | None  # the version that advanced it last
    run_id: str | None


def state_path(state_dir: Path, dataset_id: str) -> Path:
    return state_dir / f"{dataset_id}.json"


def read_state(state_dir: Path, dataset_id: str) -> SyncState:
    path = state_path(state_dir, dataset_id)
    if not path.is_file():
        return SyncState(None, None, None)
    doc = json.loads(path.read_text(encoding="utf-8"))
    wm = doc.get("watermark")
    return SyncState(datetime.fromisoformat(wm) if wm else None, doc.get("version"), doc.get("run_id"))


def write_state(state_dir: Path, dataset_id: str, state: SyncState) -> None:
    """Atomic replace: a crash leaves the old watermark, never a torn file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(state_dir, dataset_id)
    doc = {
        "watermark": state.watermark.isoformat() if state.watermark else None,
        "version": state.version,
        "run_id": state.run_id,
    }
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
