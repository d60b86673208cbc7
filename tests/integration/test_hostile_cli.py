"""Hostile CLI paths: --out where nothing may be written, and an access log that cannot be written.

One row per case: a setup that makes the place (returns the --out argument), the CLI arguments,
the exit code, a fragment of the message; and what must stay intact: nothing written at the
path or inside GOVSHARE_HOME's outputs, no rows applied, the access log unchanged (or only a
denial added), no traceback, no plaintext ID number.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
PURPOSE = "一网通办 办件核验"

Setup = Callable[["object", Path], str]  # (cli_world, tmp folder) -> the --out argument


def in_home(w, tmp: Path) -> str:
    return str(w.home / "pulls" / "x.parquet")


def in_catalog(w, tmp: Path) -> str:
    return str(w.catalog / "x.parquet")


def in_source_tree(w, tmp: Path) -> str:
    return str(w.root / "sharing" / "x.parquet")


def symlink_to_home(w, tmp: Path) -> str:
    link = tmp / "innocent"
    link.symlink_to(w.home / "audit", target_is_directory=True)
    return str(link / "x.parquet")


def symlinked_file_into_catalog(w, tmp: Path) -> str:
    link = tmp / "x.parquet"
    link.symlink_to(w.catalog / "subscribers.yaml")
    return str(link)


def dotdot_into_home(w, tmp: Path) -> str:
    return str(tmp / ".." / os.path.relpath(w.home, tmp.parent) / "x.parquet")


def under_a_file(w, tmp: Path) -> str:
    (tmp / "plain.txt").write_text("x", encoding="utf-8")
    return str(tmp / "plain.txt" / "x.parquet")


def a_directory(w, tmp: Path) -> str:
    (tmp / "folder").mkdir()
    return str(tmp / "folder")


def empty(w, tmp: Path) -> str:
    return ""


def sqlite_in_home(w, tmp: Path) -> str:
    return f"sqlite:///{w.home}/target.db"


def sqlite_in_catalog(w, tmp: Path) -> str:
    return f"sqlite:///{w.catalog}/target.db"


def sqlite_in_source_tree(w, tmp: Path) -> str:
    return f"sqlite:///{w.root}/target.db"


@dataclass(frozen=True)
class OutCase:
    name: str
    command: str  # pull | lineage
    setup: Setup
    exit_code: int
    message: str


OUT_CASES = [
    OutCase("pull into GOVSHARE_HOME", "pull", in_home, 2, "inside GOVSHARE_HOME"),
    OutCase("pull into the catalog folder", "pull", in_catalog, 2, "inside the catalog folder"),
    OutCase("pull into the source tree", "pull", in_source_tree, 2, "inside the project's source tree"),
    OutCase("pull through a symlinked folder into the home", "pull", symlink_to_home, 2, "inside GOVSHARE_HOME"),
    OutCase("pull onto a symlink to a catalog file", "pull", symlinked_file_into_catalog, 2, "inside the catalog folder"),
    OutCase("pull via .. into the home", "pull", dotdot_into_home, 2, "inside GOVSHARE_HOME"),
    OutCase("pull under a file", "pull", under_a_file, 2, "is a file"),
    OutCase("pull onto a folder", "pull", a_directory, 2, "is a folder"),
    OutCase("pull to an empty path", "pull", empty, 2, "is empty"),
    OutCase("pull into a SQLite file in the home", "pull", sqlite_in_home, 2, "inside GOVSHARE_HOME"),
    OutCase("pull into a SQLite file in the catalog", "pull", sqlite_in_catalog, 2, "inside the catalog folder"),
    OutCase("pull into a SQLite file in the source tree", "pull", sqlite_in_source_tree, 2, "inside the project's source tree"),
    OutCase("lineage into GOVSHARE_HOME", "lineage", in_home, 2, "inside GOVSHARE_HOME"),
    OutCase("lineage into the source tree", "lineage", in_source_tree, 2, "inside the project's source tree"),
    OutCase("lineage through a symlink into the home", "lineage", symlink_to_home, 2, "inside GOVSHARE_HOME"),
    OutCase("lineage under a file", "lineage", under_a_file, 2, "is a file"),
    OutCase("lineage onto a folder", "lineage", a_directory, 2, "is a folder"),
    OutCase("lineage to an empty path", "lineage", empty, 2, "is empty"),
]


def command(name: str, out: str) -> list[str]:
    if name == "pull":
        return ["pull", "legal_entity", "--subscriber", "approval-general", "--purpose", PURPOSE, "--out", out]
    return ["lineage", "legal_entity", "--format", "json", "--out", out]


def home_files(w) -> set[Path]:  # noqa: ANN001
    return {p for p in w.home.rglob("*") if "airflow" not in p.parts}


@pytest.mark.parametrize("case", OUT_CASES, ids=[c.name for c in OUT_CASES])
def test_bad_out_is_exit_2_and_writes_nothing(cli_world, tmp_path: Path, case: OutCase) -> None:
    out = case.setup(cli_world, tmp_path)
    before_log, before_home = cli_world.access_log(), home_files(cli_world)
    before_tmp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    source_tree = {p.name for p in cli_world.root.iterdir()}
    result = cli_world.run(*command(case.command, out))
    assert result.returncode == case.exit_code, result.stderr
    assert case.message in result.stderr
    assert out.removeprefix("sqlite:///") in result.stderr or out == ""  # the path as given is named
    cli_world.assert_clean(result)
    assert cli_world.access_log() == before_log
    assert home_files(cli_world) == before_home
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before_tmp
    assert {p.name for p in cli_world.root.iterdir()} == source_tree
    assert not (cli_world.catalog / "x.parquet").exists() and not (cli_world.catalog / "target.db").exists()


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only(tmp_path: Path):
    """A read-only tmpfs folder (as root, chmod alone does not stop writes)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if not _mount("-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("command_name", ["pull", "lineage"])
def test_out_on_a_read_only_place_is_exit_2_naming_the_path(cli_world, read_only: Path, command_name: str) -> None:
    out = str(read_only / "x.parquet")
    before_log = cli_world.access_log()
    result = cli_world.run(*command(command_name, out))
    assert result.returncode == 2, result.stderr
    assert out in result.stderr and "not writable" in result.stderr
    cli_world.assert_clean(result)
    assert cli_world.access_log() == before_log


# -- an access log that cannot be written: nothing is delivered -----------------------------


@dataclass(frozen=True)
class LogCase:
    name: str
    breaks: str  # directory | read-only
    target: str  # file | sqlite
    subscriber: str
    exit_code: int
    message: str


LOG_CASES = [
    LogCase("log file replaced by a folder, file target", "directory", "file", "approval-general", 2, "nothing was delivered"),
    LogCase("log file replaced by a folder, database target", "directory", "sqlite", "approval-general", 2, "nothing was delivered"),
    LogCase("log folder read-only, file target", "read-only", "file", "approval-general", 2, "nothing was delivered"),
    LogCase("log folder read-only, database target", "read-only", "sqlite", "approval-general", 2, "nothing was delivered"),
    LogCase("log folder read-only, denied pull still exit 4", "read-only", "file", "sub-revoked", 4, "could not be recorded"),
]


@pytest.mark.parametrize("case", LOG_CASES, ids=[c.name for c in LOG_CASES])
def test_no_delivery_without_its_record(cli_world, tmp_path: Path, case: LogCase) -> None:
    audit = cli_world.home / "audit"
    log = audit / "access-log.jsonl"
    saved = tmp_path / "saved-log.jsonl"
    saved.write_bytes(log.read_bytes())
    out = tmp_path / "out.parquet"
    db = tmp_path / "subscriber.db"
    target = str(out) if case.target == "file" else f"sqlite:///{db}"
    try:
        if case.breaks == "directory":
            log.unlink()
            log.mkdir()
        elif not (_mount("--bind", str(audit), str(audit)) and _mount("-o", "remount,ro,bind", str(audit))):
            subprocess.run(["umount", str(audit)], capture_output=True)
            pytest.skip("cannot bind-mount the audit folder read-only here (needs root)")
        result = cli_world.run("pull", "legal_entity", "--subscriber", case.subscriber, "--purpose", PURPOSE, "--out", target)
    finally:
        if case.breaks == "directory":
            log.rmdir()
            log.write_bytes(saved.read_bytes())
        else:
            subprocess.run(["umount", str(audit)], capture_output=True)
    assert result.returncode == case.exit_code, result.stderr
    assert case.message in result.stderr and str(log) in result.stderr
    cli_world.assert_clean(result)
    assert not out.exists() and not list(tmp_path.glob(".out.parquet.*"))
    if db.exists():  # the empty file made 0600 before connecting may exist; no table, no rows
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'legal_entity'").fetchone() == (0,)
    assert log.read_bytes() == saved.read_bytes()
    assert cli_world.run("audit", "verify").returncode == 0
