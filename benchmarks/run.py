"""The performance benchmark of a population sync (issue 5): ``make bench``.

    python -m benchmarks.run [--rows 1000000] [--rss-rows 10000000] [--keep DIR] [--profile DIR]

On one generated SQLite source of --rows population rows (~5% defective, rejected by validation)
it measures, in this order:

1. peak RSS of a full sync in a fresh child process, at --rows and at --rss-rows (0 skips the
   large one); the children run first, while this process is still small (see rss_child.py);
2. the raw-copy baseline: ADBC sqlite ``fetch_record_batch`` streamed into a zstd ParquetWriter;
3. the full sync through govshare.pipeline, stage by stage (start, plan, ingest, protect, publish);
4. an incremental sync after 1% of the rows changed at the source (pipeline.sync);
5. a subscriber pull with decryption (approval-household, the whole current version) against
   the plain path for the same rows: pyarrow.parquet.read_table of a plain (unencrypted) zstd
   Parquet file holding them, plus writing them out again as a pull does (best of --repeat each).
   A pull always delivers a file, so a read alone is no baseline a pull could ever meet: the ratio
   measures what decryption, verification and the fold add to moving the same rows. The bare
   read and its ratio are printed too.

With ``--profile-crypto gm`` every figure is of a home made in the 国密 profile (SM2, SM4-GCM
sealed files, SM3, HMAC-SM3), and a full sync of the same source in a standard home is timed
first, for ``gm_full_vs_standard`` (target <= 1.5: issue 12).

It prints a table, PASS/FAIL per target and one ``RESULT ...`` line, and exits 0 whatever the
figures (a measurement, not a test); only a crash exits non-zero. No identifier is ever printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.child import PROJECT_ROOT, BenchmarkError, environment, last_json_line
from benchmarks.sources import Source, change_one_percent, generate
from govshare.pipeline import BATCH_ROWS  # like for like: the raw copy reads batches of the pipeline's size

DATASET = "population"
SUBSCRIBER = "approval-household"
PURPOSE = "性能基准测试：户籍迁移审批核验申请人身份（合成数据）"
DEFAULT_ROWS = 1_000_000
DEFAULT_RSS_ROWS = 10_000_000
DEFAULT_SEED = 20261127

TARGETS = {  # figure -> (limit, what it means)
    "full_vs_raw": (3.0, "full sync <= 3x raw copy"),
    "incr1pct_vs_full": (0.05, "incremental 1% <= 5% of full sync"),
    "pull_vs_plain": (1.5, "pull with decryption <= 1.5x the plain path (plain read + write)"),
    "rss": (1.5, "peak RSS at the large size <= 1.5x at --rows"),
}

GM_TARGET = (1.5, "gm profile full sync <= 1.5x the standard profile's")

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    step: str
    seconds: float
    rows: int | None = None
    note: str = ""


@dataclass(frozen=True)
class Peak:
    rows: int
    sync_seconds: float
    peak_mib: float  # the whole sync: max(ru_maxrss, every stage's VmHWM)
    before_sync_mib: float | None  # RSS after imports and init, before the first stage
    stage_peak_mib: dict[str, float | None]  # VmHWM per stage (reset before each)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def size_label(rows: int) -> str:
    for unit, suffix in ((1_000_000, "m"), (1_000, "k")):
        if rows >= unit and rows % unit == 0:
            return f"{rows // unit}{suffix}"
    return str(rows)


# -- measurements --------------------------------------------------------------------------------


def peak_rss(work: Path, source: Source, crypto: str = "standard") -> Peak:
    """A full sync of source into a fresh home of the ``crypto`` profile, in a fresh child process."""
    home = work / f"rss-home-{source.rows}-{crypto}"
    env = environment(home, source.url)
    env["GOVSHARE_CRYPTO_PROFILE"] = crypto
    proc = subprocess.run([sys.executable, "-m", "benchmarks.rss_child"], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, check=False)
    doc = last_json_line(proc, f"the full sync of {source.rows} rows for peak RSS")
    shutil.rmtree(home, ignore_errors=True)
    before = doc.get("rss_before_sync_kib")
    stage_peaks = {k: (v / 1024 if v else None) for k, v in doc.get("stage_peak_kib", {}).items()}
    # Resetting VmHWM per stage resets ru_maxrss too: the sync's peak is the largest stage peak.
    # The GX worker runs beside ingest: its peak is added to ingest's (an upper bound of the two).
    worker = doc.get("gx_worker_peak_kib", 0) / 1024
    stage_peaks["GX"] = worker or None
    if stage_peaks.get("ingest"):
        stage_peaks["ingest+GX"] = stage_peaks["ingest"] + worker
    peak = max([doc["ru_maxrss_kib"] / 1024, *(v for k, v in stage_peaks.items() if v and k != "GX worker")])
    return Peak(source.rows, doc["seconds"], peak, before / 1024 if before else None, stage_peaks)


def raw_copy(source: Source, out: Path) -> int:
    """The fastest path: no ordering, no type work, no checks, no encryption."""
    import adbc_driver_sqlite.dbapi as adbc
    import pyarrow.parquet as pq

    rows = 0
    with adbc.connect(str(source.path)) as conn, conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})  # the pipeline's
        cursor.execute("SELECT * FROM population_person")
        reader = cursor.fetch_record_batch()
        with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


def sync_by_stage(catalog: Any, home: Any, profile_dir: Path | None, label: str) -> list[Timing]:
    """A sync as pipeline.sync() runs it, one line per stage (profiles named ``<label>-<stage>``)."""
    from benchmarks.stages import run_stages

    profiler = _Profiler(profile_dir)
    figures = run_stages(DATASET, catalog, home, wrap=lambda name, fn: profiler.run(f"{label}-{name}", fn))
    return [Timing(f"{label}: {name}", fig.seconds, _stage_rows(name, fig.results), _stage_note(name, fig.results))
            for name, fig in figures.items()]


def pull_and_plain_read(catalog: Any, home: Any, work: Path, repeat: int, version: int | None = None,
                        profiler: _Profiler | None = None) -> tuple[float, float, int]:
    """Best of repeat for each; with a profiler, the last pull is the profiled one."""
    import pyarrow.parquet as pq

    from govshare.delivery import pull

    out = work / f"pull-v{version or 'latest'}.parquet"
    pulls = []
    rows = 0
    for i in range(repeat):
        def once() -> Any:
            return pull(catalog, home, DATASET, SUBSCRIBER, PURPOSE, str(out), version=version)
        if profiler is not None and i == repeat - 1:
            result, seconds = timed(lambda: profiler.run("pull", once))
        else:
            result, seconds = timed(once)
        pulls.append(seconds)
        rows = result.rows
    reads = []
    for _ in range(repeat):
        table, seconds = timed(lambda: pq.read_table(out))
        if table.num_rows != rows:
            raise BenchmarkError(f"plain read of the pull output gave {table.num_rows} rows, the pull {rows}")
        reads.append(seconds)
        del table
    return min(pulls), min(reads), rows


def plain_read_write(path: Path, out: Path, repeat: int) -> float:
    """What a pull costs at the least without any check or decryption: read its rows, write them."""
    import pyarrow.parquet as pq

    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        pq.write_table(pq.read_table(path), out, compression="zstd")
        best = min(best, time.perf_counter() - start)
    out.unlink(missing_ok=True)
    return best


class _Profiler:
    """pyinstrument around each stage when --profile is given (text + HTML per stage)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def run(self, stage: str, fn: Callable[[], T]) -> T:
        if self.folder is None:
            return fn()
        from pyinstrument import Profiler

        self.folder.mkdir(parents=True, exist_ok=True)
        profiler = Profiler(interval=0.005)
        profiler.start()
        try:
            return fn()
        finally:
            profiler.stop()
            (self.folder / f"{stage}.txt").write_text(profiler.output_text(unicode=True, color=False, show_all=False),
                                                     encoding="utf-8")
            (self.folder / f"{stage}.html").write_text(profiler.output_html(), encoding="utf-8")
            profiler.last_session.save(str(self.folder / f"{stage}.pyisession"))


