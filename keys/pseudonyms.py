"""Pseudonyms of keys and fingerprints of rows: what lets the state, the quarantine, disputes and the
access log name a record without holding its identifier.

- ``_key_ref``: SHA-256 of a keystore secret (its 32 bytes) and the normalised key, truncated to
  16 bytes: a keyed pseudonym of the key;
- ``_fingerprint``: SHA-256 of the row's published fields as canonical text (unit separator
  between fields, NUL for null), truncated: equal fingerprints, equal published values.

DuckDB computes the hashes: vectorised over the Arrow batch, zero-copy, a standard hash whose
result does not depend on the library version (pyarrow has no row-hash kernel; pandas' hash is
about ten times slower and is not a standard function).

The hash follows the keystore's HMAC key (``algorithm``, Keystore.hmac_algorithm()):

- ``HMAC-SHA256`` (standard profile): as above, in DuckDB;
- ``HMAC-SM3`` (gm profile): ``_key_ref`` = the first 16 bytes of HMAC-SM3(secret, key UTF-8),
  ``_fingerprint`` = the first 16 bytes of SM3 of the same canonical text (DuckDB still builds
  the text, so both profiles read fields alike); the hashing is keys.sm3vec's, vectorised across
  rows in numpy.
"""

from __future__ import annotations

import os
import threading

import pyarrow as pa

from common.catalog import Dataset
from common.errors import ConfigError

KEY_REF = "_key_ref"
FINGERPRINT = "_fingerprint"
REF_TYPE = pa.binary(16)
STANDARD = "HMAC-SHA256"  # the HMAC key algorithms whose pseudonyms are defined here
GM = "HMAC-SM3"


_database: tuple[int, object] | None = None  # (pid, DuckDB connection): one in-memory database per process
_database_lock = threading.Lock()


def _cursor():  # noqa: ANN202 - a DuckDB connection
    """A cursor on this process's hashing database: opening a DuckDB database costs 10-20 ms, a
    cursor nothing. Default settings, in particular insertion order preserved: hashes come back
    in the order of their rows. A forked process opens its own."""
    import duckdb

    global _database
    with _database_lock:
        if _database is None or _database[0] != os.getpid():
            _database = (os.getpid(), duckdb.connect())
        return _database[1].cursor()


class RowHasher:
    """Key refs and fingerprints for the batches of one stage, on one DuckDB cursor (a connection
    per batch costs more than the hashing of a small batch)."""

    def __init__(self, secret: bytes, dataset: Dataset | None = None, algorithm: str = STANDARD) -> None:
        if algorithm not in (STANDARD, GM):
            raise ConfigError(f"a {algorithm} key does not make key pseudonyms: the keystore's HMAC key is "
                              f"{STANDARD} or {GM}")
        self._rows_query = self._text_query = ""
        self._gm = None
        if algorithm == GM:
            from keys.sm3vec import HmacSM3

            self._gm = HmacSM3(secret)
            self._key = dataset.key if dataset is not None else ""
        if dataset is not None:  # without one: key refs only
            published = [f.name for f in dataset.published_fields]
            text = ", ".join(f"coalesce(CAST({_quote(name)} AS VARCHAR), chr(0))" for name in published)
            self._rows_query = (f"SELECT {_key_ref_sql(_quote(dataset.key))} AS k, "
                                f"{_hash16_sql(f'concat_ws(chr(31), {text})')} AS f FROM rows")
            self._text_query = f"SELECT concat_ws(chr(31), {text}) AS t FROM rows"
        self._keys_query = f"SELECT {_key_ref_sql('k')} AS k FROM keys"
        self._params = {"secret": secret.hex()}
        self._con = _cursor()

    def hashes(self, batch: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
        """(key refs, fingerprints) of a batch of normalised rows, in row order."""
        if batch.num_rows == 0:
            return pa.array([], pa.binary(16)), pa.array([], pa.binary(16))
        if self._gm is not None:
            return self._gm_hashes(batch)
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
        if self._gm is not None:
            return self._gm.digests(self._gm_keys(keys), 16)
        self._con.register("keys", pa.table({"k": keys}))
        try:
            out = self._con.sql(self._keys_query, params=self._params).to_arrow_table()
        finally:
            self._con.unregister("keys")
        return _binary16(out.column("k"))

    def _gm_hashes(self, batch: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
        from keys.sm3vec import sm3_digests

        self._con.register("rows", batch)
        try:
            text = self._con.sql(self._text_query).to_arrow_table().column("t")
        finally:
            self._con.unregister("rows")
        return self.key_refs(batch.column(self._key)), sm3_digests(text, 16)

    def _gm_keys(self, keys: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
        """The keys as text, as DuckDB casts them for the standard path (``chr(31) || key``)."""
        kind = keys.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            return keys
        self._con.register("keys", pa.table({"k": keys}))
        try:
            return self._con.sql("SELECT CAST(k AS VARCHAR) AS k FROM keys").to_arrow_table().column("k")
        finally:
            self._con.unregister("keys")

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> RowHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_fingerprints(batch: pa.RecordBatch, dataset: Dataset, secret: bytes,
                      algorithm: str = STANDARD) -> pa.RecordBatch:
    """The batch with _key_ref and _fingerprint appended (computed over published fields)."""
    with RowHasher(secret, dataset, algorithm) as hasher:
        key_ref, fingerprint = hasher.hashes(batch)
    columns = [*batch.columns, key_ref, fingerprint]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema.append(pa.field(KEY_REF, REF_TYPE)).append(pa.field(FINGERPRINT, REF_TYPE)))


def key_refs(keys: pa.Array, secret: bytes, algorithm: str = STANDARD) -> pa.Array:
    """Pseudonymous refs of normalised keys, as the state index holds them (same secret, same hash)."""
    with RowHasher(secret, algorithm=algorithm) as hasher:
        return hasher.key_refs(keys)


def last_per_ref(rows: pa.Table) -> pa.Table:
    """One row per _key_ref: its last one, in the order of those last rows."""
    import pyarrow.compute as pc

    positions = pa.array(range(rows.num_rows), pa.int64())
    last = rows.append_column("_p", positions).group_by(KEY_REF).aggregate([("_p", "max")]).column("_p_max")
    return rows.take(pc.take(last, pc.array_sort_indices(last)))


def _binary16(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks().cast(pa.binary(16))


def _hash16_sql(data: str) -> str:
    """The first 16 bytes of SHA-256 of a text or blob expression."""
    return f"unhex(substr(sha256({data}), 1, 32))"


def _key_ref_sql(key: str) -> str:
    """The pseudonym of a key: the one definition every reader and writer of key refs shares.

    SHA-256 over the secret's 32 bytes, a unit separator and the key's UTF-8 bytes: for keys of up
    to 22 bytes (ID numbers, USCCs) one SHA-256 block, half the work of hashing the secret in hex.
    """
    return _hash16_sql(f"unhex($secret) || encode(chr(31) || {key})")


def _quote(identifier: str) -> str:
    """Catalog names are validated lower_snake_case; quoting keeps DuckDB keywords harmless."""
    return '"' + identifier.replace('"', '""') + '"'
