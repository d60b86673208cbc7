"""Where Great Expectations runs while a part is ingested: GOVSHARE_GX, checked at start.

Light on purpose: every Airflow task checks the setting before it plans, without importing the
GX worker (or GX).
"""

from __future__ import annotations

import os
from typing import Literal

from common.errors import ConfigError

GX_ENV = "GOVSHARE_GX"
GX_WORKER_ROWS = 200_000  # parts from this size on run GX in a worker process (GOVSHARE_GX=auto)
GxSetting = Literal["auto", "worker", "inline"]


def gx_setting() -> GxSetting:
    """GOVSHARE_GX as set ('auto' when unset), checked: a ConfigError names a wrong value."""
    mode = os.environ.get(GX_ENV, "auto")
    if mode not in ("auto", "worker", "inline"):
        raise ConfigError(f"{GX_ENV}={mode!r} is not a way to run Great Expectations",
                          problems=["use 'auto' (the default), 'worker' (a child process) or 'inline'"])
    return mode  # type: ignore[return-value]


def gx_mode(rows: int) -> Literal["worker", "inline"]:
    """Where Great Expectations runs while a part of about ``rows`` rows is ingested (GOVSHARE_GX):

    - ``worker``: a child process on another core. It imports GX (~3 s) and runs the suite while
      this process reads, judges and writes: worth it when the part is large;
    - ``inline``: in this process. Cheaper for a small part (no second GX import, no copy of the
      rows to a child; a process that already imported GX pays nothing more), and the choice for
      one-core machines and the tests;
    - ``auto`` (the default): ``worker`` from GX_WORKER_ROWS rows on, or when this process holds a
      warm worker (one that served an earlier part, or was prestarted: ``warm_up``), else ``inline``.
    """
    mode = gx_setting()
    if mode == "auto":
        # deferred: the worker module imports pyarrow, and only a part's ingest needs it
        from validation.gx_worker import warm_worker_available

        large = rows >= GX_WORKER_ROWS and (os.cpu_count() or 1) > 1
        return "worker" if large or warm_worker_available() else "inline"
    return mode


def warm_up() -> None:
    """Before plan, in a process that will also ingest (``sync``): start a GX worker now, so that
    GX's import (~3 s) runs on the other core while plan and the source's first batches run here.
    The ingest of the first part takes it (GOVSHARE_GX auto or worker); unused, it is stopped when
    the process exits. Airflow's tasks are separate processes: there ingest starts its own."""
    if gx_setting() in ("auto", "worker"):
        from validation.gx_worker import prestart

        prestart()
