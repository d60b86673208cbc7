"""The sync of one dataset, as four stages: plan, ingest (per part), protect, publish.

Airflow runs each stage as its own task; ``govshare sync`` runs the same functions in a row.
Ingest reads, judges and stages each row in one streaming pass. Stages hand over through typed
results (common.run) and files in the run's work folder (personal data in them encrypted at
rest), so a retried task redoes only its own stage. The watermark advances only in publish,
after the version is visible.

Every stage starts by taking the dataset's sync lease (sharing.store: one run per dataset from
plan to publish), finishing the publish of a run that was killed after its version became
visible, removing what killed runs left half-made, and checking store, state and index against
each other (sharing.verify.check_consistency), so a damaged home fails before a row is read.

This module is wiring: each rule it applies lives in the library below it (the gate in
validation.gate, quarantine cases in validation.quarantine, the version's files in
sharing.publish, lineage in lineage/).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeVar

from common.catalog import Catalog, Dataset, load_catalog
from common.errors import ConfigError, GateBlocked, IntegrityError, InternalError
from common.faults import checkpoint
from common.home import Home
from common.home import home as default_home
from common.progress import Progress
from common.run import (
    CrossrefResult,
    Extracted,
    GxUse,
    Plan,
    Protected,
    Published,
    Run,
    Staged,
    Validated,
    new_run_id,
)
from common.times import SOURCE_ZONE, today, utc_now
from connectors.base import WATERMARK_FLOOR
from keys.keystore import Keystore
from validation.gx_mode import gx_mode, gx_setting, warm_up

BATCH_ROWS = 100_000
T = TypeVar("T")

__all__ = ["SyncResult", "handover", "ingest", "new_run_id", "plan", "protect", "publish", "start", "sync", "warm_up"]


@dataclass(frozen=True)
class SyncResult:
    dataset: str
    run_id: str
    version: int | None  # None: nothing new was published
    upserts: int = 0
    deletes: int = 0
    quarantined: int = 0
    reason: str = ""


def start(dataset_id: str, run_id: str | None = None, full: bool = False,
          catalog: Catalog | None = None, home: Home | None = None, hold: Literal["process", "run"] = "run") -> Run:
    """Open a run (a fresh one, or the run with this id whose plan fixed its mode), holding the
    dataset's sync lease: ``hold="run"`` across the task processes of an Airflow run,
    ``"process"`` for a whole sync in this process (sharing.store explains the staleness rule)."""
    from sharing.store import SyncLease

    catalog = catalog or load_catalog()
    home = (home or default_home()).require_initialised()
    gx_setting()  # a wrong GOVSHARE_GX fails here, before anything is planned
    run = Run(catalog.dataset(dataset_id), home, new_run_id(run_id), full)
    lease = SyncLease(home.leases, run.dataset.id)
    lease.hold(run.run_id, hold)  # exit 75 naming the holder when another run syncs the dataset
    try:
        if hold == "run":  # the run's earlier stages may have run on another worker
            handover(run).fetch()
        planned = run.plan
        run = Run(run.dataset, home, run.run_id, planned.full) if planned else run
        _recover(run)
        run.folder.mkdir(parents=True, exist_ok=True)
    except BaseException:
        if hold == "process":
            lease.release(run.run_id)
        raise
    return run


def _recover(run: Run) -> None:
    """Before a stage: finish the publish of a run killed after its version became visible, remove
    what killed runs left, and check the store against state and index."""
    from sharing.state import discard_temporary
    from sharing.store import SharingStore
    from sharing.verify import check_consistency

    ds, store = run.dataset, SharingStore(run.home.store, run.dataset.id)
    keystore = Keystore(run.home.keystore)
    found = check_consistency(store, keystore, run.home.state, repair=True)
    interrupted = found.pending_run
    if interrupted is not None and interrupted != run.run_id:
        dead = Run(ds, run.home, interrupted)
        handover(dead).fetch()  # its work folder may be on another worker
        if dead.plan is not None and dead.load(Protected) is not None:
            publish(Run(ds, run.home, interrupted, dead.plan.full))  # records the version; publishes nothing
        elif not run.full:
            raise IntegrityError(f"{ds.id}: version {found.pending.version} (run {interrupted}) is visible but its "
                                 f"publish was interrupted before the state recorded it, and the run's work folder "
                                 f"{dead.folder} is gone; run 'govshare sync {ds.id} --full' to rebuild the state")
    store.discard_others(run.run_id)
    handover(run).drop_others()
    discard_temporary(run.home.state, ds.id)
    for folder in (run.home.work / ds.id).glob("*"):
        if folder.name != run.run_id:
            shutil.rmtree(folder, ignore_errors=True)
    check_consistency(store, keystore, run.home.state, repair=run.full)


# -- stages ----------------------------------------------------------------------------------


def plan(run: Run) -> list[int]:
    """Decide what to read: the watermark range and, for a large full read, key-range parts."""
    from connectors import open_source
    from lineage import openlineage
    from sharing.schema_change import check_sync
    from sharing.state import read_state
    from sharing.store import SharingStore

    ds = run.dataset
    check_sync(SharingStore(run.home.store, ds.id), ds, run.full)  # a changed schema needs --full
    state = read_state(run.home.state, ds.id)
    # Rows committed late, or sharing the watermark's updated_at, are re-read within the lookback;
    # change detection keeps the unchanged ones from being published again.
    after = None if run.full or state.watermark is None else state.watermark - ds.lookback
    source = open_source(ds)
    source.check()
    # The read ends at now + the catalog's tolerance at most: one far-future updated_at cannot
    # carry the watermark past rows not yet written. Rows beyond it, or of no readable time, are
    # read every run as rejected rows (rule updated_at.watermark) until the source fixes them.
    cap = read_cap(ds)
    high = source.high_watermark(cap)
    unusable = source.count_unusable(cap)
    if unusable and ds.bad_watermark == "fail":
        raise _bad_watermark_error(ds, unusable, cap)
    nothing_new = unusable == 0 and (high is None or (after is not None and high <= state.watermark))
    parts: list[tuple[str | None, str | None]] = [(None, None)]
    rows = 0
    if not nothing_new:
        rows = unusable + (source.count(after, high, exact=False) if high is not None else 0)  # an upper bound
        if after is None and high is not None and rows > ds.part_rows:
            parts = [tuple(r) for r in source.key_ranges(-(-rows // ds.part_rows), after, high)]
    run.save(Plan(at=utc_now(), full=run.full, connection_id=ds.connection_id, source_table=ds.source_table,
                  watermark_from=after, watermark_to=high, nothing_new=nothing_new,
                  parts=() if nothing_new else tuple(parts), rows_estimate=rows))
    if not nothing_new:
        # The run's data keys are made here, once, before the parts fan out: mapped parts on
        # workers with work folders of their own would otherwise each make a set.
        from sharing.publish import run_keys

        run_keys(run.folder, Keystore(run.home.keystore), ds)
        openlineage.emit_start(run.home.lineage, ds, run.record())
    return run.parts


def ingest(run: Run, part: int = 0) -> Validated:
    """Read one part of the source and judge every row as it streams by, in one pass: rejected rows
    to the run's (encrypted) quarantine file, good rows fingerprinted and staged as the version
    needs them (sharing.publish.PartFiles), cross-dataset references checked on the way.

    Great Expectations counts the same rows in a child process on the other core (its import
    alone takes seconds), so the suite's run costs this stage little beyond waiting for its result.
    """
    from connectors import open_source
    from connectors.base import prefetch
    from keys.pseudonyms import RowHasher
    from sharing.index import published_refs
    from sharing.publish import PartFiles
    from validation.crossref import CrossrefCheck
    from validation.engine import Validator

    ds = run.dataset
    planned = run.require(Plan)
    key_range = planned.parts[part]
    keystore = Keystore(run.home.keystore)
    secret = keystore.hmac_key()
    day = today()
    validator = Validator(ds, day, gx=gx_mode(planned.rows_per_part))  # a worker starts importing GX now
    read = _Tally()
    progress = Progress(f"sync {ds.id}" + (f" part {part}" if part else ""))
    try:
        # the source is read from now on, in a thread, while the rest is set up
        batches = open_source(ds).read_batches(planned.watermark_from, planned.watermark_to, batch_rows=BATCH_ROWS,
                                               key_range=None if key_range == (None, None) else key_range,
                                               cap=max(read_cap(ds), planned.watermark_to or WATERMARK_FLOOR))
        with prefetch(batches) as batches_read, RowHasher(secret, ds, keystore.hmac_algorithm()) as hasher, \
                _Rejected(run, part, keystore) as rejected:
            cross = CrossrefCheck(ds, secret, published_refs(run.home.state), day, keystore.hmac_algorithm())
            staged = PartFiles(run.folder, part, ds, keystore)
            try:
                for batch, last in _with_last(batches_read):
                    read.add(batch)
                    progress.stage("reading and checking", rows=read.rows)
                    _refuse_bad_watermarks(ds, batch)
                    verdict = validator.check(batch)
                    if last:
                        validator.end_input()  # a GX worker runs its last chunk while this batch is staged
                    key_ref, fingerprint = hasher.hashes(verdict.good)
                    staged.write(_append(verdict.good, key_ref, fingerprint))
                    cross.add(verdict.good)
                    rejected.write(verdict.rejected, hasher)
                    checkpoint("extract")
            finally:
                staging = staged.close()
        summary = validator.summary()  # waits for the GX worker's counts
    finally:
        validator.close()
        progress.done()
    run.save(staging, part)
    run.save(cross.result(), part)
    run.save(Extracted(utc_now(), part, key_range, read.rows, read.deletes, read.batches), part)
    result = Validated(at=utc_now(), part=part, rows=read.rows, good=read.rows - rejected.rows,
                       good_deletes=staging.deletes, rejected=rejected.rows, summary=summary,
                       gx=GxUse(validator.gx_where, round(validator.gx_seconds, 3), validator.gx_worker_peak_kib))
    run.save(result, part)
    checkpoint("staged")
    return result


def protect(run: Run) -> Protected | None:
    """Pass the gate, then shape good rows into the version's files: 不予共享 dropped,
    有条件共享 encrypted, unchanged rows left out. None: nothing new, nothing to protect."""
    from sharing.index import StateIndex
    from sharing.publish import StagedRun, write_version_files
    from sharing.store import SharingStore
    from validation.crossref import merge_crossref

    ds = run.dataset
    if run.require(Plan).nothing_new:
        return None
    keystore = Keystore(run.home.keystore)
    run.save(merge_crossref(run.per_part(CrossrefResult), ds.id))
    index = StateIndex(run.home.state, ds.id)
    state_rows = index.rows()  # before the version's files exist: the state they change
    staged = StagedRun(run.folder, tuple(run.require(Staged, p) for p in run.parts))
    protected = write_version_files(SharingStore(run.home.store, ds.id), index, ds, keystore, staged, run.run_id,
                                    run.full)
    checkpoint("protect")
    _gate(run, keystore, protected, state_rows)
    run.save(protected)
    return protected


def publish(run: Run) -> SyncResult:
    """Make the version visible, keep the quarantine, then advance the watermark."""
    from lineage import openlineage
    from lineage.audit import AccessLog
    from lineage.runs import save_run_record
    from sharing.disputes import clear_changed
    from sharing.index import StateIndex
    from sharing.publish import INDEX_DELTA, publish_version
    from sharing.state import SyncState, read_state, write_state
    from sharing.store import SharingStore
    from sharing.verify import check_consistency

    ds = run.dataset
    planned = run.require(Plan)
    if planned.nothing_new:
        _finish(run)
        return SyncResult(ds.id, run.run_id, None, reason="nothing new at the source")
    protected = run.load(Protected)
    if protected is None:
        raise InternalError(f"{ds.id} run {run.run_id}: publish called before protect finished; rerun the sync")
    keystore = Keystore(run.home.keystore)
    record = run.record()
    quarantined = record.validate.rejected if record.validate else 0
    manifest = None
    store = SharingStore(run.home.store, ds.id)
    found = check_consistency(store, keystore, run.home.state, repair=run.full)  # before every publish
    if found.pending is not None and found.pending_run == run.run_id:
        manifest = found.pending  # this run's version became visible before a crash: record it, never twice
    elif found.pending is not None and not run.full:
        raise IntegrityError(f"{ds.id}: version {found.pending.version} of run {found.pending_run} is not recorded in "
                             f"the sync state; run 'govshare sync {ds.id}' to finish it first")
    elif protected.changes:
        access_log = AccessLog.of(run.home, keystore)
        checkpoint = access_log.checkpoint(f"publish {ds.id}")  # signed before the version, named in its manifest
        manifest = publish_version(store, keystore, ds, record, access_log={
            **access_log.head().to_json(), "checkpoint": {"size": checkpoint["size"], "root": checkpoint["root"]}})
    if manifest is not None:
        StateIndex(run.home.state, ds.id).add(run.file(INDEX_DELTA), manifest.version, replace=manifest.kind == "snapshot",
                                              growth=protected.new_keys - protected.deletes)
        clear_changed(run.home, ds.id, run.file(INDEX_DELTA), manifest.version)
    version = manifest.version if manifest else None
    _keep_quarantine(run, keystore, version, blocked=False)
    _quality_feedback(run, keystore, version)
    state = read_state(run.home.state, ds.id)
    high = planned.watermark_to
    if state.watermark is not None and (high is None or state.watermark > high):
        high = state.watermark  # a lookback re-read never moves the watermark back
    write_state(run.home.state, ds.id, SyncState(high, version or state.version, run.run_id,
                                                 manifest.digest if manifest else state.manifest_sha256))
    run.save(Published(utc_now(), version, manifest.digest if manifest else None))
    record = run.record()
    save_run_record(run.home, record)
    openlineage.emit_complete(run.home.lineage, ds, record)
    _finish(run)
    if manifest is None:
        return SyncResult(ds.id, run.run_id, None, quarantined=quarantined,
                          reason="every new row was rejected or changed nothing; the quarantine holds them")
    return SyncResult(ds.id, run.run_id, manifest.version, protected.upserts, protected.deletes, quarantined)


def sync(dataset_id: str, full: bool = False, catalog: Catalog | None = None, home: Home | None = None,
         run_id: str | None = None) -> SyncResult:
    """One whole sync outside Airflow: the same stage functions the DAG's tasks call."""
    from sharing.store import SyncLease

    run = start(dataset_id, run_id, full, catalog, home, hold="process")
    progress = Progress(f"sync {dataset_id}")
    try:
        warm_up()
        progress.stage("planning")
        for part in plan(run):
            ingest(run, part)
        progress.stage("protecting (encrypting, writing the version's files)")
        protect(run)
        progress.stage("publishing (signing the manifest)")
        return publish(run)
    except BaseException:
        if not _visible_unrecorded(run):
            _finish(run)  # a failed sync in a row is not resumed: what it staged would only fill the disk
        raise
    finally:
        progress.done()
        SyncLease(run.home.leases, run.dataset.id).release(run.run_id)


