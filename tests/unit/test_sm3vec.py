"""keys.sm3vec against cryptography's SM3 and HMAC-SM3 (keys.gm), and the gm pseudonyms built on it;
the standard pseudonyms pinned against hashlib, unchanged."""

from __future__ import annotations

import hashlib
import os
import random
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pytest

from common.catalog import load_catalog
from common.errors import ConfigError
from common.schema import source_schema
from keys import gm, sm3vec
from keys.pseudonyms import RowHasher, key_refs, with_fingerprints

ABC = bytes.fromhex("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
BOUNDARY = (0, 1, 3, 4, 5, 55, 56, 57, 63, 64, 65, 119, 120, 121, 127, 128, 129)


def _random_values(count: int, longest: int = 300, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(rnd.randint(0, longest)) for _ in range(count)]


def test_the_published_vectors() -> None:
    assert sm3vec.sm3_digests(pa.array([b"abc"]))[0].as_py() == ABC
    abcd = b"abcd" * 16  # GB/T 32905-2016, example 2: two blocks
    assert sm3vec.sm3_digests(pa.array([abcd]))[0].as_py().hex() == \
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732" == gm.sm3(abcd).hex()
    assert gm.sm3(b"abc") == ABC


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary(), pa.string(), pa.large_string()])
def test_sm3_equals_cryptography_at_every_length_up_to_300(kind: pa.DataType) -> None:
    values = [os.urandom(n) for n in range(301)] + _random_values(400)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = [v.hex()[:len(v)].encode() for v in values]  # valid UTF-8, same lengths
        array = pa.array([v.decode() for v in values], kind)
    else:
        array = pa.array(values, kind)
    got = sm3vec.sm3_digests(array, chunk_rows=97).to_pylist()  # many chunks, mixed block counts in each
    assert got == [gm.sm3(v) for v in values]


def test_lengths_at_the_64_byte_boundaries() -> None:
    values = [bytes([n % 251]) * n for n in BOUNDARY for _ in range(3)]
    random.Random(3).shuffle(values)
    assert sm3vec.sm3_digests(pa.array(values, pa.binary())).to_pylist() == [gm.sm3(v) for v in values]


@pytest.mark.parametrize("key_bytes", [16, 32, 64, 65, 100])
def test_hmac_equals_cryptography_for_keys_of_every_size(key_bytes: int) -> None:
    key = os.urandom(key_bytes)
    values = [os.urandom(n) for n in BOUNDARY] + _random_values(300, seed=key_bytes)
    got = sm3vec.hmac_sm3_digests(key, pa.array(values, pa.large_binary()), chunk_rows=64).to_pylist()
    assert got == [gm.hmac_sm3(key, v) for v in values]


def test_empty_inputs_empty_messages_and_nulls() -> None:
    assert len(sm3vec.sm3_digests(pa.array([], pa.binary()))) == 0
    assert len(sm3vec.sm3_digests(pa.chunked_array([], pa.string()))) == 0
    assert sm3vec.sm3_digests(pa.array([b""]))[0].as_py() == gm.sm3(b"")
    key = os.urandom(32)
    out = sm3vec.hmac_sm3_digests(key, pa.array(["a", None, "", None, "b" * 70]), 16)
    assert out.type == pa.binary(16)
    assert out.null_count == 2
    assert out.to_pylist() == [gm.hmac_sm3(key, b"a")[:16], None, gm.hmac_sm3(key, b"")[:16], None,
                               gm.hmac_sm3(key, b"b" * 70)[:16]]
    all_null = sm3vec.sm3_digests(pa.array([None, None], pa.string()))
    assert all_null.to_pylist() == [None, None]


def test_sliced_arrays_read_their_own_rows() -> None:
    values = _random_values(500, seed=11)
    values[5] = None
    for kind in (pa.binary(), pa.large_binary()):
        array = pa.array(values, kind)
        for start, stop in ((0, 500), (1, 2), (3, 300), (137, 499), (499, 500), (250, 250)):
            part = array.slice(start, stop - start)
            assert part.offset == start
            want = [None if v is None else gm.sm3(v) for v in values[start:stop]]
            assert sm3vec.sm3_digests(part, chunk_rows=50).to_pylist() == want