def _stage_rows(stage: str, results: list[Any]) -> int | None:
    if stage == "ingest":
        return sum(r.rows for r in results)
    if stage == "protect":
        return results[0].upserts if results[0] else 0
    return None


def _stage_note(stage: str, results: list[Any]) -> str:
    if stage == "plan":
        return f"{len(results[0])} part(s)"
    if stage == "ingest":
        good, rejected = sum(r.good for r in results), sum(r.rejected for r in results)
        parts = f"{len(results)} parts, " if len(results) > 1 else ""
        gx = sum(r.gx.seconds for r in results)
        where = "/".join(sorted({r.gx.where or "none" for r in results}))
        return f"{parts}good {good}, rejected {rejected}; GX {gx:.2f} s {where}"
    if stage == "protect":
        protected = results[0]
        return f"upserts {protected.upserts}, deletes {protected.deletes}" if protected else "nothing new"
    if stage == "publish":
        r = results[0]
        return f"version {r.version}, upserts {r.upserts}, deletes {r.deletes}, quarantined {r.quarantined}"
    return ""


# -- the run -------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, work: Path) -> int:
    lines: list[Timing] = []
    source, t_gen = timed(lambda: generate(work / "source", args.rows, args.seed))
    lines.append(Timing("generate source (child)", t_gen, source.rows,
                        f"{source.defective} defective, {source.deleted} soft-deleted"))

    # with --profile-crypto gm: the same full sync in a standard home, also in a fresh child process
    # (cold, as every Airflow task is), right before the gm one: gm_full_vs_standard
    cold_standard = peak_rss(work, source, "standard") if args.profile_crypto == "gm" else None
    peaks = [peak_rss(work, source, args.profile_crypto)]
    if cold_standard is not None:
        lines.append(Timing("standard profile: full sync in a fresh child (cold)", cold_standard.sync_seconds, source.rows))
        lines.append(Timing("gm profile: full sync in a fresh child (cold)", peaks[0].sync_seconds, source.rows,
                            f"gm / standard = {peaks[0].sync_seconds / cold_standard.sync_seconds:.2f}"))
    if args.rss_rows:
        large, t_large = timed(lambda: generate(work / "source-large", args.rss_rows, args.seed))
        lines.append(Timing("generate large source (child)", t_large, large.rows))
        peaks.append(peak_rss(work, large, args.profile_crypto))
        shutil.rmtree(large.path.parent, ignore_errors=True)

    from common.catalog import load_catalog
    from common.home import home as current_home
    from govshare.cli import main as cli

    def init(folder: str, crypto: str) -> dict[str, str]:
        env = environment(work / folder, source.url)
        env["GOVSHARE_CRYPTO_PROFILE"] = crypto
        os.environ.update(env)
        with contextlib.redirect_stdout(io.StringIO()):
            if cli(["init"]) != 0:
                raise BenchmarkError(f"govshare init failed in the benchmark's {crypto} home")
        return env

    # with --profile-crypto gm, a standard home over the same source too, synced right after the
    # gm home's full sync (both warm: imports, the GX worker), for gm_full_vs_standard
    standard_env = init("home-standard", "standard") if args.profile_crypto == "gm" else None
    measured_env = init("home", args.profile_crypto)
    catalog, home = load_catalog(), current_home()

    raw_rows, t_raw = timed(lambda: raw_copy(source, work / "raw.parquet"))
    lines.append(Timing("raw copy (ADBC -> zstd Parquet)", t_raw, raw_rows))

    stages = sync_by_stage(catalog, home, args.profile, "full")
    lines += stages
    t_full = sum(s.seconds for s in stages)
    lines.append(Timing("full sync (sum of stages)", t_full, source.rows))
    t_standard = None
    if standard_env is not None:
        os.environ.update(standard_env)
        reference = sync_by_stage(load_catalog(), current_home(), None, "standard profile full")
        t_standard = sum(s.seconds for s in reference)
        lines.append(Timing("standard profile: full sync, same source (sum of stages)", t_standard, source.rows,
                            f"in-process, warm: gm / standard = {t_full / t_standard:.2f}"))
        shutil.rmtree(work / "home-standard", ignore_errors=True)
        os.environ.update(measured_env)

    changed, t_change = timed(lambda: change_one_percent(source))
    lines.append(Timing("change 1% at the source", t_change, changed))
    incremental = sync_by_stage(catalog, home, args.profile, "incremental")
    lines += incremental
    t_incr = sum(s.seconds for s in incremental)
    lines.append(Timing("incremental sync (1% changed, sum of stages)", t_incr, changed))
    profiler = _Profiler(args.profile)

    t_pull, t_plain, pulled = pull_and_plain_read(catalog, home, work, args.repeat, profiler=profiler)
    lines.append(Timing(f"pull with decryption (v2, best of {args.repeat})", t_pull, pulled,
                        "snapshot v1 + delta v2 folded"))
    t_copy = plain_read_write(work / "pull-vlatest.parquet", work / "copy.parquet", args.repeat)
    lines.append(Timing("plain path: read plain Parquet + zstd write of the same rows", t_copy, pulled,
                        f"pull / plain path = {t_pull / t_copy:.2f}"))
    lines.append(Timing(f"  for reference: bare read_table of the pull output (best of {args.repeat})", t_plain, pulled,
                        f"pull / bare read = {t_pull / t_plain:.2f}"))
    t_pull1, t_plain1, pulled1 = pull_and_plain_read(catalog, home, work, args.repeat, version=1)
    lines.append(Timing("  for reference: pull of snapshot v1 alone", t_pull1, pulled1,
                        f"plain read {t_plain1:.3f} s, ratio {t_pull1 / t_plain1:.2f}"))

    figures = {
        "full_vs_raw": t_full / t_raw,
        "incr1pct_vs_full": t_incr / t_full,
        "pull_vs_plain": t_pull / t_copy,
        "rss": peaks[1].peak_mib / peaks[0].peak_mib if len(peaks) > 1 else None,
    }
    if cold_standard is not None:  # both cold, each in a fresh process (the in-process warm pair is in the table)
        figures["gm_full_vs_standard"] = peaks[0].sync_seconds / cold_standard.sync_seconds
    report(args, lines, peaks, figures)
    return 0


