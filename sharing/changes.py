"""Change detection against the last published state.

Every good row gets two 16-byte columns before it is published:

- ``_key_ref``: SHA-256 of a keystore secret and the normalised key, truncated: a pseudonym of the
  key, so the state index holds no identifier in clear;
- ``_fingerprint``: SHA-256 of the row's published fields as canonical text (unit separator
  between fields, NUL for null), truncated.

The state index (``GOVSHARE_HOME/state/<dataset>/index.parquet``: key_ref, fingerprint, version)
describes the current published state. A re-read row whose fingerprint equals the index's is not
published again; a delete of a key the index does not hold is no change. The index is rewritten
after each publish, streaming, and a stale index only ever causes a harmless re-publication.

DuckDB computes the hashes: vectorised over the Arrow batch, zero-copy, a standard hash whose
result does not depend on the library version (pyarrow has no row-hash kernel; pandas' hash is
about ten times slower and is not a standard function).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from govshare.catalog import Dataset

KEY_REF = "_key_ref"
FINGERPRINT = "_fingerprint"
VERSION = "version"
INDEX_SCHEMA = pa.schema([(KEY_REF, pa.binary(16)), (FINGERPRINT, pa.binary(16)), (VERSION, pa.int64())])
_SCAN_ROWS = 1_000_000


class RowHasher:
    """Key refs and fingerprints for the batches of one stage, on one DuckDB connection (a
    connection per batch costs more than the hashing of a small batch)."""

    def __init__(self, secret: bytes, dataset: Dataset | None = None) -> None:
        import duckdb

        self._rows_query = ""
        if dataset is not None:  # without one: key refs only
            published = [f.name for f in dataset.published_fields]
            text = ", ".join(f"coalesce(CAST({_quote(name)} AS VARCHAR), chr(0))" for name in published)
            self._rows_query = (f"SELECT {_key_ref_sql(_quote(dataset.key))} AS k, "
                                f"{_hash16_sql(f'concat_ws(chr(31), {text})')} AS f FROM rows")
        self._keys_query = f"SELECT {_key_ref_sql('k')} AS k FROM keys"
        self._params = {"secret": secret.hex()}
        self._con = duckdb.connect()

    def hashes(self, batch: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
        """(key refs, fingerprints) of a batch of normalised rows, in row order."""
        if batch.num_rows == 0:
            return pa.array([], pa.binary(16)), pa.array([], pa.binary(16))
        self._con.register("rows", batch)
        try:
            out = self._con.sql(self._rows_query, params=self._params).to_arrow_table()
        finally:
            self._con.unregister("rows")
        return _binary16(out.column("k")), _binary16(out.column("f"))

    def key_refs(self, keys: pa.Array) -> pa.Array:
        """Pseudonymous refs of normalised keys (null key: null ref)."""
        if len(keys) == 0:
            return pa.array([], pa.binary(16))
        self._con.register("keys", pa.table({"k": keys}))
        try:
            out = self._con.sql(self._keys_query, params=self._params).to_arrow_table()
        finally:
            self._con.unregister("keys")
        return _binary16(out.column("k"))

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> RowHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_fingerprints(batch: pa.RecordBatch, dataset: Dataset, secret: bytes) -> pa.RecordBatch:
    """The batch with _key_ref and _fingerprint appended (computed over published fields)."""
    with RowHasher(secret, dataset) as hasher:
        key_ref, fingerprint = hasher.hashes(batch)
    columns = [*batch.columns, key_ref, fingerprint]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema.append(INDEX_SCHEMA.field(KEY_REF)).append(INDEX_SCHEMA.field(FINGERPRINT)))


def key_refs(keys: pa.Array, secret: bytes) -> pa.Array:
    """Pseudonymous refs of normalised keys, as the state index holds them (same secret, same hash)."""
    with RowHasher(secret) as hasher:
        return hasher.key_refs(keys)


def index_refs(state_dir: Path, dataset_id: str) -> pa.Array:
    """Every key ref of a dataset's current published state (empty before its first version)."""
    path = index_path(state_dir, dataset_id)
    if not path.is_file():
        return pa.array([], pa.binary(16))
    return pq.read_table(path, columns=[KEY_REF]).column(KEY_REF).combine_chunks()


def index_path(state_dir: Path, dataset_id: str) -> Path:
    return state_dir / dataset_id / "index.parquet"


def write_index(state_dir: Path, dataset_id: str, delta: Path, version: int, replace: bool) -> None:
    """Fold a version's index delta (key_ref, fingerprint, change) into the index, atomically and
    streaming. ``replace``: the version is a snapshot, so the delta's upserts are the whole state.
    """
    path = index_path(state_dir, dataset_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    changes = pq.ParquetFile(delta)
    with pq.ParquetWriter(tmp, INDEX_SCHEMA, compression="none", use_dictionary=[VERSION]) as writer:  # hashes neither compress nor repeat
        if path.is_file() and not replace:
            changed = changes.read(columns=[KEY_REF]).column(KEY_REF).combine_chunks()  # a delta: small
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_SCAN_ROWS):
                writer.write_batch(batch.filter(pc.invert(pc.is_in(batch.column(KEY_REF), value_set=changed))))
        for batch in changes.iter_batches(batch_size=_SCAN_ROWS):
            upserts = batch.filter(pc.equal(batch.column("change"), "upsert"))
            versions = pa.repeat(pa.scalar(version, pa.int64()), upserts.num_rows)
            writer.write_batch(pa.RecordBatch.from_arrays(
                [upserts.column(KEY_REF), upserts.column(FINGERPRINT), versions], schema=INDEX_SCHEMA))
    os.replace(tmp, path)


def _binary16(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks().cast(pa.binary(16))


def _hash16_sql(text: str) -> str:
    """The first 16 bytes of SHA-256 of a text expression."""
    return f"unhex(substr(sha256({text}), 1, 32))"


def _key_ref_sql(key: str) -> str:
    """The pseudonym of a key: the one definition every reader and writer of key refs shares."""
    return _hash16_sql(f"$secret || chr(31) || {key}")


def _quote(identifier: str) -> str:
    """Catalog names are validated lower_snake_case; quoting keeps DuckDB keywords harmless."""
    return '"' + identifier.replace('"', '""') + '"'
