"""Per-dataset sync state: the source watermark, advanced only after a successful publish, and the
head version it belongs to (number and manifest digest), which the store is checked against
before every publish (sharing.verify.check_consistency).

A state file that cannot be read as what it must be (bad JSON, wrong types, cut off) is an
IntegrityError naming the file: the watermark decides which rows are read next, so a guess could
skip rows or publish them again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.errors import IntegrityError
from common.files import replacing

_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None  # the highest source updated_at covered by a published version
    version: int | None  # the head version when the watermark last moved
    run_id: str | None
    manifest_sha256: str | None = None  # the digest of that version's manifest (None in files from before it was kept)


def state_path(state_dir: Path, dataset_id: str) -> Path:
    return state_dir / f"{dataset_id}.json"


def state_exists(state_dir: Path, dataset_id: str) -> bool:
    return state_path(state_dir, dataset_id).is_file()


def read_state(state_dir: Path, dataset_id: str) -> SyncState:
    """The dataset's state; an empty one when it has none (a fresh dataset)."""
    path = state_path(state_dir, dataset_id)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SyncState(None, None, None)
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _damaged(dataset_id, path, "is not valid JSON (truncated or overwritten?)") from None
    if not isinstance(doc, dict):
        raise _damaged(dataset_id, path, "is not a JSON object")
    return SyncState(_watermark(doc, dataset_id, path), _version(doc, dataset_id, path),
                     _text(doc, "run_id", dataset_id, path), _digest(doc, dataset_id, path))


def write_state(state_dir: Path, dataset_id: str, state: SyncState) -> None:
    """Atomic replace: a crash leaves the old watermark, never a torn file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_path(state_dir, dataset_id)
    doc = {
        "watermark": state.watermark.isoformat() if state.watermark else None,
        "version": state.version,
        "manifest_sha256": state.manifest_sha256,
        "run_id": state.run_id,
    }
    with replacing(path) as tmp:  # a failed write leaves no temporary file behind
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())


def discard_temporary(state_dir: Path, dataset_id: str) -> list[Path]:
    """Remove the temporary files a killed writer left (the state's, the state index's): call while
    holding the dataset's sync lease."""
    folder = state_dir / dataset_id
    gone = [p for p in [state_path(state_dir, dataset_id).with_suffix(".json.tmp")] if p.exists()]
    gone += list(folder.rglob("*.tmp")) if folder.is_dir() else []
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def _damaged(dataset_id: str, path: Path, what: str) -> IntegrityError:
    return IntegrityError(f"{dataset_id}: the sync state {path} {what}; restore it from a backup, or move it aside "
                          f"and run 'govshare sync {dataset_id} --full' to rebuild it from the verified store")


def _watermark(doc: dict[str, Any], dataset_id: str, path: Path) -> datetime | None:
    value = doc.get("watermark")
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return datetime.fromisoformat(value)
    except ValueError:
        pass
    raise _damaged(dataset_id, path, "has a watermark that is not an ISO date-time")


def _version(doc: dict[str, Any], dataset_id: str, path: Path) -> int | None:
    value = doc.get("version")
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise _damaged(dataset_id, path, "has a version that is not a number from 1 up")


def _text(doc: dict[str, Any], name: str, dataset_id: str, path: Path) -> str | None:
    value = doc.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _damaged(dataset_id, path, f"has a {name} that is not text")


def _digest(doc: dict[str, Any], dataset_id: str, path: Path) -> str | None:
    value = doc.get("manifest_sha256")
    if value is None and "manifest_sha256" in doc and doc.get("version") is not None:
        raise _damaged(dataset_id, path, "names a version but not its manifest digest")
    if value is None or (isinstance(value, str) and _DIGEST.fullmatch(value)):
        return value
    raise _damaged(dataset_id, path, "has a manifest_sha256 that is not a SHA-256 digest")
