"""Sealed Parquet (keys.chunkseal): exact round trips, keys, tampering, crashes, what lies in the bytes."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import ConfigError, IntegrityError
from keys import chunkseal
from keys.chunkseal import (
    HEADER_KEY,
    SealedParquetFile,
    SealedParquetWriter,
    is_sealed,
    read_table,
    sealed_batches,
    write_table,
)
from keys.gm import SM4GCM

ROOT = Path(__file__).resolve().parents[2]
K1, K2, K3 = bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48))
KEYS = {"k1": K1, "k2": K2, "k3": K3}
MARKER = "11010119900307771X"  # shaped like an ID number

TYPES = {
    "decimal128": pa.array([decimal.Decimal("1.23"), None, decimal.Decimal("-99999999.99")], pa.decimal128(10, 2)),
    "decimal256": pa.array([decimal.Decimal("1234567890123456789012345678901234567.8"), None, decimal.Decimal("0.0")],
                           pa.decimal256(40, 1)),
    "date32": pa.array([dt.date(1900, 1, 1), None, dt.date(2099, 12, 31)]),
    "date64": pa.array([dt.date(2020, 2, 29), None, dt.date(1970, 1, 1)], pa.date64()),
    "ts_tz": pa.array([dt.datetime(2020, 1, 1, 8), None, dt.datetime(1999, 12, 31, 23, 59)],
                      pa.timestamp("us", tz="Asia/Shanghai")),
    "ts_ns": pa.array([dt.datetime(2020, 1, 1, 8), None, dt.datetime(2262, 1, 1)], pa.timestamp("ns")),
    "time": pa.array([dt.time(1, 2, 3), None, dt.time(23, 59, 59)], pa.time32("s")),
    "duration": pa.array([dt.timedelta(seconds=5), None, dt.timedelta(days=-1)], pa.duration("ms")),
    "string": pa.array(["张三", None, ""]),
    "large_string": pa.array(["李四", None, "x" * 1000], pa.large_string()),
    "large_binary": pa.array([b"\x00\x01", None, b""], pa.large_binary()),
    "fixed": pa.array([b"ab", None, b"\xff\x00"], pa.binary(2)),
    "dict_string": pa.array(["a", None, "a"]).dictionary_encode(),
    "dict_int": pa.array([7, None, 7], pa.int16()).dictionary_encode(),
    "null": pa.array([None, None, None]),
    "bool": pa.array([True, None, False]),
    "uint8": pa.array([255, None, 0], pa.uint8()),
    "float": pa.array([1.5, None, -0.0]),
    "list": pa.array([[1, None], None, []], pa.list_(pa.int32())),
    "struct": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": None}]),
    "map": pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.int64())),
}


def sealed_keys(*columns: str, key_id: str = "k1") -> dict[str, tuple[str, bytes]]:
    return {c: (key_id, KEYS[key_id]) for c in columns}


def people(rows: int = 6, offset: int = 0) -> pa.Table:
    return pa.table({
        "record": pa.array(range(offset, offset + rows), pa.int64()),
        "id_number": pa.array([f"{110101199003070000 + offset + i}" for i in range(rows)], pa.string()),
        "phone": pa.array([f"138{offset + i:08d}" for i in range(rows)], pa.string()),
        "name": pa.array([["张三", "李四", None][i % 3] for i in range(rows)], pa.string()),
        "division": pa.array([["110101", "110102"][i % 2] for i in range(rows)], pa.string()).dictionary_encode(),
    }, metadata={"dataset": "population"})


PEOPLE_KEYS = {**sealed_keys("id_number", "phone", key_id="k1"), **sealed_keys("name", key_id="k2")}


def write(path: Path, tables: list[pa.Table], column_keys: dict[str, tuple[str, bytes]] = PEOPLE_KEYS,
          schema: pa.Schema | None = None, **options: object) -> Path:
    with SealedParquetWriter(path, schema or tables[0].schema, column_keys, **options) as writer:
        for table in tables:
            writer.write_table(table)
    return path


# -- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain"])
@pytest.mark.parametrize("name", sorted(TYPES))
def test_every_type_round_trips_exactly(tmp_path: Path, name: str, sealed: bool) -> None:
    table = pa.table({name: TYPES[name], "n": [1, 2, 3]}, metadata={"m": "v"})
    path = write(tmp_path / "t.parquet", [table, table.slice(1)], sealed_keys(name) if sealed else {})
    with SealedParquetFile(path, KEYS) as handle:
        back = handle.read()
        assert handle.schema_arrow.equals(table.schema, check_metadata=True)
        assert back.equals(pa.concat_tables([table, table.slice(1)]))
        assert back.schema.equals(table.schema, check_metadata=True)
        assert handle.read_row_group(1).equals(table.slice(1))


def test_empty_tables_and_zero_row_groups(tmp_path: Path) -> None:
    table = people()
    empty = write(tmp_path / "empty.parquet", [table.slice(0, 0)])
    none = write(tmp_path / "none.parquet", [], schema=table.schema)
    mixed = write(tmp_path / "mixed.parquet", [table.slice(0, 0), table, table.slice(0, 0), table])
    with SealedParquetFile(empty, KEYS) as handle:
        assert (handle.num_row_groups, handle.metadata.num_rows) == (1, 0)
        assert handle.read().equals(table.slice(0, 0))
        assert list(handle.iter_batches()) == []
    with SealedParquetFile(none, KEYS) as handle:
        assert (handle.num_row_groups, handle.num_rows) == (0, 0)
        assert handle.read().equals(table.schema.empty_table())
        assert handle.read(columns=["record"]).num_rows == 0
    with SealedParquetFile(mixed, KEYS) as handle:
        assert [handle.metadata.row_group(i).num_rows for i in range(4)] == [0, 6, 0, 6]
        assert handle.read().equals(pa.concat_tables([table, table]))
        assert handle.read_row_group(2).num_rows == 0


def test_tables_of_several_chunks_and_row_group_size(tmp_path: Path) -> None:
    table = pa.concat_tables([people(5), people(7, 5), people(0), people(3, 12)])
    assert table.column("id_number").num_chunks > 1
    path = tmp_path / "t.parquet"
    with SealedParquetWriter(path, table.schema, PEOPLE_KEYS) as writer:
        writer.write_table(table)  # one call, one row group
        writer.write_table(table, row_group_size=4)  # 15 rows: 4 + 4 + 4 + 3
        writer.write_batch(people(2, 20).to_batches()[0])
    with SealedParquetFile(path, KEYS) as handle:
        assert [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)] == [15, 4, 4, 4, 3, 2]
        assert handle.read().equals(pa.concat_tables([table, table, people(2, 20)]))


def test_module_helpers_are_pyarrow_shaped(tmp_path: Path) -> None:
    table = people(9)
    path = tmp_path / "t.parquet"
    write_table(table, path, PEOPLE_KEYS, row_group_size=4)
    assert SealedParquetFile(path).num_row_groups == 3
    assert read_table(path, KEYS).equals(table)
    assert read_table(path, KEYS, columns=["name", "record"]).column_names == ["name", "record"]
    batches = list(sealed_batches([path, path], KEYS, ["record", "phone"], batch_rows=5))
    assert [b.num_rows for b in batches] == [5, 4, 5, 4]
    assert pa.Table.from_batches(batches).equals(pa.concat_tables([table, table]).select(["record", "phone"]))


def test_columns_are_chosen_like_pyarrow(tmp_path: Path) -> None:
    table = people()
    path = write(tmp_path / "t.parquet", [table])
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain)
    for columns in (["name", "record"], ["phone", "phone", "record"], ["record", "nosuch"], []):
        ours = SealedParquetFile(path, KEYS).read(columns=columns)
        theirs = pq.ParquetFile(plain).read(columns=columns)
        assert ours.column_names == theirs.column_names
        assert ours.num_rows == theirs.num_rows
    with pytest.raises(ConfigError, match="row group"):
        SealedParquetFile(path, KEYS).read_row_group(1)


@pytest.mark.parametrize("batch_size", [1, 4, 6, 7, 100])
def test_batches_span_row_groups_like_pyarrow(tmp_path: Path, batch_size: int) -> None:
    tables = [people(6), people(0, 6), people(3, 6), people(11, 9)]
    path = write(tmp_path / "t.parquet", tables)
    plain = tmp_path / "plain.parquet"
    with pq.ParquetWriter(plain, tables[0].schema) as writer:
        for table in tables:
            writer.write_table(table)
    # pyarrow fills every batch across row groups, except where a dictionary column makes it stop at
    # each row group; here batches are always filled
    expected = [b.num_rows for b in pq.ParquetFile(plain).iter_batches(batch_size=batch_size, columns=["record"])]
    assert expected == [batch_size] * (20 // batch_size) + ([20 % batch_size] if 20 % batch_size else [])
    with SealedParquetFile(path, KEYS) as handle:
        for columns in (None, ["record", "division"], ["name", "record"], ["record"]):
            batches = list(handle.iter_batches(batch_size=batch_size, columns=columns))
            assert [b.num_rows for b in batches] == expected
            whole = pa.concat_tables(tables)
            assert pa.Table.from_batches(batches).equals(whole if columns is None else whole.select(columns))
        picked = list(handle.iter_batches(batch_size=batch_size, row_groups=[3, 0], columns=["phone"]))
        assert pa.Table.from_batches(picked).equals(pa.concat_tables([tables[3], tables[0]]).select(["phone"]))


_values = st.one_of(
    st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=40).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), max_size=40).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.one_of(st.none(), st.dates()), max_size=40).map(lambda v: pa.array(v, pa.date32())),
    st.lists(st.one_of(st.none(), st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False)),
             max_size=40).map(lambda v: pa.array(v, pa.decimal128(12, 2))),
    st.lists(st.one_of(st.none(), st.sampled_from(["甲", "乙", "丙"])), max_size=40)
    .map(lambda v: pa.array(v, pa.string()).dictionary_encode()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns=st.lists(_values, min_size=1, max_size=4), sealed=st.lists(st.booleans(), min_size=4, max_size=4),
       cuts=st.lists(st.integers(0, 40), max_size=4), batch_size=st.integers(1, 50))
def test_random_tables_round_trip(tmp_path_factory: pytest.TempPathFactory, columns: list[pa.Array],
                                  sealed: list[bool], cuts: list[int], batch_size: int) -> None:
    rows = min(len(c) for c in columns)
    table = pa.table({f"c{i}": c.slice(0, rows) for i, c in enumerate(columns)})
    column_keys = {name: ("k1", K1) if i % 2 else ("k2", K2) for i, name in enumerate(table.column_names) if sealed[i]}
    bounds = sorted({0, rows, *(min(c, rows) for c in cuts)})
    parts = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)] or [table]
    path = write(tmp_path_factory.mktemp("h") / "t.parquet", parts, column_keys)
    with SealedParquetFile(path, KEYS) as handle:
        assert handle.read().equals(table)
        assert handle.num_rows == rows
        batches = list(handle.iter_batches(batch_size=batch_size))
        assert all(b.num_rows == batch_size for b in batches[:-1])
        assert (pa.Table.from_batches(batches, schema=table.schema) if batches else table.schema.empty_table()).equals(table)


def test_each_chunk_is_one_encryption_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = SM4GCM.encrypt

    def counting(self: SM4GCM, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
        calls.append(len(data))
        return real(self, nonce, data, aad)

    monkeypatch.setattr(SM4GCM, "encrypt", counting)
    write(tmp_path / "t.parquet", [people(1000), people(10), people(0)])
    chunks = [n for n in calls if n]
    assert len(chunks) == 2 * 3  # 2 row groups with rows x 3 sealed columns, whatever the row count
    assert len(calls) - len(chunks) == 2  # one seal index per key id


# -- keys ----------------------------------------------------------------------------------

def test_plain_columns_read_without_any_key(tmp_path: Path) -> None:
    table = people()
    path = write(tmp_path / "t.parquet", [table, table])
    with SealedParquetFile(path) as handle:
        assert handle.read(columns=["record", "division"]).equals(pa.concat_tables([table, table]).select(["record", "division"]))
        assert handle.schema_arrow.field("id_number").type == pa.string()
        assert handle.sealed_columns == {"id_number": "k1", "phone": "k1", "name": "k2"}
        assert [b.num_rows for b in handle.iter_batches(batch_size=5, columns=["record"])] == [5, 5, 2]
    with SealedParquetFile(path, {"k2": K2}) as handle:
        assert handle.read(columns=["name", "record"]).equals(pa.concat_tables([table, table]).select(["name", "record"]))


@pytest.mark.parametrize("keys", [{"k2": K2}, lambda key_id: {"k2": K2}.get(key_id), lambda key_id: {"k2": K2}[key_id]],
                         ids=["mapping", "callable-none", "callable-keyerror"])
def test_a_missing_key_is_the_standard_paths_error(tmp_path: Path, keys: object) -> None:
    path = write(tmp_path / "t.parquet", [people()])
    with SealedParquetFile(path, keys) as handle:  # type: ignore[arg-type]
        for read in (lambda: handle.read(), lambda: handle.read(columns=["phone"]),
                     lambda: list(handle.iter_batches(columns=["record", "id_number"])), lambda: handle.read_row_group(0)):
            with pytest.raises(IntegrityError, match="no data key k1 was received for column '(id_number|phone)' of t.parquet"):
                read()


def test_a_wrong_key_fails_naming_file_and_column_only(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", [people()])
    wrong = bytes(16)
    with pytest.raises(IntegrityError) as caught:
        SealedParquetFile(path, {"k1": wrong, "k2": K2}).read(columns=["phone"])
    message = str(caught.value)
    assert "t.parquet" in message and "'phone'" in message and "k1" in message
    assert MARKER not in message and wrong.hex() not in message and K1.hex() not in message
    with pytest.raises(ConfigError, match="16-byte"):
        SealedParquetFile(path, {"k1": b"short"}).read(columns=["phone"])


def test_writer_refuses_bad_configuration(tmp_path: Path) -> None:
    schema = people().schema
    cases: list[tuple[dict, str]] = [
        ({"nosuch": ("k1", K1)}, "not in the schema"),
        ({"phone": ("k1", b"x" * 32)}, "16-byte"),
        ({"phone": ("", K1)}, "key id"),
        ({"phone": ("k1", K1), "name": ("k1", K2)}, "two different keys"),
        ({"phone": "k1"}, "key id"),
    ]
    for column_keys, message in cases:
        with pytest.raises(ConfigError, match="cannot seal t.parquet") as caught:
            SealedParquetWriter(tmp_path / "t.parquet", schema, column_keys)
        assert message in " ".join(caught.value.lines())
    with pytest.raises(ConfigError, match="encryption properties"):
        SealedParquetWriter(tmp_path / "t.parquet", schema, {}, encryption_properties=None)
    with SealedParquetWriter(tmp_path / "t.parquet", schema, PEOPLE_KEYS) as writer:
        with pytest.raises(ConfigError, match="schema differs"):
            writer.write_table(people().drop_columns(["name"]))
        writer.write_table(people())
    assert read_table(tmp_path / "t.parquet", KEYS).equals(people())
    assert not list(tmp_path.glob(".*.tmp"))


# -- tampering ----------------------------------------------------------------------------

def rewrite(source: Path, target: Path, change: Callable[[list[pa.Table], dict], tuple[list[pa.Table], dict]]) -> Path:
    """Rewrite a sealed file's stored Parquet (cells as they are), after ``change`` edits its row
    groups and header: what someone with write access but no key can do."""
    handle = pq.ParquetFile(source)
    groups = [handle.read_row_group(i) for i in range(handle.num_row_groups)]
    header = json.loads(handle.metadata.metadata[HEADER_KEY])
    groups, header = change(groups, header)
    with pq.ParquetWriter(target, handle.schema_arrow, compression="none") as writer:
        for group in groups:
            writer.write_table(group, row_group_size=max(1, group.num_rows))
        writer.add_key_value_metadata({HEADER_KEY.decode(): json.dumps(header)})
    return target


def with_cell(group: pa.Table, column: str, cell: bytes) -> pa.Table:
    values = pa.array([cell, *[None] * (group.num_rows - 1)], pa.binary())
    return group.set_column(group.schema.get_field_index(column), column, values)


def cell(group: pa.Table, column: str) -> bytes:
    return group.column(column)[0].as_py()


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1:]


def test_the_untouched_rewrite_still_reads(tmp_path: Path) -> None:
    """The tamper helper itself changes nothing that matters: the failures below are the edits'."""
    (tmp_path / "a").mkdir()
    path = write(tmp_path / "a" / "t.parquet", [people(4), people(4, 4)])
    same = rewrite(path, tmp_path / "t.parquet", lambda g, h: (g, h))
    assert read_table(same, KEYS).equals(pa.concat_tables([people(4), people(4, 4)]))


