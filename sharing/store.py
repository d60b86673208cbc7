"""The sharing store: immutable, signed, chained versions of each dataset's sharing set.

Layout under GOVSHARE_HOME/store/<dataset>/:

    versions/00000001/manifest.json   canonical JSON (schema, rows, files + SHA-256, watermarks,
                      manifest.sig    digest of manifest N-1) and its Ed25519 signature
                      upserts.parquet rows inserted or changed by this version (protected)
                      deletes.parquet keys withdrawn by this version (protected like the key)
    .staging/<run>/                   a version being assembled; invisible to readers
    .publish.lock                     serialises publishers (fcntl, for the commit alone)

A version becomes visible by one rename of its complete folder, so a reader sees version N
whole or not at all. Version numbers are 1, 2, 3, ... and never reused.

On object storage (GOVSHARE_STORE=s3://bucket/prefix, common.objstore) there is no rename. A
publisher uploads the version's files under a prefix of its own
(``<dataset>/objects/<version>-<run>-<random>/``), then makes the version visible by one
conditional write, ``If-None-Match: *``, of its head marker ``<dataset>/heads/<version>.json``
(the prefix, the file names and sizes). Readers know versions only from head markers, never by
listing a version's files, so a writer killed before its marker leaves nothing visible, and two
publishers of the same version number cannot both win: the loser gets PublishConflict. The
home's store folder is then a local cache: a version is downloaded into it whole (temporary
folder, one rename) the first time it is read, and verified like any other by its manifest's
digests and signature.

The sync lease (``SyncLease``: GOVSHARE_HOME/work/<dataset>.lease, the run that may sync the
dataset now; an fcntl lock on the work folder is taken to read and change it): one run per
dataset between plan and publish, so that two runs never decide
against the same published state and publish the same change twice. Airflow runs the stages of
one run as separate processes, so the lease is a file naming the run (run id, pid and host of the
process that took or renewed it last, since when), not a lock on an open file. A run takes it at
the start of every stage (a stage of the run that holds it renews it) and gives it back when it
finishes. A lease whose holder cannot be working any more is stale and may be taken over:

- the holder's process is alive on this host (pid and its start time match): never stale;
- ``process`` lease (``govshare sync``: plan to publish in one process): stale as soon as that
  process is gone from this host (killed, crashed);
- ``run`` lease (an Airflow run: a task process per stage, none alive between two tasks): stale
  when it was last renewed more than GOVSHARE_SYNC_LEASE_TTL seconds ago (default 7200);
- a holder on another host: the same TTL.

Another run that finds the lease held waits up to GOVSHARE_SYNC_WAIT seconds (default 0), then
fails with exit 75 (retriable) naming the run that holds it and since when.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from common.coordination import coordination_dsn, transaction
from common.errors import ConfigError, IntegrityError, PublishConflict, TemporaryFailure
from common.faults import checkpoint
from common.files import DIGEST_FIELDS, canonical_json, digest_bytes, fsync_dir, write_atomic
from common.objstore import ObjectStore, attached, object_store

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MANIFEST_FORMAT = "govshare-manifest/1"
HEAD_FORMAT = "govshare-head/1"
_VERSION_DIGITS = 8
LEASE_TTL_ENV = "GOVSHARE_SYNC_LEASE_TTL"
WAIT_ENV = "GOVSHARE_SYNC_WAIT"
DEFAULT_LEASE_TTL = 7200.0
LeaseScope = Literal["process", "run"]
_POLL = 0.2
_log = logging.getLogger("govshare.lease")


@dataclass(frozen=True)
class Lease:
    """Who may sync a dataset now: the run, and the process that took or renewed it last."""

    run_id: str
    scope: LeaseScope
    host: str
    pid: int
    pid_started: str | None  # the process's start time (Linux /proc), so a reused pid is not taken for it
    since: str  # ISO time, UTC: when the run took the lease
    renewed_at: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.since})"

    def stale(self, now: datetime, ttl: float) -> bool:
        if self.host == socket.gethostname():
            if _started(self.pid) == self.pid_started and _alive(self.pid):
                return False
            if self.scope == "process":
                return True
        return (now - datetime.fromisoformat(self.renewed_at)).total_seconds() > ttl


@dataclass(frozen=True)
class Manifest:
    """A version's manifest as published: the signed bytes and their parsed form."""

    version: int
    raw: bytes
    doc: dict[str, Any]

    @property
    def digest_algorithm(self) -> str:
        """What the manifest is digested with, and its files: ``digest`` in it (SM3 in the 国密
        profile), SHA-256 when absent (the standard profile, and manifests from before)."""
        name = self.doc.get("digest", "SHA-256")
        if name not in DIGEST_FIELDS:
            raise IntegrityError(f"{self.doc.get('dataset')} version {self.version}: the manifest names digest "
                                 f"{name!r}, which is none of {', '.join(DIGEST_FIELDS)}")
        return name

    @property
    def digest(self) -> str:
        """The manifest's digest (hex) by its digest algorithm: what the next version links to."""
        return digest_bytes(self.raw, self.digest_algorithm)

    @property
    def digest_field(self) -> str:
        """The name a file's digest is listed under in this manifest: ``sha256`` or ``sm3``."""
        return DIGEST_FIELDS[self.digest_algorithm]

    @property
    def link_field(self) -> str:
        """The name of the predecessor's digest in ``previous``: ``manifest_sha256`` or ``manifest_sm3``."""
        return "manifest_" + self.digest_field

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    def files(self, role: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.doc["files"] if role is None or f["role"] == role]


