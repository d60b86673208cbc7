"""Files with personal data that govshare writes are 0600 in folders 0700, whatever the umask.

One row per file: where it is (relative to the run's folders), the mode it must have. The
commands run as a subprocess with umask 000.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# (glob under tmp_path, mode): folders govshare made for the output, and the files themselves
EXPECTED = [
    ("out/new/p.parquet", 0o600),
    ("out/new", 0o700),
    ("out", 0o700),
    ("db/subscriber.db", 0o600),
    ("reports/r.json", 0o600),
    ("reports", 0o700),
    ("home", 0o700),
    ("home/audit", 0o700),
    ("home/audit/access-log.jsonl", 0o600),
    ("home/state/access-log-head.json", 0o600),
    ("home/reports/quality/population/*.csv", 0o600),
    ("home/reports/quality/population/*.json", 0o600),
    ("home/reports/quality/population/*.html", 0o600),
    ("home/reports/quality/population", 0o700),
    ("home/quarantine", 0o700),
    ("home/quarantine/population", 0o700),
    ("home/quarantine/population/*.parquet", 0o600),  # rejected rows and the cases
    ("home/quarantine/population/*.json", 0o600),
    ("home/store/population/versions/00000001", 0o700),
    ("home/store/population/versions/00000001/*", 0o600),  # the published set: names in the clear
    ("home/state/population.json", 0o600),
    ("home/lineage/runs/population/*.json", 0o600),
    ("home/keystore", 0o700),
]


def run(tmp_path: Path, *args: str) -> None:
    env = {**os.environ, "GOVSHARE_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "govshare.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: os.umask(0))
    assert done.returncode == 0, done.stderr


def test_personal_data_files_are_private_under_umask_000(sources, tmp_path: Path) -> None:
    (tmp_path / "db").mkdir(mode=0o755)
    os.chmod(tmp_path / "db", 0o755)  # whatever umask this test process has
    run(tmp_path, "init")
    run(tmp_path, "sync", "population")
    run(tmp_path, "pull", "population", "--subscriber", "approval-household", "--purpose", "核验",
        "--out", str(tmp_path / "out" / "new" / "p.parquet"))
    run(tmp_path, "pull", "population", "--subscriber", "approval-household", "--purpose", "核验",
        "--out", f"sqlite:///{tmp_path / 'db' / 'subscriber.db'}")
    run(tmp_path, "lineage", "population", "--format", "json", "--out", str(tmp_path / "reports" / "r.json"))
    for pattern, mode in EXPECTED:
        found = list(tmp_path.glob(pattern))
        assert found, pattern
        for path in found:
            assert stat.S_IMODE(path.stat().st_mode) == mode, (pattern, oct(path.stat().st_mode))
    assert stat.S_IMODE((tmp_path / "db").stat().st_mode) != 0o700  # a folder that existed is left as it was