def _swap_row_groups(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
    a, b = cell(groups[0], "phone"), cell(groups[1], "phone")
    return [with_cell(groups[0], "phone", b), with_cell(groups[1], "phone", a)], header


def _swap_columns(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
    a, b = cell(groups[0], "phone"), cell(groups[0], "id_number")  # same key, same type
    return [with_cell(with_cell(groups[0], "phone", b), "id_number", a), groups[1]], header


def _flip_at(at: Callable[[int], int]) -> Callable[[list[pa.Table], dict], tuple[list[pa.Table], dict]]:
    def change(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
        blob = cell(groups[1], "phone")
        return [groups[0], with_cell(groups[1], "phone", flip(blob, at(len(blob))))], header
    return change


def _drop_last_group(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
    return groups[:-1], {**header, "row_groups": header["row_groups"][:-1]}


def _drop_last_group_only(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
    return groups[:-1], header


def _move_to_other_key(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
    return groups, {**header, "columns": {**header["columns"], "phone": "k2"}}


def _cut_chunk(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
    return [groups[0], with_cell(groups[1], "phone", cell(groups[1], "phone")[:-5])], header


def _other_file_id(groups: list[pa.Table], header: dict) -> tuple[list[pa.Table], dict]:
    return groups, {**header, "file_id": "0" * 32}


TAMPERING = {
    "swapped row groups": _swap_row_groups,
    "swapped columns": _swap_columns,
    "nonce": _flip_at(lambda n: 3),
    "ciphertext": _flip_at(lambda n: n // 2),
    "tag": _flip_at(lambda n: n - 1),
    "cut chunk": _cut_chunk,
    "dropped row group": _drop_last_group,
    "dropped row group, header kept": _drop_last_group_only,
    "column moved to another key": _move_to_other_key,
    "file id": _other_file_id,
}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_tampering_fails_authentication(tmp_path: Path, how: str) -> None:
    (tmp_path / "orig").mkdir()
    original = write(tmp_path / "orig" / "t.parquet", [people(4), people(4, 4)])
    tampered = rewrite(original, tmp_path / "t.parquet", TAMPERING[how])
    with pytest.raises(IntegrityError, match="t.parquet") as caught:
        SealedParquetFile(tampered, KEYS).read(columns=["record", "phone", "id_number"])
    assert MARKER not in str(caught.value) and K1.hex() not in str(caught.value)
    assert "phone" in str(caught.value) or "row groups" in str(caught.value)


def test_a_chunk_from_another_file_of_the_same_name_and_key_fails(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    one = write(tmp_path / "v1" / "upserts.parquet", [people(4)])
    two = write(tmp_path / "v2" / "upserts.parquet", [people(4)])
    foreign = cell(pq.ParquetFile(two).read_row_group(0), "phone")
    mixed = rewrite(one, tmp_path / "upserts.parquet", lambda g, h: ([with_cell(g[0], "phone", foreign)], h))
    assert read_table(mixed, KEYS, columns=["id_number"]).equals(people(4).select(["id_number"]))  # the rest is fine
    with pytest.raises(IntegrityError, match="row group 0 of column 'phone' of upserts.parquet"):
        read_table(mixed, KEYS, columns=["phone"])


def test_a_renamed_file_opens_only_under_the_name_it_was_sealed_with(tmp_path: Path) -> None:
    path = write(tmp_path / "candidates-0.parquet", [people()])
    moved = tmp_path / "upserts.parquet"
    shutil.move(path, moved)
    with pytest.raises(IntegrityError, match="upserts.parquet"):
        read_table(moved, KEYS)
    assert SealedParquetFile(moved, KEYS, name="candidates-0.parquet").read().equals(people())
    sealed_as = write(tmp_path / "candidates-1.parquet", [people()], name="upserts.parquet")
    shutil.move(sealed_as, moved)
    assert read_table(moved, KEYS).equals(people())


def test_a_cut_or_stripped_file_does_not_open(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", [people(), people()])
    raw = path.read_bytes()
    cut = tmp_path / "cut.parquet"
    for size in (len(raw) - 1, len(raw) // 2, 10, 0):
        cut.write_bytes(raw[:size])
        with pytest.raises(IntegrityError, match="cut.parquet is not a complete Parquet file"):
            SealedParquetFile(cut, KEYS)
        assert not is_sealed(cut)
    stripped = tmp_path / "stripped.parquet"
    pq.write_table(pq.read_table(path), stripped)
    with pytest.raises(IntegrityError, match="stripped.parquet is not a sealed file"):
        SealedParquetFile(stripped, KEYS)
    garbled = rewrite(path, tmp_path / "garbled.parquet", lambda g, h: (g, {**h, "schema": "not base64!"}))
    with pytest.raises(IntegrityError, match="sealed header is unreadable"):
        SealedParquetFile(garbled, KEYS)


# -- crashes --------------------------------------------------------------------------------

def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError), SealedParquetWriter(path, people().schema, PEOPLE_KEYS) as writer:
        writer.write_table(people())
        raise RuntimeError("the source went away")
    assert list(tmp_path.iterdir()) == []


def test_a_crash_leaves_nothing_that_opens_as_complete(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "import pyarrow as pa\n"
        "from keys.chunkseal import SealedParquetWriter\n"
        "t = pa.table({'id': ['x'] * 1000, 'n': list(range(1000))})\n"
        "w = SealedParquetWriter(Path(sys.argv[1]), t.schema, {'id': ('k1', bytes(16))})\n"
        "for _ in range(3):\n"
        "    w.write_table(t)\n"
        "os._exit(9)\n"
    )
    path = tmp_path / "t.parquet"
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 9, done.stderr.decode()
    assert not path.exists()
    left = list(tmp_path.iterdir())
    assert left, "the crashed write's temporary file should be there to look at"
    for stray in left:
        with pytest.raises(IntegrityError, match="not a complete Parquet file"):
            SealedParquetFile(stray, {"k1": bytes(16)})


def test_files_are_private(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", [people()])
    assert path.stat().st_mode & 0o777 == 0o600


# -- what the bytes hold --------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_sealed_bytes_hold_no_plaintext_marker(tmp_path: Path, compression: str) -> None:
    rows = 500
    table = pa.table({
        "id_number": pa.array([MARKER] * rows),
        "id_large": pa.array([MARKER] * rows, pa.large_string()),
        "id_dict": pa.array([MARKER] * rows).dictionary_encode(),
        "plain": pa.array(["visible-value"] * rows),
    })
    keys = sealed_keys("id_number", "id_large", "id_dict")
    path = write(tmp_path / "t.parquet", [table, table.slice(0, 7)], keys, compression=compression)
    raw = path.read_bytes()
    for form in (MARKER.encode(), MARKER.encode("utf-16-le"), MARKER[:12].encode()):
        assert form not in raw
    assert b"visible-value" in raw or compression == "zstd"  # the search sees what lies in plain
    control = write(tmp_path / "control.parquet", [table], {"id_large": ("k1", K1), "id_dict": ("k1", K1)},
                    compression="none")
    assert MARKER.encode() in control.read_bytes()  # a plain column with the marker: found
    assert read_table(path, KEYS).equals(pa.concat_tables([table, table.slice(0, 7)]))


def test_a_keyless_reader_sees_shapes_not_values(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", [people(), people(3)])
    stored = pq.ParquetFile(path)
    assert stored.schema_arrow.field("phone").type == pa.binary()
    assert stored.metadata.num_rows == 9
    for column in ("id_number", "phone", "name"):
        column_stats = stored.metadata.row_group(0).column(stored.schema_arrow.get_field_index(column)).statistics
        assert column_stats is None or not column_stats.has_min_max
    values = stored.read(columns=["phone"]).column("phone").to_pylist()
    assert values.count(None) == 9 - 2
    assert all(v is None or b"138" not in v for v in values)


def test_is_sealed_tells_the_formats_apart(tmp_path: Path) -> None:
    from keys.kms import KMS_INSTANCE_ID, KMS_INSTANCE_URL, DataKeyKmsClient

    table = people()
    sealed = write(tmp_path / "sealed.parquet", [table])
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain)
    keys = {"dk-footer": os.urandom(32), "dk-id": os.urandom(32)}
    client = DataKeyKmsClient(keys)
    factory = pe.CryptoFactory(lambda _config: client)
    connection = pe.KmsConnectionConfig(kms_instance_id=KMS_INSTANCE_ID, kms_instance_url=KMS_INSTANCE_URL)
    for plaintext_footer in (False, True):
        config = pe.EncryptionConfiguration(footer_key="dk-footer", column_keys={"dk-id": ["id_number"]},
                                            plaintext_footer=plaintext_footer, cache_lifetime=timedelta(minutes=1))
        pme = tmp_path / f"pme-{plaintext_footer}.parquet"
        pq.write_table(table, pme, encryption_properties=factory.file_encryption_properties(connection, config))
        assert not is_sealed(pme)
    other = tmp_path / "notes.txt"
    other.write_text("PAR1 not really PAR1")
    assert is_sealed(sealed)
    assert not is_sealed(plain) and not is_sealed(other)
    with pytest.raises(OSError):
        is_sealed(tmp_path / "missing.parquet")


def test_metadata_and_description(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with SealedParquetWriter(path, people().schema, PEOPLE_KEYS) as writer:
        writer.write_table(people())
        writer.write_table(people(2))
        assert writer.description == {"algorithm": "SM4-GCM", "format": chunkseal.FORMAT,
                                      "column_keys": {"k1": ["id_number", "phone"], "k2": ["name"]}}
    assert not writer.is_open
    with SealedParquetFile(path) as handle:
        meta = handle.metadata
        assert (meta.num_rows, meta.num_row_groups, meta.num_columns) == (8, 2, 5)
        assert meta.row_group(1).num_rows == 2
        assert handle.schema_arrow.equals(people().schema, check_metadata=True)
