"""A Parquet KMS backed by the local keystore (Parquet modular encryption, envelope encryption).

Parquet generates a data key (DEK) per file and column; with double wrapping (the default) DEKs
are wrapped by key-encryption keys (KEKs) that pyarrow caches, and only KEKs reach this client,
which wraps them with AES-256-GCM under a keystore master key (MEK):

    wrapped = base64(nonce[12] || ciphertext || tag[16]),  AAD = the master key id (UTF-8)

The AAD binds a wrapped key to the master key id recorded beside it in the file, so a wrapped
key moved to another key id does not unwrap. The master key id is versioned
('population.conditional.v1'), so files keep naming the key they were written with after a
rotation. The wrapping algorithm is looked up per master key, the seam for SM4-GCM (国密).

pyarrow's caches (KMS clients, KEKs) live inside one CryptoFactory, so ``crypto_factory`` hands
out one factory per keystore folder for the whole process.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import ConfigError, IntegrityError
from keys.keystore import Keystore

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

    def __repr__(self) -> str:
        return f"KeystoreKmsClient({self._keystore!r})"

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        aead = self._aead(master_key_identifier)
        nonce = os.urandom(NONCE_BYTES)
        sealed = aead.encrypt(nonce, bytes(key_bytes), master_key_identifier.encode())
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
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

    def _aead(self, master_key_id: str) -> AESGCM:
        algorithm = self._keystore.algorithm(master_key_id)
        if algorithm != "AES-256-GCM":
            raise ConfigError(f"key {master_key_id!r} is a {algorithm} key and cannot wrap Parquet keys")
        return AESGCM(self._keystore.master_key(master_key_id))


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