# -- helpers ---------------------------------------------------------------------------------


def read_cap(ds: Dataset) -> datetime:
    """The latest updated_at a run reads as a change time: now at the sources' zone plus the
    dataset's source.future_tolerance (naive local time, like updated_at)."""
    return datetime.now(SOURCE_ZONE).replace(tzinfo=None, microsecond=0) + ds.future_tolerance


def _bad_watermark_error(ds: Dataset, rows: int, cap: datetime) -> ConfigError:
    return ConfigError(
        f"dataset {ds.id}: {rows} row(s) of source {ds.connection_id} have a {ds.watermark_column!r} that is no usable "
        f"watermark (unreadable, before {WATERMARK_FLOOR:%Y-%m-%d} or after now + {_duration(ds.future_tolerance)}, "
        f"{cap:%Y-%m-%d %H:%M:%S}); source.bad_watermark is 'fail': fix those rows at the source, "
        "or set it to 'quarantine'"
    )


def _refuse_bad_watermarks(ds: Dataset, batch) -> None:  # noqa: ANN001 - a pyarrow batch
    """Under bad_watermark: fail, a row of no usable updated_at written since the plan stops the run too."""
    from common.schema import UPDATED_AT

    if ds.bad_watermark == "fail" and batch.column(UPDATED_AT).null_count:
        raise _bad_watermark_error(ds, batch.column(UPDATED_AT).null_count, read_cap(ds))


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Tally:
    """Rows, deletes and batches read from the source."""

    def __init__(self) -> None:
        self.rows = self.deletes = self.batches = 0

    def add(self, batch) -> None:  # noqa: ANN001 - a pyarrow batch
        import pyarrow.compute as pc

        from common.schema import IS_DELETED

        self.rows += batch.num_rows
        self.deletes += int(pc.sum(pc.equal(batch.column(IS_DELETED), 1)).as_py() or 0)
        self.batches += 1


