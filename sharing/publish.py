"""Writing a version: protected data files, then a signed manifest chained to its predecessor."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.catalog import Dataset
from common.schema import IS_DELETED, arrow_type, fields_schema
from keys.keystore import Keystore
from common.errors import IntegrityError
from keys.protection import Protection, column_encryption, encrypted_batches
from sharing.changes import FINGERPRINT, INDEX_SCHEMA, KEY_REF
from sharing.index import StateIndex
from sharing.decide import MARKERS_SCHEMA, decide, markers
from sharing.read import base_version, read_view
from sharing.store import MANIFEST_FORMAT, Manifest, SharingStore, canonical_json, sha256_file
from sharing.verify import verify_chain

if TYPE_CHECKING:
    from govshare.pipeline import Run

UPSERTS = "upserts.parquet"
DELETES = "deletes.parquet"
INDEX_DELTA = "index-delta.parquet"
CANDIDATES = "candidates-{part}.parquet"  # a run's staged files per part (PartFiles)
MARKERS = "markers-{part}.parquet"
DELETED = "deleted-{part}.parquet"
# Published beside the fields: pseudonymous key ref and row fingerprint (hashes, no values), so
# readers can match disputes and state without decrypting keys. Never delivered to subscribers.
REF_FIELDS = (INDEX_SCHEMA.field(KEY_REF), INDEX_SCHEMA.field(FINGERPRINT))
BATCH_ROWS = 100_000


def protection_plan(dataset: Dataset, columns: list[str]) -> dict[str, list[str]]:
    """Master key name -> the given columns it encrypts: every 有条件共享 column among them."""
    conditional = [c for c in columns if dataset.field(c).sharing == "conditional"]
    return {dataset.conditional_key: conditional} if conditional else {}


def upsert_protection(keystore: Keystore, dataset: Dataset) -> Protection:
    """Fresh data keys for an upserts file (staged candidates, or the version's own)."""
    published = [f.name for f in dataset.published_fields]
    return column_encryption(keystore, dataset.footer_key, protection_plan(dataset, published))


def delete_protection(keystore: Keystore, dataset: Dataset) -> Protection:
    """Fresh data keys for a file of deleted keys: protected like the key field."""
    return column_encryption(keystore, dataset.footer_key, protection_plan(dataset, [dataset.key]))


# Dictionary encoding pays only where values repeat (code lists, divisions). On identifiers, names
# and addresses it costs time and makes the file bigger (1M population rows: 0.60 s and 29 MB with
# dictionaries on every column, 0.50 s and 25 MB with them on the coded columns only).
_CODED_CHECKS = frozenset({"code_list", "division", "issuer_code"})


def dictionary_columns(dataset: Dataset, names: list[str]) -> list[str]:
    """The columns among ``names`` worth dictionary-encoding: those whose values come from a code list."""
    return [n for n in names if n in dataset.field_names and any(c.name in _CODED_CHECKS for c in dataset.field(n).checks)]


def upsert_schema(dataset: Dataset) -> pa.Schema:
    """The columns of a version's upserts file: the published fields, then the ref fields."""
    published = tuple(f.name for f in dataset.published_fields)
    return fields_schema(dataset, published).append(REF_FIELDS[0]).append(REF_FIELDS[1])


class PartFiles:
    """The good rows of one part of a run, staged in the form the version needs them, so that a
    version which publishes every row of a one-part run takes its upserts file as it is:

    - ``candidates-<part>``: the rows that are not deletes, already in the version's upserts
      format (published fields and ref fields; 有条件共享 columns encrypted, footer encrypted),
      不予共享 fields dropped here, at the first write;
    - ``markers-<part>``: per good row the key ref, fingerprint, updated_at and is_deleted, what
      the publish decision reads (pseudonyms and times only, like the state index: not encrypted);
    - ``deleted-<part>``: the key and key ref of the deletes, protected like a version's deletes.
    """

    def __init__(self, run: Run, part: int, keystore: Keystore) -> None:
        ds = self.dataset = run.dataset
        self._run, self._part, self._keystore = run, part, keystore
        self.schema = upsert_schema(ds)
        self.protection = upsert_protection(keystore, ds)
        self.candidates = self.markers = self.deletes = 0
        self._candidates = pq.ParquetWriter(run.file(CANDIDATES.format(part=part)), self.schema, compression="zstd",
                                            use_dictionary=dictionary_columns(ds, self.schema.names),
                                            encryption_properties=self.protection.file_encryption_properties)
        # hashes neither compress nor repeat
        self._markers = pq.ParquetWriter(run.file(MARKERS.format(part=part)), MARKERS_SCHEMA, compression="none",
                                         use_dictionary=False)
        self._deleted: pq.ParquetWriter | None = None

    def write(self, good: pa.RecordBatch) -> None:
        """Good, normalised rows with their _key_ref and _fingerprint."""
        self._markers.write_batch(markers(good))
        self.markers += good.num_rows
        gone = pc.equal(good.column(IS_DELETED), 1)
        deletes = pc.sum(gone.cast(pa.int64())).as_py() or 0
        if deletes:
            self._write_deleted(good.filter(gone))
            good = good.filter(pc.invert(gone))
        self._candidates.write_batch(good.select(self.schema.names))
        self.candidates += good.num_rows

    def _write_deleted(self, rows: pa.RecordBatch) -> None:
        if self._deleted is None:
            key = self.dataset.key
            schema = pa.schema([pa.field(key, arrow_type(self.dataset.field(key)), nullable=False), REF_FIELDS[0]])
            protection = delete_protection(self._keystore, self.dataset)
            self._deleted = pq.ParquetWriter(self._run.file(DELETED.format(part=self._part)), schema, compression="zstd",
                                             encryption_properties=protection.file_encryption_properties)
        self._deleted.write_batch(rows.select([self.dataset.key, KEY_REF]))
        self.deletes += rows.num_rows

    def close(self) -> dict[str, Any]:
        """Close the files; what was staged (counts and the candidates' protection, key ids only)."""
        for writer in (self._candidates, self._markers, self._deleted):
            if writer is not None:
                writer.close()
        return {"candidates": self.candidates, "markers": self.markers, "deletes": self.deletes,
                "protection": self.protection.description}


def write_version_files(run: Run, keystore: Keystore) -> dict[str, Any]:
    """From the run's staged good rows (PartFiles): what changed against the published state, as
    upserts and deletes.

    Per key only the last change of the run counts. A delta publishes rows whose fingerprint
    differs from the state index's (or that are new) and deletes of keys the state holds. A
    snapshot (--full, or the first version) publishes every row and deletes every key of the
    current state that it no longer holds. When every candidate of a one-part run is published
    (a first or full load without repeated keys), the candidates file becomes the upserts file
    unchanged; otherwise the published rows are copied out of the candidates.
    """
    ds = run.dataset
    store = SharingStore(run.home.store, ds.id)
    staged = store.stage(run.run_id)
    latest = store.latest()
    kind = "snapshot" if run.full or latest is None else "delta"
    parts = run.parts
    decision = decide([run.file(MARKERS.format(part=p)) for p in parts], kind == "snapshot",
                      StateIndex(run.home.state, ds.id), run.file(INDEX_DELTA))
    publish_live = decision.publish[~decision.deleted]
    candidates = [run.file(CANDIDATES.format(part=p)) for p in parts]
    schema = upsert_schema(ds)
    if len(parts) == 1 and publish_live.all():
        shutil.move(candidates[0], staged / UPSERTS)
        upserts, described = len(publish_live), run.stage("staged.0")["protection"]
    else:
        protection = upsert_protection(keystore, ds)
        upserts, described = 0, protection.description
        with pq.ParquetWriter(staged / UPSERTS, schema, compression="zstd", use_dictionary=dictionary_columns(ds, schema.names),
                              encryption_properties=protection.file_encryption_properties) as writer:
            for batch, keep in _selected(candidates, keystore, schema.names, publish_live):
                rows = batch.filter(pa.array(keep))
                writer.write_batch(rows)
                upserts += rows.num_rows

    if kind == "snapshot":
        delete_keys = _vanished(run, store, keystore, latest)
    else:
        deleted = [f for f in (run.file(DELETED.format(part=p)) for p in parts) if f.is_file()]
        chosen = [batch.column(ds.key).filter(pa.array(keep))
                  for batch, keep in _selected(deleted, keystore, [ds.key], decision.publish[decision.deleted])]
        delete_keys = pa.chunked_array(chosen, type=pa.string()).combine_chunks()
    delete_protection = _write_deletes(staged / DELETES, keystore, ds, delete_keys)
    return {
        "at": _now(),
        "kind": kind,
        "upserts": upserts,
        "deletes": len(delete_keys),
        "superseded_in_run": decision.superseded,
        "unchanged": decision.unchanged,
        "deletes_of_unpublished": decision.deletes_of_unpublished,
        "new_keys": decision.new_keys,
        "protection": {
            "fields": {f.name: _field_protection(ds, f.name, described["column_keys"]) for f in ds.fields},
            "upserts": described,
            "deletes": delete_protection,
        },
    }


def _selected(files: list[Path], keystore: Keystore, columns: list[str],
              keep: np.ndarray) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """The batches of staged files in order, each with its slice of ``keep`` (one bool per row)."""
    offset = 0
    for batch in encrypted_batches(files, keystore, columns, BATCH_ROWS):
        yield batch, keep[offset:offset + batch.num_rows]
        offset += batch.num_rows
    if offset != len(keep):
        raise IntegrityError(f"the run's staged files hold {offset} rows where its markers count {len(keep)}: "
                             "rerun the sync")


def _vanished(run: Run, store: SharingStore, keystore: Keystore, latest: int | None) -> pa.Array:
    """Keys of the current state that a snapshot no longer holds (its index delta has them not)."""
    if latest is None:
        return pa.array([], pa.string())
    ds = run.dataset
    kept = pq.read_table(run.file(INDEX_DELTA), columns=[KEY_REF]).column(KEY_REF).combine_chunks()
    manifests = [store.read_manifest(v) for v in range(1, latest + 1)]
    state = read_view(store, keystore, ds, manifests, [ds.key], base_version(manifests, latest), latest, False, with_refs=True)
    gone = state.filter(pc.invert(pc.is_in(state.column(KEY_REF), value_set=kept)))
    return gone.column(ds.key).combine_chunks()


def _write_deletes(path, keystore: Keystore, ds: Dataset, keys: pa.Array) -> dict[str, Any]:  # noqa: ANN001
    """The deleted keys, protected like the key field; returns the protection's description."""
    protection = delete_protection(keystore, ds)
    schema = pa.schema([pa.field(ds.key, arrow_type(ds.field(ds.key)), nullable=False)])
    with pq.ParquetWriter(path, schema, compression="zstd", encryption_properties=protection.file_encryption_properties) as writer:
        writer.write_table(pa.table({ds.key: keys}, schema=schema))
    return protection.description


def publish_version(run: Run, keystore: Keystore) -> Manifest:
    """Sign the manifest, link it to version N-1 and make the staged folder version N atomically."""
    ds = run.dataset
    store = SharingStore(run.home.store, ds.id)
    staged = store.staging_dir / run.run_id
    record = run.record()
    protected = record["protect"]
    files = [
        _file_entry(staged, UPSERTS, "upserts", protected["upserts"]),
        _file_entry(staged, DELETES, "deletes", protected["deletes"]),
    ]
    with store.publish_lock():
        latest = store.latest()
        previous = verify_chain(store, keystore, latest)[-1] if latest else None  # never extend a broken chain
        version = (latest or 0) + 1
        doc = {
            "format": MANIFEST_FORMAT,
            "dataset": ds.id,
            "version": version,
            "kind": protected["kind"],
            "created_at": _now(),
            "run_id": run.run_id,
            "key": ds.key,
            "source": {
                "connection_id": ds.connection_id,
                "table": ds.source_table,
                "watermark": {"from": record["extract"]["watermark_from"], "to": record["extract"]["watermark_to"],
                              "from_exclusive": True, "zone": "Asia/Shanghai"},
                "rows_read": record["extract"]["rows"],
            },
            "rows": {"upserts": protected["upserts"], "deletes": protected["deletes"],
                     "quarantined": record["validate"]["rejected"]},
            "schema": [
                {"name": f.name, "type": str(arrow_type(f)), "sharing": f.sharing, "sensitivity": f.sensitivity,
                 "protection": protected["protection"]["fields"][f.name]}
                for f in ds.published_fields
            ],
            "withheld_fields": [f.name for f in ds.fields_of("none")],
            "system_columns": {KEY_REF: "SHA-256 of a keystore secret and the key, 16 bytes (pseudonym)",
                               FINGERPRINT: "SHA-256 of the published fields' canonical text, 16 bytes"},
            "protection": {"upserts": protected["protection"]["upserts"], "deletes": protected["protection"]["deletes"]},
            "files": files,
            "previous": {"version": previous.version, "manifest_sha256": previous.digest} if previous else None,
        }
        raw = canonical_json(doc)
        store.commit(staged, version, raw, keystore.sign(raw))
    return Manifest(version=version, raw=raw, doc=doc)


def _field_protection(ds: Dataset, name: str, column_keys: dict[str, list[str]]) -> str:
    if ds.field(name).sharing == "none":
        return "withheld"
    return "encrypted" if any(name in cols for cols in column_keys.values()) else "plain"


def _file_entry(folder, name: str, role: str, rows: int) -> dict[str, Any]:  # noqa: ANN001
    path = folder / name
    return {"path": name, "role": role, "rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
