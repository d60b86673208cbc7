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


@dataclass(frozen=True)
class ServiceContext:
    catalog: Catalog
    home: Home
    keystore: Keystore
    access_log: AccessLog

    @classmethod
    def open(cls, catalog: Catalog, home: Home) -> ServiceContext:
        home.require_initialised()
        keystore = Keystore(home.keystore)
        return cls(catalog, home, keystore, AccessLog.of(home, keystore))


def context(request: Request) -> ServiceContext:
    return request.app.state.ctx
