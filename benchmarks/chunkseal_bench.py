"""Micro-benchmark: sealed Parquet (SM4-GCM chunks, keys.chunkseal) against Parquet modular
encryption (AES-GCM, as the standard profile publishes), on population-shaped rows.

    python -m benchmarks.chunkseal_bench [--rows 1000000] [--batch-rows 100000] [--repeat 3]

Rows: an 18-character ID number, a name, a phone number and a birth date (the protected columns,
in two key groups: ID number and phone, name and birth date), plus plain columns (a record
number, a coded division, a gender code, an update time). Both formats are written the way
sharing.publish writes an upserts file (zstd, dictionaries on the coded columns, one
``write_batch`` per --batch-rows) and read back whole with their keys. PME runs with an encrypted
footer under a footer key and per-group column keys through an in-memory KMS client holding the
data keys (keys.kms.DataKeyKmsClient, as a subscriber's agent reads). The sealed format runs twice:
with the plain columns plain, and with them sealed under the footer key (what mirrors PME's
encrypted footer). Best of --repeat wall times; the ratios are sealed / PME. No value is printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from keys.chunkseal import SealedParquetFile, SealedParquetWriter
from keys.kms import KMS_INSTANCE_ID, KMS_INSTANCE_URL, DataKeyKmsClient, decryption_with

LIMIT = 1.5
FOOTER_ID, IDS_ID, NAMES_ID = "dk-" + "0" * 32, "dk-" + "1" * 32, "dk-" + "2" * 32
GROUPS = {IDS_ID: ["id_number", "phone"], NAMES_ID: ["name", "birth_date"]}
PLAIN = ["record_no", "division", "gender", "updated_at"]
CODED = ["division", "gender"]
SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈")
GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉梅建国志红辉鹏飞")


def _digits(rng: np.random.Generator, rows: int, width: int) -> np.ndarray:
    return rng.integers(ord("0"), ord("9") + 1, size=(rows, width), dtype=np.uint8)


def _fixed_strings(chars: np.ndarray) -> pa.Array:
    rows, width = chars.shape
    offsets = np.arange(rows + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())])


def population(rows: int, seed: int = 20261127) -> pa.Table:
    """Synthetic population rows, built column-wise (no Python loop per row)."""
    rng = np.random.default_rng(seed)
    days = rng.integers(-18_000, 19_000, size=rows)  # birth dates 1920..2022
    ymd = np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype("S10").view(np.uint8).reshape(rows, 10)
    ids = np.empty((rows, 18), dtype=np.uint8)
    ids[:, :6] = _digits(rng, rows, 6)
    ids[:, 6:10], ids[:, 10:12], ids[:, 12:14] = ymd[:, 0:4], ymd[:, 5:7], ymd[:, 8:10]
    ids[:, 14:17] = _digits(rng, rows, 3)
    ids[:, 17] = np.where(rng.random(rows) < 0.1, ord("X"), rng.integers(ord("0"), ord("9") + 1, size=rows))
    phones = _digits(rng, rows, 11)
    phones[:, 0] = ord("1")
    names = pa.array([s + g for s in SURNAMES for g in GIVEN] + [s + g + h for s in SURNAMES[:20] for g in GIVEN
                                                                 for h in GIVEN[:10]])
    divisions = pa.array([f"{p:02d}{c:02d}{d:02d}" for p in range(11, 66) for c in range(1, 4) for d in range(1, 6)])
    return pa.table({
        "record_no": pa.array(np.arange(rows, dtype=np.int64)),
        "id_number": _fixed_strings(ids),
        "name": names.take(pa.array(rng.integers(0, len(names), size=rows))),
        "phone": _fixed_strings(phones),
        "birth_date": pa.array(days.astype(np.int32), pa.date32()),
        "division": divisions.take(pa.array(rng.integers(0, len(divisions), size=rows))),
        "gender": pa.array(rng.choice(np.array(["1", "2"]), size=rows)),
        "updated_at": pa.array(1_760_000_000_000_000 + rng.integers(0, 10**12, size=rows), pa.timestamp("us", tz="UTC")),
    })


def _keys() -> dict[str, bytes]:
    return {FOOTER_ID: os.urandom(32), IDS_ID: os.urandom(32), NAMES_ID: os.urandom(32)}


def _batches(table: pa.Table, batch_rows: int) -> list[pa.RecordBatch]:
    return table.combine_chunks().to_batches(max_chunksize=batch_rows)


def pme_write(path: Path, table: pa.Table, batches: list[pa.RecordBatch], keys: dict[str, bytes]) -> None:
    client = DataKeyKmsClient(keys)
    factory = pe.CryptoFactory(lambda _config: client)
    config = pe.EncryptionConfiguration(footer_key=FOOTER_ID, column_keys=GROUPS, encryption_algorithm="AES_GCM_V1",
                                        plaintext_footer=False, cache_lifetime=timedelta(minutes=10))
    connection = pe.KmsConnectionConfig(kms_instance_id=KMS_INSTANCE_ID, kms_instance_url=KMS_INSTANCE_URL)
    properties = factory.file_encryption_properties(connection, config)
    with pq.ParquetWriter(path, table.schema, compression="zstd", use_dictionary=CODED,
                          encryption_properties=properties) as writer:
        for batch in batches:
            writer.write_batch(batch)


def pme_read(path: Path, keys: dict[str, bytes]) -> pa.Table:
    return pq.ParquetFile(path, decryption_properties=decryption_with(keys)).read()


def sealed_keys(keys: dict[str, bytes], all_columns: bool) -> dict[str, tuple[str, bytes]]:
    column_keys = {c: (key_id, keys[key_id][:16]) for key_id, columns in GROUPS.items() for c in columns}
    if all_columns:
        column_keys.update({c: (FOOTER_ID, keys[FOOTER_ID][:16]) for c in PLAIN})
    return column_keys


def sealed_write(path: Path, table: pa.Table, batches: list[pa.RecordBatch],
                 column_keys: dict[str, tuple[str, bytes]]) -> None:
    with SealedParquetWriter(path, table.schema, column_keys, compression="zstd", use_dictionary=CODED) as writer:
        for batch in batches:
            writer.write_batch(batch)


def sealed_read(path: Path, keys: dict[str, bytes]) -> pa.Table:
    with SealedParquetFile(path, {k: v[:16] for k, v in keys.items()}) as handle:
        return handle.read()


def best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    table = population(args.rows)
    batches = _batches(table, args.batch_rows)
    keys = _keys()
    with tempfile.TemporaryDirectory(prefix="chunkseal-bench-") as tmp:
        folder = Path(tmp)
        pme, sealed, sealed_all = folder / "pme.parquet", folder / "sealed.parquet", folder / "sealed-all.parquet"
        figures = {
            "pme": (best(args.repeat, lambda: pme_write(pme, table, batches, keys)),
                    best(args.repeat, lambda: pme_read(pme, keys))),
            "sealed": (best(args.repeat, lambda: sealed_write(sealed, table, batches, sealed_keys(keys, False))),
                       best(args.repeat, lambda: sealed_read(sealed, keys))),
            "sealed_all": (best(args.repeat, lambda: sealed_write(sealed_all, table, batches, sealed_keys(keys, True))),
                           best(args.repeat, lambda: sealed_read(sealed_all, keys))),
        }
        if not sealed_read(sealed, keys).equals(table) or not pme_read(pme, keys).equals(table):
            raise SystemExit("a round trip lost data")
        sizes = {"pme": pme.stat().st_size, "sealed": sealed.stat().st_size, "sealed_all": sealed_all.stat().st_size}
    print(f"{args.rows} rows, {len(batches)} row groups, {os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'format':<12}{'write s':>10}{'read s':>10}{'total s':>10}{'MB':>8}{'write x':>9}{'read x':>8}{'total x':>9}")
    base_write, base_read = figures["pme"]
    results = []
    for name, (write, read) in figures.items():
        ratio = (write + read) / (base_write + base_read)
        print(f"{name:<12}{write:>10.3f}{read:>10.3f}{write + read:>10.3f}{sizes[name] / 1e6:>8.1f}"
              f"{write / base_write:>9.2f}{read / base_read:>8.2f}{ratio:>9.2f}")
        if name != "pme":
            results.append(f"{name}_vs_pme={ratio:.2f}")
    verdict = "PASS" if all(float(r.split("=")[1]) <= LIMIT for r in results) else "FAIL"
    print(f"RESULT {' '.join(results)} limit={LIMIT} {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