class _Rejected:
    """The part's rejected rows, with the pseudonymous ref of their key, in the run's encrypted
    quarantine file (opened by the first rejected row)."""

    def __init__(self, run: Run, part: int, keystore: Keystore) -> None:
        from validation.quarantine import REJECTED

        self.path = run.file(REJECTED.format(part=part))
        self._key = run.dataset.key
        self._keystore = keystore
        self._writer = None
        self.rows = 0

    def write(self, rows, hasher) -> None:  # noqa: ANN001 - a pyarrow batch, a RowHasher
        import pyarrow as pa

        from keys.protection import quarantine_encryption
        from keys.pseudonyms import KEY_REF, REF_TYPE
        from validation.quarantine import SEALED_AS

        if not rows.num_rows:
            return
        refs = hasher.key_refs(rows.column(self._key))
        schema = pa.schema([f.with_nullable(True) for f in rows.schema]).append(pa.field(KEY_REF, REF_TYPE))
        refused = pa.RecordBatch.from_arrays([*rows.columns, refs], schema=schema)
        if self._writer is None:
            self._writer = quarantine_encryption(self._keystore).writer(self.path, refused.schema, name=SEALED_AS)
        self._writer.write_batch(refused)
        self.rows += refused.num_rows

    def __enter__(self) -> _Rejected:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()


