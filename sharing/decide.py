"""Which of a run's good rows a version publishes, decided with bounded memory.

Per key only the run's last change counts (greatest updated_at, then the later row). A delta then
publishes a row whose fingerprint differs from the state index's (or is new), and a delete of a
key the state holds; a snapshot publishes every row that is not a delete. DuckDB does the
grouping and the join against the state index on pseudonymous columns only (key ref, fingerprint,
time, position), spilling to the run's folder past its memory limit, so a 10-million-row run needs
no more memory than a 1-million-row one. What comes back is one bit per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from govshare.schema import IS_DELETED, UPDATED_AT
from sharing.changes import FINGERPRINT, KEY_REF

MEMORY_LIMIT = "256MB"
_POS = "_pos"
_BATCH = 250_000


@dataclass(frozen=True)
class Decision:
    publish: np.ndarray  # one bool per good row, in file order
    rows: int
    superseded: int  # earlier changes of a key within the run
    unchanged: int  # re-read rows equal to the published state
    deletes_of_unpublished: int  # deletes of keys never published: no change
    upserts: int
    deletes: int


def decide(goods: Sequence[pq.ParquetFile], snapshot: bool, index: Path | None, index_delta: Path, scratch: Path) -> Decision:
    """Decide, and write the version's index delta (key_ref, fingerprint, change) to ``index_delta``."""
    import duckdb

    total = sum(g.metadata.num_rows for g in goods)
    scratch.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "temp_directory": str(scratch), "threads": 2,
                                 "preserve_insertion_order": False})
    try:
        con.register("m", _markers(goods))
        con.execute(f"""
            CREATE TEMP TABLE w AS
            SELECT {KEY_REF}, arg_max({_POS}, o) AS pos, arg_max({IS_DELETED}, o) AS del,
                   arg_max({FINGERPRINT}, o) AS fp
            FROM (SELECT *, epoch_us({UPDATED_AT})::HUGEINT * 4294967296 + {_POS} AS o FROM m)
            GROUP BY {KEY_REF}""")
        if index is not None and index.is_file() and not snapshot:
            con.register("idx", con.read_parquet(str(index)).project(f"{KEY_REF} AS ref, {FINGERPRINT} AS ifp"))
            joined = "SELECT w.*, i.ref IS NOT NULL AS known, coalesce(i.ifp = w.fp, false) AS same FROM w LEFT JOIN idx i ON i.ref = w." + KEY_REF
        else:
            joined = "SELECT w.*, false AS known, false AS same FROM w"
        rule = "del = 0" if snapshot else "(del = 1 AND known) OR (del = 0 AND NOT same)"
        con.execute(f"CREATE TEMP TABLE d AS SELECT *, ({rule}) AS pub FROM ({joined})")
        counts = con.execute("""
            SELECT count(*), count(*) FILTER (WHERE NOT pub AND del = 0), count(*) FILTER (WHERE NOT pub AND del = 1),
                   count(*) FILTER (WHERE pub AND del = 0), count(*) FILTER (WHERE pub AND del = 1) FROM d""").fetchall()[0]
        publish = np.zeros(total, dtype=bool)
        result = con.sql(f"""SELECT pos, {KEY_REF}, fp AS {FINGERPRINT},
                                    CASE WHEN del = 1 THEN 'delete' ELSE 'upsert' END AS change
                             FROM d WHERE pub""").to_arrow_reader(_BATCH)
        schema = pa.schema([(KEY_REF, pa.binary(16)), (FINGERPRINT, pa.binary(16)), ("change", pa.string())])
        with pq.ParquetWriter(index_delta, schema, compression="none") as writer:  # hashes do not compress
            for batch in result:
                publish[batch.column("pos").to_numpy()] = True
                writer.write_batch(pa.RecordBatch.from_arrays(
                    [batch.column(KEY_REF).cast(pa.binary(16)), batch.column(FINGERPRINT).cast(pa.binary(16)),
                     batch.column("change")], schema=schema))
    finally:
        con.close()
    groups, unchanged, deletes_unpublished, upserts, deletes = (int(c or 0) for c in counts)
    return Decision(publish, total, total - groups, unchanged if not snapshot else 0, deletes_unpublished,
                    upserts, deletes)


def _markers(goods: Sequence[pq.ParquetFile]) -> pa.RecordBatchReader:
    columns = [KEY_REF, UPDATED_AT, IS_DELETED, FINGERPRINT]
    first = goods[0].schema_arrow
    schema = pa.schema([first.field(c) for c in columns] + [pa.field(_POS, pa.int64())])

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for good in goods:
            for batch in good.iter_batches(batch_size=_BATCH, columns=columns):
                position = pa.array(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
                offset += batch.num_rows
                yield pa.RecordBatch.from_arrays([*batch.columns, position], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())
