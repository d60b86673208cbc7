"""One full sync of population in a process of its own, reporting its peak memory.

    GOVSHARE_HOME=... AIRFLOW_CONN_POPULATION_DB=sqlite:////abs/population.db \
        python -m benchmarks.rss_child

Initialises the (empty) GOVSHARE_HOME, runs the sync's stage functions in sync()'s order
(benchmarks.stages) and prints one JSON line: seconds, ru_maxrss (resource.getrusage(RUSAGE_SELF),
KiB on Linux), VmHWM from /proc/self/status, and each stage's own peak (VmHWM reset before it).
Linux carries the parent's high-water mark across fork+exec into ru_maxrss, so ru_maxrss is only
a clean figure when the parent is small (run.py starts these children before it grows); VmHWM
of the last stage and the per-stage peaks belong to this process alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time


def main() -> int:
    from common.catalog import load_catalog
    from govshare.cli import main as cli
    from common.home import home

    from benchmarks.stages import run_stages, vm_kib

    with contextlib.redirect_stdout(io.StringIO()):
        if cli(["init"]) != 0:
            raise SystemExit("govshare init failed")
    baseline = vm_kib("VmRSS")
    start = time.perf_counter()
    figures = run_stages("population", load_catalog(), home())
    seconds = time.perf_counter() - start
    published = figures["publish"].results[-1]
    print(json.dumps({
        "seconds": seconds,
        "version": published.version,
        "upserts": published.upserts,
        "quarantined": published.quarantined,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_before_sync_kib": baseline,
        "stage_peak_kib": {name: fig.peak_kib for name, fig in figures.items()},
        # the GX worker is a process of its own (its peak so far, reported with its counts)
        "gx_worker_peak_kib": max((r.gx.worker_peak_rss_kib or 0 for r in figures["ingest"].results), default=0),
        "stage_seconds": {name: fig.seconds for name, fig in figures.items()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
