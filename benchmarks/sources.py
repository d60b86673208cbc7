"""The benchmark's source: a population view in SQLite, and the 1% change for the incremental sync.

Only the population table is written. ``govshare.demo.write_demo_sources`` writes all three demo
databases (2.5x the rows, and at 10M rows several GB of generator memory); the benchmark needs
one, so it calls the same generator for that table alone. Same rows, same ~5% defects per seed,
written where the catalog says the population dataset reads them (table, columns).

Run as a module it writes the file in a process of its own, so the generator's memory never
counts towards the parent's (or a later child's) peak RSS:

    python -m benchmarks.sources --rows N --seed S --out DIR
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from benchmarks.child import PROJECT_ROOT, last_json_line

DATASET = "population"
CHANGE_SUFFIX = "（变更）"  # appended to household_address of the changed rows


@dataclass(frozen=True)
class Source:
    path: Path
    table: str  # the catalog's source table of the population dataset
    rows: int
    defective: int
    deleted: int
    as_of: datetime
    seconds: float

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"


def write_population(out_dir: Path, rows: int, seed: int) -> dict:
    """Write out_dir/population.db; the counts the generator knows (no identifiers)."""
    import time

    import numpy as np

    from common.catalog import load_catalog
    from common.times import SOURCE_ZONE
    from govshare import demo

    start = time.perf_counter()
    dataset = load_catalog().dataset(DATASET)
    as_of = datetime.now(SOURCE_ZONE).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    out_dir.mkdir(parents=True, exist_ok=True)
    people = demo._population(np.random.default_rng([seed, 1]), rows, as_of)  # noqa: SLF001 - see module docstring
    path = demo.write_source(out_dir / "population.db", dataset, people.table)
    counts = people.counts()
    return {"path": str(path), "table": dataset.source_table, "rows": counts.rows, "defective": counts.defective,
            "deleted": counts.deleted, "as_of": as_of.isoformat(), "seconds": time.perf_counter() - start}


def generate(out_dir: Path, rows: int, seed: int) -> Source:
    """Write the source in a child process and describe it."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sources", "--rows", str(rows), "--seed", str(seed), "--out", str(out_dir)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
    )
    doc = last_json_line(proc, f"generating {rows} population rows")
    return Source(Path(doc["path"]), doc["table"], doc["rows"], doc["defective"], doc["deleted"],
                  datetime.fromisoformat(doc["as_of"]), doc["seconds"])


def change_one_percent(source: Source) -> int:
    """Give every 100th row a new household_address and an updated_at after every existing one.

    Returns the number of rows changed. The new updated_at is one minute after the source's
    current maximum, so the incremental sync sees exactly these rows plus the lookback window.
    """
    from common.catalog import load_catalog

    dataset = load_catalog().dataset(DATASET)
    table, changed, stamp = source.table, dataset.field("household_address").column, dataset.watermark_column
    with sqlite3.connect(source.path) as conn:
        (high,) = conn.execute(f'SELECT max("{stamp}") FROM "{table}"').fetchone()
        newer = (datetime.fromisoformat(high) + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
        cursor = conn.execute(
            f'UPDATE "{table}" SET "{changed}" = "{changed}" || ?, "{stamp}" = ? WHERE rowid % 100 = 0',
            (CHANGE_SUFFIX, newer),
        )
        return cursor.rowcount


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sources")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(write_population(args.out, args.rows, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
