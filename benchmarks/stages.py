"""A full sync called stage by stage, in the order pipeline.sync() calls the stage functions,
with the time and the peak memory (VmHWM, reset before each stage) of every stage.

Ingest runs per part (pipeline.plan decides the key-range parts), as sync() does, and its
figures add up (time) or take the maximum (memory) over the parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class StageFigures:
    seconds: float = 0.0
    peak_kib: int | None = None  # VmHWM during the stage; None where /proc cannot tell
    results: list[Any] = field(default_factory=list)


def vm_kib(name: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def run_stages(dataset_id: str, catalog: Any, home: Any,
               wrap: Callable[[str, Callable[[], Any]], Any] | None = None) -> dict[str, StageFigures]:
    """The whole sync of dataset_id; wrap(stage, fn) may surround each call (a profiler)."""
    from govshare import pipeline

    figures: dict[str, StageFigures] = {}

    def stage(name: str, fn: Callable[[], T]) -> T:
        fig = figures.setdefault(name, StageFigures())
        can_reset = reset_peak()
        start = time.perf_counter()
        result = wrap(name, fn) if wrap else fn()
        fig.seconds += time.perf_counter() - start
        peak = vm_kib("VmHWM") if can_reset else None
        if peak is not None:
            fig.peak_kib = max(fig.peak_kib or 0, peak)
        fig.results.append(result)
        return result

    run = stage("start", lambda: pipeline.start(dataset_id, catalog=catalog, home=home))
    stage("start", pipeline.warm_up)
    for part in stage("plan", lambda: pipeline.plan(run)):
        stage("ingest", lambda part=part: pipeline.ingest(run, part))
    stage("protect", lambda: pipeline.protect(run))
    stage("publish", lambda: pipeline.publish(run))
    return figures
