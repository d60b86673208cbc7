"""`make bench` keeps running as the code under it moves: a tiny run end to end (figures are not
judged here; speed targets live in the benchmark itself)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_to_its_result_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--rows", "3000", "--rss-rows", "0", "--repeat", "1",
                           "--keep", str(tmp_path / "bench")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a target missed, which a tiny run may
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert re.search(r"^RESULT rows=3000 full_vs_raw=\S+ incr1pct_vs_full=\S+ pull_vs_plain=\S+", done.stdout, re.M), \
        done.stdout[-2000:]


def test_the_gm_benchmark_reports_its_ratio_to_the_standard_profile(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--rows", "3000", "--rss-rows", "0", "--repeat", "1",
                           "--profile-crypto", "gm", "--keep", str(tmp_path / "bench")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert re.search(r"^RESULT rows=3000 .*gm_full_vs_standard=\d+\.\d+ crypto=gm$", done.stdout, re.M), done.stdout[-2000:]
