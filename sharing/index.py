"""The state index of a dataset: per key ref of its current published state, the fingerprint and
the version that published it (``GOVSHARE_HOME/state/<dataset>/``). No identifier in clear.

A publish writes what it changed, not the whole state: the index is a base file
(``index.parquet``: key_ref, fingerprint as UUIDs, version) plus one delta file per version since the base
(``index.d/<version>.parquet``: the version's index delta as the publish decision wrote it:
key_ref, fingerprint, change). A key's latest delta row wins over the base; a delete removes it.
When the deltas hold more than COMPACT_SHARE of the base's rows, or MAX_DELTAS files, they are
folded into a new base, streaming; a snapshot replaces base and deltas. ``index.json`` keeps the
state's row count, the delta versions and the version the index is at (``version``: the store's
head when it was written), so the gate reads the size without a scan and the pipeline can check
index, state and store against each other (``check``; sharing.verify.check_consistency).

Every change is a new file renamed into place, then the metadata: a crash between the two leaves a
delta the metadata does not list yet, which readers ignore (the index then lags one version: the
next sync publishes those keys again, which is harmless, never loses a change).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.errors import IntegrityError
from common.files import replacing
from keys.pseudonyms import FINGERPRINT, KEY_REF, last_per_ref
from sharing.changes import INDEX_SCHEMA, VERSION

BASE = "index.parquet"
DELTAS = "index.d"
META = "index.json"
COMPACT_SHARE = 0.1  # fold the deltas into the base once they hold this share of its rows
MAX_DELTAS = 32
CHANGE = "change"
_SCAN_ROWS = 250_000
# The base stores its 16-byte hashes as Parquet UUIDs: the same bytes, which DuckDB reads as a
# fixed-width type, three times faster than as blobs (the publish decision scans the whole base).
BASE_SCHEMA = pa.schema([(KEY_REF, pa.uuid()), (FINGERPRINT, pa.uuid()), (VERSION, pa.int64())])


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A base column as binary(16), whether the file stores UUIDs or (older bases) plain bytes."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return array.storage if isinstance(array, pa.ExtensionArray) else array


def _as_base(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """key_ref, fingerprint (binary(16)) and version as a batch of the base's schema."""
    columns = [pa.ExtensionArray.from_storage(pa.uuid(), _plain(batch.column(KEY_REF)).cast(pa.binary(16))),
               pa.ExtensionArray.from_storage(pa.uuid(), _plain(batch.column(FINGERPRINT)).cast(pa.binary(16))),
               _plain(batch.column(VERSION)).cast(pa.int64())]
    return pa.RecordBatch.from_arrays(columns, schema=BASE_SCHEMA)


