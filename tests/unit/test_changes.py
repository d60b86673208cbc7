"""Key refs and fingerprints pinned against hashlib: their definitions are part of every state index."""

from __future__ import annotations

import hashlib
import os
from datetime import date

import pyarrow as pa

from common.catalog import load_catalog
from common.schema import source_schema
from keys.pseudonyms import RowHasher, key_refs, with_fingerprints


def test_a_key_ref_is_sha256_of_the_secret_a_separator_and_the_key() -> None:
    secret = os.urandom(32)
    keys = ["11010519800101001X", "91350100M000100Y43", "测试", None]
    refs = key_refs(pa.array(keys, pa.string()), secret).to_pylist()
    assert refs[:3] == [hashlib.sha256(secret + b"\x1f" + k.encode()).digest()[:16] for k in keys[:3]]
    assert refs[3] is None
    assert key_refs(pa.array(keys[:1]), os.urandom(32))[0].as_py() != refs[0]  # another secret, another ref


def test_a_fingerprint_is_sha256_of_the_published_fields_as_text() -> None:
    ds = load_catalog().dataset("population")
    schema = source_schema(ds)
    values = {f.name: None for f in schema}
    values.update(id_number="11010519800101001X", name="张三", sex_code="1", ethnicity_code="01",
                  birth_date=date(1980, 1, 1), household_division_code="110105", household_address="北京市朝阳区1号",
                  phone="13800000000", person_status="1", is_deleted=0)
    from datetime import datetime

    values["updated_at"] = datetime(2026, 11, 1, 8, 0)
    batch = pa.RecordBatch.from_pylist([values], schema=schema)
    secret = os.urandom(32)
    row = with_fingerprints(batch, ds, secret).to_pylist()[0]
    published = [f.name for f in ds.published_fields]
    text = "\x1f".join("\x00" if values[n] is None else str(values[n]) for n in published)
    assert row["_fingerprint"] == hashlib.sha256(text.encode()).digest()[:16]
    assert "phone" not in published  # 不予共享: changes to it are no change for subscribers
    with RowHasher(secret, ds) as hasher:
        ref, fingerprint = hasher.hashes(batch)
    assert (ref[0].as_py(), fingerprint[0].as_py()) == (row["_key_ref"], row["_fingerprint"])
