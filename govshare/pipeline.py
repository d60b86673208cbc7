"""The sync of one dataset, as four stages: extract, validate, protect, publish.

Airflow runs each stage as its own task; ``govshare sync`` runs the same functions in a row.
Stages hand over through files in the run's work folder (encrypted at rest: they hold personal
data), so a retried task redoes only its own stage. The watermark advances only in publish,
after the version is visible.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from govshare.catalog import Catalog, Dataset, load_catalog
from govshare.errors import ConfigError, GateBlocked
from govshare.home import Home, home as default_home

SOURCE_ZONE = ZoneInfo("Asia/Shanghai")  # source timestamps are local time without a zone
BATCH_ROWS = 100_000
_RUN_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Run:
    dataset: Dataset
    home: Home
    run_id: str
    full: bool = False

    @property
    def folder(self) -> Path:
        return self.home.work / self.dataset.id / self.run_id

    def file(self, name: str) -> Path:
        return self.folder / name

    def record(self) -> dict[str, Any]:
        path = self.file("run.json")
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def save(self, stage: str, result: dict[str, Any]) -> None:
        doc = self.record()
        doc.update({"dataset": self.dataset.id, "run_id": self.run_id, "full": self.full})
        doc[stage] = result
        tmp = self.file("run.json.tmp")
        tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        tmp.replace(self.file("run.json"))


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
    catalog = catalog or load_catalog()
    home = (home or default_home()).require_initialised()
    run = Run(catalog.dataset(dataset_id), home, new_run_id(run_id), full)
    run.folder.mkdir(parents=True, exist_ok=True)
    if not run.file("run.json").exists():
        run.save("started", {"at": _now(), "full": full})
    return run


def today() -> date:
    return datetime.now(SOURCE_ZONE).date()


# -- stages ----------------------------------------------------------------------------------


def extract(run: Run) -> dict[str, Any]:
    """Stream the source's rows after the watermark into the run's (encrypted) staging file."""
    import pyarrow.parquet as pq

    from connectors.sql import open_source
    from govshare.schema import IS_DELETED, source_schema
    from keys.protection import staging_encryption
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
    result: dict[str, Any] = {
        "at": _now(),
        "connection_id": ds.connection_id,
        "source_table": ds.source_table,
        "watermark_from": after.isoformat() if after else None,
        "watermark_to": high.isoformat() if high else None,
    }
    if high is None or (state.watermark is not None and not run.full and high <= after):
        result.update(rows=0, deletes=0, nothing_new=True)
        run.save("extract", result)
        return result
    openlineage.emit_start(run)
    keystore = _keystore(run.home)
    rows = deletes = batches = 0
    schema = source_schema(ds)
    with pq.ParquetWriter(run.file("extract.parquet"), schema, compression="zstd",
                          encryption_properties=staging_encryption(keystore).file_encryption_properties) as writer:
        for batch in source.read_batches(after, high, batch_rows=BATCH_ROWS):
            writer.write_batch(batch)
            rows += batch.num_rows
            deletes += _count_true(batch.column(IS_DELETED))
            batches += 1
    result.update(rows=rows, deletes=deletes, batches=batches, nothing_new=rows == 0)
    run.save("extract", result)
    return result


def validate(run: Run) -> dict[str, Any]:
    """Judge every extracted row: good rows go on, rejected rows to the run's quarantine file."""
    import pyarrow.parquet as pq

    from govshare.schema import IS_DELETED, source_schema
    from keys.protection import decryption_properties, quarantine_encryption, staging_encryption
    from sharing.changes import FINGERPRINT, INDEX_SCHEMA, KEY_REF, with_fingerprints
    from validation.engine import Validator

    extracted = run.record().get("extract", {})
    if extracted.get("nothing_new", True):
        return _skip(run, "validate")
    ds = run.dataset
    keystore = _keystore(run.home)
    validator = Validator(ds, today())
    good = rejected = deletes = 0
    secret = keystore.hmac_key()
    schema = source_schema(ds).append(INDEX_SCHEMA.field(KEY_REF)).append(INDEX_SCHEMA.field(FINGERPRINT))
    source = pq.ParquetFile(run.file("extract.parquet"), decryption_properties=decryption_properties(keystore))
    good_writer = pq.ParquetWriter(run.file("good.parquet"), schema, compression="zstd",
                                   encryption_properties=staging_encryption(keystore).file_encryption_properties)
    rejected_writer = None
    try:
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            verdict = validator.check(batch)
            good_writer.write_batch(with_fingerprints(verdict.good, ds, secret))
            good += verdict.good.num_rows
            deletes += _count_true(verdict.good.column(IS_DELETED))
            if verdict.rejected.num_rows:
                if rejected_writer is None:
                    rejected_writer = pq.ParquetWriter(
                        run.file("rejected.parquet"), verdict.rejected.schema, compression="zstd",
                        encryption_properties=quarantine_encryption(keystore).file_encryption_properties)
                rejected_writer.write_batch(verdict.rejected)
                rejected += verdict.rejected.num_rows
    finally:
        good_writer.close()
        if rejected_writer is not None:
            rejected_writer.close()
    summary = validator.summary().to_dict()
    total = good + rejected
    share = rejected / total if total else 0.0
    result = {"at": _now(), "skipped": False, "rows": total, "good": good, "good_deletes": deletes, "rejected": rejected,
              "rejected_share": round(share, 6), "summary": summary,
              "gate": {"max_rejected_share": ds.gate.max_rejected_share, "passed": share <= ds.gate.max_rejected_share}}
    run.save("validate", result)
    if share > ds.gate.max_rejected_share:
        _blocked(run, f"{share:.1%} of {total} rows were rejected; the gate allows at most {ds.gate.max_rejected_share:.0%}")
    return result


