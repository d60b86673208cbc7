"""Writing a version: protected data files, then a signed manifest chained to its predecessor."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from govshare.catalog import Dataset
from govshare.schema import IS_DELETED, arrow_type, fields_schema
from keys.keystore import Keystore
from keys.protection import column_encryption, decryption_properties
from sharing.changes import FINGERPRINT, INDEX_SCHEMA, KEY_REF, index_path
from sharing.decide import decide
from sharing.read import base_version, read_view
from sharing.store import MANIFEST_FORMAT, Manifest, SharingStore, canonical_json, sha256_file
from sharing.verify import verify_chain

if TYPE_CHECKING:
    from govshare.pipeline import Run

UPSERTS = "upserts.parquet"
DELETES = "deletes.parquet"
INDEX_DELTA = "index-delta.parquet"
# Published beside the fields: pseudonymous key ref and row fingerprint (hashes, no values), so
# readers can match disputes and state without decrypting keys. Never delivered to subscribers.
REF_FIELDS = (INDEX_SCHEMA.field(KEY_REF), INDEX_SCHEMA.field(FINGERPRINT))
BATCH_ROWS = 100_000


def protection_plan(dataset: Dataset, columns: list[str]) -> dict[str, list[str]]:
    """Master key name -> the given columns it encrypts: every 有条件共享 column among them."""
    conditional = [c for c in columns if dataset.field(c).sharing == "conditional"]
    return {dataset.conditional_key: conditional} if conditional else {}


def write_version_files(run: Run, keystore: Keystore) -> dict[str, Any]:
    """From the run's good rows: what changed against the published state, as upserts and deletes.

    Per key only the last change of the run counts. A delta publishes rows whose fingerprint
    differs from the state index's (or that are new) and deletes of keys the state holds. A
    snapshot (--full, or the first version) publishes every row and deletes every key of the
    current state that it no longer holds.
    """
    ds = run.dataset
    store = SharingStore(run.home.store, ds.id)
    staged = store.stage(run.run_id)
    decrypt = decryption_properties(keystore)
    goods = [pq.ParquetFile(run.file(f"good-{part}.parquet"), decryption_properties=decrypt, pre_buffer=False)
             for part in run.parts]
    latest = store.latest()
    kind = "snapshot" if run.full or latest is None else "delta"
    decision = decide(goods, kind == "snapshot", index_path(run.home.state, ds.id), run.file(INDEX_DELTA),
                      run.file("scratch"))
    publish = decision.publish

    published = [f.name for f in ds.published_fields]
    upsert_plan = protection_plan(ds, published)
    upsert_protection = column_encryption(keystore, ds.footer_key, upsert_plan)
    explicit_deletes: list[pa.Array] = []
    upserts = offset = 0
    upsert_schema = fields_schema(ds, tuple(published)).append(REF_FIELDS[0]).append(REF_FIELDS[1])
    with pq.ParquetWriter(staged / UPSERTS, upsert_schema, compression="zstd",
                          encryption_properties=upsert_protection.file_encryption_properties) as writer:
        for batch in _batches(goods, [*published, IS_DELETED, KEY_REF, FINGERPRINT]):
            rows = batch.filter(pa.array(publish[offset:offset + batch.num_rows]))
            offset += batch.num_rows
            gone = pc.equal(rows.column(IS_DELETED), 1)
            kept = rows.filter(pc.invert(gone)).select(upsert_schema.names)
            writer.write_batch(kept)
            upserts += kept.num_rows
            explicit_deletes.append(rows.filter(gone).column(ds.key))

    delete_keys = pa.chunked_array(explicit_deletes, type=pa.string()).combine_chunks()
    if kind == "snapshot":
        delete_keys = _vanished(run, store, keystore, latest)
    delete_protection = _write_deletes(staged / DELETES, keystore, ds, delete_keys)
    return {
        "at": _now(),
        "kind": kind,
        "upserts": upserts,
        "deletes": len(delete_keys),
        "superseded_in_run": decision.superseded,
        "unchanged": decision.unchanged,
        "deletes_of_unpublished": decision.deletes_of_unpublished,
        "protection": {
            "fields": {f.name: _field_protection(ds, f.name, upsert_plan) for f in ds.fields},
            "upserts": upsert_protection.description,
            "deletes": delete_protection,
        },
    }


def _batches(files: list[pq.ParquetFile], columns: list[str]):  # noqa: ANN202 - an iterator of batches
    for f in files:
        yield from f.iter_batches(batch_size=BATCH_ROWS, columns=columns)


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
    protection = column_encryption(keystore, ds.footer_key, protection_plan(ds, [ds.key]))
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


def _field_protection(ds: Dataset, name: str, plan: dict[str, list[str]]) -> str:
    if ds.field(name).sharing == "none":
        return "withheld"
    return "encrypted" if any(name in cols for cols in plan.values()) else "plain"


def _file_entry(folder, name: str, role: str, rows: int) -> dict[str, Any]:  # noqa: ANN001
    path = folder / name
    return {"path": name, "role": role, "rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
