"""Per-version data keys, and their envelopes for subscribers (HPKE, RFC 9180).

Every version is encrypted under keys of its own, one per *group*:

- ``footer``: the Parquet footer key of the version's files. Without it a file shows nothing,
  not even its schema; with it the file's plain (无条件共享) columns can be read. Every grantee of
  the dataset receives it.
- one group per 有条件共享 field (the group's name is the field's name): the column key of that
  field. Only a subscriber whose grant covers the field receives it.

For pyarrow these keys are Parquet *master keys* (key ids ``dk-<32 hex>``): Parquet's data keys
(DEKs) are wrapped by key-encryption keys, which are wrapped by these (AES-256-GCM, AAD = the key
id, the scheme of keys.kms). The publisher keeps each data key in its keystore, wrapped under
the dataset's long-lived master key (``keystore/datakeys/<key id>.json``); the sharing store
itself holds no key, wrapped or not. A subscriber receives a version's keys as *envelopes*:
each data key sealed to the subscriber agent's own X25519 public key with HPKE (base mode,
X25519 / HKDF-SHA256 / AES-256-GCM), with an ``info`` that binds dataset, version, group, key id
and subscriber, so an envelope opens only for the version, field and subscriber it was made for.
The publisher's master keys never leave the publisher.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import ConfigError, IntegrityError
from keys import gm, sigalg
from keys.gm import SM4GCM
from keys.keystore import Keystore
from keys.profile import aead_for

FOOTER = "footer"
DATA_KEY_FORMAT = "govshare-data-key/1"
RUN_KEYS_FORMAT = "govshare-run-data-keys/1"
ENVELOPE_LABEL = "govshare-envelope/1"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^dk-[0-9a-f]{32}$")
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
HPKE_SUITE = "X25519-HKDF-SHA256-AES-256-GCM"  # RFC 9180: KEM 0x0020, KDF 0x0001, AEAD 0x0002


def is_data_key_id(key_id: str) -> bool:
    return bool(_KEY_ID.match(key_id))


# -- the publisher's copies: in the keystore, wrapped under a master key -----------------------

def data_key_folder(keystore: Keystore) -> Path:
    return keystore.path / "datakeys"


def create_data_key(keystore: Keystore, dataset: str, group: str, master_key_id: str) -> str:
    """A fresh data key for ``group`` of a dataset, stored wrapped under ``master_key_id``; its id."""
    key_id = "dk-" + secrets.token_hex(16)
    # as long as its master key's: AES-256 data keys under an AES-256-GCM master, SM4 (16 bytes,
    # the column keys of sealed files, keys.chunkseal) under an SM4-GCM master (the gm profile)
    key = secrets.token_bytes(gm.SM4_KEY_BYTES if keystore.algorithm(master_key_id) == "SM4-GCM" else KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    wrapped = _master_aead(keystore, master_key_id).encrypt(nonce, key, _aad(key_id, dataset, group))
    doc = {"format": DATA_KEY_FORMAT, "key_id": key_id, "dataset": dataset, "group": group,
           "master_key_id": master_key_id, "created": datetime.now(UTC).isoformat(timespec="seconds"),
           "wrapped": base64.b64encode(nonce + wrapped).decode("ascii")}
    folder = data_key_folder(keystore)
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{key_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(doc, sort_keys=True) + "\n")
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written key
        raise
    return key_id


@dataclass(frozen=True)
class StoredDataKey:
    key_id: str
    dataset: str
    group: str
    master_key_id: str


def stored_data_key(keystore: Keystore, key_id: str) -> StoredDataKey:
    """What the keystore says of a data key (never the key)."""
    doc = _read_data_key(keystore, key_id)
    return StoredDataKey(key_id, doc["dataset"], doc["group"], doc["master_key_id"])


def data_key(keystore: Keystore, key_id: str) -> bytes:
    """The publisher's data key ``key_id``, unwrapped with its master key."""
    doc = _read_data_key(keystore, key_id)
    try:
        raw = base64.b64decode(doc["wrapped"], validate=True)
        return _master_aead(keystore, doc["master_key_id"]).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(key_id, doc["dataset"], doc["group"]))
    except (InvalidTag, ValueError, binascii.Error, TypeError):
        raise IntegrityError(f"data key {key_id} in keystore {keystore.path} does not unwrap under its master key "
                             f"{doc.get('master_key_id')!r}: the keystore was altered; restore it from backup") from None


def _read_data_key(keystore: Keystore, key_id: str) -> dict:
    if not is_data_key_id(key_id):
        raise IntegrityError(f"{key_id!r} is not a data key id")
    path = data_key_folder(keystore) / f"{key_id}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"data key {key_id} is missing from keystore {keystore.path} ({path}): restore the keystore "
                          "from backup; the versions encrypted under it cannot be read without it") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"data key file {path} is unreadable: restore the keystore from backup") from None
    if not isinstance(doc, dict) or doc.get("format") != DATA_KEY_FORMAT or doc.get("key_id") != key_id:
        raise IntegrityError(f"data key file {path} is not data key {key_id}: restore the keystore from backup")
    return doc


