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

The 国密 profile (keys.profile.GM) writes *sealed* Parquet instead (keys.chunkseal: SM4-GCM per
row group and column, the same file layout for readers): a gm keystore's Protection carries the
16-byte SM4 keys of its columns and ``Protection.writer`` makes a SealedParquetWriter; the
columns that PME would leave plain under an encrypted footer are sealed under the footer key, so
without it a file shows row counts, column names and types, key ids and sizes, and nothing of its
values. ``Decryption`` opens either kind: callers ask it for files (``open``, ``read_table``,
``batches``) and never build ``pq.ParquetFile`` with decryption properties themselves.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from common.errors import ConfigError
from keys import chunkseal
from keys.datakeys import data_key, is_data_key_id
from keys.keystore import QUARANTINE, STAGING, Keystore
from keys.kms import CACHE_LIFETIME, KMS_INSTANCE_ID, crypto_factory, decryption_with, kms_connection_config

ALGORITHM = "AES_GCM_V1"
SEALED_ALGORITHM = chunkseal.ALGORITHM


@dataclass(frozen=True)
class Protection:
    """How one Parquet file is encrypted: properties for pq.ParquetWriter and a JSON-ready,
    key-ids-only description for manifests and lineage."""

    file_encryption_properties: pq.FileEncryptionProperties | None = field(repr=False)
    description: dict[str, Any]
    # the sealed (gm) form: column -> (key id, 16-byte SM4 key), and the footer key for the others
    sealed: Mapping[str, tuple[str, bytes]] | None = field(default=None, repr=False)
    sealed_default: tuple[str, bytes] | None = field(default=None, repr=False)

    @property
    def is_sealed(self) -> bool:
        return self.sealed is not None

    def writer(self, path: str | os.PathLike[str], schema: pa.Schema, *, name: str | None = None,
               compression: str | None = "zstd", **options: Any) -> pq.ParquetWriter | chunkseal.SealedParquetWriter:  # noqa: ANN401
        """A writer of ``path`` under this protection (``pq.ParquetWriter``'s surface). ``name``: the
        file name a sealed file is bound to when it is written under another (it is read back with
        the same ``name``); PME files ignore it."""
        if self.sealed is None:
            return pq.ParquetWriter(path, schema, compression=compression,
                                    encryption_properties=self.file_encryption_properties, **options)
        assert self.sealed_default is not None
        column_keys = {c: self.sealed.get(c, self.sealed_default) for c in schema.names}
        return chunkseal.SealedParquetWriter(path, schema, column_keys, compression, name=name, **options)

    def with_description(self, **extra: Any) -> Protection:  # noqa: ANN401
        return Protection(self.file_encryption_properties, {**self.description, **extra}, self.sealed,
                          self.sealed_default)


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
    if keystore.profile.name == "gm":
        return _sealed(keystore, footer_id, by_id)
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


def _sealed(keystore: Keystore, footer_id: str, by_id: Mapping[str, list[str]]) -> Protection:
    """The gm form of encryption_by_id: sealed columns, the unlisted ones under the footer key."""
    keys = _PublisherKeys(keystore)
    sealed = {column: (key_id, keys(key_id)) for key_id, columns in by_id.items() for column in columns}
    description = {
        "algorithm": SEALED_ALGORITHM,
        "format": chunkseal.FORMAT,
        "kms": KMS_INSTANCE_ID,
        "footer_key_id": footer_id,
        "footer": "sealed",  # the columns PME would leave plain under an encrypted footer: sealed under its key
        "uniform": not by_id,
        "column_keys": {key_id: list(columns) for key_id, columns in by_id.items()},
    }
    return Protection(None, description, sealed, (footer_id, keys(footer_id)))


