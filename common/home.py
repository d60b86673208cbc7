"""GOVSHARE_HOME: everything govshare writes (sharing store, keystore, quarantine, lineage, access log).

Deleting it and running again starts from scratch. Nothing in it is committed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.catalog import PROJECT_ROOT
from common.errors import ConfigError

WORK_ENV = "GOVSHARE_WORK"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def keystore(self) -> Path:
        return self.root / "keystore"

    @property
    def store(self) -> Path:
        """The sharing store: published, immutable versions per dataset. GOVSHARE_STORE may name
        another local folder, or ``s3://bucket/prefix``: then this is the home's local cache of
        that object store (store-cache/<bucket>/<prefix>, tagged with the store it mirrors), and
        sharing.store reads and publishes through the object store (common.objstore)."""
        from common.objstore import STORE_ENV, attach, parse_store

        raw = os.environ.get(STORE_ENV, "").strip()
        if not raw:
            return self.root / "store"
        where = parse_store(raw)
        if isinstance(where, Path):
            return where
        # A worker with a work folder of its own (GOVSHARE_WORK) keeps its own cache there, as a
        # worker on another machine would: what it stages reaches the others through the store.
        cache = (self.work if os.environ.get(WORK_ENV, "").strip() else self.root) / "store-cache"
        return attach(cache / where.bucket / (where.prefix or "_"), where)

    @property
    def state(self) -> Path:
        """Per-dataset sync state (the watermark), advanced only after a publish."""
        return self.root / "state"

    @property
    def work(self) -> Path:
        """Staging of runs in progress (encrypted at rest), removed after publish: GOVSHARE_WORK,
        a folder of this worker's own, or GOVSHARE_HOME/work. With a sharing store on object
        storage, the stages of one Airflow run hand their files over through the store
        (sharing.handover), so each worker may have its own."""
        raw = os.environ.get(WORK_ENV, "").strip()
        if not raw:
            return self.root / "work"
        work = Path(raw).expanduser()
        if not work.is_absolute():
            raise ConfigError(f"{WORK_ENV}={raw!r}: expected an absolute path (the worker's own work folder)")
        if work.exists() and not work.is_dir():
            raise ConfigError(f"{WORK_ENV}={raw!r} is not a folder")
        return work.resolve()

    @property
    def leases(self) -> Path:
        """Where the per-dataset sync lease files live (sharing.store.SyncLease): always the
        home's own work folder, shared by every worker of the home, whatever GOVSHARE_WORK says
        (across machines, GOVSHARE_COORDINATION moves the lease into PostgreSQL)."""
        return self.root / "work"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def lineage(self) -> Path:
        return self.root / "lineage"

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def marker(self) -> Path:
        return self.root / "govshare-home.json"

    def require_initialised(self) -> "Home":
        if not self.marker.is_file():
            raise ConfigError(f"GOVSHARE_HOME {self.root} is not initialised: run 'govshare init' first")
        return self


def home() -> Home:
    """GOVSHARE_HOME, default ./var under the project root."""
    raw = os.environ.get("GOVSHARE_HOME")
    root = Path(raw).expanduser() if raw else PROJECT_ROOT / "var"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"GOVSHARE_HOME {root} is not a folder: point GOVSHARE_HOME at a folder (it is created if missing)")
    return Home(root.resolve())
