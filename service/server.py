"""Running the service: uvicorn over HTTPS (plain HTTP only on loopback, when asked for).

``run`` binds the socket itself (so ``port=0`` picks a free port), prints ``serving
https://HOST:PORT`` (flushed) once uvicorn accepts connections, and returns when SIGTERM or
SIGINT stops it. uvicorn's own access log is off: the access log (lineage.audit) is the record.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable

import uvicorn

from common.errors import ConfigError
from service.tls import TlsMaterial

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; ConfigError naming them when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot be resolved ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {url_of('tcp', host, port).removeprefix('tcp://')}: "
                          f"{exc.strerror or exc} (is another service on that port? choose one with --port)") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, announce: Callable[[int], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            self._announce(sockets[0].getsockname()[1])


def _stopped(signum: int, frame: object) -> None:
    """A stop signal uvicorn passes on after its graceful shutdown: nothing left to do."""


def run(app: object, host: str, port: int, tls: TlsMaterial | None) -> None:
    """Serve ``app`` until SIGTERM/SIGINT. ``tls`` None is plain HTTP, allowed on loopback only."""
    if tls is None and not is_loopback(host):
        raise ConfigError(f"--insecure-http is allowed on a loopback address only, not on {host}: "
                          "serve HTTPS (the default) to reach other machines")
    sock = bind(host, port)
    options: dict[str, object] = {}
    if tls is not None:
        options = {"ssl_certfile": str(tls.cert_path), "ssl_keyfile": str(tls.key_path)}
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, date_header=True,
                            timeout_graceful_shutdown=10, h11_max_incomplete_event_size=64 * 1024, **options)
    scheme = "https" if tls is not None else "http"

    def announce(actual: int) -> None:
        print(f"serving {url_of(scheme, host, actual)}", flush=True)

    # uvicorn re-raises the signal that stopped it once it has shut down, to the handler it found;
    # a stop by SIGTERM/SIGINT is the service's normal end (exit 0), so that handler does nothing.
    calm = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)} if calm else {}
    try:
        _Server(config, announce).run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.flush()