def report(args: argparse.Namespace, lines: list[Timing], peaks: list[Peak], figures: dict[str, float | None]) -> None:
    print()
    print(f"govshare benchmark: {args.rows:,} population rows, seed {args.seed}, crypto profile {args.profile_crypto}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print()
    print(f"{'step':<58} {'seconds':>9} {'rows':>12} {'rows/s':>12}  note")
    for t in lines:
        rate = f"{t.rows / t.seconds:,.0f}" if t.rows and t.seconds > 0 else ""
        rows = f"{t.rows:,}" if t.rows is not None else ""
        print(f"{t.step:<58} {t.seconds:>9.3f} {rows:>12} {rate:>12}  {t.note}")
    print()
    stages = [k for k in peaks[0].stage_peak_mib if k != "start"]
    print("peak RSS of a full sync, each in a fresh child process (MiB; per stage: VmHWM reset before the stage;")
    print("the GX worker's own peak, and added to ingest's)")
    print(f"{'rows':>12} {'sync s':>8} {'peak':>10} {'pre-sync':>9} " + " ".join(f"{k:>9}" for k in stages))
    for p in peaks:
        per_stage = " ".join(f"{_mib(p.stage_peak_mib.get(k)):>9}" for k in stages)
        print(f"{p.rows:>12,} {p.sync_seconds:>8.1f} {p.peak_mib:>10,.0f} {_mib(p.before_sync_mib):>9} {per_stage}")
    print()
    large = size_label(peaks[1].rows if len(peaks) > 1 else DEFAULT_RSS_ROWS)
    rss_key = f"rss_{large}_vs_{size_label(args.rows)}"
    targets = dict(TARGETS, **({"gm_full_vs_standard": GM_TARGET} if "gm_full_vs_standard" in figures else {}))
    for key, (limit, meaning) in targets.items():
        value = figures[key]
        name = rss_key if key == "rss" else key
        if value is None:
            print(f"{name:<20} {'n/a':>8}   SKIP  {meaning} (--rss-rows 0)")
        else:
            print(f"{name:<20} {value:>8.3f}   {'PASS' if value <= limit else 'FAIL'}  {meaning}")
    print()
    parts = [f"rows={args.rows}"]
    for key in targets:
        value = figures[key]
        parts.append(f"{rss_key if key == 'rss' else key}={'n/a' if value is None else _short(value)}")
    print("RESULT " + " ".join([*parts, f"crypto={args.profile_crypto}"]))


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _short(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="population rows (default 1,000,000)")
    parser.add_argument("--rss-rows", type=int, default=DEFAULT_RSS_ROWS,
                        help="second size for the peak-RSS ratio (default 10,000,000; 0 skips it)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=3, help="pull and plain read: best of this many (default 3)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (default: a removed temp dir)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="pyinstrument each stage of the full sync into DIR (stage.txt/.html); timings then include its overhead")
    parser.add_argument("--profile-crypto", choices=("standard", "gm"), default="standard",
                        help="the crypto profile of the measured home (gm: also a standard full sync for the ratio)")
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    if args.rss_rows and args.rss_rows < 1000:
        parser.error("--rss-rows must be 0 or at least 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep:
        work = args.keep.expanduser().resolve()
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            raise SystemExit(f"--keep {work}: the folder must be empty or new")
    else:
        work = Path(tempfile.mkdtemp(prefix="govshare-bench-"))
    try:
        return measure(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"(kept {work})")


if __name__ == "__main__":
    sys.exit(main())
