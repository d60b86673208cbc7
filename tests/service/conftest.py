"""Service fixtures: a published world served by the sharing service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import CliWorld, build_cli_world


@dataclass(frozen=True)
class ServiceWorld:
    world: CliWorld
    root_dir: Path
    url: str  # the service's base URL, https://127.0.0.1:PORT
    ca: Path | None  # the CA certificate clients trust (None: plain HTTP on loopback)

    def __getattr__(self, name: str):  # noqa: ANN204 - the CLI world's attributes and methods
        return getattr(self.world, name)


@pytest.fixture(scope="module")
def service_world(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> Iterator[ServiceWorld]:  # noqa: ANN001
    import uvicorn

    from common.catalog import load_catalog
    from common.home import Home
    from service.app import create_app
    from service.context import ServiceContext

    root = tmp_path_factory.mktemp("delta-world")
    world = build_cli_world(root, demo_sources)
    app = create_app(ServiceContext.open(load_catalog(world.catalog), Home(world.home)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield ServiceWorld(world, root, f"http://127.0.0.1:{port}", None)
    server.should_exit = True
    thread.join(timeout=10)
