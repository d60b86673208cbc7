"""Stage hand-over through the object store, for the workers of one Airflow run.

With the sharing store on object storage (GOVSHARE_STORE=s3://...), the stages of one run (plan,
ingest per part, protect, publish) may run on different workers, each with its own work folder
(GOVSHARE_WORK) and its own store cache. A stage begins by fetching what the run's earlier
stages handed over, and ends by pushing what it wrote:

    <prefix>/.runs/<dataset>/<run>/work/...      the run's work folder (stage results, staged
                                                 parts, rejected rows: encrypted at rest as in
                                                 the folder itself)
    <prefix>/.runs/<dataset>/<run>/staging/...   the version the run's protect assembled

Only changes move. A small ledger in the run's folder (``.handover.json``) records, per object,
the ETag seen and the local file's size and mtime after it was fetched or pushed: a fetch
downloads only objects whose ETag changed (or whose local copy was altered), a push uploads only
files that are new or changed since, and deletes the objects of files the stage removed. Files
neither in the ledger nor in the store are left alone: a mapped ingest part running beside this
one on the same worker may be writing them.

This is safe without further locking because the sync lease serialises a dataset's runs, the
stages of one run run one after another, and mapped ingest parts write files named by their
part. When the run finishes (published, or blocked by the gate) its prefix is deleted; what a
run killed for good leaves is deleted by the next run of the dataset under the lease.

The rest of the home (keystore, sync state, quarantine, lineage, access log) is not handed over:
the workers share GOVSHARE_HOME.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from common.objstore import ObjectStore, attached, object_store

LEDGER = ".handover.json"
RUNS = ".runs"
# A file of one part of a run: stage results "<stage>.<part>.json", staged parts "<kind>-<part>.parquet"
PART_FILE = re.compile(r"[.-](\d+)\.(?:json|parquet)$")


class Handover:
    """The hand-over of one run's files; inert (every method a no-op) for a local store."""

    def __init__(self, store_root: Path, work: Path, dataset_id: str, run_id: str) -> None:
        url = attached(store_root)
        self.remote: ObjectStore | None = object_store(url) if url else None
        self.prefix = url.key(RUNS, dataset_id, run_id) if url else ""
        self.runs_prefix = url.key(RUNS, dataset_id) if url else ""
        self.run_id = run_id
        self.folder = work / dataset_id / run_id
        self.places = {"work": self.folder, "staging": store_root / dataset_id / ".staging" / run_id}

    @property
    def active(self) -> bool:
        return self.remote is not None

    # -- the ledger ------------------------------------------------------------------------

    def _ledger(self) -> dict[str, list]:
        try:
            doc = json.loads((self.folder / LEDGER).read_bytes())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save_ledger(self, ledger: dict[str, list]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (LEDGER + ".tmp")
        tmp.write_text(json.dumps(ledger, sort_keys=True))
        os.replace(tmp, self.folder / LEDGER)

    def _local(self, name: str) -> Path:
        place, _, rest = name.partition("/")
        return self.places[place] / rest

    def _local_files(self) -> dict[str, Path]:
        found = {}
        for place, root in self.places.items():
            if not root.is_dir():
                continue
            for path in root.rglob("*"):
                if path.is_file() and not path.name.startswith(LEDGER) and ".tmp" not in path.name:
                    found[f"{place}/{path.relative_to(root).as_posix()}"] = path
        return found

    @staticmethod
    def _stat(path: Path) -> list[int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns]

    # -- moving files ----------------------------------------------------------------------

    def fetch(self) -> int:
        """Bring this worker's copy of the run up to what the store holds; the number of files
        downloaded."""
        if self.remote is None:
            return 0
        ledger = self._ledger()  # read before listing: what it names was in the store when it was saved
        remote = self.remote.listing(self.prefix)
        fetched = 0
        for name, (size, etag) in sorted(remote.items()):
            if name.partition("/")[0] not in self.places or ".." in name.split("/"):
                continue
            path = self._local(name)
            known = ledger.get(name)
            if known and known[0] == etag and self._stat(path) == known[1:]:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.handover.tmp")  # parts may fetch at once
            self.remote.download(f"{self.prefix}/{name}", tmp)
            os.replace(tmp, path)
            ledger[name] = [etag, *self._stat(path)]
            fetched += 1
        for name in [n for n in ledger if n not in remote]:  # removed by a later stage elsewhere
            self._local(name).unlink(missing_ok=True)
            del ledger[name]
        if fetched or remote or ledger:
            self._save_ledger(ledger)
        return fetched

    def push(self, part: int | None = None) -> int:
        """Hand over what this stage wrote or removed; the number of files uploaded. A mapped
        part (``part``) hands over its own files only: another part on this worker may be
        writing its files at this moment (they are named by part), and it hands them over itself."""
        if self.remote is None or not self.folder.is_dir():
            return 0  # nothing to hand over: a local store, or the run finished (and dropped its prefix)
        ledger = self._ledger()
        local = self._local_files()
        if part is not None:
            local = {n: p for n, p in local.items() if _owned(n, part)}
        sent = []
        for name, path in sorted(local.items()):
            known = ledger.get(name)
            if known is None or self._stat(path) != known[1:]:
                self.remote.upload(f"{self.prefix}/{name}", path)
                sent.append(name)
        gone = [n for n in ledger if n not in local and (part is None or _owned(n, part))]
        if gone:
            self.remote.delete([f"{self.prefix}/{n}" for n in gone])
            for name in gone:
                del ledger[name]
        if sent:
            remote = self.remote.listing(self.prefix)
            for name in sent:
                if name in remote and (stat := self._stat(local[name])) is not None:
                    ledger[name] = [remote[name][1], *stat]
        if sent or gone:
            self._save_ledger(ledger)
        return len(sent)

    def drop(self) -> None:
        """The run is over: its hand-over prefix goes."""
        if self.remote is not None:
            self.remote.delete_under(self.prefix)

    def drop_others(self) -> list[str]:
        """Delete the hand-over of every other run of the dataset (call under the sync lease:
        no other run can be at work); the run ids dropped."""
        if self.remote is None:
            return []
        others = [n for n in self.remote.names(self.runs_prefix) if n != self.run_id]
        for name in others:
            self.remote.delete_under(f"{self.runs_prefix}/{name}")
        return others


def _owned(name: str, part: int) -> bool:
    """Whether part ``part`` of a run hands ``name`` over: its own part files and the run's shared files."""
    found = PART_FILE.search(name)
    return found is None or int(found.group(1)) == part
