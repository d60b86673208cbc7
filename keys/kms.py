"""A Parquet KMS backed by the local keystore (Parquet modular encryption, envelope encryption).

Parquet generates a data key (DEK) per file and column; with double wrapping (the default) DEKs
are wrapped by key-encryption keys (KEKs) that pyarrow caches, and only KEKs reach this client,
which wraps them with AES-256-GCM under a keystore master key (MEK):

    wrapped = base64(nonce[12] || ciphertext || tag[16]),  AAD = the master key id (UTF-8)

The AAD binds a wrapped key to the master key id recorded beside it in the file, so a wrapped
key moved to another key id does not unwrap. The master key id is versioned
('population.conditional.v1'), so files keep naming the key they were written with after a
rotation. The wrapping algorithm is looked up per master key, the seam for SM4-GCM (国密).

Master key ids of the form ``dk-<hex>`` are per-version data keys (keys.datakeys): the
keystore client unwraps them from the keystore's ``datakeys`` folder; ``DataKeyKmsClient`` holds
only the data keys it was given (a subscriber agent's, from its envelopes), so what it was not
given it cannot open.

pyarrow's caches (KMS clients, KEKs) live inside one CryptoFactory, so ``crypto_factory`` hands
out one factory per keystore folder for the whole process.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import ConfigError, IntegrityError
from keys.datakeys import data_key, is_data_key_id, unwrap_kek, wrap_kek
from keys.gm import SM4GCM
from keys.keystore import Keystore
from keys.profile import aead_for

KMS_INSTANCE_ID = "govshare-keystore"
KMS_INSTANCE_URL = "local"
NONCE_BYTES = 12
TAG_BYTES = 16
# How long pyarrow keeps KEKs and unwrapped keys in memory; rotation/revocation must clear caches.
CACHE_LIFETIME = timedelta(minutes=10)


class KeystoreKmsClient(pe.KmsClient):
    """Wraps and unwraps Parquet key-encryption keys under the keystore's master keys."""

    def __init__(self, keystore: Keystore) -> None:
        pe.KmsClient.__init__(self)
        self._keystore = keystore
        self._data_keys: dict[str, bytes] = {}  # per client: pyarrow drops clients with its caches
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeystoreKmsClient({self._keystore!r})"

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        if is_data_key_id(master_key_identifier):
            return wrap_kek(self._data_key(master_key_identifier), key_bytes, master_key_identifier)
        aead = self._aead(master_key_identifier)
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, bytes(key_bytes), master_key_identifier.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        if is_data_key_id(master_key_identifier):
            return unwrap_kek(self._data_key(master_key_identifier), wrapped_key, master_key_identifier)
        aead = self._aead(master_key_identifier)
        try:
            raw = base64.b64decode(wrapped_key, validate=True)
            if len(raw) <= NONCE_BYTES + TAG_BYTES:
                raise ValueError("too short")
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], master_key_identifier.encode())
        except (InvalidTag, ValueError, binascii.Error, TypeError):
            raise IntegrityError(
                f"a data key wrapped under master key {master_key_identifier!r} does not unwrap: the file's key "
                f"material or keystore {self._keystore.path} was altered, or the file comes from another keystore"
            ) from None

    def _data_key(self, key_id: str) -> bytes:
        with self._lock:
            key = self._data_keys.get(key_id)
            if key is None:
                key = self._data_keys[key_id] = data_key(self._keystore, key_id)
            return key

    def _aead(self, master_key_id: str) -> AESGCM | SM4GCM:
        algorithm = self._keystore.algorithm(master_key_id)
        if algorithm not in ("AES-256-GCM", "SM4-GCM"):
            raise ConfigError(f"key {master_key_id!r} is a {algorithm} key and cannot wrap Parquet keys")
        return aead_for(algorithm, self._keystore.master_key(master_key_id))


_factories: dict[Path, pe.CryptoFactory] = {}
_factories_lock = threading.Lock()


def crypto_factory(keystore: Keystore) -> pe.CryptoFactory:
    """The process-wide CryptoFactory of a keystore folder (so pyarrow's key caches are reused)."""
    folder = keystore.path.resolve()
    with _factories_lock:
        factory = _factories.get(folder)
        if factory is None:
            owner = Keystore(folder)
            factory = pe.CryptoFactory(lambda _config: KeystoreKmsClient(owner))
            _factories[folder] = factory
        return factory


def forget_cached_keys(keystore: Keystore | None = None) -> None:
    """Drop cached KEKs and factories (one keystore, or all): for rotation, revocation and tests."""
    with _factories_lock:
        folders = [keystore.path.resolve()] if keystore else list(_factories)
        for folder in folders:
            factory = _factories.pop(folder, None)
            if factory is not None:
                factory.remove_cache_entries_for_all_tokens()


def kms_connection_config(keystore: Keystore) -> pe.KmsConnectionConfig:
    """Connection to the local keystore. The instance id/url are written into each file's key
    material, so they are constants: no local path is recorded in published files."""
    del keystore  # the factory is per keystore; the config carries nothing keystore-specific
    return pe.KmsConnectionConfig(kms_instance_id=KMS_INSTANCE_ID, kms_instance_url=KMS_INSTANCE_URL)


class DataKeyKmsClient(pe.KmsClient):
    """Unwraps (and wraps) Parquet key-encryption keys under the data keys it was given (key id ->
    32 bytes) and nothing else: a key id it does not hold is refused, so the column stays shut."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        pe.KmsClient.__init__(self)
        self._keys = dict(keys)

    def __repr__(self) -> str:
        return f"DataKeyKmsClient({len(self._keys)} keys)"

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return wrap_kek(self._key(master_key_identifier), key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return unwrap_kek(self._key(master_key_identifier), wrapped_key, master_key_identifier)

    def _key(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:  # pyarrow re-raises it from the read: the column (or the file) stays shut
            raise IntegrityError(f"no data key {key_id} was received for this file: the column is outside the grant, "
                                 "or the key envelopes do not match the version")
        return key


def decryption_with(keys: Mapping[str, bytes]) -> pq.FileDecryptionProperties:
    """Decryption properties that open govshare version files with only ``keys`` (data key id ->
    bytes): a file whose footer key is not among them does not open, a column whose key is not
    among them cannot be read (IntegrityError from the read)."""
    client = DataKeyKmsClient(keys)
    factory = pe.CryptoFactory(lambda _config: client)
    config = pe.DecryptionConfiguration(cache_lifetime=CACHE_LIFETIME)
    connection = pe.KmsConnectionConfig(kms_instance_id=KMS_INSTANCE_ID, kms_instance_url=KMS_INSTANCE_URL)
    return factory.file_decryption_properties(connection, config)