def _gate(run: Run, keystore: Keystore, protected: Protected, state_rows: int) -> None:
    """The validation gate: past the catalog's threshold nothing is published (exit 5)."""
    from dataclasses import replace

    from lineage import openlineage
    from lineage.runs import save_run_record
    from sharing.store import SharingStore
    from validation.gate import judge

    ds = run.dataset
    validated = run.record().validate
    if validated is None:
        raise InternalError(f"{ds.id} run {run.run_id}: protect before every part was ingested; rerun the sync")
    gate = judge(ds, validated, protected, state_rows)
    if not gate.blocked:
        run.save(gate)
        return
    current = SharingStore(run.home.store, ds.id).latest()
    run.save(replace(gate, current_version=current))
    _keep_quarantine(run, keystore, None, blocked=True)
    _quality_feedback(run, keystore, None)
    record = run.record()
    save_run_record(run.home, record)
    openlineage.emit_fail(run.home.lineage, ds, record, gate.why or "")
    _finish(run)
    stays = f"version {current} stays current" if current else "no version is published"
    raise GateBlocked(f"{ds.id}: the validation gate blocked publication: {gate.why}; nothing published, {stays}, "
                      f"the watermark stays; see 'govshare lineage {ds.id}' and the quarantine")


def _quality_feedback(run: Run, keystore: Keystore, version: int | None) -> None:
    """The run's 数据质量反馈 for the source department: counts per rule, masked keys only."""
    from validation.quality import FeedbackInputs, write_run_feedback
    from validation.quarantine import run_files

    record = run.record()
    findings = FeedbackInputs(record.validate.summary if record.validate else None, record.crossref, record.gate, version)
    files = run_files(run.home.quarantine / run.dataset.id, run.run_id)
    run.save(write_run_feedback(run.dataset, run.run_id, keystore, files, findings,
                                run.home.root / "reports" / "quality" / run.dataset.id))


