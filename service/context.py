"""What every request handler of the sharing service works with: the catalog, the publisher's
home and keystore, and the access log, opened once when the service starts.

Handlers reach it through ``context(request)``; nothing in service/ reads the environment per
request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from starlette.requests import Request

from common.catalog import Catalog
from common.errors import ConfigError
from common.home import Home
from keys.keystore import Keystore
from lineage.audit import AccessLog
from sharing.revocations import effective_catalog

PRESIGN_ENV = "GOVSHARE_PRESIGN_SECONDS"
MAX_PRESIGN_SECONDS = 900


def presign_seconds() -> int:
    """GOVSHARE_PRESIGN_SECONDS: unset or 0, the service streams every file itself; 1..900, an
    agent's file request on an object store is answered with a redirect to a pre-signed URL
    valid that long. Anything else is refused at start (exit 2)."""
    raw = os.environ.get(PRESIGN_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_PRESIGN_SECONDS:
        raise ConfigError(f"{PRESIGN_ENV}={raw!r}: give 0 (the service sends the files) or a number of seconds "
                          f"from 1 to {MAX_PRESIGN_SECONDS} (pre-signed object-store URLs)")
    return int(raw)


@dataclass(frozen=True)
class ServiceContext:
    declared: Catalog  # the catalog as loaded at start
    home: Home
    keystore: Keystore
    access_log: AccessLog
    presign_seconds: int = 0  # agents' version files as pre-signed object-store URLs (0: streamed)

    @property
    def catalog(self) -> Catalog:
        """The catalog with the bureau's revocations applied, read afresh for every request, so a
        revocation takes effect from the next request on."""
        return effective_catalog(self.declared, self.home)

    @classmethod
    def open(cls, catalog: Catalog, home: Home) -> ServiceContext:
        home.require_initialised()
        keystore = Keystore(home.keystore)
        return cls(catalog, home, keystore, AccessLog.of(home, keystore), presign_seconds())


def context(request: Request) -> ServiceContext:
    return request.app.state.ctx
