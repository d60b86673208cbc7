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

Retention (lineage.retention): records older than the retention period are exported as a signed
archive and then purged. The purge rewrites the log in one rename: line 1 becomes the **retention
anchor** (format ``govshare-access-log-anchor/1``: the first retained seq, the hash it links to,
the root of the purged records' tree and the SHA-256 of their leaf hashes, kept in
``audit/purged-leaves.bin``, and every archive so far), then the retained records verbatim, then a
``purge`` record that names the anchor. ``verify`` starts the chain and the tree from the anchor;
the purge record (in the chain, signed, under the checkpoints) binds the anchor.

The hash of the chain and of the tree is the home's digest (keys.profile): SHA-256 in the standard
profile, SM3 in the 国密 one. A record of an SM3 log says so in ``hash_algorithm`` (inside what
its hash covers and its signature signs); a record without it is SHA-256, as every record from
before. ``verify`` refuses a record whose recorded hash is not the one its signing key is bound to
(Ed25519 -> SHA-256, SM2 -> SM3: keys.merkle.SIGNED_WITH) or not the log's, so an SM3 log cannot be
re-hashed under SHA-256 and pass. The anchor of an SM3 log records it too (and names the digest of
the purged leaves ``leaves_sm3`` instead of ``leaves_sha256``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TextIO

from common.coordination import held
from common.errors import ConfigError, GovshareError, IntegrityError
from common.faults import FAULT_ENV
from common.files import PRIVATE_FILE, canonical_json, fsync_dir, private_dir, replacing, write_private
from common.home import Home
from common.objstore import StoreUrl, attached, object_store
from common.oserrors import storage_error
from keys.keystore import Keystore
from keys.merkle import SHA256, SIGNED_WITH, Frontier, TreeHash, consistency_proof, inclusion_proof
from keys.proofcheck import HASH_FIELD, recorded_hash
from lineage.logtree import LogTree, entry_leaf, publisher_keys, tagged
from sharing.store import SharingStore, dataset_ids

log = logging.getLogger(__name__)

GENESIS = "0" * 64
HEAD_FILE = "access-log-head.json"
ACCESS_LOG_LOCK = "govshare-access-log"  # the advisory lock of appends under GOVSHARE_COORDINATION
HEAD_FORMAT = "govshare-access-log-head/1"
PROOF_FORMAT = "govshare-inclusion-proof/1"
ANCHOR_FORMAT = "govshare-access-log-anchor/1"
PURGED_LEAVES = "purged-leaves.bin"
DELIVERY, COMPLETE, DENIED, PURGE = "delivery", "delivery-complete", "denied", "purge"
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
    purged: int = 0  # records 1..purged were archived and purged (the retention anchor)
    mirrored: int = 0  # of them, copies on the object store (CheckpointMirror), checked as well


CHECKPOINTS_PREFIX = (".log", "checkpoints")


class CheckpointMirror:
    """The access log's signed checkpoints, copied to the object store of an s3 sharing store
    (``<prefix>/.log/checkpoints/<size>-<digest>.json``, written once each, never overwritten),
    where auditors and witnesses read them without the publisher's machines, and where a bucket
    under object lock (WORM) keeps them out of the publisher's reach. ``verify`` checks the
    records against every copy there too: a log rewritten together with the local checkpoints
    file still disagrees with the trees the store holds.

    A copy that cannot be written is logged and left: the checkpoint is kept locally, the
    operation that made it (a publish, an agent's pull) goes on, and the next checkpoint
    covers the records since."""

    def __init__(self, url: StoreUrl) -> None:
        self.url = url
        self.prefix = url.key(*CHECKPOINTS_PREFIX)

    def put(self, record: dict[str, Any]) -> bool:
        from hashlib import sha256

        name = f"{int(record['size']):012d}-{sha256(record['note'].encode('utf-8')).hexdigest()[:16]}.json"
        try:
            object_store(self.url).put(f"{self.prefix}/{name}", canonical_json(record), if_absent=True)
            return True
        except GovshareError as exc:
            log.warning("access log checkpoint of %s record(s) not copied to the object store: %s",
                        record.get("size"), exc.message)
            return False

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        """(object key, record) of every copy, oldest first; IntegrityError for one that is not a record."""
        store = object_store(self.url)
        found = []
        for name in sorted(store.listing(self.prefix)):
            key = f"{self.prefix}/{name}"
            raw = store.get(key)
            try:
                record = json.loads(raw) if raw is not None else None
                if not isinstance(record, dict) or not isinstance(record.get("note"), str):
                    raise ValueError
            except ValueError:
                raise IntegrityError(f"{self.url.url}: {key} is not an access-log checkpoint; it was altered") from None
            found.append((key, record))
        return found


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class AccessLog:
    def __init__(self, folder: Path, keystore: Keystore, head_path: Path | None = None,
                 clock: Callable[[], datetime] = _utc_now, mirror: CheckpointMirror | None = None) -> None:
        self.folder = folder
        self.path = folder / "access-log.jsonl"
        self.keystore = keystore
        self.head_path = head_path or folder.parent / "state" / HEAD_FILE  # GOVSHARE_HOME/state
        self.tree = LogTree(folder, keystore)
        self.clock = clock  # the time stamped on records (tests inject an older one)
        self.mirror = mirror  # checkpoints copied to the object store, when the sharing store is one

    @classmethod
    def of(cls, home: Home, keystore: Keystore, clock: Callable[[], datetime] = _utc_now) -> AccessLog:
        url = attached(home.store)
        return cls(home.audit, keystore, home.state / HEAD_FILE, clock, CheckpointMirror(url) if url else None)

    def _mirrored(self, record: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint just kept, copied to the object store when there is one."""
        if self.mirror is not None:
            self.mirror.put(record)
        return record

    @property
    def hasher(self) -> TreeHash:
        """The log's hash (chain and tree): the keystore's profile's digest, SHA-256 or SM3."""
        return self.tree.hasher

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[TextIO]:
        """The log file, opened for appending and locked (exclusively, across processes; across
        machines too under GOVSHARE_COORDINATION, whose advisory lock is taken first, so the
        head holds when services and CLIs on several machines share the home). A purge renames
        a new file over the log, so the lock taken is checked to be the current file's."""
        with held(ACCESS_LOG_LOCK, "the access log"):
            with self._file_locked() as fh:
                yield fh

    @contextlib.contextmanager
    def _file_locked(self) -> Iterator[TextIO]:
        private_dir(self.folder)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)  # purposes are free text
            os.fchmod(fd, PRIVATE_FILE)
            fh = open(fd, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            fh.close()  # replaced while we waited: lock the new file
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The log locked against appends, checkpoints and purges while the block runs
        (lineage.retention archives and purges under it)."""
        try:
            with self._locked():
                yield
        except OSError as exc:
            raise self._unwritable(exc) from None

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
        entry = self._chained(record)
        size = os.fstat(fh.fileno()).st_size
        try:
            fh.write(_line(entry))
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            os.truncate(self.path, size)  # never leave half a record
            raise
        self._appended(entry)
        return entry

    def _chained(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` as the next record of the log: seq, time, the link to the last one, hash, signature."""
        last = _last_line(self.path)
        prev = json.loads(last) if last else None
        if prev is not None and "seq" not in prev:
            raise IntegrityError(f"access log {self.path} ends in a line that is not a record; it was altered")
        hasher = self.hasher
        entry = {
            **{k: v for k, v in record.items() if k != HASH_FIELD},
            "seq": prev["seq"] + 1 if prev else 1,
            "time": self.clock().astimezone(timezone.utc).isoformat(timespec="milliseconds"),
            "prev_hash": prev["hash"] if prev else GENESIS,
        }
        tagged(entry, hasher)  # SM3: recorded inside what the hash covers; SHA-256: nothing, as before
        entry["hash"] = hasher.digest(canonical_json(entry)).hex()
        entry["signature"] = self.keystore.sign(entry["hash"].encode("ascii"))
        if SIGNED_WITH.get(entry["signature"].get("algorithm")) != hasher.name:
            raise IntegrityError(f"the publisher key {entry['signature'].get('key_id')} is an "
                                 f"{entry['signature'].get('algorithm')} key, but the access log is {hasher.name}: the "
                                 "keystore's profile and its keys disagree; restore it from backup (nothing appended)")
        return entry

    def _appended(self, entry: dict[str, Any]) -> None:
        """After ``entry`` is in the log: the head re-signed, the leaf added to the tree cache."""
        self._write_head(LogHead(entry["seq"], entry["hash"]))
        try:
            self.tree.add(entry, self._leaves())
        except (OSError, GovshareError) as exc:  # the record stands; the tree catches up at the next use
            log.warning("access log %s: the tree cache was not updated (%s); it is rebuilt at the next checkpoint",
                        self.path, getattr(exc, "message", None) or exc.__class__.__name__)

    def commit_purge(self, last: int, anchor: dict[str, Any], record: dict[str, Any], leaves: bytes) -> dict[str, Any]:
        """Under ``exclusive()``: the records up to seq ``last`` out of the live log, in one rename of
        a new file holding ``anchor`` (line 1), the retained records verbatim and ``record`` (the
        purge record, chained to the last retained one and naming the anchor). ``leaves``: the
        leaf hashes of records 1..last, kept first (a crash before the rename leaves the log as
        it was; extra leaves in the file are never read). Returns the purge record."""
        for stale in self.folder.glob(f".{self.path.name}.*.tmp"):  # a purge killed before its rename
            stale.unlink(missing_ok=True)
        _durable_write(self.folder / PURGED_LEAVES, leaves)
        entry = self._chained({**record, "anchor": anchor})
        with replacing(self.path) as tmp:  # renamed over the log when the block ends
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "w", encoding="utf-8") as out, \
                    open(self.path, encoding="utf-8") as src:
                out.write(_line(anchor))
                for number, line in enumerate(src, start=1):
                    doc = json.loads(line)
                    if not (number == 1 and doc.get("format") == ANCHOR_FORMAT) and doc["seq"] > last:
                        out.write(line if line.endswith("\n") else line + "\n")
                out.write(_line(entry))
                out.flush()
                os.fsync(out.fileno())
            _crash_point("purge-written")
        fsync_dir(self.folder)
        _crash_point("purge-renamed")
        self._appended(entry)
        return entry

    def _write_head(self, head: LogHead) -> None:
        body = {"format": HEAD_FORMAT, **head.to_json(), "time": datetime.now(timezone.utc).isoformat()}
        doc = {**body, "signature": self.keystore.sign(canonical_json(body))}
        write_private(self.head_path, json.dumps(doc, indent=2) + "\n")

    # -- the tree: checkpoints and proofs (lineage.logtree) -------------------------------------

    def _synced(self) -> Any:  # noqa: ANN401 - keys.merkle.Levels
        """The tree cache brought to the log; call under the lock."""
        return self.tree.sync(self.tree.levels(), self._leaves(), self.head().count)

    synced_tree = _synced  # for lineage.retention, under exclusive()

    def checkpoint(self, reason: str) -> dict[str, Any]:
        """Sign and keep a checkpoint of the log as it is now (``reason``: publish, service, prove,
        agent); returns the kept record, its signed note under ``note``."""
        try:
            with self._locked():
                record = self.tree.checkpoint(self._synced(), reason)
        except OSError as exc:
            raise self._unwritable(exc) from None
        return self._mirrored(record)

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
                anchor = self.anchor()
                if anchor is not None and seq < anchor["first_seq"]:
                    raise ConfigError(archived_message(anchor, seq))
                entry = next(e for e in self.entries() if e.get("seq") == seq)
                checkpoint = self.tree.checkpoint(levels, "prove")
                path = inclusion_proof(seq - 1, levels.size, levels)
        except OSError as exc:
            raise self._unwritable(exc) from None
        self._mirrored(checkpoint)
        return {"format": PROOF_FORMAT, "record": entry, "leaf_index": seq - 1, "tree_size": checkpoint["size"],
                "leaf_hash": entry_leaf(entry, self.hasher).hex(), "inclusion": [h.hex() for h in path],
                "checkpoint": checkpoint["note"], "publisher_key": self.tree.verifier_key(checkpoint["key_id"]),
                **tagged({}, self.hasher)}

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
        self._mirrored(checkpoint)
        return {"checkpoint": checkpoint["note"], "size": checkpoint["size"], "from": old_size,
                "consistency": [h.hex() for h in proof]}

    # -- reading ---------------------------------------------------------------------------

    def entries(self) -> Iterator[dict[str, Any]]:
        """The records, oldest first (after a purge: the retained ones; the anchor is not a record)."""
        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    raise IntegrityError(f"access log {self.path} line {number} is not a valid record; "
                                         "the log was cut or altered") from None
                if number == 1 and isinstance(doc, dict) and doc.get("format") == ANCHOR_FORMAT:
                    continue
                yield doc

    def anchor(self) -> dict[str, Any] | None:
        """The retention anchor on line 1 of a purged log, its form checked; None before any purge."""
        if not self.path.is_file():
            return None
        with open(self.path, encoding="utf-8") as fh:
            line = fh.readline()
        try:
            doc = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            return None  # entries() names the line
        if not isinstance(doc, dict) or doc.get("format") != ANCHOR_FORMAT:
            return None
        archives = doc.get("archives")
        if recorded_hash(doc) != self.hasher.name:
            raise IntegrityError(f"access log {self.path}: the retention anchor on line 1 records the hash "
                                 f"{recorded_hash(doc)!r}, but the log is {self.hasher.name}; it was altered")
        if not (isinstance(doc.get("first_seq"), int) and doc["first_seq"] >= 2 and _hex64(doc.get("prev_hash"))
                and _hex64(doc.get(leaves_field(self.hasher))) and _hex64(doc.get("root")) and isinstance(archives, list)
                and archives and all(isinstance(a, dict) for a in archives)):
            raise IntegrityError(f"access log {self.path}: the retention anchor on line 1 is malformed; it was altered")
        return doc

    def purged_leaves(self, anchor: dict[str, Any]) -> Iterator[bytes]:
        """The leaf hashes of the purged records 1..first_seq-1, in order; IntegrityError (at the
        end) when they are not the ones the anchor names."""
        path, count = self.folder / PURGED_LEAVES, anchor["first_seq"] - 1
        digest = self.hasher.new()
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise IntegrityError(f"{path} is missing: the leaf hashes of the purged records 1..{count} were "
                                 "removed") from None
        with fh:
            for _ in range(count):
                leaf = fh.read(32)
                if len(leaf) != 32:
                    raise IntegrityError(f"{path} holds fewer than the {count} leaf hashes of the purged records; "
                                         "it was cut")
                digest.update(leaf)
                yield leaf
        if digest.hexdigest() != anchor[leaves_field(self.hasher)]:
            raise IntegrityError(f"{path}: the leaf hashes of the purged records 1..{count} are not the ones the "
                                 "retention anchor names; the file or the anchor was altered")

    def _leaves(self) -> Iterator[bytes]:
        """Every leaf of the tree, in order: the purged records' kept hashes, then the records'."""
        anchor = self.anchor()
        if anchor is not None:
            yield from self.purged_leaves(anchor)
        hasher = self.hasher
        for entry in self.entries():
            yield entry_leaf(entry, hasher)

    def head(self) -> LogHead:
        """The log's current head (count 0 and the genesis hash when it is empty), for a manifest."""
        last = _last_line(self.path) if self.path.is_file() else None
        if not last:
            return LogHead(0, GENESIS)
        entry = json.loads(last)
        if "seq" not in entry and entry.get("format") == ANCHOR_FORMAT:  # only the anchor (never left by a purge)
            return LogHead(int(entry["first_seq"]) - 1, str(entry["prev_hash"]))
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
        signature checked), so the log is consistent with every tree the publisher signed.

        After a purge the tree starts from the purged records' kept leaf hashes and the chain from
        the retention anchor; heads of purged records are covered by the checkpoints alone, and the
        anchor must be the one the last purge record names, anchored to a kept checkpoint."""
        own = self.signed_head()
        checks = [*([(str(self.head_path), own)] if own else []), *heads]
        wanted = {head.count for _, head in checks}
        checkpoints = self._signed_checkpoints()
        mirrored = self._mirrored_checkpoints()
        checkpoints += mirrored
        hashes: dict[int, str] = {0: GENESIS}
        prev_hash = GENESIS
        pending: set[int] = set()
        purge: dict[str, Any] | None = None
        anchor = self.anchor()
        hasher = self.hasher
        signers = {e.key_id: e.algorithm for e in self.keystore.entries().values() if e.purpose == "signing"}
        with _Walk({size for size, _ in checkpoints}, self.tree.tree_dir / "level-0.bin", hasher) as walk:
            if anchor is not None:
                for leaf in self.purged_leaves(anchor):
                    walk.add(leaf)
                if walk.frontier.root().hex() != anchor["root"]:
                    raise IntegrityError(f"access log {self.path}: the purged records' leaf hashes do not make the root "
                                         "the retention anchor (line 1) names; the anchor was altered")
                prev_hash = hashes[walk.count] = anchor["prev_hash"]
            for entry in self.entries():
                self._check_link(entry, walk.count + 1, prev_hash, anchor, hasher, signers)
                prev_hash = entry["hash"]
                walk.add(entry_leaf(entry, hasher))
                if walk.count in wanted:
                    hashes[walk.count] = prev_hash
                if entry.get("event") == DELIVERY and entry.get("outcome") == "pending":
                    pending.add(walk.count)
                elif entry.get("event") == COMPLETE:
                    pending.discard(entry.get("delivery"))
                elif entry.get("event") == PURGE:
                    purge = entry
        count, purged = walk.count, (anchor["first_seq"] - 1 if anchor else 0)
        for where, head in checks:
            if head.count > count:
                raise IntegrityError(f"access log {self.path} has {count} record(s) but {where} (signed) counts "
                                     f"{head.count}: records were removed from the end")
            if head.count >= purged and hashes.get(head.count) != head.hash:  # below: archived, under the checkpoints
                raise IntegrityError(f"access log {self.path} record {head.count} is not the one {where} signed: "
                                     "the log was rewritten")
        matched = 0
        for size, (where, root) in sorted(checkpoints, key=lambda c: c[0]):
            if size > count:
                raise IntegrityError(f"access log {self.path} has {count} record(s) but {where} signs a tree of "
                                     f"{size}: records {count + 1}..{size} were removed from the end")
            if walk.tree_roots.get(size) != root:
                raise IntegrityError(f"access log {self.path}: records {matched + 1}..{size} are not the ones {where} "
                                     f"signed (the first {matched} are): the log was rewritten")
            matched = size
        self._check_anchor(anchor, purge, {size: root for size, (_, root) in checkpoints})
        levels = self.tree.levels() if self.tree.tree_dir.is_dir() else None
        if walk.cache_bad:
            raise IntegrityError(f"the access log's tree cache {self.tree.tree_dir} does not hold record "
                                 f"{walk.cache_bad}'s leaf; it was altered (remove the folder: it is rebuilt from the log)")
        if levels is not None and levels.size == count and count and levels.root(count) != walk.frontier.root():
            raise IntegrityError(f"the access log's tree cache {self.tree.tree_dir} does not match its records; "
                                 "it was altered (remove the folder: it is rebuilt from the log)")
        return AuditSummary(count, tuple(where for where, _ in checks), tuple(sorted(pending)), len(checkpoints),
                            purged, len(mirrored))

    def _check_anchor(self, anchor: dict[str, Any] | None, purge: dict[str, Any] | None,
                      kept: dict[int, bytes]) -> None:
        """The retention anchor is the one the last purge record names, and that record is anchored
        to a checkpoint that was kept (signed, and checked against the tree above)."""
        if anchor is None:
            if purge is not None:
                raise IntegrityError(f"access log {self.path} record {purge['seq']} is a purge record, but the log "
                                     "has no retention anchor on line 1: the anchor was removed")
            return
        where = f"access log {self.path}: the retention anchor on line 1 (records 1..{anchor['first_seq'] - 1} purged)"
        if purge is None:
            raise IntegrityError(f"{where} is named by no purge record: the purge record was removed")
        if purge.get("anchor") != anchor:
            raise IntegrityError(f"{where} is not the one purge record {purge['seq']} names: the anchor was altered")
        checkpoint = purge.get("checkpoint") if isinstance(purge.get("checkpoint"), dict) else {}
        root = kept.get(checkpoint.get("size"))  # type: ignore[arg-type]
        if root is None or root.hex() != checkpoint.get("root"):
            raise IntegrityError(f"access log {self.path}: purge record {purge['seq']} is anchored to a checkpoint of "
                                 f"{checkpoint.get('size')} record(s) that no kept checkpoint signs; the checkpoints "
                                 "were altered")

    def _mirrored_checkpoints(self) -> list[tuple[int, tuple[str, bytes]]]:
        """(size, (where, root)) of every checkpoint copy on the object store, each signature checked."""
        if self.mirror is None:
            return []
        keys = publisher_keys(self.keystore)
        found = []
        for key, record in self.mirror.records():
            where = f"the checkpoint copy {self.mirror.url.url}:{key}"
            checkpoint = self.tree.check(record, where, keys)
            found.append((checkpoint.size, (f"{where} ({record.get('time')})", checkpoint.root)))
        return found

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

    def _check_link(self, entry: dict[str, Any], count: int, prev_hash: str, anchor: dict[str, Any] | None,
                    hasher: TreeHash = SHA256, signers: dict[str, str] | None = None) -> None:
        where = f"access log {self.path} record {count}"
        body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
        if entry.get("seq") != count:
            if count == 1 and anchor is None:
                raise IntegrityError(f"{where}: sequence number {entry.get('seq')!r}; the records before it were removed "
                                     "(or the retention anchor, line 1 of a purged log)")
            raise IntegrityError(f"{where}: sequence number {entry.get('seq')!r}; a record was removed or reordered")
        if entry.get("prev_hash") != prev_hash:
            if anchor is not None and count == anchor["first_seq"]:
                raise IntegrityError(f"{where}: does not link to the hash the retention anchor on line 1 holds; the "
                                     "anchor or the record was altered")
            raise IntegrityError(f"{where}: does not link to the record before it; a record was removed or reordered")
        signature = entry.get("signature") if isinstance(entry.get("signature"), dict) else {}
        key_algorithm = (signers or {}).get(signature.get("key_id"))  # the key's, as the keystore holds it
        recorded = recorded_hash(entry)
        if key_algorithm is not None and recorded != SIGNED_WITH.get(key_algorithm):
            raise IntegrityError(f"{where}: records the hash {recorded!r}, but it is signed by {signature.get('key_id')}, "
                                 f"an {key_algorithm} key, whose log is hashed with {SIGNED_WITH.get(key_algorithm)}: "
                                 "refused (the record was re-hashed under another algorithm than its key's)")
        if recorded != hasher.name:
            raise IntegrityError(f"{where}: records the hash {recorded!r}, but the access log is {hasher.name}; "
                                 "the record was altered")
        if hasher.digest(canonical_json(body)).hex() != entry.get("hash"):
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
    found = []
    for name in dataset_ids(store_root):
        store = SharingStore(store_root, name)
        for version in store.versions():
            manifest = store.read_manifest(version)
            head = manifest.doc.get("access_log")
            if head is None:
                continue
            try:
                keystore.verify(manifest.raw, store.read_signature(version))
            except IntegrityError:
                raise IntegrityError(f"{name} version {version}: the manifest's signature does not verify, "
                                     "so its access-log head cannot be trusted") from None
            found.append((f"{name} version {version} manifest", LogHead.from_json(head)))
    return found


class _Walk:
    """One pass over the tree's leaves in order: the frontier, the root at every checkpointed size,
    and the first leaf the tree cache holds otherwise."""

    def __init__(self, roots: set[int], cached: Path, hasher: TreeHash = SHA256) -> None:
        self.frontier = Frontier(hasher)
        self.roots = roots
        self.tree_roots: dict[int, bytes] = {0: self.frontier.root()} if 0 in roots else {}
        self.cache = open(cached, "rb") if cached.is_file() else None  # noqa: SIM115 - closed by __exit__
        self.cache_bad = 0

    def __enter__(self) -> _Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cache:
            self.cache.close()

    @property
    def count(self) -> int:
        return self.frontier.size

    def add(self, leaf: bytes) -> None:
        self.frontier.append(leaf)
        held = self.cache.read(32) if self.cache else b""
        if len(held) == 32 and held != leaf and not self.cache_bad:
            self.cache_bad = self.count
        if self.count in self.roots:
            self.tree_roots[self.count] = self.frontier.root()


def archived_message(anchor: dict[str, Any], seq: int) -> str:
    """What to say of record ``seq``, archived and purged: which archive holds it."""
    held = next((a for a in anchor["archives"] if a.get("first", 0) <= seq <= a.get("last", 0)), {})
    return (f"record {seq} was archived and purged from the live log (records 1..{anchor['first_seq'] - 1} are "
            f"archived); it is in the archive of records {held.get('first')}..{held.get('last')} with SHA-256 "
            f"{held.get('sha256')}: check it there with govshare audit check-archive FILE --key PEM")


def leaves_field(hasher: TreeHash) -> str:
    """The anchor's field naming the digest of the purged leaves: ``leaves_sha256`` (as before) or
    ``leaves_sm3``."""
    return "leaves_sha256" if hasher is SHA256 else f"leaves_{hasher.name.lower()}"


def _line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n"


def _hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _durable_write(path: Path, data: bytes) -> None:
    """``path`` replaced whole by ``data``, synced before the rename and the rename synced."""
    with replacing(path) as tmp, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)



def _crash_point(name: str) -> None:
    """A named crash point of a purge for fault-injection tests (common.faults: SIGKILL, as a power cut)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


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