@dataclass(frozen=True)
class StateIndex:
    state_dir: Path
    dataset_id: str

    @property
    def folder(self) -> Path:
        return self.state_dir / self.dataset_id

    @property
    def base(self) -> Path:
        return self.folder / BASE

    def exists(self) -> bool:
        """Whether the dataset has a published state (a first version was indexed)."""
        return (self.folder / META).is_file() or self.base.is_file()

    def meta(self) -> dict[str, Any]:
        path = self.folder / META
        if path.is_file():
            try:
                doc = json.loads(path.read_bytes())
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise self._damaged(path, "is not valid JSON") from None
            if not (isinstance(doc, dict) and _count(doc.get("rows"))
                    and isinstance(doc.get("deltas"), list) and all(_count(v) for v in doc["deltas"])
                    and (doc.get("version") is None or _count(doc["version"]))):
                raise self._damaged(path, "does not hold rows, deltas and version as numbers")
            return doc
        if self.base.is_file():  # an index from before the deltas: the base alone
            return {"rows": pq.ParquetFile(self.base).metadata.num_rows, "deltas": []}
        return {"rows": 0, "deltas": []}

    def version(self) -> int | None:
        """The version the index is at (None: no index, or one from before it was recorded)."""
        meta = self.meta()
        if meta.get("version") is not None:
            return int(meta["version"])
        return max(int(v) for v in meta["deltas"]) if meta["deltas"] else None

    def check(self) -> int | None:
        """That the index's files are there and readable (metadata, base, every listed delta);
        its version. IntegrityError naming the file otherwise."""
        if not self.exists():
            return None
        version = self.version()
        for path in [self.base, *(p for _, p in self.deltas())]:
            if not path.is_file():
                raise self._damaged(path, "is missing")
            try:
                pq.ParquetFile(path).metadata
            except (OSError, pa.ArrowException):
                raise self._damaged(path, "is not a readable Parquet file") from None
        return version

    def _damaged(self, path: Path, what: str) -> IntegrityError:
        return IntegrityError(f"{self.dataset_id}: the state index file {path} {what}; run "
                              f"'govshare sync {self.dataset_id} --full' to rebuild the index from a full read")

    def rows(self) -> int:
        """Keys in the current published state."""
        return int(self.meta()["rows"])

    def deltas(self) -> list[tuple[int, Path]]:
        """(version, file) of the deltas over the base, oldest first."""
        return [(int(v), self.folder / DELTAS / f"{int(v):08d}.parquet") for v in self.meta()["deltas"]]

    def latest_changes(self) -> pa.Table:
        """Per key ref in the deltas, its latest change: key_ref, fingerprint, version, change."""
        tables = []
        for version, path in self.deltas():
            t = pq.read_table(path, columns=[KEY_REF, FINGERPRINT, CHANGE])
            tables.append(t.append_column(VERSION, pa.repeat(pa.scalar(version, pa.int64()), t.num_rows)))
        if not tables:
            return pa.table({KEY_REF: pa.array([], pa.binary(16)), FINGERPRINT: pa.array([], pa.binary(16)),
                             VERSION: pa.array([], pa.int64()), CHANGE: pa.array([], pa.string())})
        return last_per_ref(pa.concat_tables(tables))

    def refs(self) -> pa.Array:
        """Every key ref of the current published state (empty before the first version)."""
        changes = self.latest_changes()
        touched = changes.column(KEY_REF).combine_chunks()
        kept: list[pa.Array] = []
        if self.base.is_file():
            for batch in pq.ParquetFile(self.base).iter_batches(batch_size=_SCAN_ROWS, columns=[KEY_REF]):
                refs = _plain(batch.column(0))
                kept.append(refs.filter(pc.invert(pc.is_in(refs, value_set=touched))) if len(touched) else refs)
        kept.append(changes.filter(pc.equal(changes.column(CHANGE), "upsert")).column(KEY_REF).combine_chunks())
        return pa.concat_arrays([k.cast(pa.binary(16)) for k in kept])

    def lookup(self, ref: bytes) -> tuple[bytes, int] | None:
        """(fingerprint, version) of one key ref in the current state, None when it is not there."""
        changes = self.latest_changes()
        hit = changes.filter(pc.equal(changes.column(KEY_REF), pa.scalar(ref, pa.binary(16))))
        if hit.num_rows:
            if hit.column(CHANGE)[0].as_py() != "upsert":
                return None
            return hit.column(FINGERPRINT)[0].as_py(), hit.column(VERSION)[0].as_py()
        if not self.base.is_file():
            return None
        wanted = pa.scalar(ref, pa.binary(16))
        for batch in pq.ParquetFile(self.base).iter_batches(batch_size=_SCAN_ROWS):
            hit = batch.filter(pc.equal(_plain(batch.column(KEY_REF)), wanted))
            if hit.num_rows:
                return _plain(hit.column(FINGERPRINT))[0].as_py(), hit.column(VERSION)[0].as_py()
        return None

    def add(self, delta: Path, version: int, replace: bool, growth: int = 0) -> None:
        """Index a published version from its index delta (key_ref, fingerprint, change).

        ``replace``: the version is a snapshot, its upserts are the whole state. Otherwise
        ``growth`` is how the state's row count changes (new keys minus deletes), as the publish
        decision counted them (Decision.new_keys, Decision.deletes). A version the index is at
        already (a publish finished again after a crash) changes nothing.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.exists() and (self.version() or 0) >= version:
            return
        if replace:
            self._write_base(delta, version, keep_base=False)
            self._clear_deltas()
            return
        meta = self.meta()
        rows = int(meta["rows"]) + growth
        target = self.folder / DELTAS / f"{version:08d}.parquet"
        target.parent.mkdir(exist_ok=True)
        with replacing(target) as tmp:
            tmp.write_bytes(delta.read_bytes())
        deltas = [*meta["deltas"], version]
        self._write_meta(rows, deltas, version)
        base_rows = pq.ParquetFile(self.base).metadata.num_rows if self.base.is_file() else 0
        delta_rows = sum(pq.ParquetFile(path).metadata.num_rows for _, path in self.deltas())
        if len(deltas) >= MAX_DELTAS or delta_rows > COMPACT_SHARE * max(base_rows, 1):
            self.compact()

    def compact(self) -> None:
        """Fold the deltas into a new base (streaming over the base), then drop them."""
        if not self.deltas():
            return
        rows, version = self.rows(), self.version()
        self._write_base(None, None, keep_base=True)
        self._write_meta(rows, [], version)
        self._clear_deltas()

    def _write_base(self, snapshot: Path | None, version: int | None, keep_base: bool) -> None:
        rows = 0
        with replacing(self.base) as tmp, \
                pq.ParquetWriter(tmp, BASE_SCHEMA, compression="none", use_dictionary=[VERSION]) as writer:
            if keep_base:
                changes = self.latest_changes()
                touched = changes.column(KEY_REF).combine_chunks()
                if self.base.is_file():
                    for batch in pq.ParquetFile(self.base).iter_batches(batch_size=_SCAN_ROWS):
                        kept = batch.filter(pc.invert(pc.is_in(_plain(batch.column(KEY_REF)), value_set=touched)))
                        writer.write_batch(_as_base(kept))
                        rows += kept.num_rows
                upserts = changes.filter(pc.equal(changes.column(CHANGE), "upsert"))
                if upserts.num_rows:
                    writer.write_batch(_as_base(upserts))
                rows += upserts.num_rows
            if snapshot is not None:
                for batch in pq.ParquetFile(snapshot).iter_batches(batch_size=_SCAN_ROWS):
                    upserts = batch.filter(pc.equal(batch.column(CHANGE), "upsert"))
                    versions = pa.repeat(pa.scalar(version, pa.int64()), upserts.num_rows)
                    writer.write_batch(_as_base(pa.RecordBatch.from_arrays(
                        [upserts.column(KEY_REF), upserts.column(FINGERPRINT), versions], schema=INDEX_SCHEMA)))
                    rows += upserts.num_rows
        if snapshot is not None:
            self._write_meta(rows, [], version)

    def _write_meta(self, rows: int, deltas: list[int], version: int | None) -> None:
        path = self.folder / META
        with replacing(path) as tmp:
            tmp.write_text(json.dumps({"rows": rows, "deltas": deltas, "version": version}), encoding="utf-8")

    def _clear_deltas(self) -> None:
        folder = self.folder / DELTAS
        if folder.is_dir():
            for path in folder.glob("*.parquet"):
                path.unlink()


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def published_refs(state_dir: Path) -> Callable[[str], pa.Array | None]:
    """A lookup of each dataset's published key refs (None: nothing published yet), for the
    cross-dataset checks of validation.crossref."""

    def refs(dataset_id: str) -> pa.Array | None:
        index = StateIndex(state_dir, dataset_id)
        return index.refs() if index.exists() else None

    return refs
