"""What every request handler of the sharing service works with: the catalog, the publisher's
home and keystore, and the access log, opened once when the service starts.

Handlers reach it through ``context(request)``; nothing in service/ reads the environment per
request.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from common.catalog import Catalog
from common.home import Home
from keys.keystore import Keystore
from lineage.audit import AccessLog
from sharing.revocations import effective_catalog


@dataclass(frozen=True)
class ServiceContext:
    declared: Catalog  # the catalog as loaded at start
    home: Home
    keystore: Keystore
    access_log: AccessLog

    @property
    def catalog(self) -> Catalog:
        """The catalog with the bureau's revocations applied, read afresh for every request, so a
        revocation takes effect from the next request on."""
        return effective_catalog(self.declared, self.home)

    @classmethod
    def open(cls, catalog: Catalog, home: Home) -> ServiceContext:
        home.require_initialised()
        keystore = Keystore(home.keystore)
        return cls(catalog, home, keystore, AccessLog.of(home, keystore))


def context(request: Request) -> ServiceContext:
    return request.app.state.ctx
