"""Helpers for the tests that run `govshare` as a process over a real home: damaged stores,
concurrent syncs, killed syncs. A source is a private copy of the demo population database."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
GOVSHARE = ROOT / ".venv" / "bin" / "govshare"
DATASET = "population"
PURPOSE = "户籍迁移审批 核验申请人身份"


@dataclass(frozen=True)
class Place:
    """A home and the population source it syncs from."""

    home: Path
    source: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOVSHARE_", "AIRFLOW_CONN_")) or k == "GOVSHARE_ROOT_KEY"}
        return {**env, "GOVSHARE_HOME": str(self.home), "GOVSHARE_GX": "inline",
                "AIRFLOW_CONN_POPULATION_DB": f"sqlite:///{self.source}", **extra}

    def run(self, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(GOVSHARE), *args], env=self.env(**extra), capture_output=True, text=True, timeout=timeout)

    def start(self, *args: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(GOVSHARE), *args], env=self.env(**extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def ok(self, *args: str, **extra: str) -> str:
        done = self.run(*args, **extra)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    @property
    def store(self) -> Path:
        return self.home / "store" / DATASET

    @property
    def state_file(self) -> Path:
        return self.home / "state" / f"{DATASET}.json"

    @property
    def index(self) -> Path:
        return self.home / "state" / DATASET

    def version_dir(self, version: int) -> Path:
        return self.store / "versions" / f"{version:08d}"

    def versions(self) -> list[dict]:
        return json.loads(self.ok("versions", DATASET, "--json"))

    def state(self) -> dict:
        return json.loads(self.state_file.read_text(encoding="utf-8"))

    def pulled_keys(self, out: Path) -> list[str]:
        self.ok("pull", DATASET, "--subscriber", "approval-household", "--purpose", PURPOSE, "--out", str(out))
        return sorted(pq.read_table(out, columns=["id_number"]).column(0).to_pylist())

    def stray_files(self) -> list[str]:
        """What a finished sync must not leave: staging folders, run work folders, temporary files."""
        stray = [p for p in (self.store / ".staging").glob("*")]
        stray += [p for p in (self.home / "work" / DATASET).glob("*")]
        stray += [p for p in self.home.rglob("*.tmp")]
        return sorted(str(p.relative_to(self.home)) for p in stray)


def new_place(root: Path, demo_sources) -> Place:  # noqa: ANN001 - the session's DemoSources
    """An initialised home in root and a private copy of the demo population source."""
    original = Path(demo_sources.connection_uris()["population_db"].removeprefix("sqlite:///"))
    root.mkdir(parents=True, exist_ok=True)
    source = root / "population.db"
    shutil.copy(original, source)
    place = Place(root / "home", source)
    place.ok("init")
    return place


def copy_place(place: Place, root: Path) -> Place:
    shutil.copytree(place.home, root / "home")
    shutil.copy(place.source, root / "population.db")
    return Place(root / "home", root / "population.db")


def change_source(source: Path) -> None:
    """Changes for a second version: some addresses changed, some people withdrawn, both at the
    second after the source's newest updated_at."""
    with sqlite3.connect(source) as db:
        newest = db.execute("SELECT strftime('%Y-%m-%d %H:%M:%S', max(updated_at), '+1 second') "
                            "FROM population_person").fetchone()[0]
        db.execute("UPDATE population_person SET household_address = household_address || '甲', updated_at = ? "
                   "WHERE rowid % 40 = 0 AND is_deleted = 0", (newest,))
        db.execute("UPDATE population_person SET is_deleted = 1, updated_at = ? WHERE rowid % 50 = 7 AND is_deleted = 0",
                   (newest,))
