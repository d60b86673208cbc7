"""Canonical JSON (the bytes that get signed and chained), file digests and atomic writes.

Every write here is whole or not at all, also when the disk fills up half-way: no torn file,
no temporary file left behind, no torn last line of a log, so a retry finds what it left.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write into: renamed over ``path`` when the block ends,
    removed when it fails (a full disk leaves neither a torn ``path`` nor a stray ``.tmp``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``path`` whole or not at all: a temporary file beside it, then one rename."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(path) as tmp:
        tmp.write_bytes(raw)
    return path


def append_whole(fd: int, text: str) -> None:
    """Append ``text`` to the file open (for appending, nothing buffered) as ``fd``, whole or not
    at all: a write cut short by a full disk is cut back, so the file never ends in a torn line."""
    size = os.fstat(fd).st_size
    pending = memoryview(text.encode("utf-8"))
    try:
        while pending:
            pending = pending[os.write(fd, pending):]
    except BaseException:
        os.ftruncate(fd, size)
        raise


def write_json(path: Path, doc: Any) -> Path:
    """A JSON document, human-readable, written atomically."""
    return write_atomic(path, json.dumps(doc, ensure_ascii=False, indent=2, default=str))