class SharingStore:
    def __init__(self, root: Path, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self.root = root / dataset_id
        self.versions_dir = self.root / "versions"
        self.staging_dir = self.root / ".staging"
        url = attached(root)
        self.remote: ObjectStore | None = object_store(url) if url else None
        self.remote_root = url.key(dataset_id) if url else ""

    # -- reading -------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """Published version numbers, ascending (gaps are the verifier's business)."""
        if self.remote is not None:
            return sorted(int(n[:-5]) for n in self.remote.names(self.remote_root + "/heads")
                          if n.endswith(".json") and len(n) == _VERSION_DIGITS + 5 and n[:-5].isdigit())
        if not self.versions_dir.is_dir():
            return []
        found = []
        for entry in self.versions_dir.iterdir():
            if entry.is_dir() and entry.name.isdigit() and len(entry.name) == _VERSION_DIGITS:
                found.append(int(entry.name))
        return sorted(found)

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_dir(self, version: int) -> Path:
        """The version's folder; on object storage, the local cache's copy, downloaded whole the
        first time (a version that has no head marker stays absent)."""
        path = self.versions_dir / f"{version:0{_VERSION_DIGITS}d}"
        if self.remote is not None and not path.is_dir():
            self._materialise(version, path)
        return path

    def _head_key(self, version: int) -> str:
        return f"{self.remote_root}/heads/{version:0{_VERSION_DIGITS}d}.json"

    def head(self, version: int) -> dict[str, Any] | None:
        """The head marker of a version on object storage (None: not visible)."""
        assert self.remote is not None
        raw = self.remote.get(self._head_key(version))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            if doc.get("format") != HEAD_FORMAT or doc.get("version") != version:
                raise ValueError("format")
            prefix, files = doc["objects"], doc["files"]
            if not (isinstance(prefix, str) and prefix.startswith(self.remote_root + "/objects/")
                    and isinstance(files, dict) and MANIFEST in files and SIGNATURE in files
                    and all(isinstance(n, str) and "/" not in n and n not in (".", "..") for n in files)):
                raise ValueError("fields")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError(f"{self.dataset_id} version {version}: the head marker {self._head_key(version)} "
                                 "on the object store is malformed") from None
        return doc

    def presigned(self, version: int, name: str, seconds: int) -> str | None:
        """A pre-signed URL of a visible version's file on object storage, valid ``seconds``;
        None for a local store (or a file the head marker does not list)."""
        if self.remote is None:
            return None
        doc = self.head(version)
        if doc is None or name not in doc["files"]:
            return None
        return self.remote.presign(f"{doc['objects']}/{name}", seconds)

    def _materialise(self, version: int, path: Path) -> None:
        doc = self.head(version)
        if doc is None:
            return
        tmp = self.versions_dir / f".{path.name}.{os.getpid()}.download"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for name, size in doc["files"].items():
                target = tmp / name
                if not self.remote.download(f"{doc['objects']}/{name}", target):
                    raise IntegrityError(f"{self.dataset_id} version {version}: {name} is missing from the object "
                                         f"store ({doc['objects']}/{name}) though its head marker lists it")
                if target.stat().st_size != size:
                    raise IntegrityError(f"{self.dataset_id} version {version}: {name} on the object store has "
                                         f"{target.stat().st_size} bytes, its head marker says {size}")
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.is_dir():  # another reader's download won the rename: same files, keep it
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def require_version(self, version: int | None) -> int:
        latest = self.latest()
        if latest is None:
            raise ConfigError(f"dataset {self.dataset_id} has no published version yet: run 'govshare sync {self.dataset_id}'")
        if version is None:
            return latest
        if version < 1 or version > latest:
            raise ConfigError(f"dataset {self.dataset_id} has versions 1..{latest}; there is no version {version}")
        return version

    def read_manifest(self, version: int) -> Manifest:
        path = self.version_dir(version) / MANIFEST
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"{self.dataset_id} version {version}: manifest is missing ({path})") from None
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{self.dataset_id} version {version}: manifest is not valid JSON ({path})") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise IntegrityError(f"{self.dataset_id} version {version}: manifest has an unknown format ({path})")
        return Manifest(version=version, raw=raw, doc=doc)

    def read_signature(self, version: int) -> dict[str, Any]:
        path = self.version_dir(version) / SIGNATURE
        try:
            doc = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise IntegrityError(f"{self.dataset_id} version {version}: signature is missing ({path})") from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{self.dataset_id} version {version}: signature is unreadable ({path})") from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"{self.dataset_id} version {version}: signature is unreadable ({path})")
        return doc

    # -- writing -------------------------------------------------------------------------

    def stage(self, run_id: str) -> Path:
        """A fresh private folder to assemble a version in (replaces an earlier attempt of the run)."""
        path = self.staging_dir / run_id
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def discard(self, run_id: str) -> None:
        shutil.rmtree(self.staging_dir / run_id, ignore_errors=True)

    @contextmanager
    def publish_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".publish.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def commit(self, staged: Path, version: int, manifest: bytes, signature: dict[str, Any]) -> Path:
        """Write manifest and signature into the staged folder and make it version N atomically.

        Call under publish_lock(), with version == latest() + 1.
        """
        checkpoint("files")
        versions = self.versions()
        latest = versions[-1] if versions else None
        target = self.versions_dir / f"{version:0{_VERSION_DIGITS}d}"
        taken = version in versions if self.remote is not None else target.exists()
        if taken:
            raise PublishConflict(f"{self.dataset_id} version {version} already exists: another publisher was first; retry the run")
        if version != (latest or 0) + 1:
            raise IntegrityError(f"{self.dataset_id}: refusing to publish version {version} after version {latest}: "
                                 "version numbers run 1, 2, 3 without gaps")
        (staged / MANIFEST).write_bytes(manifest)
        (staged / SIGNATURE).write_bytes(canonical_json(signature))
        _fsync_tree(staged)
        if self.remote is not None:
            self._make_visible_remote(staged, version)
        else:
            checkpoint("manifest")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        if self.remote is not None and target.exists():  # a cache left from a store emptied since: the store wins
            shutil.rmtree(target)
        os.rename(staged, target)  # atomic on one filesystem: the version appears whole (locally; remotely it is already)
        fsync_dir(self.versions_dir)
        checkpoint("visible")
        return target

    def _make_visible_remote(self, staged: Path, version: int) -> None:
        """Upload the version's files under a prefix of this attempt's own, then write its head
        marker if no other publisher has written one for this version: the one step that makes it
        visible on the object store."""
        prefix = f"{self.remote_root}/objects/{version:0{_VERSION_DIGITS}d}-{staged.name}-{os.urandom(6).hex()}"
        files = {}
        for path in sorted(p for p in staged.iterdir() if p.is_file()):
            self.remote.upload(f"{prefix}/{path.name}", path)
            files[path.name] = path.stat().st_size
        checkpoint("manifest")
        head = {"format": HEAD_FORMAT, "version": version, "objects": prefix, "files": files}
        if not self.remote.put(self._head_key(version), canonical_json(head), if_absent=True):
            raise PublishConflict(f"{self.dataset_id} version {version} already exists on the object store: another "
                                  "publisher was first; retry the run")

    def discard_others(self, run_id: str) -> list[Path]:
        """Remove what runs other than ``run_id`` left half-made (their .staging folders, temporary
        files): call while holding the sync lease, when no other run can be assembling a version."""
        gone = [p for p in self.staging_dir.glob("*") if p.name != run_id]
        gone += [p for p in self.root.glob("*.tmp")] + [p for p in self.root.glob(".*.tmp")]
        for path in gone:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if self.remote is not None:
            self._discard_remote_others(run_id)
        return gone

    def _discard_remote_others(self, run_id: str) -> None:
        """On object storage: delete what killed writers uploaded for a version after the latest
        (never made visible, referenced by no head marker) once nothing was written there for the
        lease's TTL (a writer on a machine that does not share this lease may still be at work);
        prefixes of ``run_id`` stay."""
        latest, ttl = self.latest() or 0, _seconds(LEASE_TTL_ENV, DEFAULT_LEASE_TTL)
        for name in self.remote.names(self.remote_root + "/objects"):
            number, _, rest = name.partition("-")
            if number.isdigit() and int(number) > latest and not rest.startswith(run_id + "-"):
                self.remote.delete_under(f"{self.remote_root}/objects/{name}", older_than=ttl)