def test_chunked_arrays_keep_row_order() -> None:
    values = _random_values(250, seed=5)
    chunked = pa.chunked_array([pa.array(values[:10], pa.binary()), pa.array([], pa.binary()),
                                pa.array(values[10:11], pa.binary()), pa.array(values[11:], pa.binary()).slice(0)])
    key = os.urandom(16)
    assert sm3vec.hmac_sm3_digests(key, chunked, 16, chunk_rows=32).to_pylist() == \
        [gm.hmac_sm3(key, v)[:16] for v in values]
    sliced = pa.chunked_array([pa.array(values, pa.binary())]).slice(20, 100)
    assert sm3vec.sm3_digests(sliced).to_pylist() == [gm.sm3(v) for v in values[20:120]]


def test_threads_and_chunk_sizes_do_not_change_digests() -> None:
    values = _random_values(3000, longest=200, seed=9)
    array = pa.array(values, pa.binary())
    one = sm3vec.sm3_digests(array, threads=1, chunk_rows=3000).to_pylist()
    assert one == sm3vec.sm3_digests(array, threads=2, chunk_rows=128).to_pylist()
    assert one[:300] == sm3vec.sm3_digests(array.slice(0, 300), threads=3, chunk_rows=7).to_pylist()
    assert one[:50] == [gm.sm3(v) for v in values[:50]]


def test_refused_inputs() -> None:
    with pytest.raises(ConfigError):
        sm3vec.sm3_digests(pa.array([1, 2]))
    with pytest.raises(ConfigError):
        sm3vec.sm3_digests(pa.array([b"a"]), 33)
    with pytest.raises(ConfigError):
        sm3vec.sm3_digests(pa.array([b"a"]), chunk_rows=0)


def test_string_views_hash_like_strings() -> None:
    values = ["", "abc", None, "x" * 100]
    view = pa.array(values, pa.string()).cast(pa.string_view())
    assert sm3vec.sm3_digests(view).to_pylist() == sm3vec.sm3_digests(pa.array(values)).to_pylist()


# -- pseudonyms in both profiles ---------------------------------------------------------------------

KEYS = ["11010519800101001X", "91350100M000100Y43", "测试", "", None]


def _population_batch() -> tuple[object, pa.RecordBatch, dict]:
    ds = load_catalog().dataset("population")
    schema = source_schema(ds)
    values = {f.name: None for f in schema}
    values.update(id_number="11010519800101001X", name="张三", sex_code="1", ethnicity_code="01",
                  birth_date=date(1980, 1, 1), household_division_code="110105", household_address="北京市朝阳区1号",
                  phone="13800000000", person_status="1", is_deleted=0, updated_at=datetime(2026, 11, 1, 8, 0))
    other = dict(values, id_number="110105198001010028", name=None, household_address=None)
    return ds, pa.RecordBatch.from_pylist([values, other], schema=schema), values


def _canonical(ds: object, row: dict) -> bytes:
    return "\x1f".join("\x00" if row[f.name] is None else str(row[f.name]) for f in ds.published_fields).encode()


def test_standard_key_refs_are_unchanged_sha256() -> None:
    secret = os.urandom(32)
    want = [None if k is None else hashlib.sha256(secret + b"\x1f" + k.encode()).digest()[:16] for k in KEYS]
    assert key_refs(pa.array(KEYS, pa.string()), secret).to_pylist() == want
    assert key_refs(pa.array(KEYS, pa.string()), secret, "HMAC-SHA256").to_pylist() == want
    with RowHasher(secret, algorithm="HMAC-SHA256") as hasher:
        assert hasher.key_refs(pa.array(KEYS)).to_pylist() == want


def test_standard_fingerprints_are_unchanged_sha256() -> None:
    ds, batch, _ = _population_batch()
    secret = os.urandom(32)
    rows = with_fingerprints(batch, ds, secret).to_pylist()
    assert rows == with_fingerprints(batch, ds, secret, "HMAC-SHA256").to_pylist()
    for row in rows:
        assert row["_fingerprint"] == hashlib.sha256(_canonical(ds, row)).digest()[:16]
        assert row["_key_ref"] == hashlib.sha256(secret + b"\x1f" + row["id_number"].encode()).digest()[:16]


