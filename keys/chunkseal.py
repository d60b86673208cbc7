"""Sealed Parquet: protected columns under SM4-GCM, one sealed chunk per row group and column.

The 国密 profile needs SM4-GCM where the standard profile uses Parquet modular encryption (PME),
and PME offers AES only. A *sealed* file is the gm profile's counterpart of a PME file, with the
same outward behaviour: a reader holding a column's data key reads the column, a reader without
it gets an IntegrityError naming the column and the key id ("no data key ..."), the plain columns
need no key, and the classes here have the surface of the pyarrow calls govshare makes
(``pq.ParquetWriter`` / ``pq.ParquetFile`` / ``pq.read_table``): swap the class, pass keys instead
of encryption or decryption properties.

The format: ONE ordinary Parquet file
-------------------------------------

A sealed ``X.parquet`` is a normal Parquet file (zstd by default). Its plain columns are stored as
usual. Each protected column keeps its name and position but is stored as a ``binary`` column in
which, per row group, row 0 holds the sealed chunk and every other row is null (n-1 nulls cost a
few bytes of run-length levels; neither statistics, dictionary nor compression are applied to these
columns). Parquet row groups are the natural unit of the chunks, so the chunks live in the row
groups they belong to: one file, one path, one digest per file in manifests and downloads, nothing
to keep in step. (The alternative, a sidecar ``X.parquet.sm4`` of sealed chunks, doubles the files
every manifest, digest, download, move and delete must handle, and a half-copied pair is a new
failure mode; it would only pay if the plain part had to stay byte-identical to an unprotected
file, which nothing here needs.)

A sealed chunk is ``nonce (12) || SM4-GCM(IPC) || tag (16)``, where IPC is the column's Arrow
array for that row group serialised as an Arrow IPC stream (one column, zstd-compressed BEFORE
encryption), encrypted in ONE call under a fresh random nonce, with the associated data binding
the format, the file's name (not its path), the file's random id, the row group index, the column,
the key id and the row count. The Parquet footer's key-value metadata holds, under
``govshare.sealed``, a JSON header written at close: format, algorithm, file id, the logical Arrow
schema (protected columns with their real types), column -> key id, the rows of every row group,
and per key id a *seal index*: an SM4-GCM tag over an empty message whose associated data is the
file, the key's columns and the list of row-group row counts. The index is what makes cutting off
or dropping whole row groups fail: each chunk's own tag says where it belongs, the index says how
many there must be.

So moving a chunk to another row group, column or file (even a file of the same name under the
same key: the random file id differs), flipping a byte of nonce, ciphertext or tag, renaming the
file (unless the reader is told the name it was sealed under, ``name=``), dropping row groups or
cutting the file: IntegrityError, naming file and column, never values or keys. The Parquet footer
is written last (and the file is written under a temporary name, renamed on ``close``), so a
crash leaves no file that opens as complete.

Trade-offs against PME with an encrypted footer (the standard profile)
-----------------------------------------------------------------------

What a reader without keys CAN see here, and cannot in a PME file with an encrypted footer:

- the plain columns in full, their statistics, and the file's row count and row groups;
- the names, logical types and key ids of the protected columns (header, schema);
- the size of each sealed chunk, i.e. of the compressed column per row group, which hints at how
  repetitive its values are (PME leaks page sizes the same way, but only with the footer key).

To mirror the standard profile, in which even the plain columns are encrypted under the footer
data key that every grantee receives, seal them too, under the footer key's id: what then remains
visible is row counts, column names and types, key ids and sizes.

What PME does that this does not: it authenticates the footer (here the plain columns and the
Parquet metadata are not authenticated by the file: the manifest's signed file digests are what
vouch for a published file; the seal index covers the row counts for every key holder);
statistics, page indexes, bloom filters and predicate push-down on protected columns (there are
none: a chunk is decrypted whole to read any row of it); reading a row-group column page by page
(here one row group's chunk is held in memory whole, compressed and decrypted); and fresh data
keys per file (here the column's data key is used directly, with a random 96-bit nonce per chunk:
keep well under 2^32 chunks per key, which per-version data keys do by far).

Speed: one SM4-GCM call per chunk (~100 MB/s per core here, against GB/s for AES-NI), so the
chunks of a row group are sealed and opened in parallel threads (``cryptography`` and pyarrow
release the GIL), a writer seals one row group while the previous one goes into Parquet, and a
reader opens the sealed chunks while it reads the plain columns (and, batch by batch, the next row
group's while the caller uses this one's). No Python loop touches a value; loops run per row group
and column only. Arrow IPC keeps every Arrow type exact but compresses strings less well than
Parquet's encodings (its offsets are stored as numbers): on population rows the file is ~25%
larger than a PME file of the same rows; zstd levels above 1 shrink the chunks by < 2% and cost
more time than the smaller SM4 input saves (benchmarks/chunkseal_bench.py).

Reading without the needed key raises the IntegrityError the standard path's data-key KMS client
raises (keys.kms.DataKeyKmsClient: "no data key ... was received"), here naming the column too.
Unknown column names in ``columns`` are skipped, and repeated ones read once, as pyarrow does.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.errors import ConfigError, IntegrityError
from common.files import canonical_json, private_file
from keys.gm import GCM_NONCE_BYTES, GCM_TAG_BYTES, SM4_KEY_BYTES, SM4GCM

FORMAT = "govshare-sealed-parquet/1"
ALGORITHM = "SM4-GCM"
HEADER_KEY = b"govshare.sealed"
DEFAULT_ROW_GROUP_ROWS = 1 << 20  # as pyarrow's ParquetWriter: a larger write is split
IPC_CODEC = "zstd"
IPC_LEVEL = 1  # measured by benchmarks/chunkseal_bench.py: higher levels cost more than they save
_CHUNK = b"govshare-sealed-chunk/1\n"
_INDEX = b"govshare-sealed-index/1\n"
_MAX_CELL = (1 << 31) - 1  # a Parquet binary value (and page) holds < 2 GiB
_PARQUET_MAGIC = b"PAR1"

ColumnKeys = Mapping[str, tuple[str, bytes]]
Keys = Mapping[str, bytes] | Callable[[str], bytes | None]


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _ipc_options() -> pa.ipc.IpcWriteOptions:
    return pa.ipc.IpcWriteOptions(compression=pa.Codec(IPC_CODEC, IPC_LEVEL))


def chunk_aad(name: str, file_id: str, row_group: int, column: str, key_id: str, rows: int) -> bytes:
    """The associated data of one sealed chunk: where it belongs, under which key, how long."""
    return _CHUNK + canonical_json({"format": FORMAT, "file": name, "file_id": file_id, "row_group": row_group,
                                    "column": column, "key_id": key_id, "rows": rows})


def index_aad(name: str, file_id: str, key_id: str, columns: Sequence[str], rows: Sequence[int]) -> bytes:
    """The associated data of a key's seal index: its columns and every row group's row count."""
    return _INDEX + canonical_json({"format": FORMAT, "file": name, "file_id": file_id, "key_id": key_id,
                                    "columns": list(columns), "row_groups": [int(r) for r in rows]})


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


# -- writing -----------------------------------------------------------------------------------

class SealedParquetWriter:
    """A ``pq.ParquetWriter`` whose columns named in ``column_keys`` (column -> (key id, 16-byte
    SM4 key)) are sealed under SM4-GCM. Each ``write_table`` / ``write_batch`` call is one row group
    (split per ``row_group_size`` rows, by default 1Mi like pyarrow's). The file appears under
    ``path`` only at ``close`` (written beside it under a temporary name, 0600); leaving the
    ``with`` block by an exception, or any failed write, removes it. ``name``: the file name bound
    into the seal (default ``path``'s name), for a file written under one name and published under
    another (a run's staged candidates that become a version's upserts file).

    A call seals its row group in threads and meanwhile writes the row group of the call before
    it into Parquet: a failure to seal surfaces at the next call or at ``close``.

    Other keyword options go to ``pq.ParquetWriter`` for the plain columns (``use_dictionary``,
    ``write_statistics``, ``compression`` and ``compression_level`` as a value or a per-column dict)."""

    def __init__(self, path: str | os.PathLike[str], schema: pa.Schema, column_keys: ColumnKeys,
                 compression: str | Mapping[str, str] | None = "zstd", *, name: str | None = None,
                 **options: Any) -> None:  # noqa: ANN401
        self.path = Path(path)
        self.schema = schema
        self.name = name or self.path.name
        names = schema.names
        if len(set(names)) != len(names):
            raise ConfigError(f"cannot seal {self.name}: its schema repeats column names")
        self._sealed = _checked_keys(self.name, names, column_keys)
        if "encryption_properties" in options:
            raise ConfigError(f"cannot seal {self.name}: a sealed file takes column keys, not encryption properties")
        self._aeads = {column: SM4GCM(key) for column, (_, key) in self._sealed.items()}
        self._file_id = secrets.token_hex(16)
        self._rows: list[int] = []
        plain = [n for n in names if n not in self._sealed]
        self._physical = pa.schema([pa.field(f.name, pa.binary()) if f.name in self._sealed else f for f in schema],
                                   metadata=schema.metadata)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        private_file(self._tmp)
        try:
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
                self._tmp, self._physical, **_plain_options(plain, list(self._sealed), compression, options))
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[pa.Table, list[Future[bytes]]] | None = None

    @property
    def description(self) -> dict[str, Any]:
        """What protects the file, JSON-ready, key ids only (like keys.protection's)."""
        by_id: dict[str, list[str]] = {}
        for column, (key_id, _) in self._sealed.items():
            by_id.setdefault(key_id, []).append(column)
        return {"algorithm": ALGORITHM, "format": FORMAT, "column_keys": by_id}

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def __enter__(self) -> SealedParquetWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write_batch(self, batch: pa.RecordBatch, row_group_size: int | None = None) -> None:
        self.write_table(pa.Table.from_batches([batch]), row_group_size)

    def write(self, table_or_batch: pa.Table | pa.RecordBatch, row_group_size: int | None = None) -> None:
        if isinstance(table_or_batch, pa.RecordBatch):
            self.write_batch(table_or_batch, row_group_size)
        else:
            self.write_table(table_or_batch, row_group_size)

    def write_table(self, table: pa.Table, row_group_size: int | None = None) -> None:
        """``table`` as one row group (or one per ``row_group_size`` rows)."""
        writer = self._open_writer()
        if not table.schema.equals(self.schema, check_metadata=False):
            differ = [f.name for f in self.schema if f.name not in table.schema.names
                      or table.schema.field(f.name) != f] or list(table.schema.names)
            raise ConfigError(f"cannot write to {self.name}: the table's schema differs from the file's",
                              problems=[f"column {n!r}" for n in differ])
        size = max(1, row_group_size or DEFAULT_ROW_GROUP_ROWS)
        starts = range(0, table.num_rows, size) if table.num_rows else [0]
        try:
            for start in starts:
                part = table.slice(start, size)
                sealing = self._seal_async(part, len(self._rows) + (self._pending is not None))
                self._flush(writer)
                self._pending = (part, sealing)
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Write the last row group, the header and the seal indexes into the footer, and the file
        under its name. A failure removes the file."""
        if self._writer is None:
            return
        try:
            self._flush(self._writer)
        except BaseException:
            self.abort()
            raise
        writer, self._writer = self._writer, None
        try:
            writer.add_key_value_metadata({HEADER_KEY.decode(): json.dumps(self._header(), sort_keys=True)})
            writer.close()
            os.replace(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
            self._stop_pool()

    def abort(self) -> None:
        """Drop what was written: no file appears under the name."""
        if self._writer is None:
            return
        writer, self._writer, self._pending = self._writer, None, None
        try:
            self._stop_pool()
            writer.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def _open_writer(self) -> pq.ParquetWriter:
        if self._writer is None:
            raise ConfigError(f"sealed file {self.name} is closed")
        return self._writer

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _seal_async(self, part: pa.Table, row_group: int) -> list[Future[bytes]]:
        """Start sealing the protected columns of ``part`` (row group ``row_group``) in threads: they
        run while the row group before it goes into the Parquet writer."""
        rows = part.num_rows
        if not rows or not self._sealed:
            return []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_workers(), thread_name_prefix="seal")

        def seal(column: str) -> bytes:
            aad = chunk_aad(self.name, self._file_id, row_group, column, self._sealed[column][0], rows)
            return _seal_chunk(self._aeads[column], self.schema.field(column), part.column(column), aad)

        return [self._pool.submit(seal, column) for column in self._sealed]

    def _flush(self, writer: pq.ParquetWriter) -> None:
        """Write the pending row group, its chunks sealed."""
        if self._pending is None:
            return
        part, sealing = self._pending
        self._pending = None
        rows = part.num_rows
        cells = {column: pa.array([], pa.binary()) for column in self._sealed}
        for column, future in zip(self._sealed, sealing, strict=False):
            blob = future.result()
            if len(blob) > _MAX_CELL:
                raise ConfigError(f"cannot seal {self.name} column {column!r}: one row group of it is over 2 GiB; "
                                  "write smaller row groups")
            cells[column] = _cell_column(blob, rows)
        physical = pa.Table.from_arrays([cells[n] if n in cells else part.column(n) for n in self.schema.names],
                                        schema=self._physical)
        writer.write_table(physical, row_group_size=max(1, rows))
        self._rows.append(rows)

    def _header(self) -> dict[str, Any]:
        tags = {}
        for key_id, columns in self.description["column_keys"].items():
            nonce = os.urandom(GCM_NONCE_BYTES)
            tag = self._aeads[columns[0]].encrypt(nonce, b"", index_aad(self.name, self._file_id, key_id, columns,
                                                                        self._rows))
            tags[key_id] = _b64(nonce + tag)
        return {"format": FORMAT, "algorithm": ALGORITHM, "file_id": self._file_id,
                "schema": _b64(self.schema.serialize().to_pybytes()),
                "columns": {column: key_id for column, (key_id, _) in self._sealed.items()},
                "row_groups": list(self._rows), "index": tags}


def _checked_keys(name: str, names: list[str], column_keys: ColumnKeys) -> dict[str, tuple[str, bytes]]:
    if isinstance(column_keys, (str, bytes)) or not isinstance(column_keys, Mapping):
        raise ConfigError(f"cannot seal {name}: column_keys must map column names to (key id, key)")
    problems = []
    unknown = [c for c in column_keys if c not in names]
    if unknown:
        problems.append(f"not in the schema: {', '.join(repr(c) for c in unknown)}")
    by_id: dict[str, bytes] = {}
    checked: dict[str, tuple[str, bytes]] = {}
    for column in names:
        if column not in column_keys:
            continue
        given = column_keys[column]
        if not isinstance(given, (tuple, list)) or len(given) != 2:
            problems.append(f"column {column!r}: give (key id, 16-byte key)")
            continue
        key_id, key = given
        if not isinstance(key_id, str) or not key_id:
            problems.append(f"column {column!r}: the key id must be a non-empty string")
        elif not isinstance(key, (bytes, bytearray)) or len(key) != SM4_KEY_BYTES:
            problems.append(f"column {column!r}: key {key_id} is not a {SM4_KEY_BYTES}-byte SM4 key")
        elif by_id.setdefault(key_id, bytes(key)) != bytes(key):
            problems.append(f"key id {key_id} is given with two different keys")
        else:
            checked[column] = (key_id, bytes(key))
    if problems:
        raise ConfigError(f"cannot seal {name}", problems=problems)
    return {c: checked[c] for c in names if c in checked}


def _plain_options(plain: list[str], sealed: list[str], compression: str | Mapping[str, str] | None,
                   options: dict[str, Any]) -> dict[str, Any]:
    """The ParquetWriter options: the caller's for the plain columns; for the sealed cells no
    compression (ciphertext does not compress), no dictionary and no statistics."""
    out = dict(options)
    codec = compression if compression is not None else "none"
    per_column = dict(codec) if isinstance(codec, Mapping) else dict.fromkeys(plain, codec)
    out["compression"] = {**{c: per_column.get(c, "none") for c in plain}, **dict.fromkeys(sealed, "none")}
    level = options.get("compression_level")
    if level is not None:
        levels = dict(level) if isinstance(level, Mapping) else dict.fromkeys(plain, level)
        out["compression_level"] = {c: v for c, v in levels.items() if c in plain and out["compression"][c] != "none"} or None
    for option in ("use_dictionary", "write_statistics"):
        value = options.get(option, True)
        out[option] = [c for c in (plain if value is True else value or []) if c in plain]
    return out


def _seal_chunk(aead: SM4GCM, field: pa.Field, column: pa.ChunkedArray, aad: bytes) -> bytes:
    """One column's values of one row group: Arrow IPC (zstd), then one SM4-GCM call."""
    schema = pa.schema([field])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=_ipc_options()) as stream:
        for chunk in column.chunks:
            if len(chunk):
                stream.write_batch(pa.record_batch([chunk], schema=schema))
    nonce = os.urandom(GCM_NONCE_BYTES)
    return nonce + aead.encrypt(nonce, _bytes_view(sink.getvalue()), aad)


def _bytes_view(buffer: pa.Buffer) -> memoryview:
    """A pyarrow buffer as unsigned bytes, without a copy (cryptography refuses signed 'b' views)."""
    return memoryview(buffer).cast("B")


def _cell_column(blob: bytes, rows: int) -> pa.Array:
    """A binary column of ``rows`` rows: ``blob`` in row 0, nulls after it (no per-row work)."""
    offsets = np.full(rows + 1, len(blob), dtype=np.int32)
    offsets[0] = 0
    validity = np.zeros((rows + 7) // 8, dtype=np.uint8)
    validity[0] = 1
    return pa.Array.from_buffers(pa.binary(), rows, [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(blob)],
                                 null_count=rows - 1)


def write_table(table: pa.Table, path: str | os.PathLike[str], column_keys: ColumnKeys, **options: Any) -> None:  # noqa: ANN401
    """``pq.write_table`` for a sealed file."""
    row_group_size = options.pop("row_group_size", None)
    with SealedParquetWriter(path, table.schema, column_keys, **options) as writer:
        writer.write_table(table, row_group_size)


# -- reading -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SealedMetadata:
    """The part of ``pq.FileMetaData`` callers use, for the logical file: ``parquet`` is pyarrow's
    own (its schema shows the sealed columns as binary)."""

    num_rows: int
    num_row_groups: int
    num_columns: int
    parquet: pq.FileMetaData

    def row_group(self, index: int) -> Any:  # noqa: ANN401 (pyarrow's RowGroupMetaData)
        return self.parquet.row_group(index)

    @property
    def serialized_size(self) -> int:
        return self.parquet.serialized_size


class SealedParquetFile:
    """A ``pq.ParquetFile`` over a sealed file. ``keys``: key id -> 16-byte SM4 key, as a mapping or
    a callable (returning None or raising KeyError for a key it does not hold). Plain columns
    read without any key; a protected column needs its key, else IntegrityError ("no data key").
    ``name``: the file name it was sealed under, when it was renamed since (default: its name).
    Other keyword options go to ``pq.ParquetFile`` (``pre_buffer``, ``memory_map``...)."""

    def __init__(self, path: str | os.PathLike[str], keys: Keys | None = None, *, name: str | None = None,
                 **options: Any) -> None:  # noqa: ANN401
        self.path = Path(path)
        self.name = name or self.path.name
        if "decryption_properties" in options:
            raise ConfigError(f"{self.name} is a sealed file: open it with data keys, not decryption properties")
        self._keys: Keys = keys if keys is not None else {}
        try:
            self._file = pq.ParquetFile(self.path, **options)
        except pa.ArrowInvalid:
            raise IntegrityError(f"{self.name} is not a complete Parquet file: it was cut short or altered, or its "
                                 "write did not finish") from None
        try:
            self._parse_header()
        except BaseException:
            self._file.close()
            raise
        self._aeads: dict[str, SM4GCM] = {}
        self._pool: ThreadPoolExecutor | None = None

    def _parse_header(self) -> None:
        meta = self._file.metadata
        raw = (meta.metadata or {}).get(HEADER_KEY)
        if raw is None:
            raise IntegrityError(f"{self.name} is not a sealed file (no sealed header in its footer): open it as "
                                 "an ordinary Parquet file, or it lost its header")
        try:
            header = json.loads(raw)
            if header.get("format") != FORMAT or header.get("algorithm") != ALGORITHM:
                raise ValueError("format")
            self._file_id = str(header["file_id"])
            self._schema = pa.ipc.read_schema(pa.py_buffer(_unb64(header["schema"])))
            self._columns = {str(c): str(k) for c, k in dict(header["columns"]).items()}
            self._rows = [int(r) for r in header["row_groups"]]
            self._index = {str(k): _unb64(v) for k, v in dict(header["index"]).items()}
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, pa.ArrowException):
            raise IntegrityError(f"{self.name}: its sealed header is unreadable: the file was altered") from None
        actual = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        physical = self._file.schema_arrow
        if (actual != self._rows or physical.names != self._schema.names
                or any(c not in self._schema.names or physical.field(c).type != pa.binary() for c in self._columns)
                or set(self._columns.values()) != set(self._index)):
            raise IntegrityError(f"{self.name}: its row groups or columns do not match its sealed header: the file "
                                 "was cut or altered")

    # -- what pyarrow's ParquetFile offers ---------------------------------------------------

    @property
    def schema_arrow(self) -> pa.Schema:
        """The logical schema: protected columns with their real types."""
        return self._schema

    @property
    def metadata(self) -> SealedMetadata:
        return SealedMetadata(sum(self._rows), len(self._rows), len(self._schema), self._file.metadata)

    @property
    def num_row_groups(self) -> int:
        return len(self._rows)

    @property
    def num_rows(self) -> int:
        return sum(self._rows)

    @property
    def sealed_columns(self) -> dict[str, str]:
        """Protected column -> its key id."""
        return dict(self._columns)

    def __enter__(self) -> SealedParquetFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def read(self, columns: Iterable[str] | None = None, use_threads: bool = True) -> pa.Table:
        names = self._wanted(columns)
        if not any(n in self._columns for n in names):
            return self._conform(self._file.read(columns=names, use_threads=use_threads), names)
        return self._read_groups(list(range(len(self._rows))), names, use_threads)

    def read_row_group(self, i: int, columns: Iterable[str] | None = None, use_threads: bool = True) -> pa.Table:
        return self.read_row_groups([i], columns, use_threads)

    def read_row_groups(self, row_groups: Sequence[int], columns: Iterable[str] | None = None,
                        use_threads: bool = True) -> pa.Table:
        return self._read_groups([self._group_index(i) for i in row_groups], self._wanted(columns), use_threads)

    def iter_batches(self, batch_size: int = 65536, row_groups: Sequence[int] | None = None,
                     columns: Iterable[str] | None = None, use_threads: bool = True,
                     use_pandas_metadata: bool = False) -> Iterator[pa.RecordBatch]:
        """Record batches of ``batch_size`` rows across row groups (the last may be shorter; pyarrow
        also stops a batch at each row group when a dictionary column is read), one row group read
        at a time; the next row group's chunks are opened while this one's batches are used."""
        del use_pandas_metadata
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
        names = self._wanted(columns)
        groups = [self._group_index(i) for i in (range(len(self._rows)) if row_groups is None else row_groups)]
        sealed = [n for n in names if n in self._columns]
        plain = [n for n in names if n not in self._columns]
        if not names:
            yield from self._file.iter_batches(batch_size=batch_size, row_groups=groups, columns=[])
            return
        self._ready(sealed)
        todo = [i for i in groups if self._rows[i]]
        opening = self._submit(todo[:1], sealed)
        pending: list[pa.Table] = []
        held = 0
        for position, i in enumerate(todo):
            following = self._submit(todo[position + 1:position + 2], sealed)
            read = self._file.read_row_group(i, columns=plain, use_threads=use_threads) if plain else None
            if sealed:
                pending.append(self._assemble(names, self._collect(opening, sealed), read))
            else:
                pending.append(self._conform(read, names))
            opening = following
            held += self._rows[i]
            while held >= batch_size:
                table = pa.concat_tables(pending)
                yield from table.slice(0, batch_size).combine_chunks().to_batches(max_chunksize=batch_size)
                rest = table.slice(batch_size)
                pending, held = [rest], rest.num_rows
        if held:
            yield from pa.concat_tables(pending).combine_chunks().to_batches(max_chunksize=batch_size)

    # -- the parts ---------------------------------------------------------------------------

    def _wanted(self, columns: Iterable[str] | None) -> list[str]:
        if columns is None:
            return list(self._schema.names)
        if isinstance(columns, str):
            raise ConfigError(f"columns of {self.name} must be a list of names, not one string")
        known = set(self._schema.names)
        return [c for c in dict.fromkeys(columns) if c in known]

    def _group_index(self, i: int) -> int:
        if not -len(self._rows) <= i < len(self._rows):
            raise ConfigError(f"{self.name} has {len(self._rows)} row groups; there is no row group {i}")
        return i % len(self._rows)

    def _target(self, names: list[str]) -> pa.Schema:
        return pa.schema([self._schema.field(n) for n in names], metadata=self._schema.metadata)

    def _conform(self, table: pa.Table, names: list[str]) -> pa.Table:
        """A table read by pyarrow under the logical schema (types, field and schema metadata)."""
        target = self._target(names)
        if not names:
            return table  # no columns, its row count (a new table would lose it)
        columns = [_as_type(col, f.type) for col, f in zip(table.columns, target, strict=True)]
        return pa.Table.from_arrays(columns, schema=target)

    def _assemble(self, names: list[str], sealed: dict[str, pa.ChunkedArray], plain: pa.Table | None) -> pa.Table:
        target = self._target(names)
        columns = []
        for f in target:
            if f.name in sealed:
                columns.append(sealed[f.name])
            else:
                assert plain is not None
                columns.append(_as_type(plain.column(f.name), f.type))
        return pa.Table.from_arrays(columns, schema=target)

    def _ready(self, sealed: list[str]) -> None:
        """The SM4 key of every column in ``sealed``, its seal index checked (once per key)."""
        for column in sealed:
            key_id = self._columns[column]
            if key_id in self._aeads:
                continue
            key = self._key(key_id, column)
            aead = SM4GCM(key)
            blob = self._index[key_id]
            key_columns = [c for c in self._schema.names if self._columns.get(c) == key_id]
            aad = index_aad(self.name, self._file_id, key_id, key_columns, self._rows)
            if len(blob) != GCM_NONCE_BYTES + GCM_TAG_BYTES:
                raise self._mismatch(column, key_id)
            try:
                aead.decrypt(blob[:GCM_NONCE_BYTES], blob[GCM_NONCE_BYTES:], aad)
            except IntegrityError:
                raise self._mismatch(column, key_id) from None
            self._aeads[key_id] = aead

    def _key(self, key_id: str, column: str) -> bytes:
        try:
            key = self._keys(key_id) if callable(self._keys) else self._keys.get(key_id)
        except KeyError:
            key = None
        if key is None:
            raise IntegrityError(f"no data key {key_id} was received for column {column!r} of {self.name}: the column "
                                 "is outside the grant, or the key envelopes do not match the version")
        if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != SM4_KEY_BYTES:
            raise ConfigError(f"data key {key_id} for column {column!r} of {self.name} is not a "
                              f"{SM4_KEY_BYTES}-byte SM4 key")
        return bytes(key)

    def _mismatch(self, column: str, key_id: str, row_group: int | None = None) -> IntegrityError:
        where = f"row group {row_group} of " if row_group is not None else ""
        return IntegrityError(f"{where}column {column!r} of {self.name} does not authenticate under data key {key_id}: "
                              "the file was altered, cut or rearranged (or renamed), or the key is not the one it was "
                              "sealed with")

    def _read_groups(self, groups: list[int], names: list[str], use_threads: bool) -> pa.Table:
        sealed = [n for n in names if n in self._columns]
        plain = [n for n in names if n not in self._columns]
        if not sealed:
            return self._conform(self._file.read_row_groups(groups, columns=names, use_threads=use_threads), names)
        self._ready(sealed)
        opening = self._submit(groups, sealed)  # decrypted in threads while the plain columns are read
        read = self._file.read_row_groups(groups, columns=plain, use_threads=use_threads) if plain else None
        return self._assemble(names, self._collect(opening, sealed), read)

    def _submit(self, groups: Iterable[int], sealed: list[str]) -> list[tuple[str, Future[pa.ChunkedArray]]]:
        """Start opening the sealed chunks of the row groups, in threads (their cells are read here:
        one ParquetFile is not shared between threads)."""
        opening = []
        for i in groups:
            rows = self._rows[i]
            cells = self._file.read_row_group(i, columns=sealed, use_threads=False) if rows else None
            for column in sealed:
                blob = self._cell(cells, i, column, rows) if cells is not None else None
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(_workers(), thread_name_prefix="unseal")
                opening.append((column, self._pool.submit(self._open_chunk, i, column, rows, blob)))
        return opening

    def _collect(self, opening: list[tuple[str, Future[pa.ChunkedArray]]], sealed: list[str]) -> dict[str, pa.ChunkedArray]:
        chunks: dict[str, list[pa.Array]] = {column: [] for column in sealed}
        for column, future in opening:
            chunks[column].extend(future.result().chunks)
        return {column: pa.chunked_array(parts, type=self._schema.field(column).type) for column, parts in chunks.items()}

    def _cell(self, cells: pa.Table, i: int, column: str, rows: int) -> pa.Buffer:
        col = cells.column(column)
        first = next((c for c in col.chunks if len(c)), None)
        if first is None or len(col) != rows or col.null_count != rows - 1 or not first[0].is_valid:
            raise self._mismatch(column, self._columns[column], i)
        return first[0].as_buffer()

    def _open_chunk(self, i: int, column: str, rows: int, blob: pa.Buffer | None) -> pa.ChunkedArray:
        field = self._schema.field(column)
        if blob is None:
            return pa.chunked_array([], type=field.type)
        key_id = self._columns[column]
        if blob.size < GCM_NONCE_BYTES + GCM_TAG_BYTES:
            raise self._mismatch(column, key_id, i)
        aad = chunk_aad(self.name, self._file_id, i, column, key_id, rows)
        try:
            plain = self._aeads[key_id].decrypt(blob.slice(0, GCM_NONCE_BYTES).to_pybytes(),
                                                _bytes_view(blob.slice(GCM_NONCE_BYTES)), aad)
        except IntegrityError:
            raise self._mismatch(column, key_id, i) from None
        try:
            table = pa.ipc.open_stream(pa.py_buffer(plain)).read_all()
        except pa.ArrowException:
            raise IntegrityError(f"row group {i} of column {column!r} of {self.name} authenticates but does not "
                                 "decode: it was sealed by another program") from None
        if table.num_columns != 1 or table.schema.field(0).type != field.type or table.num_rows != rows:
            raise IntegrityError(f"row group {i} of column {column!r} of {self.name} authenticates but holds another "
                                 "type or row count than the file says")
        return table.column(0)


def _as_type(column: pa.ChunkedArray, wanted: pa.DataType) -> pa.ChunkedArray:
    """A plain column as the logical schema has it, where Parquet gives it back otherwise (a
    dictionary of numbers comes back decoded)."""
    if column.type == wanted:
        return column
    if pa.types.is_dictionary(wanted) and not pa.types.is_dictionary(column.type):
        column = column.cast(wanted.value_type).dictionary_encode()
    return column.cast(wanted)


def read_table(path: str | os.PathLike[str], keys: Keys | None = None, columns: Iterable[str] | None = None,
               **options: Any) -> pa.Table:  # noqa: ANN401
    """``pq.read_table`` for a sealed file."""
    with SealedParquetFile(path, keys, **options) as handle:
        return handle.read(columns=columns)


def sealed_batches(files: Sequence[Path], keys: Keys, columns: list[str],
                   batch_rows: int = 262_144) -> Iterator[pa.RecordBatch]:
    """keys.protection.encrypted_batches for sealed files: the named columns, batch by batch."""
    for path in files:
        with SealedParquetFile(path, keys, pre_buffer=False) as source:
            yield from source.iter_batches(batch_size=batch_rows, columns=columns)


def is_sealed(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a sealed file (else a PME file, a plain Parquet file, or not Parquet);
    reads the footer only. OSError if it cannot be read."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() < 12:
            return False
        fh.seek(-4, os.SEEK_END)
        if fh.read(4) != _PARQUET_MAGIC:  # PME's encrypted footer ends in PARE
            return False
    try:
        meta = pq.read_metadata(path)
    except pa.ArrowInvalid:
        return False
    return HEADER_KEY in (meta.metadata or {})
