"""Progress of long work on a terminal: stage, rows, rate, one line rewritten in place on stderr.

Quiet when stderr is not a TTY, inside an Airflow task (AIRFLOW_CTX_DAG_ID is set there) or with
GOVSHARE_PROGRESS=0, so logs and scripts see nothing of it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def wanted(stream: TextIO | None = None) -> bool:
    out = stream or sys.stderr
    if os.environ.get("GOVSHARE_PROGRESS") == "0" or os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self.out = stream or sys.stderr
        self.on = wanted(self.out)
        self.started = time.monotonic()
        self._shown = False

    def stage(self, stage: str, rows: int | None = None, nbytes: int | None = None) -> None:
        if not self.on:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        parts = [f"{self.what}: {stage}"]
        if rows is not None:
            parts.append(f"{rows:,} rows ({rows / elapsed:,.0f}/s)")
        if nbytes is not None:
            parts.append(f"{nbytes / 1048576:,.1f} MiB ({nbytes / 1048576 / elapsed:,.1f} MiB/s)")
        self.out.write("\r\x1b[2K" + ", ".join(parts))
        self.out.flush()
        self._shown = True

    def done(self) -> None:
        if self.on and self._shown:
            self.out.write("\r\x1b[2K")
            self.out.flush()
