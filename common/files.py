"""Canonical JSON (the bytes that get signed and chained), file digests and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def canonical_json(doc: dict[str, Any]) -> bytes:
    """The exact bytes that get signed and chained."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``path`` whole or not at all: a temporary file beside it, then one rename."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, doc: Any) -> Path:
    """A JSON document, human-readable, written atomically."""
    return write_atomic(path, json.dumps(doc, ensure_ascii=False, indent=2, default=str))