class _PublisherKeys:
    """Key id -> 16-byte SM4 key from a gm keystore: per-version data keys (keys.datakeys) and
    master keys (staging, quarantine), each unwrapped once per holder."""

    def __init__(self, keystore: Keystore) -> None:
        self._keystore = keystore
        self._found: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, key_id: str) -> bytes:
        with self._lock:
            key = self._found.get(key_id)
            if key is None:
                if is_data_key_id(key_id):
                    key = data_key(self._keystore, key_id)
                else:
                    try:
                        algorithm = self._keystore.algorithm(key_id)
                    except (ConfigError, KeyError):
                        raise KeyError(key_id) from None
                    if algorithm != "SM4-GCM":
                        raise ConfigError(f"key {key_id!r} is a {algorithm} key and cannot seal Parquet columns")
                    key = self._keystore.master_key(key_id)
                self._found[key_id] = key
            return key


class Decryption:
    """Opens govshare's protected Parquet files, the one way every reader goes: Parquet modular
    encryption (``properties``) and/or sealed files (``keys``: key id -> SM4 key, a mapping or a
    callable). With both, each file is opened by its kind (a sealed file's footer names it)."""

    def __init__(self, properties: pq.FileDecryptionProperties | None = None,
                 keys: chunkseal.Keys | None = None) -> None:
        if properties is None and keys is None:
            raise ConfigError("a Decryption needs decryption properties or sealing keys")
        self.properties = properties
        self.keys = keys

    def __repr__(self) -> str:
        kinds = [k for k, v in (("pme", self.properties), ("sealed", self.keys)) if v is not None]
        return f"Decryption({'+'.join(kinds)})"

    def open(self, path: str | os.PathLike[str], *, name: str | None = None,
             **options: Any) -> pq.ParquetFile | chunkseal.SealedParquetFile:  # noqa: ANN401
        """``pq.ParquetFile`` of a protected file (``name``: the name a sealed file was bound to)."""
        if self.keys is not None and (self.properties is None or chunkseal.is_sealed(path)):
            return chunkseal.SealedParquetFile(path, self.keys, name=name, **options)
        return pq.ParquetFile(path, decryption_properties=self.properties, **options)

    def read_table(self, path: str | os.PathLike[str], columns: Sequence[str] | None = None, *,
                   name: str | None = None) -> pa.Table:
        handle = self.open(path, name=name)
        try:
            return handle.read(columns=list(columns) if columns is not None else None)
        finally:
            handle.close()

    def batches(self, files: Sequence[Path], columns: list[str], batch_rows: int = 262_144, *,
                name: str | None = None) -> Iterator[pa.RecordBatch]:
        """The named columns of the files, batch by batch, with bounded memory (no pre-buffering,
        which would keep what was read)."""
        for path in files:
            source = self.open(path, name=name, pre_buffer=False)
            try:
                yield from source.iter_batches(batch_size=batch_rows, columns=columns)
            finally:
                source.close()


def as_decryption(value: Decryption | pq.FileDecryptionProperties) -> Decryption:
    """A Decryption from either a Decryption or bare PME decryption properties."""
    return value if isinstance(value, Decryption) else Decryption(properties=value)


def keystore_decryption(keystore: Keystore) -> Decryption:
    """What opens every file written with this keystore (reusable across files)."""
    if keystore.profile.name == "gm":
        return Decryption(keys=_PublisherKeys(keystore))
    return Decryption(properties=decryption_properties(keystore))


def decryption_for_keys(keys: Mapping[str, bytes]) -> Decryption:
    """What opens a version's files with only ``keys`` (data key id -> key, a subscriber agent's,
    from its envelopes): PME files through keys.kms.decryption_with, sealed files directly."""
    held = dict(keys)
    sizes = {len(k) for k in held.values()}
    if sizes and sizes <= {chunkseal.SM4_KEY_BYTES}:
        return Decryption(keys=held)
    return Decryption(properties=decryption_with(held))


def decryption_properties(keystore: Keystore) -> pq.FileDecryptionProperties:
    """PME decryption properties for files written with a standard-profile keystore (reusable)."""
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
                      batch_rows: int = 262_144, *, name: str | None = None) -> Iterator[pa.RecordBatch]:
    """The named columns of govshare-encrypted Parquet files, batch by batch, with bounded memory
    (one decryption setup shared across files). ``name``: what sealed files were bound to."""
    if not files:
        return
    yield from keystore_decryption(keystore).batches(files, columns, batch_rows, name=name)
