"""The access log: an append-only, hash-chained, signed record of every delivery and denial.

Each record holds the SHA-256 of its predecessor and its own hash over its canonical JSON, and
the publisher signs that hash. Altering, removing or reordering a record breaks the chain
(``govshare audit verify``, exit 3). Records name datasets, versions, fields and purposes,
never an identifier's value: the versions are immutable, so (dataset, version range, fields)
determines exactly which records a subscriber received.

The chain alone cannot show that records were cut off the end: what is left is still a valid
chain. So the log's head (its record count and the hash of its last record) is signed and kept
where cutting the log cannot reach it: in a head file beside the sync state
(GOVSHARE_HOME/state/access-log-head.json, rewritten at every append) and in every manifest
published after it (``access_log``). ``verify`` checks the log against every head it finds:
the log must hold at least that many records, and its record at that count must have that hash.

A delivery is two records (govshare.delivery): ``delivery`` with outcome ``pending`` before
anything leaves, then ``delivery-complete`` (``delivery`` = the pending record's seq, outcome
``confirmed`` or ``failed``) just before the output becomes visible. A pending record without
its completion is reported as "started, not confirmed".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from common.errors import ConfigError, IntegrityError
from common.files import PRIVATE_FILE, canonical_json, private_dir, write_private
from common.home import Home
from common.oserrors import storage_error
from keys.keystore import Keystore
from sharing.store import SharingStore

GENESIS = "0" * 64
HEAD_FILE = "access-log-head.json"
HEAD_FORMAT = "govshare-access-log-head/1"
DELIVERY, COMPLETE, DENIED = "delivery", "delivery-complete", "denied"
Outcome = Literal["confirmed", "failed", "started, not confirmed"]


@dataclass(frozen=True)
class LogHead:
    """What a signed head says of the log: this many records, the last with this hash."""

    count: int
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "hash": self.hash}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LogHead:
        return cls(int(doc["count"]), str(doc["hash"]))


@dataclass(frozen=True)
class AuditSummary:
    records: int
    heads: tuple[str, ...]  # where the heads checked came from
    unconfirmed: tuple[int, ...]  # seqs of deliveries started, not confirmed


class AccessLog:
    def __init__(self, folder: Path, keystore: Keystore, head_path: Path | None = None) -> None:
        self.folder = folder
        self.path = folder / "access-log.jsonl"
        self.keystore = keystore
        self.head_path = head_path or folder.parent / "state" / HEAD_FILE  # GOVSHARE_HOME/state

    @classmethod
    def of(cls, home: Home, keystore: Keystore) -> AccessLog:
        return cls(home.audit, keystore, home.state / HEAD_FILE)

    # -- writing ---------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record and re-sign the head; ConfigError (nothing appended) when the log
        or its head file cannot be written."""
        try:
            private_dir(self.folder)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)  # purposes are free text
            os.fchmod(fd, PRIVATE_FILE)
            with open(fd, "a+", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    return self._append_locked(fh, record)
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError as exc:  # a full disk is worth a retry (75), an unwritable log is configuration (2)
            raise storage_error(exc, self.folder.parent, self.path, self.head_path) or ConfigError(
                f"access log {self.path} cannot be written ({exc.strerror or exc.__class__.__name__}); "
                "make its folder and the head file writable") from None

    def _append_locked(self, fh, record: dict[str, Any]) -> dict[str, Any]:  # noqa: ANN001 - a text file
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
        size = os.fstat(fh.fileno()).st_size
        try:
            fh.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            os.truncate(self.path, size)  # never leave half a record
            raise
        self._write_head(LogHead(entry["seq"], entry["hash"]))
        return entry

    def _write_head(self, head: LogHead) -> None:
        body = {"format": HEAD_FORMAT, **head.to_json(), "time": datetime.now(timezone.utc).isoformat()}
        doc = {**body, "signature": self.keystore.sign(canonical_json(body))}
        write_private(self.head_path, json.dumps(doc, indent=2) + "\n")

    # -- reading ---------------------------------------------------------------------------

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise IntegrityError(f"access log {self.path} line {number} is not a valid record; "
                                         "the log was cut or altered") from None

    def head(self) -> LogHead:
        """The log's current head (count 0 and the genesis hash when it is empty), for a manifest."""
        last = _last_line(self.path) if self.path.is_file() else None
        if not last:
            return LogHead(0, GENESIS)
        entry = json.loads(last)
        return LogHead(int(entry["seq"]), str(entry["hash"]))

    def signed_head(self) -> LogHead | None:
        """The head file's head, its signature checked; None when there is none yet."""
        if not self.head_path.is_file():
            return None
        try:
            doc = json.loads(self.head_path.read_text(encoding="utf-8"))
            body = {k: v for k, v in doc.items() if k != "signature"}
            self.keystore.verify(canonical_json(body), doc.get("signature") or {})
            return LogHead.from_json(doc)
        except (ValueError, KeyError, TypeError, IntegrityError):
            raise IntegrityError(f"access-log head {self.head_path} is not a head signed by the publisher; "
                                 "it was altered") from None

    def verify(self, heads: Iterable[tuple[str, LogHead]] = ()) -> AuditSummary:
        """Check every link, hash and signature, and the log against the head file and ``heads``
        (where -> head, e.g. from the manifests): nothing cut off the end, nothing rewritten."""
        own = self.signed_head()
        checks = [*([(str(self.head_path), own)] if own else []), *heads]
        wanted = {head.count for _, head in checks}
        hashes: dict[int, str] = {0: GENESIS}
        prev_hash, count = GENESIS, 0
        pending: set[int] = set()
        for entry in self.entries():
            count += 1
            self._check_link(entry, count, prev_hash)
            prev_hash = entry["hash"]
            if count in wanted:
                hashes[count] = prev_hash
            if entry.get("event") == DELIVERY and entry.get("outcome") == "pending":
                pending.add(count)
            elif entry.get("event") == COMPLETE:
                pending.discard(entry.get("delivery"))
        for where, head in checks:
            if head.count > count:
                raise IntegrityError(f"access log {self.path} has {count} record(s) but {where} (signed) counts "
                                     f"{head.count}: records were removed from the end")
            if hashes.get(head.count) != head.hash:
                raise IntegrityError(f"access log {self.path} record {head.count} is not the one {where} signed: "
                                     "the log was rewritten")
        return AuditSummary(count, tuple(where for where, _ in checks), tuple(sorted(pending)))

    def _check_link(self, entry: dict[str, Any], count: int, prev_hash: str) -> None:
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

    def deliveries(self, dataset: str, version: int | None = None) -> list[dict[str, Any]]:
        """Deliveries of a dataset that include the given version's data, each with its
        ``outcome``: confirmed, failed, or started, not confirmed."""
        started: list[dict[str, Any]] = []
        outcomes: dict[int, str] = {}
        for e in self.entries():
            if e.get("event") == COMPLETE:
                outcomes[e.get("delivery")] = e.get("outcome")
            if e.get("event") != DELIVERY or e.get("dataset") != dataset:
                continue
            span = e.get("versions_read") or []
            if version is None or (span and span[0] <= version <= span[1]) or e.get("version") == version:
                started.append(e)
        return [{**e, "outcome": _outcome(e, outcomes)} for e in started]


def _outcome(entry: dict[str, Any], outcomes: dict[int, str]) -> Outcome:
    if entry.get("outcome") != "pending":
        return "confirmed"  # a one-record delivery, as logged before deliveries had two
    found = outcomes.get(entry["seq"])
    return "confirmed" if found == "confirmed" else "failed" if found == "failed" else "started, not confirmed"


def manifest_heads(store_root: Path, keystore: Keystore) -> list[tuple[str, LogHead]]:
    """The access-log head of every published manifest that records one (signatures checked)."""
    if not store_root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in store_root.iterdir() if p.is_dir()):
        store = SharingStore(store_root, folder.name)
        for version in store.versions():
            manifest = store.read_manifest(version)
            head = manifest.doc.get("access_log")
            if head is None:
                continue
            try:
                keystore.verify(manifest.raw, store.read_signature(version))
            except IntegrityError:
                raise IntegrityError(f"{folder.name} version {version}: the manifest's signature does not verify, "
                                     "so its access-log head cannot be trusted") from None
            found.append((f"{folder.name} version {version} manifest", LogHead.from_json(head)))
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
