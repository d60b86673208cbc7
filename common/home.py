"""GOVSHARE_HOME: everything govshare writes (sharing store, keystore, quarantine, lineage, access log).

Deleting it and running again starts from scratch. Nothing in it is committed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.catalog import PROJECT_ROOT
from common.errors import ConfigError


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
        return attach(self.root / "store-cache" / where.bucket / (where.prefix or "_"), where)

    @property
    def state(self) -> Path:
        """Per-dataset sync state (the watermark), advanced only after a publish."""
        return self.root / "state"

    @property
    def work(self) -> Path:
        """Staging of runs in progress (encrypted at rest), removed after publish."""
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
