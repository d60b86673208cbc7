"""Which of a run's good rows a version publishes, decided with bounded memory.

Per key only the run's last change counts (greatest updated_at, then the later row). A delta then
publishes a row whose fingerprint differs from the state index's (or is new), and a delete of a
key the state holds; a snapshot publishes every row that is not a delete. DuckDB does the
grouping and the join against the state index on pseudonymous columns only (key ref, fingerprint,
time, position), spilling to a temporary folder past its memory limit, so a 10-million-row run needs
no more memory than a 1-million-row one. What comes back is one bit per row.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.schema import IS_DELETED, UPDATED_AT
from keys.pseudonyms import FINGERPRINT, KEY_REF
from sharing.index import CHANGE, StateIndex

MEMORY_LIMIT = "256MB"
SHARED_ROWS = 200_000  # decisions up to this many rows use the process's database
PASS_ROWS = 20_000_000  # good rows per pass of the decision: what MEMORY_LIMIT holds with room to spare
_POS = "_pos"
_BATCH = 250_000


MARKERS_SCHEMA = pa.schema([
    pa.field(KEY_REF, pa.binary(16), nullable=False), pa.field(FINGERPRINT, pa.binary(16), nullable=False),
    pa.field(UPDATED_AT, pa.timestamp("us"), nullable=False), pa.field(IS_DELETED, pa.int8(), nullable=False),
])


@dataclass(frozen=True)
class Decision:
    publish: np.ndarray  # one bool per good row, in the order of the markers files
    deleted: np.ndarray  # one bool per good row: the row is a (soft) delete
    rows: int
    superseded: int  # earlier changes of a key within the run
    unchanged: int  # re-read rows equal to the published state
    deletes_of_unpublished: int  # deletes of keys never published: no change
    upserts: int
    deletes: int
    new_keys: int  # upserts of keys the state does not hold: with deletes, how the state's size changes


def markers(batch: pa.RecordBatch) -> pa.RecordBatch:
    """What the decision needs of good rows (with their _key_ref and _fingerprint): no values."""
    return pa.RecordBatch.from_arrays([batch.column(n) for n in MARKERS_SCHEMA.names], schema=MARKERS_SCHEMA)


def decide(marker_files: Sequence[Path], snapshot: bool, index: StateIndex | None, index_delta: Path) -> Decision:
    """Decide over the run's markers files (see ``markers``; the parts in order), and write the
    version's index delta (key_ref, fingerprint, change) to ``index_delta``."""
    flags = [pq.read_table(path, columns=[IS_DELETED]).column(IS_DELETED).to_numpy() == 1 for path in marker_files]
    deleted = np.concatenate(flags) if flags else np.zeros(0, dtype=bool)
    with _decisions_lock:
        return _decide(marker_files, deleted, snapshot, index, index_delta)


_decisions: tuple[int, object, str] | None = None  # (pid, DuckDB connection, spill folder): see _shared
_decisions_lock = threading.Lock()  # decisions take turns on the shared database


def _shared() -> tuple[object, str]:
    """This process's database for small publish decisions (opening one costs 10-20 ms, about what
    a small run's decision does), and its spill folder, which large decisions' own databases use
    too. Bounded memory, no insertion order (never used for hashes, whose order matters:
    sharing.changes keeps its own). Spills hold key refs, fingerprints and times only; the folder
    goes with the process. A forked process opens its own."""
    import duckdb

    global _decisions
    if _decisions is None or _decisions[0] != os.getpid():
        spill = tempfile.mkdtemp(prefix="govshare-decide-")
        atexit.register(shutil.rmtree, spill, True)
        _decisions = (os.getpid(), duckdb.connect(config=_config(spill)), spill)
    return _decisions[1], _decisions[2]


def _config(spill: str) -> dict[str, object]:
    return {"memory_limit": MEMORY_LIMIT, "threads": 2, "preserve_insertion_order": False, "temp_directory": spill}


