"""Named crash points for fault-injection tests: ``checkpoint(name)`` kills this process with
SIGKILL when ``GOVSHARE_FAULT`` names that point, and does nothing otherwise (one environment
lookup). SIGKILL, not an exception: no ``finally``, no ``atexit``, no flush, as a power cut or
the OOM killer would leave the home.

The points of a sync, in order, are POINTS (where each lies: POINT_WHERE);
tests/integration/test_kills.py kills a sync at each in turn.
"""

from __future__ import annotations

import os
import signal
from typing import Literal

FAULT_ENV = "GOVSHARE_FAULT"
Point = Literal["extract", "staged", "protect", "files", "manifest", "visible"]
POINTS: tuple[Point, ...] = ("extract", "staged", "protect", "files", "manifest", "visible")
POINT_WHERE: dict[Point, str] = {
    "extract": "ingest, after the first batch is staged",
    "staged": "every part ingested and staged, before protect",
    "protect": "the version's files written to the store's .staging, before the gate and the Protected result",
    "files": "publish: the version's files complete, before its manifest is written",
    "manifest": "publish: manifest and signature written, before the rename that makes the version visible",
    "visible": "publish: the version is visible, before the state index and the watermark move",
}


def checkpoint(name: Point) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