def protect(run: Run) -> dict[str, Any]:
    """Shape good rows into the version's files: 不予共享 dropped, 有条件共享 encrypted."""
    from sharing.publish import write_version_files

    validated = run.record().get("validate", {})
    if validated.get("skipped", True):
        return _skip(run, "protect")
    keystore = _keystore(run.home)
    result = {"skipped": False, **write_version_files(run, keystore)}
    run.save("protect", result)
    return result


def publish(run: Run) -> SyncResult:
    """Make the version visible, keep the quarantine, then advance the watermark."""
    from lineage import openlineage
    from lineage.runs import save_run_record
    from sharing.changes import write_index
    from sharing.publish import INDEX_DELTA, publish_version
    from sharing.state import SyncState, read_state, write_state

    record = run.record()
    ds = run.dataset
    extracted = record.get("extract", {})
    if extracted.get("nothing_new", True):
        _finish(run)
        return SyncResult(ds.id, run.run_id, None, reason="nothing new at the source")
    protected = record.get("protect", {})
    if protected.get("skipped", True):
        raise ConfigError(f"{ds.id} run {run.run_id}: publish called before protect finished; rerun the sync")
    keystore = _keystore(run.home)
    quarantined = record["validate"]["rejected"]
    manifest = None
    if protected["upserts"] or protected["deletes"]:
        manifest = publish_version(run, keystore)
    if manifest is not None:
        write_index(run.home.state, ds.id, run.file(INDEX_DELTA), manifest.version, replace=manifest.kind == "snapshot")
    _keep_quarantine(run, manifest.version if manifest else None)
    state = read_state(run.home.state, ds.id)
    high = datetime.fromisoformat(extracted["watermark_to"])
    if state.watermark is not None and state.watermark > high:
        high = state.watermark  # a lookback re-read never moves the watermark back
    write_state(run.home.state, ds.id, SyncState(high, manifest.version if manifest else state.version, run.run_id))
    published = {"at": _now(), "version": manifest.version if manifest else None,
                 "manifest_sha256": manifest.digest if manifest else None}
    run.save("publish", published)
    save_run_record(run.home, ds.id, run.run_id, run.record())
    openlineage.emit_complete(run, run.record())
    _finish(run)
    if manifest is None:
        return SyncResult(ds.id, run.run_id, None, quarantined=quarantined,
                          reason="every new row was rejected or changed nothing; the quarantine holds them")
    return SyncResult(ds.id, run.run_id, manifest.version, protected["upserts"], protected["deletes"], quarantined)


def sync(dataset_id: str, full: bool = False, catalog: Catalog | None = None, home: Home | None = None,
         run_id: str | None = None) -> SyncResult:
    """One whole sync outside Airflow: the same stage functions the DAG's tasks call."""
    run = start(dataset_id, run_id, full, catalog, home)
    extract(run)
    validate(run)
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


def _blocked(run: Run, why: str) -> None:
    from lineage import openlineage
    from lineage.runs import save_run_record
    from sharing.store import SharingStore

    ds = run.dataset
    current = SharingStore(run.home.store, ds.id).latest()
    _keep_quarantine(run, None)
    run.save("gate", {"at": _now(), "blocked": True, "why": why, "current_version": current})
    save_run_record(run.home, ds.id, run.run_id, run.record())
    openlineage.emit_fail(run, why)
    _finish(run)
    stays = f"version {current} stays current" if current else "no version is published"
    raise GateBlocked(f"{ds.id}: the validation gate blocked publication: {why}; nothing published, {stays}, "
                      f"the watermark stays; see 'govshare lineage {ds.id}' and the quarantine")


def _keep_quarantine(run: Run, version: int | None) -> None:
    """Move the run's rejected rows (encrypted) into the dataset's quarantine store."""
    rejected = run.file("rejected.parquet")
    if not rejected.exists():
        return
    target = run.home.quarantine / run.dataset.id
    target.mkdir(parents=True, exist_ok=True)
    shutil.move(str(rejected), target / f"{run.run_id}.parquet")
    meta = {"run_id": run.run_id, "version": version, "at": _now(),
            "rules": {r["rule_id"]: r["rows_failed"] for r in run.record().get("validate", {}).get("summary", {}).get("rules", [])
                      if r["rows_failed"]}}
    (target / f"{run.run_id}.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")


def _finish(run: Run) -> None:
    from sharing.store import SharingStore

    SharingStore(run.home.store, run.dataset.id).discard(run.run_id)
    shutil.rmtree(run.folder, ignore_errors=True)


def _count_true(column) -> int:  # noqa: ANN001 - a pyarrow array
    import pyarrow.compute as pc

    return int(pc.sum(pc.equal(column, 1)).as_py() or 0)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
