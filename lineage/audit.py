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

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TextIO

from common.errors import ConfigError, GovshareError, IntegrityError
from common.files import PRIVATE_FILE, canonical_json, private_dir, write_private
from common.home import Home
from common.oserrors import storage_error
from keys.keystore import Keystore
from keys.merkle import Frontier, consistency_proof, inclusion_proof
from lineage.logtree import LogTree, entry_leaf, publisher_keys
from sharing.store import SharingStore

log = logging.getLogger(__name__)

GENESIS = "0" * 64
HEAD_FILE = "access-log-head.json"
HEAD_FORMAT = "govshare-access-log-head/1"
PROOF_FORMAT = "govshare-inclusion-proof/1"
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
    checkpoints: int = 0  # signed checkpoints checked against the recomputed tree


class AccessLog:
    def __init__(self, folder: Path, keystore: Keystore, head_path: Path | None = None) -> None:
        self.folder = folder
        self.path = folder / "access-log.jsonl"
        self.keystore = keystore
        self.head_path = head_path or folder.parent / "state" / HEAD_FILE  # GOVSHARE_HOME/state
        self.tree = LogTree(folder, keystore)

    @classmethod
    def of(cls, home: Home, keystore: Keystore) -> AccessLog:
        return cls(home.audit, keystore, home.state / HEAD_FILE)

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[TextIO]:
        """The log file, opened for appending and locked (exclusively, across processes)."""
        private_dir(self.folder)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)  # purposes are free text
        os.fchmod(fd, PRIVATE_FILE)
        with open(fd, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _unwritable(self, exc: OSError) -> GovshareError:
        # a full disk is worth a retry (75), an unwritable log is configuration (2)
        return storage_error(exc, self.folder.parent, self.path, self.head_path) or ConfigError(
            f"access log {self.path} cannot be written ({exc.strerror or exc.__class__.__name__}); "
            "make its folder and the head file writable")

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append one record and re-sign the head; ConfigError (nothing appended) when the log
        or its head file cannot be written."""
        try:
            with self._locked() as fh:
                return self._append_locked(fh, record)
        except OSError as exc:
            raise self._unwritable(exc) from None

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
        try:
            self.tree.add(entry, self.entries())
        except (OSError, GovshareError) as exc:  # the record stands; the tree catches up at the next use
            log.warning("access log %s: the tree cache was not updated (%s); it is rebuilt at the next checkpoint",
                        self.path, getattr(exc, "message", None) or exc.__class__.__name__)
        return entry

    def _write_head(self, head: LogHead) -> None:
        body = {"format": HEAD_FORMAT, **head.to_json(), "time": datetime.now(timezone.utc).isoformat()}
        doc = {**body, "signature": self.keystore.sign(canonical_json(body))}
        write_private(self.head_path, json.dumps(doc, indent=2) + "\n")

    # -- the tree: checkpoints and proofs (lineage.logtree) -------------------------------------

    def _synced(self) -> Any:  # noqa: ANN401 - keys.merkle.Levels
        """The tree cache brought to the log; call under the lock."""
        return self.tree.sync(self.tree.levels(), self.entries(), self.head().count)

    def checkpoint(self, reason: str) -> dict[str, Any]:
        """Sign and keep a checkpoint of the log as it is now (``reason``: publish, service, prove,
        agent); returns the kept record, its signed note under ``note``."""
        try:
            with self._locked():
                return self.tree.checkpoint(self._synced(), reason)
        except OSError as exc:
            raise self._unwritable(exc) from None

    def checkpoint_if_grown(self, reason: str) -> dict[str, Any] | None:
        """A checkpoint when the log has grown since the last one (the service's hourly one)."""
        latest = self.tree.latest()
        if latest is not None and latest.get("size") == self.head().count:
            return None
        return self.checkpoint(reason)

    def prove(self, seq: int) -> dict[str, Any]:
        """An inclusion proof of record ``seq`` in a fresh signed checkpoint, with what an offline
        check needs (keys.proofcheck): the record as stored, its leaf index, the audit path and the
        publisher's key."""
        try:
            with self._locked():
                levels = self._synced()
                if not 1 <= seq <= levels.size:
                    raise ConfigError(f"the access log has records 1..{levels.size}; there is no record {seq}")
                entry = next(e for i, e in enumerate(self.entries(), start=1) if i == seq)
                checkpoint = self.tree.checkpoint(levels, "prove")
                path = inclusion_proof(seq - 1, levels.size, levels)
        except OSError as exc:
            raise self._unwritable(exc) from None
        return {"format": PROOF_FORMAT, "record": entry, "leaf_index": seq - 1, "tree_size": checkpoint["size"],
                "leaf_hash": entry_leaf(entry).hex(), "inclusion": [h.hex() for h in path],
                "checkpoint": checkpoint["note"], "publisher_key": self.tree.verifier_key(checkpoint["key_id"])}

    def consistency(self, old_size: int, reason: str = "agent") -> dict[str, Any]:
        """A fresh checkpoint and the consistency proof from the tree of ``old_size`` records to it."""
        try:
            with self._locked():
                levels = self._synced()
                if not 0 <= old_size <= levels.size:
                    raise IntegrityError(f"a checkpoint of {old_size} record(s) was asked for, but the access log has "
                                         f"{levels.size}: the log is shorter than a tree it signed before")
                checkpoint = self.tree.checkpoint(levels, reason)
                proof = consistency_proof(old_size, levels.size, levels)
        except OSError as exc:
            raise self._unwritable(exc) from None
        return {"checkpoint": checkpoint["note"], "size": checkpoint["size"], "from": old_size,
                "consistency": [h.hex() for h in proof]}

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
        """Check every link, hash and signature; the log against the head file and ``heads``
        (where -> head, e.g. from the manifests): nothing cut off the end, nothing rewritten; and
        the Merkle tree recomputed from the records against every kept checkpoint (each one's
        signature checked), so the log is consistent with every tree the publisher signed."""
        own = self.signed_head()
        checks = [*([(str(self.head_path), own)] if own else []), *heads]
        wanted = {head.count for _, head in checks}
        checkpoints = self._signed_checkpoints()
        roots = {size for size, _ in checkpoints}
        hashes: dict[int, str] = {0: GENESIS}
        tree_roots: dict[int, bytes] = {}
        frontier = Frontier()
        if 0 in roots:
            tree_roots[0] = frontier.root()
        prev_hash, count = GENESIS, 0
        pending: set[int] = set()
        cached = self.tree.tree_dir / "level-0.bin"
        cache = open(cached, "rb") if cached.is_file() else None  # noqa: SIM115 - closed below
        cache_bad = 0
        try:
            for entry in self.entries():
                count += 1
                self._check_link(entry, count, prev_hash)
                prev_hash = entry["hash"]
                leaf = entry_leaf(entry)
                frontier.append(leaf)
                held = cache.read(32) if cache else b""
                if len(held) == 32 and held != leaf and not cache_bad:
                    cache_bad = count
                self._verify_step(entry, count, prev_hash, wanted, hashes, roots, tree_roots, frontier, pending)
        finally:
            if cache:
                cache.close()
        for where, head in checks:
            if head.count > count:
                raise IntegrityError(f"access log {self.path} has {count} record(s) but {where} (signed) counts "
                                     f"{head.count}: records were removed from the end")
            if hashes.get(head.count) != head.hash:
                raise IntegrityError(f"access log {self.path} record {head.count} is not the one {where} signed: "
                                     "the log was rewritten")
        matched = 0
        for size, (where, root) in sorted(checkpoints, key=lambda c: c[0]):
            if size > count:
                raise IntegrityError(f"access log {self.path} has {count} record(s) but {where} signs a tree of "
                                     f"{size}: records {count + 1}..{size} were removed from the end")
            if tree_roots.get(size) != root:
                raise IntegrityError(f"access log {self.path}: records {matched + 1}..{size} are not the ones {where} "
                                     f"signed (the first {matched} are): the log was rewritten")
            matched = size
        levels = self.tree.levels() if self.tree.tree_dir.is_dir() else None
        if cache_bad:
            raise IntegrityError(f"the access log's tree cache {self.tree.tree_dir} does not hold record {cache_bad}'s "
                                 "leaf; it was altered (remove the folder: it is rebuilt from the log)")
        if levels is not None and levels.size == count and count and levels.root(count) != frontier.root():
            raise IntegrityError(f"the access log's tree cache {self.tree.tree_dir} does not match its records; "
                                 "it was altered (remove the folder: it is rebuilt from the log)")
        return AuditSummary(count, tuple(where for where, _ in checks), tuple(sorted(pending)), len(checkpoints))

    @staticmethod
    def _verify_step(entry: dict[str, Any], count: int, prev_hash: str, wanted: set[int], hashes: dict[int, str],
                     roots: set[int], tree_roots: dict[int, bytes], frontier: Frontier, pending: set[int]) -> None:
        if count in wanted:
            hashes[count] = prev_hash
        if count in roots:
            tree_roots[count] = frontier.root()
        if entry.get("event") == DELIVERY and entry.get("outcome") == "pending":
            pending.add(count)
        elif entry.get("event") == COMPLETE:
            pending.discard(entry.get("delivery"))

    def _signed_checkpoints(self) -> list[tuple[int, tuple[str, bytes]]]:
        """(size, (where, root)) of every kept checkpoint, each signature checked."""
        found = []
        keys = None
        for line, record in self.tree.checkpoints():
            keys = keys if keys is not None else publisher_keys(self.keystore)
            where = f"checkpoint {self.tree.checkpoints_path.name} line {line}"
            checkpoint = self.tree.check(record, where, keys)
            found.append((checkpoint.size, (f"{where} ({record.get('time')})", checkpoint.root)))
        return found

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