def _keep_quarantine(run: Run, keystore: Keystore, version: int | None, blocked: bool) -> None:
    """Move the run's rejected rows (encrypted) into the dataset's quarantine and update its cases."""
    from sharing.publish import MARKERS
    from validation.quarantine import REJECTED, keep_rejected, update_cases

    record = run.record()
    folder = run.home.quarantine / run.dataset.id
    failed = record.validate.summary.failed_by_rule() if record.validate and record.validate.summary else {}
    moved = keep_rejected(folder, run.run_id, [run.file(REJECTED.format(part=p)) for p in run.parts], failed, version)
    if not moved and blocked:
        return
    good = [] if blocked else [run.file(MARKERS.format(part=p)) for p in run.parts]
    run.save(update_cases(folder, run.dataset.key, keystore, run.run_id, moved, good, version))


def _append(good, key_ref, fingerprint):  # noqa: ANN001, ANN202 - pyarrow batches
    """Good rows with their _key_ref and _fingerprint."""
    import pyarrow as pa

    from keys.pseudonyms import FINGERPRINT, KEY_REF, REF_TYPE

    schema = good.schema.append(pa.field(KEY_REF, REF_TYPE)).append(pa.field(FINGERPRINT, REF_TYPE))
    return pa.RecordBatch.from_arrays([*good.columns, key_ref, fingerprint], schema=schema)


def _visible_unrecorded(run: Run) -> bool:
    """Did this run's version become visible without the state recording it (a failure late in
    publish)? Then its work folder stays: the next sync finishes the version from it. When in
    doubt, the folder stays too."""
    from sharing.state import read_state
    from sharing.store import SharingStore

    try:
        store = SharingStore(run.home.store, run.dataset.id)
        latest = store.latest()
        if latest is None:
            return False
        return (store.read_manifest(latest).doc.get("run_id") == run.run_id
                and read_state(run.home.state, run.dataset.id).version != latest)
    except Exception:  # noqa: BLE001 - a damaged store or state: keep what the run has, the next sync says why
        return True


def handover(run: Run):  # noqa: ANN201 - a sharing.handover.Handover
    """The run's stage hand-over through an object store (inert for a local store)."""
    from sharing.handover import Handover

    return Handover(run.home.store, run.home.work, run.dataset.id, run.run_id)


def _finish(run: Run) -> None:
    from sharing.store import SharingStore, SyncLease

    SharingStore(run.home.store, run.dataset.id).discard(run.run_id)
    shutil.rmtree(run.folder, ignore_errors=True)
    handover(run).drop()
    SyncLease(run.home.leases, run.dataset.id).release(run.run_id)


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
