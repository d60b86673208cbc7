"""Hostile disks, one row per case: a full disk (a small tmpfs, filled so that the command runs out
of space part-way) or a read-only one (a tmpfs remounted read-only) under GOVSHARE_HOME or under a
pull's --out.

Each failing command runs as a person runs it (a subprocess): exit 75 (full: free space and run
again) or 2 (read-only: make it writable), a message naming the path, no traceback. It leaves no
temporary file, no half-staged version and no work folder; once the disk is freed (the filler
deleted, or remounted read-write) the same command succeeds, and the sharing set verifies with
versions 1..N and every row.

Mounting needs root (CI runs as root); elsewhere these cases are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import ROOT

Disk = Literal["full", "read-only"]
Where = Literal["home", "out"]


@dataclass(frozen=True)
class DiskCase:
    id: str
    command: tuple[str, ...]  # "{out}" is the pull's output file on the hostile disk
    disk: Disk
    where: Where  # what lives on the hostile disk: GOVSHARE_HOME, or only the pull's --out
    free_kib: int = 0  # full disk: what is left free before the command runs
    synced_before: int = 0  # versions published before the disk turns hostile
    exit_code: int = 75
    says: str = "no space left on the device holding"
    versions_after: int = 1  # published versions once the retry has run
    keeps_run: bool = False  # the version became visible: the run's work folder stays for the retry to finish it


CASES = [
    # free_kib places the full disk in a stage: ingest also writes the run's data keys (a 4 KiB block
    # each on tmpfs: footer + 4 有条件共享 fields + 2 masked ones, and the run's list of them), so later stages need 32 KiB more
    DiskCase("sync-full-at-plan", ("sync", "population"), "full", "home", free_kib=0),
    DiskCase("sync-full-in-ingest-staging", ("sync", "population"), "full", "home", free_kib=40),
    DiskCase("sync-full-in-protect-deciding-changes", ("sync", "population"), "full", "home", free_kib=124),
    DiskCase("sync-full-in-protect-with-the-version-staged", ("sync", "population"), "full", "home", free_kib=144),
    DiskCase("sync-full-in-publish-after-the-version-is-visible", ("sync", "population"), "full", "home",
             free_kib=184, keeps_run=True),
    DiskCase("sync-full-in-publish-run-record", ("sync", "population"), "full", "home", free_kib=256),
    DiskCase("second-version-full-in-protect", ("sync", "population", "--full"), "full", "home", free_kib=144,
             synced_before=1, versions_after=2),
    DiskCase("init-full", ("init",), "full", "home", free_kib=8, versions_after=0),
    DiskCase("sync-read-only-home", ("sync", "population"), "read-only", "home", exit_code=2,
             says="the file system is read-only; GOVSHARE_HOME"),
    DiskCase("pull-out-full", ("pull", "population", "--subscriber", "approval-general", "--purpose", "行政审批核验",
                               "--out", "{out}"), "full", "out", synced_before=1),
    DiskCase("pull-out-read-only", ("pull", "population", "--subscriber", "approval-general", "--purpose",
                                    "行政审批核验", "--out", "{out}"), "read-only", "out", synced_before=1,
             exit_code=2, says="the file system is read-only; the folder"),
]


class Tmpfs:
    """A small tmpfs mounted for one test (unmounted after it, lazily if something holds it)."""

    def __init__(self, where: Path) -> None:
        self.path = where
        self.path.mkdir(parents=True)
        _mount("-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(self.path))
        self.filler = self.path / "filler"

    def fill(self, leave_kib: int) -> None:
        """Write a filler file so that only ``leave_kib`` KiB stay free."""
        stat = os.statvfs(self.path)
        fill = stat.f_bavail * stat.f_frsize - leave_kib * 1024
        with open(self.filler, "wb") as fh:
            while fill > 0:
                fill -= fh.write(b"\0" * min(fill, 1 << 20))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, yes: bool) -> None:
        _mount("-o", "remount," + ("ro" if yes else "rw"), str(self.path))

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise PermissionError(done.stderr.strip() or f"mount exited {done.returncode}")


@pytest.fixture(scope="module")
def mounting_allowed(tmp_path_factory: pytest.TempPathFactory) -> None:
    if shutil.which("mount") is None:
        pytest.skip("hostile-disk cases need the mount command (util-linux)")
    try:
        Tmpfs(tmp_path_factory.mktemp("probe") / "m").unmount()
    except PermissionError as exc:
        pytest.skip(f"hostile-disk cases mount a small tmpfs, which needs root (CI runs as root): {exc}")


@pytest.fixture
def tmpfs(mounting_allowed: None, tmp_path: Path) -> Iterator[Tmpfs]:
    disk = Tmpfs(tmp_path / f"disk-{uuid.uuid4().hex[:6]}")
    yield disk
    disk.unmount()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_disk_fails_cleanly_and_the_retry_publishes(case: DiskCase, tmpfs: Tmpfs, sources, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from govshare.cli import main

    home = (tmpfs.path if case.where == "home" else tmp_path) / "home"
    monkeypatch.setenv("GOVSHARE_HOME", str(home))
    out = tmpfs.path / "pulls" / "population.parquet"
    if case.command[0] != "init":
        assert main(["init"]) == 0
    for _ in range(case.synced_before):
        assert main(["sync", "population", "--full"]) == 0
    if case.where == "out":
        out.parent.mkdir()
    _make_hostile(tmpfs, case)
    capsys.readouterr()

    failed = _govshare([arg.format(out=out) for arg in case.command])
    assert "Traceback" not in failed.stderr and "Exception ignored" not in failed.stderr, failed.stderr
    assert failed.returncode == case.exit_code, failed.stderr
    assert case.says in failed.stderr, failed.stderr
    assert str(home if case.where == "home" else out.parent) in failed.stderr, failed.stderr
    left = _leftovers(home, out.parent)
    if case.keeps_run and left:  # only the run whose version is visible, which the retry finishes, never republishes
        assert [Path(p).parent for p in left] == [home / "work" / "population"], left
    else:
        assert left == [], "a failed command must leave nothing that trips its retry"

    _make_hostile(tmpfs, case, undo=True)
    assert main([arg.format(out=out) for arg in case.command]) == 0, capsys.readouterr().err
    assert _leftovers(home, out.parent) == []
    if case.versions_after == 0:
        assert main(["sync", "population"]) == 0  # the keys that init made after the retry are whole
        return
    _assert_published(case.versions_after, out if case.where == "out" else tmp_path / "check.parquet", capsys)


def _make_hostile(tmpfs: Tmpfs, case: DiskCase, undo: bool = False) -> None:
    if case.disk == "read-only":
        tmpfs.read_only(not undo)
    elif undo:
        tmpfs.free()
    else:
        tmpfs.fill(case.free_kib)


def _govshare(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GOVSHARE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "govshare.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _leftovers(home: Path, out_folder: Path) -> list[str]:
    """Temporary files, half-staged versions and work folders of runs."""
    found = [*home.rglob("*.tmp"), *home.glob("keystore/.tmp-*"), *home.glob("store/*/.staging/*"),
             *home.glob("work/*/*"), *(out_folder.glob(".*.tmp") if out_folder.is_dir() else [])]
    return sorted(str(p) for p in found)


def _assert_published(versions: int, pulled: Path, capsys) -> None:
    import pyarrow.parquet as pq

    from govshare.cli import main

    capsys.readouterr()
    assert main(["verify", "population"]) == 0
    assert f"versions 1..{versions} verified" in capsys.readouterr().out
    assert main(["versions", "population", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in listed] == list(range(1, versions + 1))
    if not pulled.is_file():
        assert main(["pull", "population", "--subscriber", "approval-general", "--purpose", "核验",
                     "--out", str(pulled)]) == 0
    assert pq.read_metadata(pulled).num_rows == listed[-1]["upserts"] > 0  # the last version is a full snapshot