def _decide(marker_files: Sequence[Path], deleted: np.ndarray, snapshot: bool, index: StateIndex | None,
            index_delta: Path) -> Decision:
    """The decision in passes of about PASS_ROWS rows each, the keys split by a hash of their ref:
    a pass groups its keys, joins them with the state and writes their part of the index delta,
    so memory is bounded by the pass, whatever the run's size (DuckDB's grouping of 10 million
    keys does not fit its limit, spilling or not)."""
    import duckdb

    total = len(deleted)
    passes = max(1, -(-total // PASS_ROWS))
    rows = "SELECT * FROM m"
    rule = "del = 0" if snapshot else "(del = 1 AND known) OR (del = 0 AND NOT same)"
    publish = np.zeros(total, dtype=bool)
    counts = np.zeros(6, dtype=np.int64)
    schema = pa.schema([(KEY_REF, pa.binary(16)), (FINGERPRINT, pa.binary(16)), ("change", pa.string())])
    with pq.ParquetWriter(index_delta, schema, compression="none", use_dictionary=["change"]) as writer:  # hashes neither compress nor repeat
        for part in range(passes):
            # A small run: this process's database (opening one costs about what such a decision
            # does). A large one: a database of its own per pass, closed after it, so that the
            # blocks DuckDB keeps once it has them are not held through publish or the next pass.
            own = passes > 1 or total > SHARED_ROWS
            shared, spill = _shared()
            con = duckdb.connect(config=_config(spill)) if own else shared.cursor()
            try:
                in_pass = f"WHERE hash({KEY_REF}) % {passes} = {part}" if passes > 1 else ""
                # An Arrow stream, not read_parquet: DuckDB sizes its grouping by the input's row
                # count when it knows it, and that does not fit its memory limit at 10M rows.
                con.register("m", _markers_stream(marker_files))
                con.execute(f"""
                    CREATE TEMP TABLE w AS
                    SELECT {KEY_REF}, arg_max({_POS}, o) AS pos, arg_max({IS_DELETED}, o) AS del,
                           arg_max({FINGERPRINT}, o) AS fp
                    FROM (SELECT *, epoch_us({UPDATED_AT})::HUGEINT * 4294967296 + {_POS} AS o FROM ({rows}) {in_pass})
                    GROUP BY {KEY_REF}""")
                if index is not None and index.exists() and not snapshot:
                    joined = _join_state(con, index)
                else:
                    joined = "SELECT w.*, false AS known, false AS same FROM w"
                con.execute(f"CREATE TEMP TABLE d AS SELECT *, ({rule}) AS pub FROM ({joined})")
                counts += np.array([int(c or 0) for c in con.execute("""
                    SELECT count(*), count(*) FILTER (WHERE NOT pub AND del = 0), count(*) FILTER (WHERE NOT pub AND del = 1),
                           count(*) FILTER (WHERE pub AND del = 0), count(*) FILTER (WHERE pub AND del = 1),
                           count(*) FILTER (WHERE pub AND del = 0 AND NOT known) FROM d""").fetchall()[0]])
                result = con.sql(f"""SELECT pos, {KEY_REF}, fp AS {FINGERPRINT},
                                            CASE WHEN del = 1 THEN 'delete' ELSE 'upsert' END AS change
                                     FROM d WHERE pub""").to_arrow_reader(_BATCH)
                for batch in result:
                    publish[batch.column("pos").to_numpy()] = True
                    writer.write_batch(pa.RecordBatch.from_arrays(
                        [batch.column(KEY_REF).cast(pa.binary(16)), batch.column(FINGERPRINT).cast(pa.binary(16)),
                         batch.column("change")], schema=schema))
            finally:
                con.close()  # its temp tables go with it (and with its own database, all it held)
    groups, unchanged, deletes_unpublished, upserts, deletes, new_keys = (int(c) for c in counts)
    return Decision(publish, deleted, total, total - groups, unchanged if not snapshot else 0, deletes_unpublished,
                    upserts, deletes, new_keys)


def _markers_stream(marker_files: Sequence[Path]) -> pa.RecordBatchReader:
    """The markers of the run's parts in order, each row with its position (_pos) among them all."""
    schema = MARKERS_SCHEMA.append(pa.field(_POS, pa.int64()))

    def batches():  # noqa: ANN202 - an iterator of record batches
        offset = 0
        for path in marker_files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH):
                position = pa.array(np.arange(offset, offset + batch.num_rows, dtype=np.int64))
                offset += batch.num_rows
                yield pa.RecordBatch.from_arrays([*batch.columns, position], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _join_state(con, index: StateIndex) -> str:  # noqa: ANN001 - a DuckDB connection
    """SQL joining the run's keys (table w) with the current state: a key's latest delta row wins
    over the base, and a delete there means the key is not published."""
    empty = "SELECT NULL::BLOB AS ref, NULL::BLOB AS ifp WHERE false"
    base = (f"SELECT {KEY_REF} AS ref, {FINGERPRINT} AS ifp FROM read_parquet('{_sql_path(index.base)}')"
            if index.base.is_file() else empty)
    deltas = " UNION ALL ".join(
        f"SELECT {KEY_REF} AS ref, {FINGERPRINT} AS ifp, {CHANGE} AS ch, {version} AS v FROM read_parquet('{_sql_path(path)}')"
        for version, path in index.deltas())
    if index.base.is_file() and pq.read_schema(index.base).field(KEY_REF).type == pa.uuid():
        # the base's UUIDs are scanned as they are; only the run's few keys are converted, both ways
        con.execute(f"""CREATE TEMP TABLE b AS
            SELECT {_blob('i.ref')} AS ref, {_blob('i.ifp')} AS ifp
            FROM ({base}) i SEMI JOIN (SELECT CAST(hex({KEY_REF}) AS UUID) AS u FROM w) k ON i.ref = k.u""")
    else:
        con.execute(f"CREATE TEMP TABLE b AS SELECT i.* FROM ({base}) i SEMI JOIN w ON i.ref = w.{KEY_REF}")
    if deltas:
        con.execute(f"CREATE TEMP TABLE c AS SELECT ref, arg_max(ifp, v) AS ifp, arg_max(ch, v) AS ch FROM ({deltas}) GROUP BY ref")
    else:
        con.execute("CREATE TEMP TABLE c AS SELECT NULL::BLOB AS ref, NULL::BLOB AS ifp, NULL::VARCHAR AS ch WHERE false")
    return f"""SELECT w.*,
                   CASE WHEN c.ref IS NOT NULL THEN c.ch = 'upsert' ELSE b.ref IS NOT NULL END AS known,
                   CASE WHEN c.ref IS NOT NULL THEN c.ch = 'upsert' AND c.ifp = w.fp
                        ELSE coalesce(b.ifp = w.fp, false) END AS same
               FROM w LEFT JOIN c ON c.ref = w.{KEY_REF} LEFT JOIN b ON b.ref = w.{KEY_REF}"""


def _blob(uuid: str) -> str:
    """SQL: a UUID's 16 bytes as a blob (the inverse of CAST(hex(blob) AS UUID))."""
    return f"unhex(replace(CAST({uuid} AS VARCHAR), '-', ''))"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
