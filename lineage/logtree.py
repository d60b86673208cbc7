"""The access log's Merkle tree (RFC 6962 / RFC 9162) and its signed checkpoints (C2SP).

The hash chain of lineage.audit shows that the log was not edited in place; the tree lets
anyone who once saw the log's state check that it was only ever appended to, without seeing
the records:

- every record is a leaf: ``leaf_hash(canonical_json(record))`` (the record as stored: its
  fields, seq, time, prev_hash, hash and signature), leaf index ``seq - 1``;
- a **checkpoint** is a C2SP tlog-checkpoint (origin, tree size, root hash) in a signed note by
  the publisher's signing key (keys.checkpoint); checkpoints are made at every publish, on demand
  (``audit prove``, an agent's request) and at least hourly while the service runs
  (service.checkpointer), and kept in ``audit/checkpoints.jsonl``;
- an **inclusion proof** shows that a record is in the tree a checkpoint signs
  (``govshare audit prove``, checked offline by keys.proofcheck);
- a **consistency proof** shows that a newer checkpoint's tree extends an older one's: agents
  keep the last checkpoint they received and check every new one against it (witnesses), which
  catches even a log rewritten and re-signed by someone holding the publisher's key.

The tree's node hashes are cached in ``audit/tree/level-K.bin`` (keys.merkle.Levels: record i
of level K is the hash of leaves i*2^K..(i+1)*2^K-1), so a root or a proof costs O(log n) reads,
never a pass over the log. The cache is derived: it is brought up to the log whenever it lags
(after a crash between the two writes, or in a home older than the tree) and rebuilt when it
does not fit; ``audit verify`` recomputes the tree from the records themselves. After a purge
(lineage.retention) the leaves of the purged records come from their kept hashes
(``audit/purged-leaves.bin``), so the tree and every old checkpoint stay whole.

The tree's hash is the home's digest (keys.profile): SHA-256 in the standard profile, SM3 in the
国密 one, bound to the publisher keys' algorithm (Ed25519 -> SHA-256, SM2 -> SM3:
keys.merkle.SIGNED_WITH). A checkpoint record of an SM3 tree says so (``hash_algorithm``; none
means SHA-256, as in every home from before), and a checkpoint is accepted only when that, the
log's hash and the hash of the key whose signature verifies all agree.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.errors import ConfigError, IntegrityError
from common.files import canonical_json, private_dir, write_private
from keys import sigalg
from keys.checkpoint import Checkpoint, CheckpointError, sign_note, verify_note, vkey
from keys.keystore import Keystore
from keys.merkle import SHA256, Levels, TreeHash, for_signature, tree_hash
from keys.proofcheck import HASH_FIELD, recorded_hash

ORIGIN_ENV = "GOVSHARE_LOG_ORIGIN"
CHECKPOINT_FORMAT = "govshare-checkpoint/1"
CHECKPOINTS_FILE = "checkpoints.jsonl"
TREE_DIR = "tree"
ORIGIN_FILE = "origin"


def entry_leaf(entry: dict[str, Any], hasher: TreeHash = SHA256) -> bytes:
    """The leaf hash of an access-log record, as stored, in a tree of ``hasher``."""
    return hasher.leaf(canonical_json(entry))


def log_hash(keystore: Keystore) -> TreeHash:
    """The hash of the access log of the home of ``keystore``: its profile's digest (SHA-256, or
    SM3 in the 国密 profile), which is the one its publisher keys' algorithm is bound to."""
    return tree_hash(keystore.profile.digest)


def tagged(doc: dict[str, Any], hasher: TreeHash) -> dict[str, Any]:
    """``doc`` recording the hash of its log: nothing for SHA-256 (files stay as they were)."""
    if hasher is not SHA256:
        doc[HASH_FIELD] = hasher.name
    return doc


def raw_public(public: Ed25519PublicKey | sigalg.PublicKey) -> bytes:
    if isinstance(public, sigalg.PublicKey):
        return public.raw
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class PublisherKey:
    key_id: str
    public: sigalg.PublicKey  # Ed25519 or SM2
    pem: str


