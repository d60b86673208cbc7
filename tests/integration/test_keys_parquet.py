"""Parquet modular encryption with real keys: round trips, what is unreadable, what leaks."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import IntegrityError
from keys import kms
from keys.keystore import Keystore
from keys.protection import Protection, column_encryption, decryption_properties, staging_encryption

pytestmark = pytest.mark.integration

SECRET_ID = "11010519491231002X"
SECRET_NAME = "张三丰测试姓名"
PLAIN_STATUS = "PLAIN-STATUS-MARKER"

# nasty values: full-width characters, emoji, NUL bytes, very long text, NULLs
NASTY = ["４４０５２４１８８００１０１００１４", "👩‍👩‍👧 emoji", "nul\x00inside", "长" * 5000, None]


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    ks = Keystore(tmp_path / "keystore")
    ks.init(["population.footer", "population.conditional"], [])
    yield ks
    kms.forget_cached_keys(ks)


def people(rows: int = 50) -> pa.Table:
    return pa.table({
        "id_number": [SECRET_ID] * rows,
        "name": [SECRET_NAME] * (rows - len(NASTY)) + NASTY,
        "person_status": [PLAIN_STATUS] * rows,
        "sex_code": ["1", "2"] * (rows // 2),
    })


def write(path: Path, table: pa.Table, protection: Protection) -> bytes:
    # no compression, so plaintext would show in the file bytes
    with pq.ParquetWriter(path, table.schema, compression="none",
                          encryption_properties=protection.file_encryption_properties) as writer:
        writer.write_table(table)
    return path.read_bytes()


def conditional(keystore: Keystore, **kwargs) -> Protection:
    return column_encryption(keystore, "population.footer",
                             {"population.conditional": ["id_number", "name"]}, **kwargs)


def test_column_encryption_round_trip(keystore: Keystore, tmp_path: Path) -> None:
    table = people()
    write(tmp_path / "p.parquet", table, conditional(keystore))
    assert pq.read_table(tmp_path / "p.parquet", decryption_properties=decryption_properties(keystore)).equals(table)


def test_encrypted_footer_file_is_unreadable_without_keys(keystore: Keystore, tmp_path: Path) -> None:
    write(tmp_path / "p.parquet", people(), conditional(keystore))
    for columns in (["person_status"], ["id_number"], None):
        with pytest.raises(OSError, match="no decryption found"):
            pq.read_table(tmp_path / "p.parquet", columns=columns)


def test_encrypted_columns_do_not_appear_in_file_bytes(keystore: Keystore, tmp_path: Path) -> None:
    data = write(tmp_path / "p.parquet", people(), conditional(keystore))
    assert PLAIN_STATUS.encode() in data  # control: an unencrypted column does show
    assert SECRET_ID.encode() not in data
    assert SECRET_NAME.encode() not in data
    assert "长长长长".encode() not in data


def test_plaintext_footer_keeps_plain_columns_readable_without_keys(keystore: Keystore, tmp_path: Path) -> None:
    data = write(tmp_path / "p.parquet", people(), conditional(keystore, plaintext_footer=True))
    plain = pq.read_table(tmp_path / "p.parquet", columns=["person_status", "sex_code"])
    assert plain.column("person_status").to_pylist() == [PLAIN_STATUS] * 50
    with pytest.raises(OSError, match="Cannot decrypt ColumnMetadata"):
        pq.read_table(tmp_path / "p.parquet", columns=["id_number"])
    full = pq.read_table(tmp_path / "p.parquet", decryption_properties=decryption_properties(keystore))
    assert full.equals(people())
    assert SECRET_ID.encode() not in data  # neither in pages nor in plaintext statistics


def test_description_holds_key_ids_only(keystore: Keystore) -> None:
    protection = conditional(keystore)
    assert protection.description == {
        "algorithm": "AES_GCM_V1",
        "kms": "govshare-keystore",
        "footer_key_id": "population.footer.v1",
        "footer": "encrypted",
        "uniform": False,
        "column_keys": {"population.conditional.v1": ["id_number", "name"]},
    }
    json.dumps(protection.description)


def test_empty_column_keys_encrypt_uniformly_under_the_footer_key(keystore: Keystore, tmp_path: Path) -> None:
    protection = column_encryption(keystore, "population.footer", {})
    assert protection.description["uniform"] is True and protection.description["column_keys"] == {}
    data = write(tmp_path / "u.parquet", people(), protection)
    assert PLAIN_STATUS.encode() not in data
    with pytest.raises(OSError):
        pq.read_table(tmp_path / "u.parquet")
    assert pq.read_table(tmp_path / "u.parquet", decryption_properties=decryption_properties(keystore)).equals(people())


def test_staging_uniform_encryption_round_trip(keystore: Keystore, tmp_path: Path) -> None:
    protection = staging_encryption(keystore)
    assert protection.description["footer_key_id"] == "govshare.staging.v1"
    assert protection.description["uniform"] is True
    data = write(tmp_path / "s.parquet", people(), protection)
    for marker in (SECRET_ID, SECRET_NAME, PLAIN_STATUS):
        assert marker.encode() not in data
    with pytest.raises(OSError):
        pq.read_table(tmp_path / "s.parquet")
    assert pq.read_table(tmp_path / "s.parquet", decryption_properties=decryption_properties(keystore)).equals(people())


def test_another_keystore_cannot_read(keystore: Keystore, tmp_path: Path) -> None:
    write(tmp_path / "p.parquet", people(), conditional(keystore))
    other = Keystore(tmp_path / "other")
    other.init(["population.footer", "population.conditional"], [])
    with pytest.raises(IntegrityError, match="population.footer.v1"):
        pq.read_table(tmp_path / "p.parquet", decryption_properties=decryption_properties(other))
    kms.forget_cached_keys(other)


def test_tampered_master_key_file_fails_unwrap(keystore: Keystore, tmp_path: Path) -> None:
    write(tmp_path / "p.parquet", people(), conditional(keystore))
    kms.forget_cached_keys(keystore)  # as in a fresh process: no KEK in memory
    key_file = keystore.path / "population.conditional.v1.key"
    raw = bytearray(key_file.read_bytes())
    raw[7] ^= 0x80
    key_file.write_bytes(bytes(raw))
    properties = decryption_properties(keystore)
    assert pq.read_table(tmp_path / "p.parquet", columns=["person_status"],
                         decryption_properties=properties).num_rows == 50
    with pytest.raises(IntegrityError, match="population.conditional.v1") as info:
        pq.read_table(tmp_path / "p.parquet", columns=["id_number"], decryption_properties=properties)
    assert raw.hex() not in str(info.value)


def test_crypto_factory_is_shared_and_keys_are_not_unwrapped_per_file(
    keystore: Keystore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kms.crypto_factory(keystore) is kms.crypto_factory(Keystore(keystore.path))
    calls: list[str] = []
    real = Keystore.master_key
    monkeypatch.setattr(Keystore, "master_key", lambda self, key_id: calls.append(key_id) or real(self, key_id))
    for i in range(6):
        write(tmp_path / f"f{i}.parquet", people(), conditional(keystore))
    writes = len(calls)
    for i in range(6):
        pq.read_table(tmp_path / f"f{i}.parquet", decryption_properties=decryption_properties(keystore))
    assert writes == 2  # one KEK wrap per master key, not per file
    assert len(calls) - writes == 2  # one unwrap per KEK, not per file


def test_nothing_secret_in_protection_repr(keystore: Keystore) -> None:
    protection = conditional(keystore)
    text = repr(protection) + str(protection) + repr(keystore) + str(keystore)
    assert "population.footer.v1" in text  # the description is there ...
    materials = [keystore.master_key(k) for k in ("population.footer.v1", "population.conditional.v1")]
    assert not [m for m in materials if m.hex() in text or repr(m)[2:-1] in text]  # ... the keys are not
    assert "FileEncryptionProperties" not in text
