"""Writing a version: protected data files, then a signed manifest chained to its predecessor."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.catalog import Dataset, masked_column
from common.errors import IntegrityError, InternalError
from common.files import DIGEST_FIELDS, canonical_json, digest_file
from common.run import ExtractTotals, Protected, RunRecord, Staged, VersionProtection
from common.schema import IS_DELETED, arrow_type, fields_schema
from common.times import SOURCE_ZONE_NAME, utc_now
from keys.datakeys import FOOTER, run_data_keys
from keys.keystore import Keystore
from keys.masking import mask_values
from keys.protection import Protection, encrypted_batches, encryption_by_id, keystore_decryption
from keys.pseudonyms import FINGERPRINT, KEY_REF
from sharing.changes import REF_FIELDS
from sharing.decide import MARKERS_SCHEMA, decide, markers
from sharing.index import StateIndex
from sharing.read import base_version, read_view
from sharing.store import MANIFEST_FORMAT, Manifest, SharingStore
from sharing.verify import verify_chain

UPSERTS = "upserts.parquet"
DELETES = "deletes.parquet"
INDEX_DELTA = "index-delta.parquet"
CANDIDATES = "candidates-{part}.parquet"  # a run's staged files per part (PartFiles)
MARKERS = "markers-{part}.parquet"
DELETED = "deleted-{part}.parquet"
BATCH_ROWS = 100_000


def key_groups(dataset: Dataset) -> dict[str, str]:
    """The data key groups of a version (keys.datakeys) -> the master key name each is kept
    under: ``footer`` (every grantee; the file and its plain columns) under the dataset's footer
    key, one group per published 有条件共享 field, named after it, and one per masked column
    (``<field>__masked``, of a field that declares a mask), under its conditional key: a masked
    grant receives the masked column's key and never the plain field's."""
    groups = {FOOTER: dataset.footer_key}
    groups.update({f.name: dataset.conditional_key for f in dataset.published_fields if f.sharing == "conditional"})
    groups.update({masked_column(f.name): dataset.conditional_key for f in dataset.masked_fields})
    return groups


def encrypted_columns(dataset: Dataset) -> list[str]:
    """The columns of a version encrypted under a group key of their own: its 有条件共享 fields
    and every masked column (masked values of any field stay encrypted, so that only a grant that
    lists the field masked reads them)."""
    return [*(f.name for f in dataset.published_fields if f.sharing == "conditional"),
            *(masked_column(f.name) for f in dataset.masked_fields)]


def with_masked(dataset: Dataset, batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with each declared mask's column appended, computed from the field's values
    (vectorised), as the version publishes them."""
    for f in dataset.masked_fields:
        assert f.mask is not None
        batch = batch.append_column(pa.field(masked_column(f.name), pa.string()),
                                    mask_values(batch.column(f.name), f.mask.first, f.mask.last))
    return batch


def run_keys(folder: Path, keystore: Keystore, dataset: Dataset) -> dict[str, str]:
    """Group -> data key id of the run whose work folder is ``folder`` (made on first use)."""
    return run_data_keys(folder, keystore, dataset.id, key_groups(dataset))


def _protection(keystore: Keystore, dataset: Dataset, keys: dict[str, str], columns: list[str]) -> Protection:
    """The footer under the run's footer data key, each 有条件共享 or masked column among
    ``columns`` under its own data key; the description names the run's data keys."""
    encrypted = set(encrypted_columns(dataset))
    by_id = {keys[c]: [c] for c in columns if c in encrypted}
    return encryption_by_id(keystore, keys[FOOTER], by_id).with_description(data_keys=dict(keys))


def upsert_protection(keystore: Keystore, dataset: Dataset, keys: dict[str, str]) -> Protection:
    """Fresh Parquet keys, under the run's data keys, for an upserts file (staged candidates, or the version's own)."""
    return _protection(keystore, dataset, keys, [*(f.name for f in dataset.published_fields),
                                                 *(masked_column(f.name) for f in dataset.masked_fields)])


def delete_protection(keystore: Keystore, dataset: Dataset, keys: dict[str, str]) -> Protection:
    """Fresh Parquet keys for a file of deleted keys: protected like the key field."""
    return _protection(keystore, dataset, keys, [dataset.key])


def deletes_schema(dataset: Dataset) -> pa.Schema:
    """A version's (and a staged part's) deletes: the key, and its pseudonym, by which views fold."""
    key = dataset.key
    return pa.schema([pa.field(key, arrow_type(dataset.field(key)), nullable=False), REF_FIELDS[0]])