def publisher_keys(keystore: Keystore) -> list[PublisherKey]:
    """Every publisher signing key, retired ones too (old checkpoints stay verifiable)."""
    return [PublisherKey(doc["key_id"], sigalg.load_public_pem(doc["public_pem"], f"publisher key {doc['key_id']}"),
                         doc["public_pem"]) for doc in keystore.publisher_keys()]


class LogTree:
    """The tree cache, the origin and the checkpoints of the access log in ``folder``.

    Not thread- or process-safe by itself: lineage.audit.AccessLog calls it under the log's lock.
    """

    def __init__(self, folder: Path, keystore: Keystore, hasher: TreeHash | None = None) -> None:
        self.folder = folder
        self.keystore = keystore
        self._hasher = hasher  # None: the keystore's profile's, read at first use
        self.checkpoints_path = folder / CHECKPOINTS_FILE
        self.tree_dir = folder / TREE_DIR
        self.origin_path = folder / ORIGIN_FILE

    @property
    def hasher(self) -> TreeHash:
        """The tree's hash: SHA-256, or SM3 in a home of the 国密 profile."""
        if self._hasher is None:
            self._hasher = log_hash(self.keystore)
        return self._hasher

    # -- the origin: the log's name in every checkpoint ----------------------------------------

    def origin(self, create: bool = False) -> str:
        """The log's origin line, fixed when the first checkpoint is made (GOVSHARE_LOG_ORIGIN then,
        or ``govshare.local/access-log/<random>``), and never changed afterwards."""
        if self.origin_path.is_file():
            origin = self.origin_path.read_text(encoding="utf-8").strip()
            if not _valid_origin(origin):
                raise IntegrityError(f"{self.origin_path} does not hold a valid log origin; it was altered")
            return origin
        if not create:
            raise ConfigError(f"the access log in {self.folder} has no checkpoint yet (no {ORIGIN_FILE} file)")
        origin = os.environ.get(ORIGIN_ENV, "").strip() or f"govshare.local/access-log/{secrets.token_hex(8)}"
        if not _valid_origin(origin):
            raise ConfigError(f"{ORIGIN_ENV}={origin!r} is not a valid log origin: 1-200 printable characters, "
                              "no spaces and no '+'")
        write_private(self.origin_path, origin + "\n")
        return origin

    # -- the tree cache ------------------------------------------------------------------------

    def levels(self) -> Levels:
        private_dir(self.tree_dir)
        return Levels(self.tree_dir, durable=False, hasher=self.hasher)  # derived from the log: rebuilt, never trusted alone

    def add(self, entry: dict[str, Any], leaves: Iterable[bytes] | None = None) -> None:
        """Add the record just appended to the log (seq N) as leaf N-1, first catching up when the
        cache lags (``leaves``: a fresh pass over every leaf of the log, used only then)."""
        levels = self.levels()
        if levels.size == int(entry["seq"]) - 1:  # Levels itself repairs an upper level a crash left behind
            levels.append(entry_leaf(entry, self.hasher))
        else:
            self.sync(levels, leaves or (), int(entry["seq"]))

    def sync(self, levels: Levels, leaves: Iterable[bytes], count: int) -> Levels:
        """Bring the cache to the log's ``count`` records (``leaves``: every leaf of the log, in
        order): extend it when it lags, rebuild it from scratch when it is longer than the log
        (whose records it then cannot be of)."""
        if levels.size > count:
            levels.reset()
        have = levels.size
        if have < count:
            levels.append_many(itertools.islice(leaves, have, count))
        if levels.size != count:
            raise IntegrityError(f"the access log's tree cache in {self.tree_dir} could not be brought to "
                                 f"{count} record(s); the log changed while it was read")
        return levels

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, levels: Levels, reason: str, time: datetime | None = None) -> dict[str, Any]:
        """Sign and keep a checkpoint of the tree as it is now."""
        size = levels.size
        root = levels.root(size)
        origin = self.origin(create=True)
        note, key_id = self.sign(Checkpoint(origin, size, root))
        record = tagged({"format": CHECKPOINT_FORMAT, "size": size, "root": root.hex(), "reason": reason,
                         "key_id": key_id, "time": (time or datetime.now(timezone.utc)).isoformat(timespec="milliseconds"),
                         "note": note.decode("utf-8")}, self.hasher)
        private_dir(self.folder)
        with open(self.checkpoints_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return record

    def sign(self, checkpoint: Checkpoint) -> tuple[bytes, str]:
        """A signed note of ``checkpoint`` by the publisher's current signing key, named by the
        origin (C2SP signed-note), and that key's id."""
        key_id = self.keystore.signing_key_id()
        public = self.keystore.public_key(key_id)
        if for_signature(public.algorithm) is not self.hasher:  # never sign a tree under a key of another hash
            raise IntegrityError(f"the publisher key {key_id} is an {public.algorithm} key, but the access log's tree is "
                                 f"{self.hasher.name}: the keystore's profile and its keys disagree; restore it from backup")

        def sign(body: bytes) -> bytes:
            return base64.b64decode(self.keystore.sign(body, key_id)["signature"])

        return sign_note(checkpoint.body(), checkpoint.origin, public.raw, sign, public.algorithm), key_id

    def checkpoints(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line, record) for every kept checkpoint, oldest first; IntegrityError on a line that is
        not one."""
        if not self.checkpoints_path.is_file():
            return
        with open(self.checkpoints_path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict) or not isinstance(record.get("note"), str):
                        raise ValueError
                except ValueError:
                    raise IntegrityError(f"{self.checkpoints_path} line {number} is not a checkpoint record; "
                                         "the file was cut or altered") from None
                yield number, record

    def latest(self) -> dict[str, Any] | None:
        last = None
        for _, record in self.checkpoints():
            last = record
        return last

    def check(self, record: dict[str, Any], where: str, keys: list[PublisherKey] | None = None) -> Checkpoint:
        """The checkpoint a kept record's note signs, its signature checked against the publisher's
        keys (any of them: checkpoints outlive rotations) and its fields against the record's."""
        if not self.origin_path.is_file():
            raise IntegrityError(f"{where}: the log's origin file {self.origin_path} is missing; it was removed")
        origin = self.origin()
        for key in keys if keys is not None else publisher_keys(self.keystore):
            try:
                checkpoint = verify_note(record["note"].encode("utf-8"), origin, key.public)
            except CheckpointError:
                continue
            if checkpoint.size != record.get("size") or checkpoint.root.hex() != record.get("root"):
                raise IntegrityError(f"{where}: its size or root differs from what its signed note says; it was altered")
            bound = for_signature(key.public.algorithm).name
            if recorded_hash(record) != bound or bound != self.hasher.name:
                raise IntegrityError(f"{where}: it records the hash {recorded_hash(record)!r} and is signed by an "
                                     f"{key.public.algorithm} key (bound to {bound}) of a {self.hasher.name} log: "
                                     "refused (a tree re-hashed under another algorithm than its key's)")
            return checkpoint
        raise IntegrityError(f"{where}: no publisher key's signature on it verifies (origin {origin}); it was "
                             "altered or signed by another key")

    def verifier_key(self, key_id: str | None = None) -> dict[str, str]:
        """The publisher's key as a checkpoint verifier needs it: the C2SP vkey line and the PEM."""
        key_id = key_id or self.keystore.signing_key_id()
        pem = self.keystore.public_key_pem(key_id)
        public = sigalg.load_public_pem(pem, f"publisher key {key_id}")
        origin = self.origin(create=True)
        return {"name": origin, "key_id": key_id, "vkey": vkey(origin, public.raw, public.algorithm),
                "public_pem": pem.decode("ascii"),
                "sha256": hashlib.sha256(public.raw).hexdigest()}  # a fingerprint to show, SHA-256 in either profile


def _valid_origin(origin: str) -> bool:
    return 0 < len(origin) <= 200 and origin.isprintable() and not any(c.isspace() or c == "+" for c in origin)