def _master_aead(keystore: Keystore, master_key_id: str) -> AESGCM | SM4GCM:
    """The AEAD of a master key by its algorithm (AES-256-GCM, or SM4-GCM in the gm profile)."""
    return aead_for(keystore.algorithm(master_key_id), keystore.master_key(master_key_id))


def _aad(key_id: str, dataset: str, group: str) -> bytes:
    return f"{DATA_KEY_FORMAT}\n{key_id}\n{dataset}\n{group}".encode()


# -- a run's keys: the data keys a version being made is encrypted under ----------------------

def run_data_keys(folder: Path, keystore: Keystore, dataset: str, groups: Mapping[str, str]) -> dict[str, str]:
    """The data key id per group of the run whose work folder is ``folder``; made on first use.

    ``groups`` maps each group to the master key name its data key is wrapped under. The parts
    of a run (mapped Airflow tasks, perhaps at once) share the keys: the first to write the run's
    ``datakeys.json`` (ids only, no material) wins, the others read it."""
    path = folder / "datakeys.json"
    found = _read_run_keys(path)
    if found is None:
        made: list[str] = []
        tmp = folder / f".datakeys.{os.getpid()}.tmp"
        try:
            for group, master in groups.items():
                made.append(create_data_key(keystore, dataset, group, keystore.active_key_id(master)))
            wanted = dict(zip(groups, made, strict=True))
            tmp.write_text(json.dumps({"format": RUN_KEYS_FORMAT, "dataset": dataset, "keys": wanted}, sort_keys=True),
                           encoding="utf-8")
            os.link(tmp, path)
            made = []  # the run's keys now
        except FileExistsError:
            pass  # another part was first: its keys are the run's
        finally:
            tmp.unlink(missing_ok=True)
            for key_id in made:  # never used: a full disk or a part that lost the race leaves no key behind
                (data_key_folder(keystore) / f"{key_id}.json").unlink(missing_ok=True)
        found = _read_run_keys(path)
    missing = sorted(set(groups) - set(found or {}))
    if found is None or missing:
        raise IntegrityError(f"the run's data key list {path} lacks group(s) {', '.join(missing)}: rerun the sync")
    return found


def _read_run_keys(path: Path) -> dict[str, str] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"the run's data key list {path} is unreadable: rerun the sync") from None
    keys = doc.get("keys") if isinstance(doc, dict) and doc.get("format") == RUN_KEYS_FORMAT else None
    if not isinstance(keys, dict) or not all(isinstance(v, str) and is_data_key_id(v) for v in keys.values()):
        raise IntegrityError(f"the run's data key list {path} is not one: rerun the sync")
    return keys


# -- envelopes -------------------------------------------------------------------------------

def envelope_info(dataset: str, version: int, group: str, key_id: str, subscriber: str) -> bytes:
    """HPKE ``info`` of an envelope: what it is for, so that it opens for nothing else."""
    return "\n".join((ENVELOPE_LABEL, dataset, str(int(version)), group, key_id, subscriber)).encode()


def seal(key: bytes, recipient: X25519PublicKey | sigalg.PublicKey, info: bytes) -> bytes:
    """``key`` sealed to ``recipient``: HPKE base mode, single shot (enc || ciphertext) to an X25519
    key; SM2 encryption of a fresh SM4 key and SM4-GCM of ``key`` (keys.gm.seal_sm2) to an SM2 key."""
    if isinstance(recipient, sigalg.PublicKey):
        if recipient.algorithm != "SM2":
            raise ConfigError(f"an envelope is sealed to an X25519 or SM2 key, not to an {recipient.algorithm} key")
        return gm.seal_sm2(recipient.raw, bytes(key), info)
    return _SUITE.encrypt(bytes(key), recipient, info=info)


def open_sealed(blob: bytes, private: X25519PrivateKey | sigalg.PrivateKey, info: bytes) -> bytes:
    """The key in an envelope sealed to ``private``'s public key for ``info``; IntegrityError if
    it was altered, sealed to another key or made for another version, group or subscriber."""
    try:
        if isinstance(private, sigalg.PrivateKey):
            key = gm.open_sm2(private._material, bytes(blob), info)
        else:
            key = _SUITE.decrypt(bytes(blob), private, info=info)
    except (InvalidTag, ValueError, TypeError, IntegrityError):
        raise IntegrityError("a key envelope does not open with this agent's key: it was altered, or made for "
                             "another subscriber, version or field") from None
    if len(key) not in (KEY_BYTES, gm.SM4_KEY_BYTES):
        raise IntegrityError("a key envelope holds no data key")
    return key


# -- Parquet key-encryption keys under a data key (the scheme of keys.kms) -----------------------

def wrap_kek(key: bytes, kek: bytes, key_id: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, bytes(kek), key_id.encode())).decode("ascii")


def unwrap_kek(key: bytes, wrapped: str, key_id: str) -> bytes:
    try:
        raw = base64.b64decode(wrapped, validate=True)
        if len(raw) <= NONCE_BYTES + 16:
            raise ValueError("too short")
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode())
    except (InvalidTag, ValueError, binascii.Error, TypeError):
        raise IntegrityError(f"a Parquet key wrapped under data key {key_id} does not unwrap: the file was altered "
                             "or the key is not the one it was written with") from None