# Dictionary encoding pays only where values repeat (code lists, divisions). On identifiers, names
# and addresses it costs time and makes the file bigger (1M population rows: 0.60 s and 29 MB with
# dictionaries on every column, 0.50 s and 25 MB with them on the coded columns only).
_CODED_CHECKS = frozenset({"code_list", "division", "issuer_code"})


def dictionary_columns(dataset: Dataset, names: list[str]) -> list[str]:
    """The columns among ``names`` worth dictionary-encoding: those whose values come from a code list."""
    return [n for n in names if n in dataset.field_names and any(c.name in _CODED_CHECKS for c in dataset.field(n).checks)]


def upsert_schema(dataset: Dataset) -> pa.Schema:
    """The columns of a version's upserts file: the published fields, their masked columns (of
    the fields that declare a mask), then the ref fields."""
    published = tuple(f.name for f in dataset.published_fields)
    schema = fields_schema(dataset, published)
    for f in dataset.masked_fields:
        schema = schema.append(pa.field(masked_column(f.name), pa.string()))
    return schema.append(REF_FIELDS[0]).append(REF_FIELDS[1])


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

    def __init__(self, folder: Path, part: int, dataset: Dataset, keystore: Keystore) -> None:
        ds = self.dataset = dataset
        self._folder, self._part, self._keystore = folder, part, keystore
        self.schema = upsert_schema(ds)
        self.keys = run_keys(folder, keystore, ds)
        self.protection = upsert_protection(keystore, ds, self.keys)
        self.candidates = self.markers = self.deletes = 0
        # bound to the upserts file's name: a sealed (gm) candidates file may become it unchanged
        self._candidates = self.protection.writer(folder / CANDIDATES.format(part=part), self.schema, name=UPSERTS,
                                                  use_dictionary=dictionary_columns(ds, self.schema.names))
        # hashes neither compress nor repeat
        self._markers = pq.ParquetWriter(folder / MARKERS.format(part=part), MARKERS_SCHEMA, compression="none",
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
        self._candidates.write_batch(with_masked(self.dataset, good).select(self.schema.names))
        self.candidates += good.num_rows

    def _write_deleted(self, rows: pa.RecordBatch) -> None:
        if self._deleted is None:
            protection = delete_protection(self._keystore, self.dataset, self.keys)
            self._deleted = protection.writer(self._folder / DELETED.format(part=self._part), deletes_schema(self.dataset))
        self._deleted.write_batch(rows.select([self.dataset.key, KEY_REF]))
        self.deletes += rows.num_rows

    def close(self) -> Staged:
        """Close the files; what was staged (counts and the candidates' protection, key ids only)."""
        for writer in (self._candidates, self._markers, self._deleted):
            if writer is not None:
                writer.close()
        return Staged(self.candidates, self.markers, self.deletes, self.protection.description)


@dataclass(frozen=True)
class StagedRun:
    """The staged parts of a run (PartFiles), in its work folder, in part order."""

    folder: Path
    parts: tuple[Staged, ...]

    def candidates(self) -> list[Path]:
        return [self.folder / CANDIDATES.format(part=p) for p in range(len(self.parts))]

    def markers(self) -> list[Path]:
        return [self.folder / MARKERS.format(part=p) for p in range(len(self.parts))]

    def deleted(self) -> list[Path]:
        return [f for f in (self.folder / DELETED.format(part=p) for p in range(len(self.parts))) if f.is_file()]

    @property
    def index_delta(self) -> Path:
        """What the publish decision hands the state index: key ref, fingerprint per changed key."""
        return self.folder / INDEX_DELTA


def write_version_files(store: SharingStore, index: StateIndex, dataset: Dataset, keystore: Keystore,
                        staged: StagedRun, run_id: str, full: bool) -> Protected:
    """From the run's staged good rows (PartFiles): what changed against the published state, as
    upserts and deletes.

    Per key only the last change of the run counts. A delta publishes rows whose fingerprint
    differs from the state index's (or that are new) and deletes of keys the state holds. A
    snapshot (--full, or the first version) publishes every row and deletes every key of the
    current state that it no longer holds. When every candidate of a one-part run is published
    (a first or full load without repeated keys), the candidates file becomes the upserts file
    unchanged; otherwise the published rows are copied out of the candidates.
    """
    ds = dataset
    version_dir = store.stage(run_id)
    latest = store.latest()
    kind = "snapshot" if full or latest is None else "delta"
    decision = decide(staged.markers(), kind == "snapshot", index, staged.index_delta)
    publish_live = decision.publish[~decision.deleted]
    candidates = staged.candidates()
    schema = upsert_schema(ds)
    keys = run_keys(staged.folder, keystore, ds)
    if len(staged.parts) == 1 and publish_live.all():
        shutil.move(candidates[0], version_dir / UPSERTS)
        upserts, described = len(publish_live), staged.parts[0].protection
    else:
        protection = upsert_protection(keystore, ds, keys)
        upserts, described = 0, protection.description
        with protection.writer(version_dir / UPSERTS, schema, use_dictionary=dictionary_columns(ds, schema.names)) as writer:
            for batch, keep in _selected(candidates, keystore, schema.names, publish_live, name=UPSERTS):
                rows = batch.filter(pa.array(keep))
                writer.write_batch(rows)
                upserts += rows.num_rows

    if kind == "snapshot":
        delete_keys = _vanished(store, keystore, ds, staged.index_delta, latest)
    else:
        deleted = staged.deleted()
        chosen = [batch.filter(pa.array(keep))
                  for batch, keep in _selected(deleted, keystore, [ds.key, KEY_REF], decision.publish[decision.deleted])]
        delete_keys = pa.Table.from_batches(chosen, schema=deletes_schema(ds))
    deletes_described = _write_deletes(version_dir / DELETES, keystore, ds, keys, delete_keys)
    if described.get("data_keys") != keys:
        raise IntegrityError(f"{ds.id} run {run_id}: the staged rows were encrypted under other data keys than the "
                             "run's; rerun the sync")
    return Protected(
        at=utc_now(), kind=kind, upserts=upserts, deletes=delete_keys.num_rows, superseded_in_run=decision.superseded,
        unchanged=decision.unchanged, deletes_of_unpublished=decision.deletes_of_unpublished, new_keys=decision.new_keys,
        protection=VersionProtection(
            fields={name: _field_protection(ds, name, described["column_keys"])
                    for name in [*ds.field_names, *(masked_column(f.name) for f in ds.masked_fields)]},
            upserts=described, deletes=deletes_described))


def _selected(files: list[Path], keystore: Keystore, columns: list[str], keep: np.ndarray,
              name: str | None = None) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """The batches of staged files in order, each with its slice of ``keep`` (one bool per row);
    ``name``: the name sealed files were bound to."""
    offset = 0
    for batch in encrypted_batches(files, keystore, columns, BATCH_ROWS, name=name):
        yield batch, keep[offset:offset + batch.num_rows]
        offset += batch.num_rows
    if offset != len(keep):
        raise IntegrityError(f"the run's staged files hold {offset} rows where its markers count {len(keep)}: "
                             "rerun the sync")


def _vanished(store: SharingStore, keystore: Keystore, ds: Dataset, index_delta: Path, latest: int | None) -> pa.Table:
    """Keys (and key refs) of the current state that a snapshot no longer holds (its index delta has them not)."""
    if latest is None:
        return deletes_schema(ds).empty_table()
    kept = pq.read_table(index_delta, columns=[KEY_REF]).column(KEY_REF).combine_chunks()
    manifests = [store.read_manifest(v) for v in range(1, latest + 1)]
    state = read_view(store, keystore_decryption(keystore), ds, manifests, [ds.key], base_version(manifests, latest),
                      latest, False, with_refs=True)
    gone = state.filter(pc.invert(pc.is_in(state.column(KEY_REF), value_set=kept)))
    return gone.select([ds.key, KEY_REF]).cast(deletes_schema(ds))


def _write_deletes(path, keystore: Keystore, ds: Dataset, keys: dict[str, str],  # noqa: ANN001
                   deleted: pa.Table) -> dict[str, Any]:
    """The deleted keys and their key refs, the key protected like the key field; returns the
    protection's description."""
    protection = delete_protection(keystore, ds, keys)
    schema = deletes_schema(ds)
    with protection.writer(path, schema) as writer:
        writer.write_table(deleted.select(schema.names).cast(schema))
    return protection.description


def publish_version(store: SharingStore, keystore: Keystore, dataset: Dataset, record: RunRecord,
                    access_log: Mapping[str, Any] | None = None) -> Manifest:
    """Sign the manifest of the run's staged version, link it to version N-1 and make it version N
    atomically. ``record`` says what the run read (extract), judged (validate) and staged (protect).
    ``access_log`` is the access log's head (count, hash of the last record): signed into the
    manifest, it lets ``govshare audit verify`` see records cut off the end of the log."""
    ds, window, protected = dataset, record.extract, record.protect
    if window is None or protected is None or record.validate is None:
        raise InternalError(f"{ds.id} run {record.run_id}: publish before extract, validate and protect were recorded")
    staged = store.staging_dir / record.run_id
    digest = keystore.profile.digest
    files = [
        _file_entry(staged, UPSERTS, "upserts", protected.upserts, digest),
        _file_entry(staged, DELETES, "deletes", protected.deletes, digest),
    ]
    with store.publish_lock():
        latest = store.latest()
        previous = verify_chain(store, keystore, latest)[-1] if latest else None  # never extend a broken chain
        version = (latest or 0) + 1
        doc = {
            "format": MANIFEST_FORMAT,
            "dataset": ds.id,
            "version": version,
            "kind": protected.kind,
            "created_at": utc_now(),
            "run_id": record.run_id,
            "key": ds.key,
            "source": _source(ds, window),
            "rows": {"upserts": protected.upserts, "deletes": protected.deletes, "quarantined": record.validate.rejected},
            "schema": [
                {"name": f.name, "type": str(arrow_type(f)), "sharing": f.sharing, "sensitivity": f.sensitivity,
                 "protection": protected.protection.fields[f.name]}
                for f in ds.published_fields
            ] + [
                {"name": masked_column(f.name), "type": "string", "sharing": f.sharing, "sensitivity": f.sensitivity,
                 "protection": protected.protection.fields[masked_column(f.name)], "masked_of": f.name,
                 "mask": {"first": f.mask.first, "last": f.mask.last}}
                for f in ds.masked_fields if f.mask is not None
            ],
            "withheld_fields": [f.name for f in ds.fields_of("none")],
            "system_columns": _system_columns(keystore),
            "protection": {"upserts": protected.protection.upserts, "deletes": protected.protection.deletes},
            "data_keys": [{"group": group, "key_id": key_id}
                          for group, key_id in protected.protection.upserts["data_keys"].items()],
            "files": files,
            "previous": {"version": previous.version, previous.link_field: previous.digest} if previous else None,
        }
        if digest != "SHA-256":  # the gm profile: the manifest and its files digested with SM3
            doc["digest"] = digest
        if access_log is not None:
            doc["access_log"] = {"count": int(access_log["count"]), "hash": str(access_log["hash"])}
            if access_log.get("checkpoint"):  # the signed tree (lineage.logtree) as of this publish
                doc["access_log"]["checkpoint"] = {"size": int(access_log["checkpoint"]["size"]),
                                                   "root": str(access_log["checkpoint"]["root"])}
        signer = keystore.signing_key_id()
        # a publisher key newer than the one that signed the last version (for version 1: the first
        # publisher key) is announced to pinned agents by the transitions that lead to it
        before = (store.read_signature(previous.version).get("key_id") if previous is not None
                  else keystore.publisher_keys()[0]["key_id"])
        chain = keystore.transitions(str(before), signer)
        if chain:
            doc["key_transitions"] = chain
        raw = canonical_json(doc)
        store.commit(staged, version, raw, keystore.sign(raw, signer))
    return Manifest(version=version, raw=raw, doc=doc)


def _source(ds: Dataset, window: ExtractTotals) -> dict[str, Any]:
    """The manifest's account of what was read: the view and the watermark range."""
    return {
        "connection_id": ds.connection_id,
        "table": ds.source_table,
        "watermark": {"from": window.watermark_from.isoformat() if window.watermark_from else None,
                      "to": window.watermark_to.isoformat() if window.watermark_to else None,
                      "from_exclusive": True, "zone": SOURCE_ZONE_NAME},
        "rows_read": window.rows,
    }


def _field_protection(ds: Dataset, name: str, column_keys: dict[str, list[str]]) -> str:
    if name in ds.field_names and ds.field(name).sharing == "none":
        return "withheld"
    return "encrypted" if any(name in cols for cols in column_keys.values()) else "plain"


def _file_entry(folder, name: str, role: str, rows: int, digest: str) -> dict[str, Any]:  # noqa: ANN001
    path = folder / name
    return {"path": name, "role": role, "rows": rows, "bytes": path.stat().st_size,
            DIGEST_FIELDS[digest]: digest_file(path, digest)}


def _system_columns(keystore: Keystore) -> dict[str, str]:
    """How the version's pseudonym columns are made, in the home's profile (keys.pseudonyms)."""
    if keystore.profile.name == "gm":
        return {KEY_REF: "HMAC-SM3 of the key under a keystore secret, 16 bytes (pseudonym)",
                FINGERPRINT: "SM3 of the published fields' canonical text, 16 bytes"}
    return {KEY_REF: "SHA-256 of a keystore secret and the key, 16 bytes (pseudonym)",
            FINGERPRINT: "SHA-256 of the published fields' canonical text, 16 bytes"}
