"""The access log: an append-only, hash-chained, signed record of every delivery.

Each record holds the SHA-256 of its predecessor and its own hash over its canonical JSON, and
the publisher signs that hash. Altering, removing or reordering a record breaks the chain
(``govshare audit verify``, exit 3). Records name datasets, versions, fields and purposes,
never an identifier's value: the versions are immutable, so (dataset, version range, fields)
determines exactly which records a subscriber received.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.errors import IntegrityError
from common.files import append_whole, canonical_json
from keys.keystore import Keystore

GENESIS = "0" * 64


class AccessLog:
    def __init__(self, folder: Path, keystore: Keystore) -> None:
        self.folder = folder
        self.path = folder / "access-log.jsonl"
        self.keystore = keystore

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                last = _last_line(self.path)
                prev = json.loads(last) if last else None
                entry = {
                    **record,
                    "seq": prev["seq"] + 1 if prev else 1,
                    "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                    "prev_hash": prev["hash"] if prev else GENESIS,
                }
                entry["hash"] = hashlib.sha256(canonical_json(entry)).hexdigest()
                entry["signature"] = self.keystore.sign(entry["hash"].encode("ascii"))
                append_whole(fh.fileno(), json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise IntegrityError(f"access log {self.path} line {number} is not a valid record") from None

    def verify(self) -> int:
        """Check every link, hash and signature; return the number of records."""
        prev_hash, count = GENESIS, 0
        for entry in self.entries():
            count += 1
            where = f"access log {self.path} record {count}"
            body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
            if entry.get("seq") != count:
                raise IntegrityError(f"{where}: sequence number {entry.get('seq')!r}; a record was removed or reordered")
            if entry.get("prev_hash") != prev_hash:
                raise IntegrityError(f"{where}: does not link to the record before it; a record was removed or reordered")
            if hashlib.sha256(canonical_json(body)).hexdigest() != entry.get("hash"):
                raise IntegrityError(f"{where}: its content does not match its hash; the record was altered")
            try:
                self.keystore.verify(entry["hash"].encode("ascii"), entry.get("signature") or {})
            except IntegrityError:
                raise IntegrityError(f"{where}: the publisher's signature does not verify") from None
            prev_hash = entry["hash"]
        return count

    def deliveries(self, dataset: str, version: int | None = None) -> list[dict[str, Any]]:
        """Deliveries of a dataset that include the given version's data."""
        found = []
        for e in self.entries():
            if e.get("event") != "delivery" or e.get("dataset") != dataset:
                continue
            span = e.get("versions_read") or []
            if version is None or (span and span[0] <= version <= span[1]) or e.get("version") == version:
                found.append(e)
        return found


def _last_line(path: Path) -> str | None:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        end = fh.tell()
        if end == 0:
            return None
        pos = max(0, end - 65536)
        while True:
            fh.seek(pos)
            lines = fh.read(end - pos).splitlines()
            if len(lines) > 1 or pos == 0:
                return lines[-1].decode("utf-8") if lines else None
            pos = max(0, pos - 65536)
