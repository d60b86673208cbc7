"""The real ``govshare serve`` as a subprocess: started on a free port, read from its
``serving https://HOST:PORT`` line, stopped with SIGTERM."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    ca: Path  # the CA certificate the service's certificate verifies against
    lines: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then the exit status (the service must stop by itself within the timeout)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_service(env: dict[str, str], *args: str, ca: Path | None = None, timeout: float = 60) -> Served:
    """``govshare serve --port 0 ARGS`` in env; returns once it prints its URL. AssertionError with
    its stderr when it exits or stays silent."""
    process = subprocess.Popen([sys.executable, "-m", "govshare.cli", "serve", "--port", "0", *args], cwd=PROJECT,
                               env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("serving "):
                selector.close()
                home = Path(env["GOVSHARE_HOME"])
                return Served(process, line.split()[1], ca or home / "service" / "tls" / "ca.pem", seen)
        elif process.poll() is not None:
            break
    selector.close()
    process.kill()
    _, err = process.communicate(timeout=10)
    raise AssertionError(f"govshare serve did not start (exit {process.returncode}): {''.join(seen)}{err}")


def running(env: dict[str, str], *args: str) -> Iterator[Served]:
    served = start_service(env, *args)
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.stop()