def test_gm_key_refs_are_hmac_sm3() -> None:
    secret = os.urandom(32)
    want = [None if k is None else gm.hmac_sm3(secret, k.encode())[:16] for k in KEYS]
    got = key_refs(pa.array(KEYS, pa.string()), secret, "HMAC-SM3").to_pylist()
    assert got == want
    assert got[0] != key_refs(pa.array(KEYS[:1]), secret)[0].as_py()  # not the standard ref
    assert key_refs(pa.array([], pa.string()), secret, "HMAC-SM3").to_pylist() == []
    ints = key_refs(pa.array([42, None], pa.int64()), secret, "HMAC-SM3").to_pylist()  # cast as DuckDB casts
    assert ints == [gm.hmac_sm3(secret, b"42")[:16], None]


def test_gm_fingerprints_are_sm3_of_the_same_text() -> None:
    ds, batch, _ = _population_batch()
    secret = os.urandom(32)
    out = with_fingerprints(batch, ds, secret, "HMAC-SM3")
    assert out.schema.field("_fingerprint").type == pa.binary(16)
    for row in out.to_pylist():
        assert row["_fingerprint"] == gm.sm3(_canonical(ds, row))[:16]
        assert row["_key_ref"] == gm.hmac_sm3(secret, row["id_number"].encode())[:16]
    with RowHasher(secret, ds, "HMAC-SM3") as hasher:
        refs, prints = hasher.hashes(batch)
        assert hasher.key_refs(batch.column("id_number")).to_pylist() == refs.to_pylist()
        empty = hasher.hashes(batch.slice(0, 0))
    assert prints.to_pylist() == out.column("_fingerprint").to_pylist()
    assert [len(a) for a in empty] == [0, 0]


def test_other_algorithms_are_refused() -> None:
    for algorithm in ("AES-256-GCM", "SM4-GCM", "hmac-sm3", ""):
        with pytest.raises(ConfigError):
            RowHasher(os.urandom(32), algorithm=algorithm)
        with pytest.raises(ConfigError):
            key_refs(pa.array(["a"]), os.urandom(32), algorithm)


def test_a_million_row_shaped_batch_is_hashed_without_a_row_loop() -> None:
    """Shape only (ten thousand rows): numpy arrays in, the same digests as one by one."""
    rng = np.random.default_rng(1)
    digits = (rng.integers(0, 10, (10_000, 18), dtype=np.uint8) + 48).tobytes()
    offsets = np.arange(0, 18 * 10_001, 18, dtype=np.int32)
    keys = pa.Array.from_buffers(pa.string(), 10_000, [None, pa.py_buffer(offsets), pa.py_buffer(digits)])
    secret = os.urandom(32)
    got = key_refs(keys, secret, "HMAC-SM3")
    sample = [0, 1, 4999, 9999]
    assert [got[i].as_py() for i in sample] == [gm.hmac_sm3(secret, keys[i].as_py().encode())[:16] for i in sample]


@pytest.mark.parametrize("profile_name", ["standard", "gm"])
def test_the_keystore_names_the_algorithm_its_hmac_key_hashes_with(tmp_path, profile_name: str) -> None:
    from keys import rootkey
    from keys.keystore import Keystore
    from keys.profile import profile

    store = Keystore(tmp_path / "keystore", root=rootkey.FileRootKey(tmp_path / "outside" / "root.key"))
    store.init(["population.conditional"], ["approval-local"], profile=profile(profile_name))
    algorithm, secret = store.hmac_algorithm(), store.hmac_key()
    assert algorithm == {"standard": "HMAC-SHA256", "gm": "HMAC-SM3"}[profile_name]
    ref = key_refs(pa.array([KEYS[0]]), secret, algorithm)[0].as_py()
    mac = hashlib.sha256(secret + b"\x1f" + KEYS[0].encode()).digest() if profile_name == "standard" \
        else gm.hmac_sm3(secret, KEYS[0].encode())
    assert ref == mac[:16]
