"""The sync of one dataset, as four stages: plan, ingest (per part), protect, publish.

Airflow runs each stage as its own task; ``govshare sync`` runs the same functions in a row.
Ingest reads, judges and stages each row in one streaming pass (extract and validate used to be
two stages with an encrypted copy of the whole source between them). Stages hand over through
files in the run's work folder (personal data in them encrypted at rest), so a retried task
redoes only its own stage. The watermark advances only in publish, after the version is visible.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from common.catalog import Catalog, Dataset, load_catalog
from common.errors import ConfigError, GateBlocked
from common.home import Home, home as default_home

SOURCE_ZONE = ZoneInfo("Asia/Shanghai")  # source timestamps are local time without a zone
BATCH_ROWS = 100_000
GX_ENV = "GOVSHARE_GX"
GX_WORKER_ROWS = 200_000  # parts from this size on run GX in a worker process (GOVSHARE_GX=auto)
_RUN_ID = re.compile(r"[^A-Za-z0-9_.-]+")
T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """One sync of one dataset. Each stage (and each part of a split stage) records its result in
    its own JSON file in the run's folder, so parallel mapped tasks never write the same file."""

    dataset: Dataset
    home: Home
    run_id: str
    full: bool = False

    @property
    def folder(self) -> Path:
        return self.home.work / self.dataset.id / self.run_id

    def file(self, name: str) -> Path:
        return self.folder / name

    def stage(self, name: str) -> dict[str, Any]:
        path = self.file(f"{name}.json")
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def save(self, stage: str, result: dict[str, Any]) -> None:
        tmp = self.file(f"{stage}.json.tmp")
        tmp.write_text(json.dumps(result, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.file(f"{stage}.json"))

    @property
    def parts(self) -> list[int]:
        return list(range(len(self.stage("plan").get("parts", []))))

    def record(self) -> dict[str, Any]:
        """Everything the run recorded, with the parts of extract and validate added up."""
        doc: dict[str, Any] = {"dataset": self.dataset.id, "run_id": self.run_id, "full": self.full}
        for path in sorted(self.folder.glob("*.json")):
            if "." not in path.stem:
                doc[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        plan = doc.get("plan", {})
        extracts = [self.stage(f"extract.{i}") for i in self.parts]
        validates = [self.stage(f"validate.{i}") for i in self.parts]
        if plan and all(extracts):
            doc["extract"] = {
                "connection_id": plan["connection_id"], "source_table": plan["source_table"],
                "watermark_from": plan["watermark_from"], "watermark_to": plan["watermark_to"],
                "parts": len(extracts), "nothing_new": plan["nothing_new"],
                **{k: sum(e[k] for e in extracts) for k in ("rows", "deletes", "batches")},
            }
        if validates and all(validates):
            from validation.engine import merge_summaries

            doc["validate"] = {
                **{k: sum(v[k] for v in validates) for k in ("rows", "good", "good_deletes", "rejected")},
                "summary": merge_summaries([v["summary"] for v in validates]),
                "gate": doc.get("gate", {}),
            }
        return doc


@dataclass(frozen=True)
class SyncResult:
    dataset: str
    run_id: str
    version: int | None  # None: nothing new was published
    upserts: int = 0
    deletes: int = 0
    quarantined: int = 0
    reason: str = ""


def new_run_id(hint: str | None = None) -> str:
    """A file-safe run id: Airflow's run id when there is one, else a fresh one."""
    if hint:
        return _RUN_ID.sub("_", hint).strip("_")[:120]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"cli_{stamp}_{secrets.token_hex(3)}"


def start(dataset_id: str, run_id: str | None = None, full: bool = False,
          catalog: Catalog | None = None, home: Home | None = None) -> Run:
    """Open a run (a fresh one, or the run with this id whose plan fixed its mode)."""
    catalog = catalog or load_catalog()
    home = (home or default_home()).require_initialised()
    gx_setting()  # a wrong GOVSHARE_GX fails here, before anything is planned
    run = Run(catalog.dataset(dataset_id), home, new_run_id(run_id), full)
    run.folder.mkdir(parents=True, exist_ok=True)
    planned = run.stage("plan")
    if planned:
        run = Run(run.dataset, home, run.run_id, bool(planned.get("full")))
    return run


def gx_mode(rows: int) -> str:
    """Where Great Expectations runs while a part of about ``rows`` rows is ingested (GOVSHARE_GX):

    - ``worker``: a child process on another core. It imports GX (~3 s) and runs the suite while
      this process reads, judges and writes: worth it when the part is large;
    - ``inline``: in this process. Cheaper for a small part (no second GX import, no copy of the
      rows to a child; a process that already imported GX pays nothing more), and the choice for
      one-core machines and the tests;
    - ``auto`` (the default): ``worker`` from GX_WORKER_ROWS rows on, or when this process holds a
      warm worker (one that served an earlier part, or was prestarted: ``warm_up``), else ``inline``.
    """
    mode = gx_setting()
    if mode == "auto":
        from validation.gx_worker import warm_worker_available

        large = rows >= GX_WORKER_ROWS and (os.cpu_count() or 1) > 1
        return "worker" if large or warm_worker_available() else "inline"
    return mode


def gx_setting() -> str:
    """GOVSHARE_GX as set ('auto' when unset), checked: a ConfigError names a wrong value."""
    mode = os.environ.get(GX_ENV, "auto")
    if mode not in ("auto", "worker", "inline"):
        raise ConfigError(f"{GX_ENV}={mode!r} is not a way to run Great Expectations",
                          problems=["use 'auto' (the default), 'worker' (a child process) or 'inline'"])
    return mode


def today() -> date:
    return datetime.now(SOURCE_ZONE).date()


# -- stages ----------------------------------------------------------------------------------


def plan(run: Run) -> list[int]:
    """Decide what to read: the watermark range and, for a large full read, key-range parts."""
    from connectors import open_source
    from lineage import openlineage
    from sharing.state import read_state

    ds = run.dataset
    state = read_state(run.home.state, ds.id)
    # Rows committed late, or sharing the watermark's updated_at, are re-read within the lookback;
    # change detection keeps the unchanged ones from being published again.
    after = None if run.full or state.watermark is None else state.watermark - ds.lookback
    source = open_source(ds)
    source.check()
    high = source.high_watermark()
    nothing_new = high is None or (after is not None and high <= state.watermark)
    parts: list[list[str | None]] = [[None, None]]
    rows = 0
    if not nothing_new:
        rows = source.count(after, high, exact=False)  # an upper bound: sizes the parts and GX's place
        if after is None and rows > ds.part_rows:
            parts = [list(r) for r in source.key_ranges(-(-rows // ds.part_rows), after, high)]
    result = {
        "at": _now(), "full": run.full, "connection_id": ds.connection_id, "source_table": ds.source_table,
        "watermark_from": after.isoformat() if after else None,
        "watermark_to": high.isoformat() if high else None,
        "nothing_new": nothing_new, "parts": [] if nothing_new else parts,
        "rows_estimate": rows,
    }
    run.save("plan", result)
    if not nothing_new:
        openlineage.emit_start(run)
    return run.parts


def ingest(run: Run, part: int = 0) -> dict[str, Any]:
    """Read one part of the source and judge every row as it streams by, in one pass: rejected rows
    to the run's (encrypted) quarantine file, good rows fingerprinted and staged as the version
    needs them (sharing.publish.PartFiles), cross-dataset references checked on the way.

    Great Expectations counts the same rows in a child process on the other core (its import
    alone takes seconds), so the suite's run costs this stage little beyond waiting for its result.
    """
    import pyarrow.parquet as pq

    from connectors.base import prefetch
    from connectors import open_source
    from common.schema import IS_DELETED
    from keys.protection import quarantine_encryption
    from sharing.changes import RowHasher
    from sharing.publish import PartFiles
    from validation.crossref import CrossrefCheck
    from validation.engine import Validator

    ds = run.dataset
    planned = run.stage("plan")
    lo, hi = planned["parts"][part]
    after = datetime.fromisoformat(planned["watermark_from"]) if planned["watermark_from"] else None
    upto = datetime.fromisoformat(planned["watermark_to"])
    key_range = None if lo is None and hi is None else (lo, hi)
    keystore = _keystore(run.home)
    secret = keystore.hmac_key()
    day = today()
    per_part = planned.get("rows_estimate", 0) // max(len(planned["parts"]), 1)
    validator = Validator(ds, day, gx=gx_mode(per_part))  # a worker starts importing GX now
    rows = deletes = batches = rejected = 0
    rejected_writer = None
    try:
        # the source is read from now on, in a thread, while the rest is set up
        with (prefetch(open_source(ds).read_batches(after, upto, batch_rows=BATCH_ROWS, key_range=key_range)) as batches_read,
              RowHasher(secret, ds) as hasher):
            cross = CrossrefCheck(ds, secret, run.home.state, day)
            staged = PartFiles(run, part, keystore)
            try:
                for batch, last in _with_last(batches_read):
                    rows += batch.num_rows
                    deletes += _count_true(batch.column(IS_DELETED))
                    batches += 1
                    verdict = validator.check(batch)
                    if last:
                        validator.end_input()  # a GX worker runs its last chunk while this batch is staged
                    good = verdict.good
                    key_ref, fingerprint = hasher.hashes(good)
                    staged.write(_append(good, key_ref, fingerprint))
                    cross.add(good)
                    if verdict.rejected.num_rows:
                        refused = _with_key_ref(verdict.rejected, hasher.key_refs(verdict.rejected.column(ds.key)))
                        if rejected_writer is None:
                            rejected_writer = pq.ParquetWriter(
                                run.file(f"rejected-{part}.parquet"), refused.schema, compression="zstd",
                                encryption_properties=quarantine_encryption(keystore).file_encryption_properties)
                        rejected_writer.write_batch(refused)
                        rejected += refused.num_rows
            finally:
                staging = staged.close()
        summary = validator.summary().to_dict()  # waits for the GX worker's counts
    finally:
        validator.close()
        if rejected_writer is not None:
            rejected_writer.close()
    run.save(f"staged.{part}", staging)
    run.save(f"crossref.{part}", cross.result().to_dict())
    run.save(f"extract.{part}", {"at": _now(), "part": part, "key_range": [lo, hi], "rows": rows, "deletes": deletes,
                                 "batches": batches})
    result = {"at": _now(), "part": part, "rows": rows, "good": rows - rejected, "good_deletes": staging["deletes"],
              "rejected": rejected, "summary": summary,
              "gx": {"where": validator.gx_where, "seconds": round(validator.gx_seconds, 3),
                     "worker_peak_rss_kib": validator.gx_worker_peak_kib}}
    run.save(f"validate.{part}", result)
    return result


def protect(run: Run) -> dict[str, Any]:
    """Pass the gate, then shape good rows into the version's files: 不予共享 dropped,
    有条件共享 encrypted, unchanged rows left out."""
    from sharing.publish import write_version_files

    if run.stage("plan").get("nothing_new", True):
        return _skip(run, "protect")
    keystore = _keystore(run.home)
    _crossref(run)
    state_rows = _state_rows(run)  # before the version's files exist: the state they change
    result = {"skipped": False, **write_version_files(run, keystore)}
    _gate(run, result, state_rows)
    run.save("protect", result)
    return result


def publish(run: Run) -> SyncResult:
    """Make the version visible, keep the quarantine, then advance the watermark."""
    from lineage import openlineage
    from lineage.runs import save_run_record
    from sharing.index import StateIndex
    from sharing.disputes import clear_changed
    from sharing.publish import INDEX_DELTA, publish_version
    from sharing.state import SyncState, read_state, write_state

    ds = run.dataset
    planned = run.stage("plan")
    if planned.get("nothing_new", True):
        _finish(run)
        return SyncResult(ds.id, run.run_id, None, reason="nothing new at the source")
    protected = run.stage("protect")
    if protected.get("skipped", True):
        raise ConfigError(f"{ds.id} run {run.run_id}: publish called before protect finished; rerun the sync")
    keystore = _keystore(run.home)
    record = run.record()
    quarantined = record["validate"]["rejected"]
    manifest = None
    if protected["upserts"] or protected["deletes"]:
        manifest = publish_version(run, keystore)
        StateIndex(run.home.state, ds.id).add(run.file(INDEX_DELTA), manifest.version, replace=manifest.kind == "snapshot",
                                              growth=protected["new_keys"] - protected["deletes"])
        clear_changed(run.home, ds.id, run.file(INDEX_DELTA), manifest.version)
    _keep_quarantine(run, manifest.version if manifest else None)
    _quality_feedback(run, keystore, manifest.version if manifest else None)
    state = read_state(run.home.state, ds.id)
    high = datetime.fromisoformat(planned["watermark_to"])
    if state.watermark is not None and state.watermark > high:
        high = state.watermark  # a lookback re-read never moves the watermark back
    write_state(run.home.state, ds.id, SyncState(high, manifest.version if manifest else state.version, run.run_id))
    run.save("publish", {"at": _now(), "version": manifest.version if manifest else None,
                         "manifest_sha256": manifest.digest if manifest else None})
    save_run_record(run.home, ds.id, run.run_id, run.record())
    openlineage.emit_complete(run, run.record())
    _finish(run)
    if manifest is None:
        return SyncResult(ds.id, run.run_id, None, quarantined=quarantined,
                          reason="every new row was rejected or changed nothing; the quarantine holds them")
    return SyncResult(ds.id, run.run_id, manifest.version, protected["upserts"], protected["deletes"], quarantined)


def warm_up() -> None:
    """Before plan, in a process that will also ingest (``sync``): start a GX worker now, so that
    GX's import (~3 s) runs on the other core while plan and the source's first batches run here.
    The ingest of the first part takes it (GOVSHARE_GX auto or worker); unused, it is stopped when
    the process exits. Airflow's tasks are separate processes: there ingest starts its own."""
    if gx_setting() in ("auto", "worker"):
        from validation.gx_worker import prestart

        prestart()


def sync(dataset_id: str, full: bool = False, catalog: Catalog | None = None, home: Home | None = None,
         run_id: str | None = None) -> SyncResult:
    """One whole sync outside Airflow: the same stage functions the DAG's tasks call."""
    run = start(dataset_id, run_id, full, catalog, home)
    warm_up()
    for part in plan(run):
        ingest(run, part)
    protect(run)
    return publish(run)


# -- helpers ---------------------------------------------------------------------------------


def _keystore(home: Home):  # noqa: ANN202 - keys is imported lazily
    from keys.keystore import Keystore

    return Keystore(home.keystore)


def _skip(run: Run, stage: str) -> dict[str, Any]:
    result = {"at": _now(), "skipped": True}
    run.save(stage, result)
    return result


def _gate(run: Run, protected: dict[str, Any], state_rows: int) -> None:
    """The validation gate: past the catalog's threshold nothing is published (exit 5)."""
    from lineage import openlineage
    from lineage.runs import save_run_record
    from sharing.store import SharingStore

    ds = run.dataset
    validated = run.record()["validate"]
    measures, reasons = _gate_measures(run, validated, protected, state_rows)
    gate = {"at": _now(), **measures, "thresholds": ds.gate.__dict__, "passed": not reasons, "blocked": bool(reasons)}
    if not reasons:
        run.save("gate", gate)
        return
    why = "; ".join(reasons)
    current = SharingStore(run.home.store, ds.id).latest()
    _keep_quarantine(run, None)
    run.save("gate", {**gate, "why": why, "current_version": current})
    _quality_feedback(run, _keystore(run.home), None)
    save_run_record(run.home, ds.id, run.run_id, run.record())
    openlineage.emit_fail(run, why)
    _finish(run)
    stays = f"version {current} stays current" if current else "no version is published"
    raise GateBlocked(f"{ds.id}: the validation gate blocked publication: {why}; nothing published, {stays}, "
                      f"the watermark stays; see 'govshare lineage {ds.id}' and the quarantine")


def _crossref(run: Run) -> None:
    """Holders and legal representatives looked up in the other datasets (during ingest, per part):
    flagged, never rejected."""
    from validation.crossref import merge_crossref

    run.save("crossref", merge_crossref([run.stage(f"crossref.{part}") for part in run.parts], run.dataset.id))


def _quality_feedback(run: Run, keystore, version: int | None) -> None:  # noqa: ANN001
    """The run's 数据质量反馈 for the source department: counts per rule, masked keys only."""
    from validation.crossref import CrossrefFinding, CrossrefResult
    from validation.quality import quality_report, write_quality_report

    record = run.record()
    meta_path = run.home.quarantine / run.dataset.id / f"{run.run_id}.json"
    files = json.loads(meta_path.read_text(encoding="utf-8"))["files"] if meta_path.is_file() else []
    cross = record.get("crossref")
    cross_result = None
    if cross:
        cross_result = CrossrefResult(findings=tuple(CrossrefFinding(**f) for f in cross["findings"]), dataset=cross["dataset"])
    report = quality_report(run.dataset, run.run_id, record["validate"]["summary"],
                            [run.home.quarantine / run.dataset.id / f for f in files], keystore,
                            cross=cross_result, version=version)
    report["gate"] = record.get("gate", {})
    paths = write_quality_report(report, run.home.root / "reports" / "quality" / run.dataset.id)
    run.save("quality", {name: str(path) for name, path in paths.items()})


def _state_rows(run: Run) -> int:
    from sharing.index import StateIndex

    return StateIndex(run.home.state, run.dataset.id).rows()


def _gate_measures(run: Run, validated: dict[str, Any], protected: dict[str, Any],
                   state_rows: int) -> tuple[dict[str, Any], list[str]]:
    """The gate's measures for this run, and why it blocks (empty: it passes)."""
    gate, total = run.dataset.gate, validated["rows"]
    rules = validated["summary"].get("rules", [])
    missing = max((r["rows_failed"] for r in rules if r["check"] == "required"), default=0)
    snapshot = protected["kind"] == "snapshot" and state_rows > 0
    measures = {
        "rows": total,
        "rejected_share": round(validated["rejected"] / total, 6) if total else 0.0,
        "missing_required_share": round(missing / total, 6) if total else 0.0,
        "state_rows": state_rows,
        "snapshot_ratio": round(protected["upserts"] / state_rows, 6) if snapshot else None,
        "delete_share": round(protected["deletes"] / state_rows, 6) if state_rows else 0.0,
    }
    reasons = []
    if measures["rejected_share"] > gate.max_rejected_share:
        reasons.append(f"{measures['rejected_share']:.1%} of {total} rows were rejected (at most {gate.max_rejected_share:.0%} allowed)")
    if measures["missing_required_share"] > gate.max_missing_required_share:
        reasons.append(f"{measures['missing_required_share']:.1%} of rows lack a required field (at most {gate.max_missing_required_share:.0%})")
    if snapshot and measures["snapshot_ratio"] < gate.min_snapshot_ratio:
        reasons.append(f"the full snapshot has {protected['upserts']} rows against {state_rows} published: the row count "
                       f"collapsed (at least {gate.min_snapshot_ratio:.0%} expected)")
    if state_rows and measures["delete_share"] > gate.max_delete_share:
        reasons.append(f"{protected['deletes']} deletes against {state_rows} published rows (at most {gate.max_delete_share:.0%})")
    return measures, reasons


def _with_key_ref(rows, refs):  # noqa: ANN001, ANN202 - pyarrow batches
    """Rejected rows with the pseudonymous ref of their key (null key: null ref), every column nullable."""
    import pyarrow as pa

    from sharing.changes import KEY_REF

    schema = pa.schema([f.with_nullable(True) for f in rows.schema]).append(pa.field(KEY_REF, pa.binary(16)))
    return pa.RecordBatch.from_arrays([*rows.columns, refs], schema=schema)


def _append(good, key_ref, fingerprint):  # noqa: ANN001, ANN202 - pyarrow batches
    """Good rows with their _key_ref and _fingerprint."""
    import pyarrow as pa

    from sharing.changes import FINGERPRINT, INDEX_SCHEMA, KEY_REF

    schema = good.schema.append(INDEX_SCHEMA.field(KEY_REF)).append(INDEX_SCHEMA.field(FINGERPRINT))
    return pa.RecordBatch.from_arrays([*good.columns, key_ref, fingerprint], schema=schema)


def _update_cases(run: Run, files: list[str], published: bool, version: int | None) -> None:
    """Open or refresh a quarantine case per rejected key; close the cases whose key came back valid."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from keys.protection import decryption_properties
    from sharing.changes import KEY_REF, last_per_ref
    from sharing.publish import MARKERS
    from validation.quality import mask_keys
    from validation.quarantine import RULES, Quarantine

    decrypt = decryption_properties(_keystore(run.home))
    folder = run.home.quarantine / run.dataset.id
    rejected = [pq.read_table(folder / f, columns=[run.dataset.key, KEY_REF, RULES], decryption_properties=decrypt) for f in files]
    cases = pa.table({KEY_REF: pa.array([], pa.binary(16)), "masked_key": pa.array([], pa.string()), "rules": pa.array([], pa.string())})
    if rejected:
        rows = pa.concat_tables(rejected)
        rows = rows.filter(pc.is_valid(rows.column(KEY_REF)))
        cases = pa.table({KEY_REF: rows.column(KEY_REF), "masked_key": mask_keys(rows.column(run.dataset.key)),
                          "rules": pc.binary_join(rows.column(RULES), "|")})
        cases = last_per_ref(cases)  # a key rejected twice in a run keeps its latest rules
    quarantine = Quarantine(folder, decrypt)  # reads the cases once, for this and update()
    good: list = []
    open_refs = quarantine.open_cases().column(KEY_REF).combine_chunks()
    if published and len(open_refs):  # which open cases came back valid: a streaming filter, bounded memory
        for part in run.parts:
            for batch in pq.ParquetFile(run.file(MARKERS.format(part=part))).iter_batches(columns=[KEY_REF]):
                good.append(batch.column(0).filter(pc.is_in(batch.column(0), value_set=open_refs)))
    good_refs = pa.concat_arrays(good) if good else pa.array([], pa.binary(16))
    run.save("quarantine", quarantine.update(run.run_id, cases, good_refs, version))


def _keep_quarantine(run: Run, version: int | None) -> None:
    """Move the run's rejected rows (encrypted) into the dataset's quarantine store."""
    target = run.home.quarantine / run.dataset.id
    moved = []
    for part in run.parts:
        rejected = run.file(f"rejected-{part}.parquet")
        if rejected.exists():
            target.mkdir(parents=True, exist_ok=True)
            name = f"{run.run_id}-{part}.parquet"
            shutil.move(str(rejected), target / name)
            moved.append(name)
    if not moved:
        if not run.stage("gate").get("blocked", False):
            _update_cases(run, [], published=True, version=version)
        return
    rules = run.record().get("validate", {}).get("summary", {}).get("rules", [])
    meta = {"run_id": run.run_id, "version": version, "at": _now(), "files": moved,
            "rules": {r["rule_id"]: r["rows_failed"] for r in rules if r["rows_failed"]}}
    (target / f"{run.run_id}.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    _update_cases(run, moved, published=not run.stage("gate").get("blocked", False), version=version)


def _finish(run: Run) -> None:
    from sharing.store import SharingStore

    SharingStore(run.home.store, run.dataset.id).discard(run.run_id)
    shutil.rmtree(run.folder, ignore_errors=True)


def _with_last(items: Iterator[T]) -> Iterator[tuple[T, bool]]:
    """Each item, and whether it is the last (the next one is read before this one is handed out)."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for upcoming in it:
        yield current, False
        current = upcoming
    yield current, True


def _count_true(column) -> int:  # noqa: ANN001 - a pyarrow array
    import pyarrow.compute as pc

    return int(pc.sum(pc.equal(column, 1)).as_py() or 0)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
