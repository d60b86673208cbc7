"""Micro-benchmark: the gm profile's key refs and fingerprints (HMAC-SM3 / SM3, keys.sm3vec in numpy)
against the standard profile's (SHA-256 in DuckDB), on population-shaped rows.

    python -m benchmarks.sm3vec_bench [--rows 1000000] [--repeat 3] [--threads 1,2] [--chunks 8192,16384,32768,65536]

Rows: the population dataset's source schema, synthetic values (an 18-character ID number, a
two- or three-character name, codes, a birth date, a division code, an address of 24 to 40
characters: about 150 bytes of canonical text over the 8 published fields). Timed, best of
--repeat wall times:

- ``RowHasher.hashes`` (key refs and fingerprints of the batch) in each profile, and ``key_refs``
  of the ID numbers alone;
- the parts of the gm path: DuckDB building the canonical text, HMAC-SM3 of the keys, SM3 of the
  text;
- SM3 / HMAC-SM3 over --threads x --chunks, to choose ``sm3vec.THREADS`` and ``CHUNK_ROWS``.

No value is printed.
"""

from __future__ import annotations

import argparse
import os
from datetime import date

import numpy as np
import pyarrow as pa

from benchmarks.chunkseal_bench import best
from common.catalog import load_catalog
from common.schema import source_schema
from keys import sm3vec
from keys.pseudonyms import RowHasher, key_refs

LIMIT = 1.5  # seconds per million rows the gm hashing may add over the standard path
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰")
PLACES = list("北京市朝阳区海淀东城西城丰台石景山通州顺义昌平大兴街道路号院楼单元室村镇乡")


def _strings(rng: np.random.Generator, pool: list[str], rows: int, distinct: int, low: int, high: int) -> pa.Array:
    """``rows`` strings drawn from ``distinct`` random strings of ``low``..``high`` characters of ``pool``."""
    words = ["".join(rng.choice(pool, rng.integers(low, high + 1))) for _ in range(distinct)]
    return pa.array(words, pa.string()).take(pa.array(rng.integers(0, distinct, rows)))


def population(rows: int, seed: int = 20261207) -> pa.RecordBatch:
    ds = load_catalog().dataset("population")
    schema = source_schema(ds)
    rng = np.random.default_rng(seed)
    digits = (rng.integers(0, 10, (rows, 18), dtype=np.uint8) + ord("0")).tobytes()
    offsets = np.arange(0, 18 * (rows + 1), 18, dtype=np.int32)
    columns = {
        "id_number": pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(digits)]),
        "name": _strings(rng, SURNAMES + GIVEN, rows, 5000, 2, 3),
        "sex_code": pa.array(rng.integers(1, 3, rows).astype(str)),
        "ethnicity_code": pa.array(np.char.zfill(rng.integers(1, 57, rows).astype(str), 2)),
        "birth_date": pa.array(np.datetime64(date(1940, 1, 1)) + rng.integers(0, 25000, rows).astype("timedelta64[D]")),
        "household_division_code": pa.array(rng.integers(110101, 659004, rows).astype(str)),
        "household_address": _strings(rng, PLACES, rows, 20000, 24, 40),
        "person_status": pa.array(rng.integers(1, 4, rows).astype(str)),
    }
    arrays = []
    for field in schema:
        if field.name in columns:
            arrays.append(columns[field.name].cast(field.type))
        else:
            arrays.append(pa.nulls(rows, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--chunks", default="8192,16384,32768,65536")
    args = parser.parse_args()
    ds = load_catalog().dataset("population")
    batch = population(args.rows)
    secret = os.urandom(32)
    keys = batch.column("id_number")
    per_m = 1_000_000 / args.rows

    def line(label: str, seconds: float) -> None:
        print(f"  {label:<52} {seconds:7.3f} s   ({seconds * per_m:6.3f} s per million rows)", flush=True)

    text_bytes = None
    with RowHasher(secret, ds, "HMAC-SM3") as gm_hasher:
        gm_hasher._con.register("rows", batch)
        try:
            text = gm_hasher._con.sql(gm_hasher._text_query).to_arrow_table().column("t")
        finally:
            gm_hasher._con.unregister("rows")
        text_bytes = sum(len(c.buffers()[2] or b"") for c in text.chunks) / args.rows
    print(f"{args.rows} rows, canonical text {text_bytes:.0f} bytes a row on average, {os.cpu_count()} CPUs, "
          f"sm3vec defaults: {sm3vec.THREADS} threads, chunks of {sm3vec.CHUNK_ROWS} rows; best of {args.repeat}")

    print("whole paths")
    with RowHasher(secret, ds) as hasher:
        standard = best(args.repeat, lambda: hasher.hashes(batch))
    line("standard RowHasher.hashes (SHA-256, DuckDB)", standard)
    with RowHasher(secret, ds, "HMAC-SM3") as hasher:
        gm_rows = best(args.repeat, lambda: hasher.hashes(batch))
    line("gm RowHasher.hashes (HMAC-SM3 + SM3, sm3vec)", gm_rows)
    standard_keys = best(args.repeat, lambda: key_refs(keys, secret))
    line("standard key_refs of the ID numbers", standard_keys)
    gm_keys = best(args.repeat, lambda: key_refs(keys, secret, "HMAC-SM3"))
    line("gm key_refs of the ID numbers", gm_keys)
    added = (gm_rows - standard) * per_m
    print(f"  gm adds {added:.3f} s per million rows to RowHasher.hashes "
          f"({'within' if added <= LIMIT else 'over'} the {LIMIT} s target)")

    print("parts of the gm path")
    with RowHasher(secret, ds, "HMAC-SM3") as hasher:
        def canonical() -> pa.ChunkedArray:
            hasher._con.register("rows", batch)
            try:
                return hasher._con.sql(hasher._text_query).to_arrow_table().column("t")
            finally:
                hasher._con.unregister("rows")
        line("DuckDB: canonical text", best(args.repeat, canonical))
    mac = sm3vec.HmacSM3(secret)
    line("sm3vec: HMAC-SM3 of the keys (2 compressions a row)", best(args.repeat, lambda: mac.digests(keys, 16)))
    line("sm3vec: SM3 of the text (3 compressions a row)", best(args.repeat, lambda: sm3vec.sm3_digests(text, 16)))

    print("threads x chunk rows (key refs | fingerprints)")
    for threads in (int(t) for t in args.threads.split(",")):
        for chunk in (int(c) for c in args.chunks.split(",")):
            k = best(args.repeat, lambda: mac.digests(keys, 16, threads=threads, chunk_rows=chunk))
            f = best(args.repeat, lambda: sm3vec.sm3_digests(text, 16, threads=threads, chunk_rows=chunk))
            print(f"  threads {threads}, chunks of {chunk:>6}: {k * per_m:6.3f} s | {f * per_m:6.3f} s per million rows",
                  flush=True)


if __name__ == "__main__":
    main()
