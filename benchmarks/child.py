"""Helpers for the benchmark's child processes: environment, and reading their one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class BenchmarkError(RuntimeError):
    """A step of the benchmark failed (a crash, not a slow figure)."""


def environment(home: Path, source_url: str) -> dict[str, str]:
    """The environment a sync needs: its GOVSHARE_HOME and the population connection."""
    env = dict(os.environ)
    env.update({"GOVSHARE_HOME": str(home), "AIRFLOW_CONN_POPULATION_DB": source_url,
                "TQDM_DISABLE": "1", "GX_ANALYTICS_ENABLED": "false"})
    env.setdefault("GOVSHARE_ROOT_KEY", f"file:{home.resolve().parent / 'root.key'}")  # outside the home
    return env


def last_json_line(proc: subprocess.CompletedProcess, doing: str) -> dict:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchmarkError(f"{doing} failed in a child process (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])
