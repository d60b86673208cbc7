"""Parquet modular encryption settings for govshare files: published versions and staging.

Choices (GB/T 39786-2021 level 3: confidentiality of important data at rest):

- Algorithm AES_GCM_V1 (every module encrypted and authenticated). pyarrow has no SM4 mode, so
  国密 at the Parquet level would need another writer; key wrapping is already per-key algorithm.
- The footer is encrypted by default (``plaintext_footer=False``): without the footer key a file
  shows neither its schema, nor row counts, nor statistics; every govshare file is opened the same
  way, with ``decryption_properties(keystore)``. ``plaintext_footer=True`` is available for files
  whose plain columns must be readable by tools without keys (the footer is then signed instead).
- Columns named in ``column_keys`` are encrypted with their master key's data keys; other
  columns stay plain. With empty ``column_keys`` pyarrow has no "encrypted footer, plain
  columns" mode, so the file is encrypted uniformly under the footer key instead: still an
  encrypted footer, still read the same way, and nothing of it lies in plaintext at rest.
- Double wrapping and key material inside the file (pyarrow defaults): one file is
  self-contained, and KMS calls happen once per KEK per cache lifetime, not per file.

One Protection per written file: it carries fresh data keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from common.errors import ConfigError
from keys.keystore import QUARANTINE, STAGING, Keystore
from keys.kms import CACHE_LIFETIME, KMS_INSTANCE_ID, crypto_factory, kms_connection_config

ALGORITHM = "AES_GCM_V1"


@dataclass(frozen=True)
class Protection:
    """How one Parquet file is encrypted: properties for pq.ParquetWriter and a JSON-ready,
    key-ids-only description for manifests and lineage."""

    file_encryption_properties: pq.FileEncryptionProperties = field(repr=False)
    description: dict[str, Any]


def column_encryption(
    keystore: Keystore,
    footer_key_name: str,
    column_keys: Mapping[str, Sequence[str]],
    *,
    plaintext_footer: bool = False,
) -> Protection:
    """Encrypt the footer with ``footer_key_name`` and each listed column with its master key.

    ``column_keys`` maps a master key NAME (e.g. 'population.conditional') to the columns it
    protects; names resolve to their active key ids (e.g. 'population.conditional.v1').
    """
    return encryption_by_id(keystore, keystore.active_key_id(footer_key_name), _resolve_column_keys(keystore, column_keys),
                            plaintext_footer=plaintext_footer)


def encryption_by_id(keystore: Keystore, footer_id: str, by_id: Mapping[str, Sequence[str]], *,
                     plaintext_footer: bool = False) -> Protection:
    """As column_encryption, with key ids given: keystore master key ids or per-version data key
    ids (keys.datakeys), the footer under ``footer_id`` and each column under its key id."""
    by_id = {key_id: list(dict.fromkeys(columns)) for key_id, columns in by_id.items() if columns}
    uniform = not by_id
    config = pe.EncryptionConfiguration(
        footer_key=footer_id,
        column_keys=by_id or None,
        uniform_encryption=uniform,
        encryption_algorithm=ALGORITHM,
        plaintext_footer=plaintext_footer and not uniform,
        cache_lifetime=CACHE_LIFETIME,
    )
    description = _describe(footer_id, by_id, uniform=uniform, plaintext_footer=plaintext_footer and not uniform)
    return Protection(_properties(keystore, config), description)


def staging_encryption(keystore: Keystore) -> Protection:
    """Uniform encryption of every column with 'govshare.staging' (run staging files at rest)."""
    return column_encryption(keystore, STAGING, {})


def quarantine_encryption(keystore: Keystore) -> Protection:
    """Uniform encryption of every column with 'govshare.quarantine' (rejected rows at rest)."""
    return column_encryption(keystore, QUARANTINE, {})


def decryption_properties(keystore: Keystore) -> pq.FileDecryptionProperties:
    """Decryption properties for any file written with this keystore (reusable across files)."""
    factory = crypto_factory(keystore)
    config = pe.DecryptionConfiguration(cache_lifetime=CACHE_LIFETIME)
    return factory.file_decryption_properties(kms_connection_config(keystore), config)


def _resolve_column_keys(keystore: Keystore, column_keys: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if isinstance(column_keys, (str, bytes)):
        raise ConfigError("column_keys must map key names to column lists")
    by_id: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    problems: list[str] = []
    for name, columns in column_keys.items():
        if isinstance(columns, str):
            problems.append(f"columns of key {name!r} must be a list of column names, not a string")
            continue
        for column in columns:
            if column in owner and owner[column] != name:
                problems.append(f"column {column!r} is assigned to keys {owner[column]!r} and {name!r}")
            owner[column] = name
        if columns:
            by_id[keystore.active_key_id(name)] = list(dict.fromkeys(columns))
    if problems:
        raise ConfigError("cannot set up column encryption", problems=problems)
    return by_id


def _describe(footer_id: str, by_id: Mapping[str, list[str]], *, uniform: bool, plaintext_footer: bool) -> dict[str, Any]:
    return {
        "algorithm": ALGORITHM,
        "kms": KMS_INSTANCE_ID,
        "footer_key_id": footer_id,
        "footer": "plaintext" if plaintext_footer else "encrypted",
        "uniform": uniform,
        "column_keys": {key_id: list(columns) for key_id, columns in by_id.items()},
    }


def _properties(keystore: Keystore, config: pe.EncryptionConfiguration) -> pq.FileEncryptionProperties:
    return crypto_factory(keystore).file_encryption_properties(kms_connection_config(keystore), config)


def encrypted_batches(files: Sequence[Path], keystore: Keystore, columns: list[str],
                      batch_rows: int = 262_144) -> Iterator[pa.RecordBatch]:
    """The named columns of govshare-encrypted Parquet files, batch by batch, with bounded memory
    (one decryption setup shared across files; no pre-buffering, which would keep what was read)."""
    if not files:
        return
    decryption = decryption_properties(keystore)
    for path in files:
        source = pq.ParquetFile(path, decryption_properties=decryption, pre_buffer=False)
        try:
            yield from source.iter_batches(batch_size=batch_rows, columns=columns)
        finally:
            source.close()
