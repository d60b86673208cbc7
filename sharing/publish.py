"""Writing a version: protected data files, then a signed manifest chained to its predecessor."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from govshare.catalog import Dataset
from govshare.schema import IS_DELETED, UPDATED_AT, arrow_type, fields_schema
from keys.keystore import Keystore
from keys.protection import column_encryption, decryption_properties
from sharing.feed import latest_per_key
from sharing.read import read_state_keys
from sharing.store import MANIFEST_FORMAT, Manifest, SharingStore, canonical_json, sha256_file
from sharing.verify import verify_chain

if TYPE_CHECKING:
    from govshare.pipeline import Run

UPSERTS = "upserts.parquet"
DELETES = "deletes.parquet"
BATCH_ROWS = 100_000


def protection_plan(dataset: Dataset, columns: list[str]) -> dict[str, list[str]]:
    """Master key name -> the given columns it encrypts: every 有条件共享 column among them."""
    conditional = [c for c in columns if dataset.field(c).sharing == "conditional"]
    return {dataset.conditional_key: conditional} if conditional else {}


def write_version_files(run: Run, keystore: Keystore) -> dict[str, Any]:
    """From the run's good rows: the last change per key, split into upserts and deletes.

    A snapshot (--full, or the first version) also deletes every key of the current state that
    the snapshot no longer holds.
    """
    ds = run.dataset
    store = SharingStore(run.home.store, ds.id)
    staged = store.stage(run.run_id)
    good = pq.ParquetFile(run.file("good.parquet"), decryption_properties=decryption_properties(keystore))
    markers = good.read(columns=[ds.key, UPDATED_AT, IS_DELETED])
    winners = np.zeros(markers.num_rows, dtype=bool)
    winners[latest_per_key(markers.column(ds.key), [markers.column(UPDATED_AT)])] = True
    latest = store.latest()
    kind = "snapshot" if run.full or latest is None else "delta"

    published = [f.name for f in ds.published_fields]
    upsert_plan = protection_plan(ds, published)
    upsert_protection = column_encryption(keystore, ds.footer_key, upsert_plan)
    explicit_deletes: list[pa.Array] = []
    upserts = 0
    offset = 0
    with pq.ParquetWriter(staged / UPSERTS, fields_schema(ds, tuple(published)), compression="zstd",
                          encryption_properties=upsert_protection.file_encryption_properties) as writer:
        for batch in good.iter_batches(batch_size=BATCH_ROWS):
            chosen = batch.filter(pa.array(winners[offset:offset + batch.num_rows]))
            offset += batch.num_rows
            deleted = pc.equal(chosen.column(IS_DELETED), 1)
            rows = chosen.filter(pc.invert(deleted)).select(published)
            writer.write_batch(rows)
            upserts += rows.num_rows
            explicit_deletes.append(chosen.filter(deleted).column(ds.key))

    delete_keys = pa.chunked_array(explicit_deletes, type=pa.string()).combine_chunks()
    if kind == "snapshot":
        # A snapshot states the whole set: what the current state holds and it lacks is deleted.
        if latest is None:
            delete_keys = pa.array([], pa.string())
        else:
            won = markers.filter(pa.array(winners))
            kept = won.filter(pc.equal(won.column(IS_DELETED), 0)).column(ds.key).combine_chunks()
            previous = read_state_keys(store, keystore, ds, latest)
            delete_keys = previous.filter(pc.invert(pc.is_in(previous, value_set=kept)))
    delete_plan = protection_plan(ds, [ds.key])
    delete_protection = column_encryption(keystore, ds.footer_key, delete_plan)
    key_schema = pa.schema([pa.field(ds.key, arrow_type(ds.field(ds.key)))])
    with pq.ParquetWriter(staged / DELETES, key_schema, compression="zstd",
                          encryption_properties=delete_protection.file_encryption_properties) as writer:
        writer.write_table(pa.table({ds.key: delete_keys}, schema=key_schema))

    return {
        "at": _now(),
        "kind": kind,
        "upserts": upserts,
        "deletes": len(delete_keys),
        "superseded_in_run": int(markers.num_rows - winners.sum()),
        "protection": {
            "fields": {f.name: _field_protection(ds, f.name, upsert_plan) for f in ds.fields},
            "upserts": upsert_protection.description,
            "deletes": delete_protection.description,
        },
    }


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
