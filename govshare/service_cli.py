"""``govshare serve``: the sharing service over the publisher's GOVSHARE_HOME."""

from __future__ import annotations

import argparse

from common.catalog import load_catalog
from common.home import home


def serve(args: argparse.Namespace) -> int:
    from service.app import create_app
    from service.context import ServiceContext
    from service.server import run
    from service.tls import tls_material

    h = home().require_initialised()
    tls = None if args.insecure_http else tls_material(h)
    ctx = ServiceContext.open(load_catalog(), h)
    run(create_app(ctx), args.host, args.port, tls)
    return 0