def dataset_ids(root: Path) -> list[str]:
    """The datasets a store holds: the folders of a local store, the top-level prefixes of an
    object store (read from the store, not from the local cache)."""
    url = attached(root)
    if url is not None:
        return [n for n in object_store(url).names(url.prefix) if not n.startswith(".")]
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


_LEASE_TABLE = "govshare_sync_lease"
_LEASE_TABLE_MADE: set[str] = set()  # the databases this process has made sure hold the table


class SyncLease:
    """The dataset's sync lease (see the module's docstring): a file in the home's work folder,
    or, when GOVSHARE_COORDINATION names a PostgreSQL database (``postgresql://...``), a row of
    the table govshare_sync_lease read and changed under a transaction-scoped advisory lock, so
    that workers on different machines see one lease per dataset."""

    def __init__(self, work: Path, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self.folder = work
        self.path = work / f"{dataset_id}.lease"
        self._dsn = coordination_dsn()
        self._db = None  # the open transaction while _lease_lock holds the lock

    @contextmanager
    def _lease_lock(self) -> Iterator[None]:
        """An fcntl lock on the work folder itself (no lock file is left behind), or a
        transaction holding PostgreSQL's advisory lock for the dataset."""
        if self._dsn is not None:
            with self._database() as db:
                self._db = db
                try:
                    yield
                finally:
                    self._db = None
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @contextmanager
    def _database(self) -> Iterator[Any]:
        with transaction(self._dsn, f"{self.dataset_id}: the sync lease") as db:
            if self._dsn not in _LEASE_TABLE_MADE:  # concurrent CREATE ... IF NOT EXISTS can collide: serialise it
                db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LEASE_TABLE,))
                db.execute(f"CREATE TABLE IF NOT EXISTS {_LEASE_TABLE} (dataset text PRIMARY KEY, lease text NOT NULL)")
                db.commit()
                _LEASE_TABLE_MADE.add(self._dsn)
            db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"govshare-lease:{self.dataset_id}",))
            yield db

    def lease(self) -> Lease | None:
        """The lease as written (stale or not); None when no run holds it."""
        if self._dsn is not None and self._db is None:
            with self._lease_lock():
                return self.lease()
        where = f"the sync lease {self.path}" if self._dsn is None else f"the sync lease in {_LEASE_TABLE}"
        try:
            if self._db is not None:
                row = self._db.execute(f"SELECT lease FROM {_LEASE_TABLE} WHERE dataset = %s",
                                       (self.dataset_id,)).fetchone()
                if row is None:
                    return None
                raw = row[0].encode()
            else:
                raw = self.path.read_bytes()
            lease = Lease(**json.loads(raw))
            datetime.fromisoformat(lease.renewed_at)
            return lease
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError):
            raise IntegrityError(f"{self.dataset_id}: {where} is unreadable; make sure no sync of "
                                 f"{self.dataset_id} runs, then remove it") from None

    def _write(self, lease: Lease) -> None:
        if self._db is not None:
            self._db.execute(f"INSERT INTO {_LEASE_TABLE} (dataset, lease) VALUES (%s, %s) "
                             "ON CONFLICT (dataset) DO UPDATE SET lease = EXCLUDED.lease",
                             (self.dataset_id, json.dumps(asdict(lease))))
        else:
            write_atomic(self.path, json.dumps(asdict(lease)))

    def _remove(self) -> None:
        if self._db is not None:
            self._db.execute(f"DELETE FROM {_LEASE_TABLE} WHERE dataset = %s", (self.dataset_id,))
        else:
            self.path.unlink(missing_ok=True)

    def hold(self, run_id: str, scope: LeaseScope, wait: float | None = None) -> Lease:
        """Take or renew the sync lease for ``run_id``; wait up to ``wait`` seconds (default
        GOVSHARE_SYNC_WAIT) while another run holds it, then TemporaryFailure (exit 75)."""
        wait = _seconds(WAIT_ENV, 0.0) if wait is None else wait
        deadline = time.monotonic() + wait
        told = False
        while True:
            with self._lease_lock():
                now = datetime.now(timezone.utc)
                current = self.lease()
                if current is None or current.run_id == run_id or current.stale(now, _seconds(LEASE_TTL_ENV, DEFAULT_LEASE_TTL)):
                    if current is not None and current.run_id != run_id:
                        _log.warning("%s: taking over the stale sync lease of %s", self.dataset_id, current.describe())
                    lease = _lease(run_id, scope, now, current if current and current.run_id == run_id else None)
                    self._write(lease)
                    return lease
            if time.monotonic() >= deadline:
                raise TemporaryFailure(
                    f"{self.dataset_id}: another sync holds the dataset: {current.describe()}, last renewed "
                    f"{current.renewed_at}; nothing was read or published, retry when it has finished "
                    f"(or wait for it: {WAIT_ENV}=SECONDS)")
            if not told:
                _log.warning("%s: waiting up to %.0f s for the sync lease held by %s", self.dataset_id, wait,
                             current.describe())
                told = True
            time.sleep(_POLL)

    def release(self, run_id: str) -> None:
        """Give the lease back if ``run_id`` holds it."""
        with self._lease_lock():
            current = self.lease()
            if current is not None and current.run_id == run_id:
                self._remove()


def _lease(run_id: str, scope: LeaseScope, now: datetime, renewed: Lease | None) -> Lease:
    pid = os.getpid()
    fresh = Lease(run_id, scope, socket.gethostname(), pid, _started(pid), now.isoformat(), now.isoformat())
    return replace(fresh, since=renewed.since) if renewed else fresh


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds, 0 or more")
    return value


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)

